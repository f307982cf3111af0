"""Causal ablation in validation (engine.validation.ablation) on a trained sample: a planted label's
feature is necessary and a distractor label's is not, the readout never sees the test split, a run without a
'final' checkpoint stores NULL with the reason, `mini validate` shows the figure, and an older database gets
the columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.analysis.predicates import parse_predicate
from engine.epochs import resolve_epoch
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import RunSpec, train_run
from engine.sae.config import SAEConfig
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
from engine.validation.validation_text import p_text
from sample_data import SampleConfig, generate
from store import Store
from store.migrations import MIGRATIONS
from store.runs import get_run
from tests.conftest import run_cli, store_copy

FAST = ValidateConfig(n_bootstrap=200, n_shifts=99, n_random_subsets=40, cv_folds=3)
NEW_COLUMNS = ["reconstruction_decode", "necessity_drop", "necessity_null_p95", "necessity_p", "n_ablation_null",
               "necessary", "signature_ablation_drop", "signature_ablation_null_p95", "signature_ablation_p",
               "n_signature_ablation_null", "signature_necessary", "ablation_note"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run on 20,000 bins × 60 units with 8 conditions (the sample's planted ensembles), 128 latents: over 100
    live features, so the null has its 100 draws (p's floor 1/101), and k = 4, so a condition's ensemble is
    carried by one or two features rather than spread over many (with 4 conditions, 64 latents and k 3, one
    condition's feature was not necessary: others carried it too; the demo's SAE, 512 latents and 8 conditions on
    60,000 bins, gives drops of 0.1-0.25 at p < 0.0099)."""
    folder = tmp_path_factory.mktemp("ablation")
    counts, meta_path = generate(SampleConfig(n_bins=20_000, n_units=60, n_conditions=8, seed=3)).write(
        folder / "data")
    db = Store.open(folder / "a.duckdb")
    import_files(db, counts, meta_path, ImportOptions(name="s", bin_size_s=0.05))
    spec = RunSpec(dataset="s", sae=SAEConfig(architecture="batchtopk", d_sae=128), ks=(4,), instances=1,
                   train=TrainConfig(epochs=8, batch_size=512))
    train_run(db, spec)
    db.close()
    return folder / "a.duckdb"


@pytest.fixture
def db(trained, tmp_path):
    with store_copy(trained, tmp_path) as store:
        yield store


def _condition_features(db: Store, n: int) -> list[tuple[int, str]]:
    """The n features (each of its own condition) whose train + val activation lies most in one condition: the
    planted ensembles' features, picked as a labeller would, without the test split."""
    rows = db.frame(
        "WITH a AS (SELECT a.feature_id, a.value, n.category AS c FROM activations a"
        " JOIN examples e ON e.example_id = a.example_id AND e.split IN ('train', 'val')"
        " JOIN natural_values n ON n.example_id = a.example_id AND n.variable = 'condition' WHERE a.sae_id = 1),"
        " s AS (SELECT feature_id, c, sum(value) / sum(sum(value)) OVER (PARTITION BY feature_id) AS share,"
        " count(*) AS n FROM a GROUP BY feature_id, c)"
        " SELECT feature_id, c, share FROM s WHERE n >= 50 ORDER BY share DESC, feature_id").rows()
    out: dict[str, int] = {}
    for feature, value, _ in rows:
        if feature not in out.values():
            out.setdefault(str(value), int(feature))
    assert len(out) >= n and rows[0][2] > 0.8, rows[:10]
    return [(feature, value) for value, feature in list(out.items())[:n]]


def _condition_feature(db: Store) -> tuple[int, str]:
    return _condition_features(db, 1)[0]


def _latest(db: Store, feature: int) -> dict:
    return db.frame("SELECT * FROM current_validations WHERE feature_id = ? ORDER BY validation_id DESC LIMIT 1",
                    [feature]).to_dicts()[0]


def test_planted_features_are_necessary_and_a_distractor_label_is_not(db):
    planted = _condition_features(db, 2)
    for feature, value in planted:
        label_feature(db, 1, feature, name="cond", predicate=f"condition = {value}")
    validate_run(db, 1, FAST, n_jobs=1)
    for feature, value in planted:
        good = _latest(db, feature)
        assert good["predicate"] == f"condition = {value}"
        assert good["reconstruction_decode"] > 0.7
        # Zeroing the feature's code costs the readout more than all but at most one of the 100 live features of
        # nearest density (p ≤ 2/101), and zeroing its signature units more than nearly any random units.
        assert good["necessary"] and good["necessity_drop"] > good["necessity_null_p95"] > 0
        assert good["necessity_p"] <= 0.02 and good["n_ablation_null"] == 100, good
        assert good["signature_ablation_drop"] is not None and good["ablation_note"] is None
        assert good["signature_necessary"] and good["signature_ablation_p"] <= 0.02, good
        assert good["n_signature_ablation_null"] == 100
        # The necessity figure is a third one: the two verdicts are those of the co-occurrence and the decoders.
        assert good["generalises"] and good["validated"]
    # house_light is a distractor no unit encodes: nothing in the reconstruction reads it, nothing is lost, by
    # zeroing the feature or its signature units.
    feature = planted[0][0]
    label_feature(db, 1, feature, name="wrong", predicate="house_light = 1")
    validate_run(db, 1, FAST, n_jobs=1)
    bad = _latest(db, feature)
    assert bad["predicate"] == "house_light = 1"
    assert bad["necessary"] is False and bad["necessity_p"] > 0.05
    assert bad["necessity_drop"] <= bad["necessity_null_p95"]
    assert bad["signature_necessary"] is False and bad["signature_ablation_p"] > 0.05


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
    p = p_text(stored["necessity_p"], stored["n_ablation_null"])
    assert stored["necessity_p"] <= 0.02 and f"✓ {stored['necessity_drop']:.3f} (p {p})" in row, result.stdout
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
    split, present, _, test, rows, material, _ = _one_label_inputs(db, feature, f"condition = {value}")
    first: dict = {}
    before, _ = necessity(material, feature, rows, test, present, split.trials, FAST, first)
    test_rows = np.flatnonzero(test)
    order = np.arange(material.code.shape[0])
    order[test_rows] = np.random.default_rng(0).permutation(test_rows)
    scrambled = SAEMaterial(material.code[order], material.decoder, material.density, material.dead)
    second: dict = {}
    after, _ = necessity(scrambled, feature, rows, test, present, split.trials, FAST, second)
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
    assert row["n_signature_ablation_null"] is None
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
        assert db.scalar("SELECT max(version) FROM schema_version") == MIGRATIONS[-1].version
        columns = [r[0] for r in db.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'current_validations'"
            " ORDER BY ordinal_position").fetchall()]
        row = db.frame("SELECT * FROM current_validations").to_dicts()
    assert columns[-len(NEW_COLUMNS):] == NEW_COLUMNS
    assert len(row) == 1 and row[0]["mcc"] == 0.4 and all(row[0][c] is None for c in NEW_COLUMNS)


