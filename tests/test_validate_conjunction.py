"""A conjunctive label validates through `mini validate`, and one of its clauses alone does not do as well.

The recording is made here: trials along a track `x` (0 → 1) on a `side` (left or right), four units that
fire when `x in [0.3, 0.6) and side = left`, four tuned to the range alone and four to the side alone.
A small SAE is trained on it for real; then four of its features are set to be active exactly where the
conjunction holds, with decoder rows on the four conjunction units, so that what is tested is how
validation reads and scores a label, not whether this short training happened to find the feature.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from store import Store
from store.labels import Label, add_label
from tests.conftest import run_cli

TRIALS, BINS_PER_TRIAL, UNITS = 120, 50, 24
CONJUNCTION = "x in [0.3, 0.6) and side = left"
PLANTED = [0, 1, 2, 3]
"""Features made active exactly where CONJUNCTION holds."""


def write_recording(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    trial = np.repeat(np.arange(TRIALS), BINS_PER_TRIAL)
    x = np.tile(np.arange(BINS_PER_TRIAL) / BINS_PER_TRIAL, TRIALS)
    side = np.where(rng.random(TRIALS) < 0.5, "left", "right")[trial]
    in_range, left = (x >= 0.3) & (x < 0.6), side == "left"
    rates = np.ones((len(trial), UNITS))
    rates[:, 0:4] = 0.3 + 5.0 * (in_range & left)[:, None]
    rates[:, 4:8] = 0.5 + 2.0 * in_range[:, None]
    rates[:, 8:12] = 0.5 + 1.5 * left[:, None]
    counts = rng.poisson(rates).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "counts.npz", counts=counts, unit_names=np.array([f"u{i}" for i in range(UNITS)]))
    pl.DataFrame({"trial": trial.astype(np.int32), "time_s": np.arange(len(trial)) * 0.05, "x": x,
                  "side": side}).write_parquet(folder / "meta.parquet")
    return folder / "counts.npz", folder / "meta.parquet"


def plant_feature(db: Store, feature_ids: list[int]) -> None:
    """Make each feature active (1.0) exactly where CONJUNCTION holds, its decoder row on units 0-3."""
    meta = pl.read_parquet(Path(db.path).parent / "data" / "meta.parquet")
    where = np.flatnonzero((meta["x"].to_numpy() >= 0.3) & (meta["x"].to_numpy() < 0.6)
                           & (meta["side"].to_numpy() == "left")).astype(np.int32)
    with db.transaction():
        for feature in feature_ids:
            db.con.execute("DELETE FROM activations WHERE sae_id = 1 AND feature_id = ?", [feature])
            db.con.execute("INSERT INTO activations (sae_id, feature_id, example_id, value)"
                           " SELECT 1, ?, unnest(?::INTEGER[]), 1.0", [feature, where.tolist()])
            db.con.execute("UPDATE decoder SET weight = CASE WHEN unit_id < 4 THEN 1.0 ELSE 0.0 END"
                           " WHERE sae_id = 1 AND feature_id = ?", [feature])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conjunction")
    counts, meta = write_recording(folder / "data")
    db = str(folder / "c.duckdb")
    for args in (["import", str(counts), "--meta", str(meta), "--name", "track"],
                 ["train", "--dataset", "track", "--epochs", "2", "--d-sae", "16", "--k", "2"]):
        result = run_cli(*args, "--db", db, cwd=folder, timeout=600)
        assert result.returncode == 0, result.stderr
    with Store.open(db) as store:
        plant_feature(store, PLANTED)
    return Path(db)


def _json(path: Path, query: str) -> list[dict]:
    result = run_cli("sql", "--db", str(path), "--format", "json", query, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_conjunction_validates_and_either_clause_alone_scores_clearly_worse(trained, tmp_path):
    db = tmp_path / "v.duckdb"
    shutil.copy(trained, db)
    labels = {0: CONJUNCTION, 1: "side = left  AND x in [0.3, 0.6)",  # the same target, written otherwise
              2: "x in [0.3, 0.6)", 3: "side = left"}
    for feature, predicate in labels.items():
        result = run_cli("label", "--run", "1", "--feature", str(feature), "--name", f"f{feature}",
                         "--predicate", predicate, "--db", str(db), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    # A stored text that does not parse (here written past `mini label`, which would refuse it) is not
    # testable, with the parser's reason; it does not stop the others.
    with Store.open(db) as store:
        add_label(store, Label(1, 5, "accept", name="odd", predicate="side = left and mood = 1"))
    result = run_cli("validate", "--run", "1", "--jobs", "1", "--db", str(db), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "4 labels, 3 predicates" in result.stderr  # the two spellings of the conjunction share one target
    rows = {r["feature_id"]: r for r in _json(db, "SELECT * FROM validations")}
    conjunction = rows[0]
    assert conjunction["predicate"] == CONJUNCTION and conjunction["testable"]
    for column in ("mcc", "mcc_ci_low", "balanced_accuracy", "p_value", "q_value", "decode_signature",
                   "decode_all", "decode_random_p95"):
        assert conjunction[column] is not None and np.isfinite(conjunction[column]), column
    assert conjunction["mcc"] > 0.95 and conjunction["validated"], conjunction["reason"]
    assert conjunction["tp"] > 0 and conjunction["fp"] == 0 and conjunction["fn"] == 0
    # Feature 1 labels the same target as feature 0: the same figures, grouped under feature 0's label as the
    # weaker (tied MCC: the later label) duplicate.
    own = ("validation_id", "label_id", "feature_id", "predicate", "created_at", "duplicate_of", "reason")
    assert {k: v for k, v in rows[1].items() if k not in own} == {k: v for k, v in conjunction.items() if k not in own}
    assert conjunction["duplicate_of"] is None and rows[1]["duplicate_of"] == conjunction["label_id"]
    assert f"weaker duplicate of label {conjunction['label_id']} (feature 0, MCC" in rows[1]["reason"]
    assert all(r["attempt"] == 1 for r in rows.values())
    assert rows[5]["testable"] is False and rows[5]["reason"] == (
        "not testable: predicate 'side = left and mood = 1': clause 2 'mood = 1': no natural variable 'mood'"
        " (variables: side, x)")
    for part in (rows[2], rows[3]):  # the same activation, labelled with one clause only
        assert part["testable"] and part["mcc"] < conjunction["mcc"] - 0.25, part
    # The report shows the conjunction, with the tuning to its first clause's variable.
    result = run_cli("report", "--run", "1", "--out", "r.md", "--db", str(db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "r.md").read_text()
    assert f"feature 0: {CONJUNCTION}" in report
    assert "Tuning to x (mean activation on train + val; ◀ the first clause's range)" in report
