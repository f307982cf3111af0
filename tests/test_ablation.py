"""Causal ablation in validation (engine.validation.ablation) on a trained, ranked sample: a planted label's
feature is necessary and a distractor label's is not, the readout never sees the test split, a run without a
'final' checkpoint stores NULL with the reason, `mini validate` shows the figure, and an older database gets
the columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.analysis.predicates import parse_predicate
from engine.analysis.rank import rank_run
from engine.epochs import resolve_epoch
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import RunSpec, train_run
from engine.sae.model import SAEConfig
from engine.sae.train import TrainConfig
from engine.validation.ablation import SAEMaterial, necessity
from engine.validation.labels import label_feature
from engine.validation.validate import ValidateConfig, fit_rows, signature_units
from engine.validation.validate_run import (
    _ablation_materials,
    _read_split,
    _values_of,
    predicate_target,
    validate_run,
)
from sample_data import SampleConfig, generate
from store import Store
from store.migrations import MIGRATIONS
from store.runs import get_run
from tests.conftest import run_cli

FAST = ValidateConfig(n_bootstrap=200, n_shifts=99, n_random_subsets=40, cv_folds=3)
NEW_COLUMNS = ["reconstruction_decode", "necessity_drop", "necessity_null_p95", "necessity_p", "n_ablation_null",
               "necessary", "signature_ablation_drop", "signature_ablation_null_p95", "signature_ablation_p",
               "signature_necessary", "ablation_note"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A ranked run on 20,000 bins × 60 units with 4 conditions (the sample's planted ensembles)."""
    folder = tmp_path_factory.mktemp("ablation")
    counts, meta_path = generate(SampleConfig(n_bins=20_000, n_units=60, n_conditions=4, seed=3)).write(
        folder / "data")
    db = Store.open(folder / "a.duckdb")
    import_files(db, counts, meta_path, ImportOptions(name="s", bin_size_s=0.05))
    spec = RunSpec(dataset="s", sae=SAEConfig(architecture="batchtopk", d_sae=64), ks=(6,), instances=1,
                   train=TrainConfig(epochs=8, batch_size=512))
    run_id = train_run(db, spec).run_id
    rank_run(db, run_id)
    db.close()
    return folder / "a.duckdb"


@pytest.fixture
def db(trained, tmp_path):
    path = tmp_path / "copy.duckdb"
    shutil.copy(trained, path)
    store = Store.open(path)
    yield store
    store.close()


def _condition_feature(db: Store) -> tuple[int, str]:
    row = db.frame("SELECT r.feature_id, s.value FROM rankings r JOIN suggestions s USING (sae_id, feature_id)"
                   " WHERE s.position = 1 AND s.variable = 'condition' ORDER BY r.rank LIMIT 1").row(0)
    return int(row[0]), str(row[1])


def _latest(db: Store, feature: int) -> dict:
    return db.frame("SELECT * FROM current_validations WHERE feature_id = ? ORDER BY validation_id DESC LIMIT 1",
                    [feature]).to_dicts()[0]


def test_planted_feature_is_necessary_and_a_distractor_label_is_not(db):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    validate_run(db, 1, FAST, n_jobs=1)
    good = _latest(db, feature)
    assert good["reconstruction_decode"] > 0.7
    # The sample plants each condition in an ensemble that several features share, so zeroing one of them costs
    # the readout little (0.004 here), but more than nearly every feature of its density (63 live ones in this
    # 64-latent SAE: p's floor is 1/64). Its signature units, zeroed in the input, cost far more (0.14).
    assert good["necessary"] and good["necessity_drop"] > good["necessity_null_p95"] > 0
    assert good["necessity_p"] <= 0.07 and good["n_ablation_null"] == 63
    assert good["signature_ablation_drop"] is not None and good["ablation_note"] is None
    assert good["signature_necessary"] and good["signature_ablation_p"] <= 0.05
    # The necessity figure is a third one: the two verdicts are those of the co-occurrence and the decoders.
    assert good["generalises"] and good["validated"]
    # house_light is a distractor no unit encodes: nothing in the reconstruction reads it, nothing is lost.
    label_feature(db, 1, feature, name="wrong", predicate="house_light = 1")
    validate_run(db, 1, FAST, n_jobs=1)
    bad = _latest(db, feature)
    assert bad["predicate"] == "house_light = 1"
    assert bad["necessary"] is False and bad["necessity_p"] > 0.05
    assert bad["necessity_drop"] <= bad["necessity_null_p95"]


def test_mini_validate_prints_the_necessity_beside_the_verdicts(trained, tmp_path):
    path = tmp_path / "cli.duckdb"
    shutil.copy(trained, path)
    with Store.open(path) as db:
        feature, value = _condition_feature(db)
        label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    result = run_cli("validate", "--run", "1", "--db", str(path), "--jobs", "1", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "necessary (drop, p)" in line)
    assert header.index("signature specific") < header.index("necessary (drop, p)")
    row = next(line for line in result.stdout.splitlines() if f"condition = {value}" in line)
    with Store.open(path, read_only=True) as db:
        stored = _latest(db, feature)
    assert f"✓ {stored['necessity_drop']:.3f} (p 0.062)" in row, result.stdout  # 4/64: 63 null features
    report = tmp_path / "report.md"
    assert run_cli("report", "--run", "1", "--db", str(path), "--out", str(report), cwd=tmp_path).returncode == 0
    assert "feature necessary: drop" in report.read_text()


