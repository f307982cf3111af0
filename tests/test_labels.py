"""Labels: append-only actions through `mini label`, the current_labels view, predicates checked early."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.validation.labels import parse_predicate
from sample_data import SampleConfig
from tests.conftest import cli_ranked_database, run_cli

KINDS = {"condition": "categorical", "reward": "binary", "speed": "continuous", "heading": "circular"}


@pytest.mark.parametrize(("text", "variable", "value", "low", "high"), [
    ("condition = 3", "condition", "3", None, None),
    ("reward=1", "reward", "1", None, None),
    ("condition = 'left turn'", "condition", "left turn", None, None),
    ("speed in [20, 35)", "speed", None, 20.0, 35.0),
    ("speed in [25, inf)", "speed", None, 25.0, None),
    ("heading in [5.5, 0.6)", "heading", None, 5.5, 0.6),  # a circular range may wrap through 0
])
def test_predicates_parse(text, variable, value, low, high):
    parsed = parse_predicate(text, KINDS)
    assert (parsed.variable, parsed.value, parsed.low, parsed.high) == (variable, value, low, high)


@pytest.mark.parametrize(("text", "words"), [
    ("mood = 3", "no natural variable 'mood'"),
    ("speed = 3", "is continuous"),
    ("condition in [1, 2)", "is categorical"),
    ("speed in [35, 20)", "low < high"),
    ("speed in [a, b)", "must be numbers"),
    ("speed is fast", "expected `VARIABLE = VALUE`"),
])
def test_bad_predicates_say_what_is_wrong(text, words):
    with pytest.raises(InputError, match=words) as info:
        parse_predicate(text, KINDS)
    assert "\n" not in str(info.value)


CONJUNCTION_KINDS = {**KINDS, "position": "continuous", "direction": "categorical", "target": "categorical"}


@pytest.mark.parametrize(("text", "clauses"), [
    ("position in [0.2, 0.5) and direction = left",
     [("position", None, 0.2, 0.5), ("direction", "left", None, None)]),
    ("condition = 3 AND target = 7 and speed in [25, inf)",
     [("condition", "3", None, None), ("target", "7", None, None), ("speed", None, 25.0, None)]),
    ("heading in [5.5, 0.6) and reward = 1",  # a circular clause may wrap through 0
     [("heading", None, 5.5, 0.6), ("reward", "1", None, None)]),
    ("direction = 'left and back' and condition = left turn",  # values with spaces, quoted or not
     [("direction", "left and back", None, None), ("condition", "left turn", None, None)]),
])
def test_conjunctions_parse_clause_by_clause(text, clauses):
    parsed = parse_predicate(text, CONJUNCTION_KINDS)
    assert [(c.variable, c.value, c.low, c.high) for c in parsed.clauses] == clauses
    assert parsed.text == text and parsed.variable == " and ".join(c[0] for c in clauses)
    assert (parsed.value, parsed.low, parsed.high) == (None, None, None)  # the columns a conjunction leaves NULL


def test_a_value_that_holds_and_stays_one_clause():
    # What a single clause meant before conjunctions, it still means: no clause follows the ` and `.
    parsed = parse_predicate("condition = rock and roll", KINDS)
    assert (parsed.variable, parsed.value, len(parsed.clauses)) == ("condition", "rock and roll", 1)


@pytest.mark.parametrize(("text", "words"), [
    ("speed in [1, 2) and speed in [3, 4)", "'speed' appears in two clauses"),
    ("speed in [1, 2) and and condition = 3", "clause 2 is empty"),
    ("speed in [1, 2) and", "`and` at the start or end"),
    ("and condition = 3", "`and` at the start or end"),
    ("condition = 3 and mood = 1", "clause 2 'mood = 1': no natural variable 'mood'"),
    ("condition = 3 and speed = 4", "clause 2 'speed = 4': 'speed' is continuous"),
    ("speed in [1, 2) and direction in [0, 1)", "clause 2 'direction in [0, 1)': 'direction' is categorical"),
    ("condition = 3 and speed in [nan, 2)", "clause 2 'speed in [nan, 2)': the range must have low < high"),
    ("condition = 3 and speed in [5, 2)", "low < high"),
    ("condition = 3 and heading in [1, inf)", "a circular range needs finite bounds"),
    ("condition = 3 and reward = yes", "'reward' is binary; its value is 0 or 1"),
    ("speed in [1, 2) and direction left", "clause 2 'direction left': expected `VARIABLE = VALUE`"),
])
def test_bad_conjunctions_say_which_clause_is_wrong(text, words):
    with pytest.raises(InputError) as info:
        parse_predicate(text, CONJUNCTION_KINDS)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    db = cli_ranked_database(folder, SampleConfig(n_bins=4000, n_units=30), "--epochs", "2", "--d-sae", "32", "--k", "4")
    return folder, str(db)


def _json(folder, db, query):
    result = run_cli("sql", "--db", db, "--format", "json", query, cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_each_action_is_a_row_and_current_labels_shows_the_latest(ranked, tmp_path):
    folder, source = ranked
    db = str(tmp_path / "copy.duckdb")
    (tmp_path / "copy.duckdb").write_bytes(Path(source).read_bytes())
    first = _json(folder, db, "SELECT feature_id, predicate FROM suggestions WHERE position = 1 ORDER BY feature_id LIMIT 1")[0]
    feature = str(first["feature_id"])
    name = 'fires on "cue" — 🐭 ' + "long " * 200
    for args in (["--accept", "1"], ["--name", name, "--predicate", "speed in [20, inf)", "--note", "it's 'quoted'"],
                 ["--unsure"], ["--reject"]):
        result = run_cli("label", "--run", "1", "--feature", feature, *args, "--db", db, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    history = _json(folder, db, f"SELECT verdict, name, predicate, low, high, note FROM labels WHERE feature_id = {feature}"
                                " ORDER BY label_id")
    assert [h["verdict"] for h in history] == ["accept", "accept", "unsure", "reject"]
    assert history[0]["predicate"] == first["predicate"]
    assert history[1]["name"] == name and history[1]["note"] == "it's 'quoted'"
    assert (history[1]["low"], history[1]["high"]) == (20.0, None)
    current = _json(folder, db, f"SELECT verdict FROM current_labels WHERE feature_id = {feature}")
    assert current == [{"verdict": "reject"}]


@pytest.mark.parametrize(("args", "words"), [
    (["--feature", "0", "--accept", "10"], "has no suggestion 10"),
    (["--feature", "99999", "--reject"], "has no feature 99999"),
    (["--feature", "0", "--name", "x", "--predicate", "mood = 3"], "no natural variable 'mood'"),
    (["--feature", "0", "--accept", "1", "--reject"], "not allowed with argument"),
    (["--feature", "0", "--sae", "77", "--reject"], "not an SAE of run 1"),
])
def test_bad_labels_are_one_line_and_write_nothing(ranked, args, words):
    folder, db = ranked
    before = _json(folder, db, "SELECT count(*) AS n FROM labels")
    result = run_cli("label", "--run", "1", *args, "--db", db, cwd=folder)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
    assert _json(folder, db, "SELECT count(*) AS n FROM labels") == before


def test_validate_scores_labels_on_test_and_a_wrong_label_does_not_validate(ranked, tmp_path):
    folder, source = ranked
    db = str(tmp_path / "v.duckdb")
    (tmp_path / "v.duckdb").write_bytes(Path(source).read_bytes())
    top = _json(folder, db, "SELECT feature_id FROM rankings WHERE sae_id = 1 AND suggestion IS NOT NULL"
                            " ORDER BY rank LIMIT 2")
    for row in top:
        assert run_cli("label", "--run", "1", "--feature", str(row["feature_id"]), "--accept", "1", "--db", db,
                       cwd=tmp_path).returncode == 0
    wrong = str(top[0]["feature_id"] + 1)  # another feature, paired with the variable nothing encodes
    for args in (["--name", "distractor", "--predicate", "distractor in [0.5, 3)"], ["--name", "just words"]):
        assert run_cli("label", "--run", "1", "--feature", wrong, *args, "--db", db, cwd=tmp_path).returncode == 0
    result = run_cli("validate", "--run", "1", "--db", db, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = _json(folder, db, "SELECT feature_id, predicate, testable, validated, reason, mcc, mcc_ci_low, mcc_ci_high,"
                             " q_value, decode_signature, decode_all, decode_random_p95 FROM validations")
    assert len(rows) == 3  # the feature relabelled twice counts once: its current label
    by_feature = {r["feature_id"]: r for r in rows}
    untestable = by_feature[int(wrong)]
    assert untestable["testable"] is False and "not testable" in untestable["reason"]
    for row in (by_feature[r["feature_id"]] for r in top):
        assert row["mcc_ci_low"] <= row["mcc"] <= row["mcc_ci_high"] and 0 < row["q_value"] <= 1
        assert row["decode_all"] is not None and row["decode_random_p95"] is not None
    # Relabel the wrong feature with only the distractor predicate: it must not validate.
    assert run_cli("label", "--run", "1", "--feature", wrong, "--name", "distractor", "--predicate",
                   "distractor in [0.5, 3)", "--db", db, cwd=tmp_path).returncode == 0
    assert run_cli("validate", "--run", "1", "--db", db, cwd=tmp_path, timeout=600).returncode == 0
    distractor = _json(folder, db, "SELECT validated, generalises, reason FROM current_validations"
                                   f" WHERE feature_id = {wrong} ORDER BY validation_id DESC")
    assert distractor[0]["validated"] is False and distractor[0]["generalises"] is False
    assert distractor[0]["reason"].startswith("does not generalise")
    signature = _json(folder, db, "SELECT count(*) AS n FROM signatures WHERE in_signature")
    assert signature[0]["n"] >= 3


def test_a_conjunctive_label_round_trips_through_the_cli(ranked, tmp_path):
    folder, source = ranked
    db = str(tmp_path / "c.duckdb")
    (tmp_path / "c.duckdb").write_bytes(Path(source).read_bytes())
    text = "position in [0.2, 0.5) and phase = cue and reward = 1"
    result = run_cli("label", "--run", "1", "--feature", "3", "--name", "cue in the middle", "--predicate", text,
                     "--db", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert text in result.stdout
    stored = _json(folder, db, "SELECT name, predicate, variable, value, low, high FROM current_labels"
                               " WHERE feature_id = 3")
    assert stored == [{"name": "cue in the middle", "predicate": text, "variable": "position and phase and reward",
                       "value": None, "low": None, "high": None}]


@pytest.mark.parametrize(("predicate", "words"), [
    ("position in [0.2, 0.5) and position in [0.6, 0.7)", "'position' appears in two clauses"),
    ("position in [0.2, 0.5) and and phase = cue", "clause 2 is empty"),
    ("position in [0.2, 0.5) and", "`and` at the start or end"),
    ("AND phase = cue", "`and` at the start or end"),
    ("phase = cue and mood = 3", "clause 2 'mood = 3': no natural variable 'mood'"),
    ("phase = cue and speed in [inf, 3)", "clause 2 'speed in [inf, 3)': the range must have low < high"),
    ("position in [0.2, 0.5) and phase = sideways", "'phase' never takes the value 'sideways' (its values: "),
])
def test_a_bad_conjunction_is_one_line_exit_2_and_writes_nothing(ranked, tmp_path, predicate, words):
    folder, source = ranked
    path = tmp_path / "bad.duckdb"
    path.write_bytes(Path(source).read_bytes())
    before = _json(folder, str(path), "SELECT * FROM labels")
    result = run_cli("label", "--run", "1", "--feature", "3", "--name", "x", "--predicate", predicate,
                     "--db", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mini: error: ") and words in result.stderr, result.stderr
    assert _json(folder, str(path), "SELECT * FROM labels") == before


def test_review_s_one_statement_label_keeps_every_rule(ranked, tmp_path):
    """Review passes its SAE and labels in one statement; a label it may not write is refused as `mini
    label` refuses it, naming why, and writes nothing."""
    from engine.validation.freezes import freeze_labels
    from engine.validation.labels import label_feature
    from store import Store

    _folder, source = ranked
    path = tmp_path / "copy.duckdb"
    path.write_bytes(Path(source).read_bytes())
    with Store.open(path) as db:
        n_features = db.scalar("SELECT d_sae FROM saes WHERE sae_id = 1")
        count = lambda: db.scalar("SELECT count(*) FROM labels")  # noqa: E731
        label_id = label_feature(db, 1, 3, sae_id=1, accept=1)
        assert db.frame("SELECT feature_id, verdict, predicate IS NOT NULL AS p FROM labels WHERE label_id = ?",
                        [label_id]).to_dicts() == [{"feature_id": 3, "verdict": "accept", "p": True}]
        before = count()
        for kwargs, words in (({"feature_id": n_features, "verdict": "reject"}, f"has no feature {n_features}"),
                              ({"feature_id": -1, "verdict": "reject"}, "has no feature -1"),
                              ({"feature_id": 0, "verdict": "reject", "sae_id": 77}, "not an SAE of run 1"),
                              ({"feature_id": 0, "accept": 40}, "has no suggestion 40")):
            kwargs = {"sae_id": 1, **kwargs}
            with pytest.raises(Exception, match=words):
                label_feature(db, 1, kwargs.pop("feature_id"), **kwargs)
        assert count() == before
        freeze_labels(db, 1)
        with pytest.raises(InputError, match="labels were frozen"):
            label_feature(db, 1, 4, sae_id=1, verdict="reject")
        assert count() == before