def _test_encoding(db: Store, split) -> tuple:
    from engine.validation.ablation import encode_test, final_stack_state, load_final
    from store.runs import load_checkpoint

    state, _ = final_stack_state(load_final(load_checkpoint(db, 1, "final")[2]), 0)
    test_rows = np.flatnonzero(split.test)
    return encode_test(state, test_rows, split.counts[test_rows]), state


def test_the_test_encoding_selects_the_stored_code(db):
    """The test bins' pre-activations, selected by the stack's inference rule, give back exactly the code
    mini train stored for them (engine.run_results.encode_all): the ablations encode as the pipeline does."""
    from engine.validation.ablation import select_values

    feature, value = _condition_feature(db)
    split, *_, material, _ = _one_label_inputs(db, feature, f"condition = {value}")
    encoding, _ = _test_encoding(db, split)
    assert encoding.floor is not None and encoding.floor > 0  # BatchTopK: the running inference threshold
    stored = material.code[encoding.rows].toarray()
    selected = select_values(encoding.pre, encoding.floor, encoding.k)
    assert (stored != 0).sum() > 0.5 * 6 * len(stored)
    assert np.mean((selected != 0) == (stored != 0)) > 0.9999
    np.testing.assert_allclose(selected, stored, atol=1e-4)


def test_top_k_selection_is_the_stacks():
    """select_values's top-k rule (bins × d_sae in numpy) picks what SAEStack.encode picks for a top-k SAE."""
    import torch

    from engine.sae.model import SAEConfig, SAEStack
    from engine.validation.ablation import select_values

    torch.manual_seed(0)
    stack = SAEStack(SAEConfig(architecture="topk", d_sae=48, ks=(5,)), 20, (0,))
    x = torch.rand(300, 20) * 3
    code = stack.encode(x)
    expected = np.zeros((300, 48), dtype=np.float32)
    expected[code.row.numpy(), code.latent.numpy()] = code.value.numpy()
    got = select_values(stack.pre_activations(x)[0].numpy(), None, 5)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert ((got > 0).sum(axis=1) <= 5).all() and (got > 0).sum() > 3 * 300


def test_the_shortcut_scores_equal_a_fresh_encode_of_the_zeroed_input(db):
    """Signature-unit ablation updates pre-activations instead of encoding again: for random unit subsets its
    scores are those of SAEStack.encode on the input with those units zeroed, reconstructed and read."""
    from dataclasses import replace

    import torch

    from engine.sae.model import SAEConfig, SAEStack
    from engine.validation.ablation import ablated_scores, code_scores, fit_readout, reconstruct

    feature, value = _condition_feature(db)
    split, present, _, _, rows, material, _ = _one_label_inputs(db, feature, f"condition = {value}")
    readout = fit_readout(reconstruct(material.code[rows], material.decoder), present[rows], split.trials[rows], FAST)
    encoding, state = _test_encoding(db, split)
    stack = SAEStack(replace(SAEConfig(**state["sae"]), ks=(encoding.k,)), encoding.counts.shape[1], (0,),
                     input_scale=state["model"]["scale"])
    stack.load_state_dict(state["model"])
    stack.eval()
    effects = (material.decoder.astype(np.float64) @ readout.weights)[:, None].astype(np.float32)
    intercepts = np.array([readout.intercept])
    whole = code_scores(encoding, encoding.pre, effects, intercepts)
    rng = np.random.default_rng(1)
    for size in (1, 4, 12, 30):
        units = np.sort(rng.choice(encoding.counts.shape[1], size, replace=False))
        shortcut = ablated_scores(encoding, units, effects, intercepts, whole)[:, 0]
        zeroed = encoding.counts.copy()
        zeroed[:, units] = 0
        code = stack.encode(torch.from_numpy(zeroed), use_threshold=True)
        fresh = np.zeros((len(zeroed), material.decoder.shape[0]), dtype=np.float32)
        fresh[code.row.numpy(), code.latent.numpy()] = code.value.numpy()
        expected = readout.score(fresh @ material.decoder)
        assert np.mean(np.abs(shortcut - expected) < 1e-3) > 0.999  # float32 rounding at the threshold
        assert np.mean(np.sign(shortcut) == np.sign(expected)) > 0.999
    assert not np.allclose(shortcut, whole[:, 0])  # zeroing 30 units changes the scores
