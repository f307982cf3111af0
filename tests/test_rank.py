"""Ranking: the formula, suggestions, stability, and that the test split cannot move the ranking."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.analysis.associations import Variable
from engine.analysis.rank import (
    RankConfig,
    _suggestions,
    combine,
    predicate,
    rank_run,
    rankable_variables,
)
from engine.analysis.stability import stability
from sample_data import SampleConfig
from store import Store
from tests.conftest import cli_ranked_database, run_cli


def test_predicates_read_as_a_person_writes_them():
    assert predicate("condition", "categorical", "3") == "condition = 3"
    assert predicate("reward", "binary", "1") == "reward = 1"
    assert predicate("speed", "continuous", "in [20, 35)") == "speed in [20, 35)"
    text = "position in [0.4, 0.55) and direction = left"
    assert predicate("position and direction", "conjunction", text) == text


def test_score_is_the_mean_of_the_evidence_and_dead_features_go_last():
    features = pl.DataFrame({"feature_id": [0, 1, 2, 3], "density": [0.1, 0.2, 0.0, 0.9],
                             "dead": [False, False, True, False]})
    assoc = pl.DataFrame({"feature_id": [0, 1, 3], "statistic": [0.9, 0.3, 1.0], "q_value": [0.001, 0.2, 0.001]})
    mis = pl.DataFrame({"feature_id": [0, 1, 2, 3], "mis": [0.9, 0.6, None, 1.0]})
    stable = pl.DataFrame({"feature_id": [0, 1, 2, 3], "stability": [0.8, 0.5, 0.1, 1.0]})
    suggestions = pl.DataFrame({"feature_id": [0], "position": [1], "predicate": ["x = 1"], "score": [0.9]})
    ranked = combine(7, features, assoc, mis, stable, suggestions, RankConfig())
    rows = {r["feature_id"]: r for r in ranked.to_dicts()}
    # Feature 0: association 0.9 (its first suggestion's SI), MIS 2·(0.9−0.5) = 0.8, stability 0.8 → 2.5 / 3.
    assert rows[0]["score"] == pytest.approx(2.5 / 3) and rows[0]["suggestion"] == "x = 1"
    # Feature 1: no suggestion (its association is not significant, q 0.2) → 0; MIS 0.2; stability 0.5.
    assert rows[1]["score"] == pytest.approx(0.7 / 3)
    assert [rows[f]["rank"] for f in (0, 1)] == [1, 2]
    # Dead and near-constant features are last whatever their score, with the reason.
    assert {rows[2]["rank"], rows[3]["rank"]} == {3, 4}
    assert rows[2]["reason"].startswith("dead") and rows[3]["reason"].startswith("near-constant")


def test_a_feature_without_a_significant_suggestion_ranks_below_every_feature_with_one():
    features = pl.DataFrame({"feature_id": [0, 1, 2], "density": [0.1, 0.1, 0.1], "dead": [False] * 3})
    assoc = pl.DataFrame({"feature_id": [0, 1, 2], "statistic": [0.05, 0.9, 0.2], "q_value": [0.01, 0.3, 0.02]})
    mis = pl.DataFrame({"feature_id": [0, 1, 2], "mis": [0.5, 1.0, 0.5]})  # feature 1: perfect MIS ...
    stable = pl.DataFrame({"feature_id": [0, 1, 2], "stability": [0.1, 1.0, 0.1]})  # ... and stability
    suggestions = _suggestions(7, assoc.with_columns(pl.lit("x").alias("variable"), pl.lit("categorical").alias("kind"),
                                                     pl.lit("1").alias("value"), pl.lit(None, pl.Float64).alias("low"),
                                                     pl.lit(None, pl.Float64).alias("high"),
                                                     pl.col("q_value").alias("p_value"),
                                                     pl.col("statistic").alias("effect_size")),
                               pl.Series([], dtype=pl.Int32), RankConfig())
    ranked = {r["feature_id"]: r for r in combine(7, features, assoc, mis, stable, suggestions, RankConfig()).to_dicts()}
    assert ranked[1]["score"] > ranked[2]["score"] > ranked[0]["score"]
    assert [ranked[f]["rank"] for f in (2, 0, 1)] == [1, 2, 3]  # feature 1 has no significant suggestion
    assert ranked[1]["suggestion"] is None and ranked[0]["suggestion"] == "x = 1"


def test_suggestions_are_significant_and_never_for_a_dead_feature():
    assoc = pl.DataFrame({
        "feature_id": [0, 0, 0, 1, 2], "variable": ["a", "b", "c", "a", "a"],
        "kind": ["categorical"] * 5, "value": ["1", "2", "3", "1", "1"], "low": [None] * 5, "high": [None] * 5,
        "statistic": [0.2, 0.6, None, 0.9, 0.4], "p_value": [0.01, 0.001, 0.01, 0.001, 0.5],
        "q_value": [0.02, 0.004, 0.02, 0.004, 0.5], "effect_size": [0.1, 0.3, None, 0.5, 0.2]},
        schema_overrides={"low": pl.Float64, "high": pl.Float64})
    found = _suggestions(3, assoc, pl.Series([1], dtype=pl.Int32), RankConfig())
    # Feature 0: b (SI 0.6) then a (0.2); c has no SI; feature 1 is dead; feature 2 is not significant.
    assert found.select("feature_id", "position", "predicate").rows() == [(0, 1, "b = 2"), (0, 2, "a = 1")]


def test_variables_no_held_out_trial_can_test_are_not_ranked_against():
    trials = np.repeat(np.arange(6), 10)
    n = len(trials)
    clip = Variable("clip", "categorical", categories=trials.copy(), labels=[f"c{i}" for i in range(6)])
    constant = Variable("experiment", "categorical", categories=np.zeros(n, dtype=np.int64), labels=["70"])
    flat = Variable("gain", "continuous", values=np.full(n, 2.0))
    stimulus = Variable("stimulus", "categorical", categories=trials % 3, labels=["0", "1", "2"])
    speed = Variable("speed", "continuous", values=np.linspace(0, 1, n))
    kept, skipped = rankable_variables([clip, constant, flat, stimulus, speed], trials)
    assert [v.name for v in kept] == ["stimulus", "speed"]
    assert skipped == ["clip (each value lies in one trial)", "experiment (one value)", "gain (one value)"]


def test_stability_finds_a_direction_again_in_another_instance():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 10))
    permuted = base[rng.permutation(16)] * 3.0  # same directions, other order and scale
    scores, matches = stability({1: base, 2: permuted, 3: rng.normal(size=(16, 10))}, [[1, 2], [3]])
    first = scores.filter(pl.col("sae_id") == 1)["stability"].to_numpy()
    assert np.allclose(first, 1.0)
    assert scores.filter(pl.col("sae_id") == 3)["stability"].null_count() == 16  # alone in its group
    pairs = matches.filter(pl.col("sae_id") == 1).sort("feature_id")
    assert np.allclose(permuted[pairs["other_feature_id"].to_numpy()] / 3.0, base)


@pytest.fixture(scope="module")
def ranked_db(tmp_path_factory):
    """A small real recording, imported, trained briefly and ranked through the CLI."""
    return cli_ranked_database(tmp_path_factory.mktemp("rank"), SampleConfig(n_bins=12_000, n_units=60),
                               "--epochs", "8", "--d-sae", "64", "--k", "4", "--instances", "2")


def _ranking(path) -> tuple[list, list]:
    with Store.open(path, read_only=True) as db:
        ranks = db.frame("SELECT sae_id, feature_id, rank, score FROM rankings ORDER BY sae_id, rank").rows()
        sugg = db.frame("SELECT sae_id, feature_id, position, predicate, p_value FROM suggestions"
                        " ORDER BY sae_id, feature_id, position").rows()
    return ranks, sugg


def test_rank_stores_rankings_suggestions_and_finds_planted_structure(ranked_db):
    with Store.open(ranked_db, read_only=True) as db:
        n_features = db.scalar("SELECT count(*) FROM features")
        assert db.scalar("SELECT count(*) FROM rankings") == n_features
        assert db.scalar("SELECT max(position) FROM suggestions") <= 9
        top = db.frame("SELECT suggestion FROM rankings WHERE sae_id = 1 AND rank <= 10")["suggestion"].to_list()
        distractor = db.scalar("SELECT count(*) FROM suggestions WHERE variable IN ('distractor', 'house_light')"
                               " AND q_value < 0.05")
    planted_variables = {"condition", "phase", "reward", "position", "speed"}
    assert sum(s is not None and s.split()[0] in planted_variables for s in top) >= 8
    assert distractor == 0


def test_the_test_split_cannot_move_the_ranking(ranked_db, tmp_path):
    before = _ranking(ranked_db)
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(ranked_db.read_bytes())
    with Store.open(copy) as db:  # scramble every natural value of the test split
        db.con.execute(
            "UPDATE natural_values SET value = -value * 7 + 3, category = 'scrambled' WHERE example_id IN"
            " (SELECT example_id FROM examples WHERE split = 'test')")
        changed = db.scalar("SELECT count(*) FROM natural_values WHERE category = 'scrambled'")
        assert changed > 0
        rank_run(db, 1)
    assert _ranking(copy) == before


def test_rank_errors_are_one_line(ranked_db, tmp_path):
    result = run_cli("rank", "--run", "9", "--db", str(ranked_db), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no run 9" in result.stderr
    listing = run_cli("sql", "--db", str(ranked_db), "--format", "json",
                      "SELECT count(*) AS n FROM mis WHERE variable = '*'", cwd=tmp_path)
    assert json.loads(listing.stdout)[0]["n"] > 0


def _stored_ranking(db: Store) -> pl.DataFrame:
    return db.frame("SELECT sae_id, feature_id, rank, score, suggestion FROM rankings ORDER BY sae_id, rank")


def test_a_cancelled_ranking_stores_nothing(app_db):
    """Cancelled before the first SAE, and during the shuffles of the first (the event set from the first
    stage report): Cancelled both times, and the stored ranking is the one from before."""
    import threading

    from engine.errors import Cancelled

    with Store.open(app_db) as db:
        before = _stored_ranking(db)
        stamp = db.frame("SELECT * FROM analysis_epochs")
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(Cancelled, match="after 0 of 2 SAEs; nothing of it was stored"):
            rank_run(db, 1, cancel=cancel)
        cancel = threading.Event()
        stages: list[str] = []

        def heard(stage: str) -> None:
            stages.append(stage)
            cancel.set()  # while the first SAE's shuffles are about to run

        with pytest.raises(Cancelled, match="ranking of run 1 cancelled after 0 of 2 SAEs"):
            rank_run(db, 1, report=heard, cancel=cancel)
        assert stages == ["SAE 1: associations"]
        assert_frame_equal(_stored_ranking(db), before)
        assert_frame_equal(db.frame("SELECT * FROM analysis_epochs"), stamp)
