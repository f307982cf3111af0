"""validate_run and mini report end to end on a trained, ranked sample: a planted pairing validates, a
shuffled or distractor pairing does not, the threshold never sees test data, results do not depend on
the number of workers, and the report holds every labelled feature."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.analysis.rank import rank_run
from engine.errors import Cancelled
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import RunSpec, train_run
from engine.sae.config import SAEConfig
from engine.sae.train import TrainConfig
from engine.validation.labels import label_feature
from engine.validation.validate import ValidateConfig
from engine.validation.validate_run import validate_run
from sample_data import SampleConfig, generate
from store import Store
from tests.conftest import run_cli, store_copy

FAST = ValidateConfig(n_bootstrap=300, n_shifts=99, n_random_subsets=40, cv_folds=3)
FEWEST_DRAWS = ValidateConfig(n_bootstrap=50, n_shifts=19, n_random_subsets=10, n_tuning_subsets=1, n_ablation_null=10,
                              cv_folds=2)
"""For checks that compare validations or read what they store, and assert no verdict: every kind of random draw
and fit still made, fewer of each (the decoders' cross-validation is most of a validation's time)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A ranked run on 20,000 bins × 60 units with 4 conditions and a trial-shuffled copy of condition."""
    folder = tmp_path_factory.mktemp("validate_run")
    recording = generate(SampleConfig(n_bins=20_000, n_units=60, n_conditions=4, seed=3))
    meta = recording.metadata
    trial_condition = meta.group_by("trial", maintain_order=True).agg(pl.col("condition").drop_nulls().first())
    shuffled = trial_condition.with_columns(
        pl.col("condition").shuffle(seed=5).alias("condition_shuffled")).drop("condition")
    # Trial-level shuffle: each trial gets another trial's condition, in force where the real one is.
    recording.metadata = meta.join(shuffled, on="trial", how="left").with_columns(
        pl.when(pl.col("condition").is_null()).then(None).otherwise(pl.col("condition_shuffled"))
        .alias("condition_shuffled"))
    counts, meta_path = recording.write(folder / "data")
    db = Store.open(folder / "v.duckdb")
    import_files(db, counts, meta_path, ImportOptions(name="s", bin_size_s=0.05))
    spec = RunSpec(dataset="s", sae=SAEConfig(architecture="batchtopk", d_sae=64), ks=(6,), instances=1,
                   train=TrainConfig(epochs=8, batch_size=512))
    run_id = train_run(db, spec).run_id
    rank_run(db, run_id)
    db.close()
    return folder / "v.duckdb"


@pytest.fixture
def db(trained, tmp_path):
    with store_copy(trained, tmp_path) as store:
        yield store


def _condition_feature(db: Store) -> tuple[int, str]:
    row = db.frame("SELECT r.feature_id, s.value FROM rankings r JOIN suggestions s USING (sae_id, feature_id)"
                   " WHERE s.position = 1 AND s.variable = 'condition' ORDER BY r.rank LIMIT 1").row(0)
    return int(row[0]), str(row[1])


def _validation(db: Store, feature: int) -> dict:
    return db.frame("SELECT * FROM current_validations WHERE feature_id = ? ORDER BY validation_id DESC LIMIT 1",
                    [feature]).to_dicts()[0]


def test_planted_pairing_validates_shuffled_and_distractor_do_not(db):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    assert validate_run(db, 1, FAST, n_jobs=1).n_validated == 1
    good = _validation(db, feature)
    # The best-ranked condition feature is now chosen by its selectivity index, which favours a sparse part of
    # the condition's ensemble (active in a share of the condition's bins: lower recall, hence MCC ~0.4) over
    # the dense feature that 2·AUROC − 1 favoured (MCC > 0.5).
    assert good["validated"] and good["mcc"] > 0.3 and good["decode_signature"] > good["decode_random_p95"]
    for wrong in (f"condition_shuffled = {value}", "house_light = 1"):
        label_feature(db, 1, feature, name="wrong", predicate=wrong)
        assert validate_run(db, 1, FAST, n_jobs=1).n_validated == 0
        bad = _validation(db, feature)
        assert bad["validated"] is False and bad["generalises"] is False and bad["predicate"] == wrong
        # Undefined (NaN: the feature never on above the train + val threshold in a resample) counts as not above.
        assert not bad["mcc_ci_low"] > 0.15 and bad["reason"].startswith("does not generalise")


def test_stored_coactivation_is_the_mean_z_scored_count_while_the_feature_is_on(db):
    """Each unit's coactivation in signatures, recomputed here from the stored rows: its count z-scored over
    every train + val bin (a unit that never varies keeps its deviation of 1), averaged over the train + val
    bins where the predicate's variable has a value and the feature is above the stored threshold."""
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    validate_run(db, 1, FAST, n_jobs=1)
    validation = _validation(db, feature)
    examples = db.frame("SELECT example_id, split FROM examples ORDER BY example_id")
    n_examples, n_units = examples.height, int(db.scalar("SELECT max(unit_id) + 1 FROM counts"))
    counts = np.zeros((n_examples, n_units))
    stored = db.frame("SELECT example_id, unit_id, value FROM counts")
    counts[stored["example_id"].to_numpy(), stored["unit_id"].to_numpy()] = stored["value"].to_numpy()
    activation = np.zeros(n_examples)
    active = db.frame("SELECT example_id, value FROM activations WHERE sae_id = ? AND feature_id = ?",
                      [validation["sae_id"], feature])
    activation[active["example_id"].to_numpy()] = active["value"].to_numpy()
    measured = np.zeros(n_examples, dtype=bool)
    measured[db.frame("SELECT example_id FROM natural_values WHERE variable = 'condition' AND category IS NOT NULL"
                      )["example_id"].to_numpy()] = True
    fit = examples["split"].is_in(["train", "val"]).to_numpy()
    on = fit & measured & (activation > validation["threshold"])
    assert 0 < on.sum() < fit.sum()
    sd = counts[fit].std(axis=0)
    expected = (counts[on].mean(axis=0) - counts[fit].mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    signature = db.frame("SELECT unit_id, coactivation FROM signatures WHERE label_id = ? ORDER BY unit_id",
                         [validation["label_id"]])
    assert signature["unit_id"].to_list() == list(range(n_units))
    np.testing.assert_allclose(signature["coactivation"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert expected.max() > 0.5  # the condition's units fire with the feature: a profile worth checking


def test_threshold_ignores_test_activations(db):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=1)  # the threshold and test counts use no random draw
    before = _validation(db, feature)
    # Change only the test split's activations of this feature: scale them up and switch on new ones.
    test_ids = db.frame("SELECT example_id FROM examples WHERE split = 'test'")["example_id"].to_numpy()
    with db.transaction():
        db.con.execute("UPDATE activations SET value = value * 7 + 3 WHERE feature_id = ? AND example_id IN"
                       " (SELECT example_id FROM examples WHERE split = 'test')", [feature])
        db.con.execute("INSERT INTO activations BY NAME SELECT sae_id, ?::INTEGER AS feature_id, example_id,"
                       " 0.01::REAL AS value FROM (SELECT DISTINCT sae_id,"
                       " example_id FROM activations WHERE example_id IN (SELECT unnest(?::INTEGER[])))"
                       " WHERE example_id NOT IN (SELECT example_id FROM activations WHERE feature_id = ?)",
                       [feature, test_ids[::5].tolist(), feature])
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=1)
    after = _validation(db, feature)
    assert after["threshold"] == before["threshold"]
    assert (after["tp"], after["fp"]) != (before["tp"], before["fp"])  # the test counts did change


def test_results_do_not_depend_on_workers(db):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    others = db.frame("SELECT feature_id FROM rankings WHERE feature_id <> ? ORDER BY rank LIMIT 2", [feature])
    for other, predicate in zip(others["feature_id"], ("condition = 0", "speed in [20, inf)"), strict=True):
        label_feature(db, 1, int(other), name="other", predicate=predicate)
    columns = "feature_id, threshold, tp, fp, mcc, mcc_ci_low, p_value, q_value, decode_signature, " \
              "decode_all, decode_random_p95, validated"
    # Serial and parallel must agree draw for draw, however many draws: a worker's seed or order that leaked
    # into a result would change it at any size, so the fewest draws (of every kind) show it.
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=1)
    serial = db.frame(f"SELECT {columns} FROM current_validations ORDER BY feature_id")
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=2)
    parallel = db.frame(f"SELECT {columns} FROM current_validations ORDER BY feature_id")
    assert serial.height == 3
    assert serial.equals(parallel)