def _one_label_inputs(db: Store, feature: int, predicate: str):
    run = get_run(db, 1)
    epoch, source, _ = resolve_epoch(db, 1, "validate", None)
    split, values, kinds, _ = _read_split(db, run, epoch, source)
    parsed = parse_predicate(predicate, kinds)
    present, measured = predicate_target(parsed, _values_of(values, parsed), kinds, len(split.trials))
    fit, test = split.fit & measured, split.test & measured
    rows = np.flatnonzero(fit)[fit_rows(int(fit.sum()), FAST)]
    material = _ablation_materials(db, 1, [1], len(split.trials), split.counts.shape[1])[1]
    decoder_row = material.decoder[feature]
    return split, present, fit, test, rows, material, signature_units(decoder_row, FAST.signature_share)


def test_the_test_split_never_informs_the_readout(db):
    """Scrambling the test bins' code (each test bin given another test bin's activations) leaves the readout's C
    and coefficients exactly as they were, while the test figures move: the test split is only scored."""
    feature, value = _condition_feature(db)
    split, present, _, test, rows, material, signature = _one_label_inputs(db, feature, f"condition = {value}")
    first: dict = {}
    before = necessity(material, feature, signature, rows, test, present, split.trials, split.counts, True, FAST,
                       first)
    test_rows = np.flatnonzero(test)
    order = np.arange(material.code.shape[0])
    order[test_rows] = np.random.default_rng(0).permutation(test_rows)
    scrambled = SAEMaterial(material.code[order], material.decoder, material.density, material.dead,
                            material.stack_state, material.no_stack_reason)
    second: dict = {}
    after = necessity(scrambled, feature, signature, rows, test, present, split.trials, split.counts, True, FAST,
                      second)
    assert first["readout"].param == second["readout"].param
    np.testing.assert_array_equal(first["readout"].coef, second["readout"].coef)
    assert after["reconstruction_decode"] < before["reconstruction_decode"] - 0.1  # the test bins did change


def test_a_run_without_a_final_checkpoint_gets_null_and_the_reason(db):
    feature, value = _condition_feature(db)
    label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    db.con.execute("DELETE FROM checkpoints WHERE kind = 'final'")
    validate_run(db, 1, FAST, n_jobs=1)
    row = _latest(db, feature)
    assert row["signature_ablation_drop"] is None and row["signature_ablation_p"] is None
    assert row["signature_necessary"] is None
    assert row["ablation_note"] == "no signature-unit ablation: run 1 has no 'final' checkpoint"
    assert row["necessary"] and row["necessity_drop"] is not None  # the feature ablation needs no checkpoint


def test_a_database_at_version_13_gets_the_ablation_columns_and_keeps_its_attempts(tmp_path):
    path = tmp_path / "v13.duckdb"
    at_13 = tuple(m for m in MIGRATIONS if m.version <= 13)
    assert at_13[-1].version == 13
    with Store.open(path, migrations=at_13) as db:
        db.con.execute("INSERT INTO validations (validation_id, attempt, label_id, sae_id, feature_id, testable, mcc)"
                       " VALUES (7, 1, 3, 1, 5, true, 0.4)")
    with Store.open(path) as db:
        assert db.scalar("SELECT max(version) FROM schema_version") == 14
        columns = [r[0] for r in db.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'current_validations'"
            " ORDER BY ordinal_position").fetchall()]
        row = db.frame("SELECT * FROM current_validations").to_dicts()
    assert columns[-len(NEW_COLUMNS):] == NEW_COLUMNS
    assert len(row) == 1 and row[0]["mcc"] == 0.4 and all(row[0][c] is None for c in NEW_COLUMNS)


def test_the_shortcut_scores_equal_a_fresh_encode_of_the_zeroed_input(db):
    """Signature-unit ablation updates pre-activations instead of encoding again: for random unit subsets its
    scores are those of SAEStack.encode on the input with those units zeroed, reconstructed and read."""
    import torch

    from engine.validation.ablation import _ablated_scores, _Encoder, fit_readout, reconstruct

    feature, value = _condition_feature(db)
    split, present, _, test, rows, material, _ = _one_label_inputs(db, feature, f"condition = {value}")
    readout = fit_readout(reconstruct(material.code[rows], material.decoder), present[rows], split.trials[rows], FAST)
    encoder = _Encoder(material.stack_state, nonnegative=True)
    x_test = split.counts[test].astype(np.float32)
    effect = material.decoder.astype(np.float64) @ readout.weights
    pre = encoder.pre_activations(x_test)
    whole = encoder.scores(pre, effect, readout.intercept)
    rng = np.random.default_rng(1)
    subsets = [np.sort(rng.choice(x_test.shape[1], size, replace=False)) for size in (1, 4, 12, 30)]
    shortcut = _ablated_scores(encoder, effect, readout.intercept, x_test, pre, whole, subsets)
    for i, units in enumerate(subsets):
        zeroed = x_test.copy()
        zeroed[:, units] = 0
        code = encoder.stack.encode(torch.from_numpy(zeroed), use_threshold=True)
        fresh = np.zeros((len(zeroed), material.decoder.shape[0]), dtype=np.float32)
        fresh[code.row.numpy(), code.latent.numpy()] = code.value.numpy()
        expected = readout.score(fresh @ material.decoder)
        assert np.mean(np.abs(shortcut[:, i] - expected) < 1e-3) > 0.999  # float32 rounding at the threshold
        assert np.mean(np.sign(shortcut[:, i]) == np.sign(expected)) > 0.999
    assert not np.allclose(shortcut[:, -1], whole)  # zeroing 30 units changes the scores