def test_report_holds_every_labelled_feature_and_its_tables(trained, tmp_path):
    path = tmp_path / "r.duckdb"
    shutil.copy(trained, path)
    db = Store.open(path)
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}", note='a "quoted" note 🐭')
    top = db.frame("SELECT feature_id FROM rankings WHERE feature_id <> ? ORDER BY rank LIMIT 3", [feature])
    ids = [int(f) for f in top["feature_id"]]
    label_feature(db, 1, ids[0], name="just words")  # accepted, no predicate: not testable
    label_feature(db, 1, ids[1], verdict="reject")
    label_feature(db, 1, ids[2], verdict="unsure")
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=1)  # the report's content is checked, not the verdicts
    db.close()
    result = run_cli("report", "--run", "1", "--out", "out/report.md", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no such folder" in result.stderr
    (tmp_path / "out").mkdir()
    result = run_cli("report", "--run", "1", "--out", "out/report.md", "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "report.md").read_text()
    for f in [feature, *ids]:
        assert f"| 1 | {f} |" in text  # every labelled feature is in the labelled-features table
    assert f"### SAE 1 · feature {feature}: condition = {value}" in text
    assert f"### SAE 1 · feature {ids[0]}: just words" in text and "not testable" in text
    assert 'a "quoted" note 🐭' in text and "◀" in text and "| feature on |" in text
    for heading in ("## Dataset", "## SAE settings", "## Quality", "## Ranked features", "## Validations"):
        assert heading in text
    tables = tmp_path / "out" / "report_tables"
    validations = pl.read_csv(tables / "validations.csv")
    assert sorted(validations["feature_id"]) == sorted([feature, ids[0]])
    assert pl.read_csv(tables / "current_labels.csv").height == 4
    assert pl.read_csv(tables / "labels.csv").height == 4
    signature = pl.read_csv(tables / "signatures.csv")
    assert signature.filter(pl.col("in_signature"))["feature_id"].unique().to_list() == [feature]
    result = run_cli("report", "--run", "1", "--out", "out/p.md", "--tables", "parquet", "--db", str(path),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(tmp_path / "out" / "p_tables" / "rankings.parquet").height == 64
    assert np.isfinite(pl.read_parquet(tmp_path / "out" / "p_tables" / "qc.parquet")["fvu"].to_numpy()).all()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_cancelled_validation_stops_after_a_group_and_stores_nothing(db, n_jobs):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    validate_run(db, 1, FEWEST_DRAWS, n_jobs=1)  # what the cancelled one must leave as it was
    before = db.frame("SELECT label_id, mcc, created_at FROM validations ORDER BY label_id")
    others = db.frame("SELECT feature_id FROM rankings WHERE feature_id <> ? ORDER BY rank LIMIT 3", [feature])
    for other, predicate in zip(others["feature_id"], ("condition = 0", "speed in [20, inf)", "house_light = 1"),
                                strict=True):
        label_feature(db, 1, int(other), name="other", predicate=predicate)
    cancel, progress = threading.Event(), []

    def report(text: str) -> None:
        progress.append(text)
        cancel.set()  # the person presses c as soon as the first progress line shows

    with pytest.raises(Cancelled, match=r"validation of run 1 cancelled after \d of 4 labels; nothing was stored"):
        validate_run(db, 1, FEWEST_DRAWS, report=report, n_jobs=n_jobs, cancel=cancel)
    assert len(progress) == 1  # the start line only: no group's result was reported after the cancel
    assert db.frame("SELECT label_id, mcc, created_at FROM validations ORDER BY label_id").equals(before)


def test_every_attempt_counts_in_the_family(db):
    """Relabelling until a label passes leaves the failed attempt stored and in the correction; repeating the
    same test is not a new attempt; undo shows the earlier label's own attempt again."""
    from engine.analysis.nulls import benjamini_hochberg
    from store.labels import undo_label

    feature, value = _condition_feature(db)
    first = label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    one = validate_run(db, 1, FAST, n_jobs=1)
    assert (one.n_labels, one.n_generalise, one.n_family) == (1, 1, 1)
    second = label_feature(db, 1, feature, name="light", predicate="house_light = 1")
    two = validate_run(db, 1, FAST, n_jobs=1)
    assert (two.n_labels, two.n_generalise, two.n_family) == (1, 0, 2)
    rows = db.frame("SELECT label_id, attempt, p_value, q_value, generalises FROM validations ORDER BY validation_id")
    assert rows["label_id"].to_list() == [first, second] and rows["attempt"].to_list() == [1, 2]
    # Both tests are one family: each q is Benjamini–Hochberg over the two p-values, the passing one included.
    np.testing.assert_allclose(rows["q_value"].to_numpy(), benjamini_hochberg(rows["p_value"].to_numpy()))
    # The same test again: a new row, the same attempt number, the same family.
    three = validate_run(db, 1, FAST, n_jobs=1)
    assert three.n_family == 2
    assert db.frame("SELECT attempt FROM validations ORDER BY validation_id")["attempt"].to_list() == [1, 2, 2]
    # Undo the relabelling: the feature's current label is the first again, and it shows its own attempt.
    undo_label(db, second)
    shown = db.frame("SELECT label_id, attempt, generalises FROM current_validations v JOIN current_labels c"
                     " USING (label_id)").to_dicts()
    assert shown == [{"label_id": first, "attempt": 1, "generalises": True}]


def test_a_label_that_cannot_be_scored_on_test_says_why(db):
    feature, _ = _condition_feature(db)
    label_feature(db, 1, feature, name="never", predicate="speed in [1000000, inf)")
    outcome = validate_run(db, 1, FAST, n_jobs=1)
    assert (outcome.n_labels, outcome.n_testable, outcome.n_family) == (1, 0, 0)
    row = _validation(db, feature)
    assert row["testable"] is False and row["mcc"] is None and row["q_value"] is None
    assert row["reason"].startswith("not testable: speed in [1000000, inf) never holds on test (")
