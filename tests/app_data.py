"""A small but complete mini database for the app's tests: a dataset, a trained run of two SAEs,
its ranking, a few accepted labels and their validations, all made by the real pipeline.

Times and durations are set to fixed values afterwards so that snapshots of the screens do not change
from one build to the next. Built once per test session (tests copy the file before writing to it).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from engine.analysis.rank import rank_run
from engine.demo import auto_accept_top
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import RunSpec, train_run
from engine.sae.config import SAEConfig
from engine.sae.train import TrainConfig
from engine.validation.validate import ValidateConfig
from engine.validation.validate_run import validate_run
from sample_data import SampleConfig, generate
from store import Store

APP_SAMPLE = SampleConfig(n_bins=8000, n_units=40, n_conditions=4, seed=1)
APP_RUN = RunSpec(dataset="sample", sae=SAEConfig(architecture="batchtopk", d_sae=64), ks=(4,), instances=2,
                  train=TrainConfig(epochs=4, batch_size=512))
APP_LABELS = 6
"""Top features of the first SAE whose first suggestion is accepted (source 'auto') and validated."""
APP_VALIDATE = ValidateConfig(n_bootstrap=200, n_shifts=49, n_random_subsets=20, cv_folds=3)
FIXED_TIME = "2026-01-02 03:04:05"


def build_app_database(folder: Path) -> Path:
    """Write app.duckdb (and the sample's files) into folder; returns the database path."""
    path = folder / "app.duckdb"
    recording = generate(APP_SAMPLE)
    counts, meta = recording.write(folder / "data")
    with Store.open(path) as db:
        import_files(db, counts, meta, ImportOptions(name="sample", bin_size_s=APP_SAMPLE.bin_size_s))
        run_id = train_run(db, APP_RUN).run_id
        rank_run(db, run_id)
        auto_accept_top(db, run_id, APP_LABELS)
        validate_run(db, run_id, APP_VALIDATE, n_jobs=1)
        with db.transaction():
            db.con.execute("UPDATE datasets SET created_at = ?, source = 'data/counts.npz + data/metadata.parquet'",
                           [FIXED_TIME])
            db.con.execute("UPDATE runs SET started_at = ?, finished_at = ?, seconds = 12.5, device = 'cpu'",
                           [FIXED_TIME, FIXED_TIME])
            for table in ("labels", "validations", "checkpoints"):
                db.con.execute(f"UPDATE {table} SET created_at = ?", [FIXED_TIME])
    return path


def copy_database(template: Path, folder: Path, name: str = "app.duckdb") -> Path:
    target = folder / name
    shutil.copy(template, target)
    return target


LOUD_UNIT = "loud"
"""The unit of the flagged recording that holds most of the variance (as multi-unit noise would)."""


def write_flagged_recording(folder: Path, n_bins: int = 3000, n_units: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Counts and metadata of a small recording whose unit `loud` fires at 40 per bin against 1 for the
    rest, so it holds ~85 % of the variance: `mini import` flags it (unit_dominates_variance)."""
    rng = np.random.default_rng(seed)
    rates = np.full(n_units, 1.0)
    rates[0] = 40.0
    counts = rng.poisson(rates, size=(n_bins, n_units)).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    counts_path, meta_path = folder / "loud.npz", folder / "loud_meta.csv"
    np.savez(counts_path, counts=counts, unit_names=np.array([LOUD_UNIT, *(f"u{i}" for i in range(1, n_units))]))
    pl.DataFrame({"trial": np.arange(n_bins) // 50, "time_s": np.arange(n_bins) * 0.05,
                  "condition": (np.arange(n_bins) // 50) % 3}).write_csv(meta_path)
    return counts_path, meta_path


class SplitVerdicts(NamedTuple):
    """What `split_verdicts` made of the app database's validations (feature ids of SAE 1)."""

    general: int
    """Generalises, signature not specific, at attempt 2 on every bin (attempt 1 of the same label, on the
    epoch `speed > 2`, failed both); p at the floor of 199 shifts."""
    both: int
    """Generalises and signature-specific (validated), with only 6 test trials behind its intervals."""
    duplicate: int
    """Repeats `general`'s predicate more weakly: duplicate_of names `general`'s label."""


def split_verdicts(path: Path) -> SplitVerdicts:
    """Rewrite the stored verdicts of the app database so that the two split, as the lead's engine stores
    them: one label generalises without a specific signature (its second attempt, the failed first kept),
    one holds both on only 6 test trials, and a weaker label of another feature repeats the first's
    predicate. The figures behind the verdicts are set to agree with them."""
    with Store.open(path) as db:
        rows = db.frame("SELECT label_id, feature_id, predicate FROM current_validations ORDER BY feature_id")
        by_predicate: dict[str, list[tuple[int, int]]] = {}
        for label_id, feature_id, predicate in rows.iter_rows():
            by_predicate.setdefault(predicate, []).append((label_id, feature_id))
        (general_label, general), (duplicate_label, duplicate) = next(
            pairs[:2] for pairs in by_predicate.values() if len(pairs) >= 2)
        both_label, both = next(pair for pairs in by_predicate.values() for pair in pairs
                                if pair[1] not in (general, duplicate))
        with db.transaction():
            db.con.execute("UPDATE validations SET generalises = false, signature_specific = false,"
                           " validated = false, duplicate_of = NULL, n_test_trials = 24, n_shifts = 199, attempt = 1")
            # The general label's first attempt (on another epoch) failed; its second, on every bin, generalises.
            db.con.execute("UPDATE validations SET mcc = 0.05, mcc_ci_low = -0.02, p_value = 0.3, q_value = 0.4,"
                           " where_sql = 'speed > 2', reason = 'does not generalise: MCC interval reaches 0'"
                           " WHERE label_id = ?", [general_label])
            db.con.execute(
                "INSERT INTO validations BY NAME SELECT * EXCLUDE (validation_id, attempt, mcc, mcc_ci_low,"
                " mcc_ci_high, p_value, q_value, generalises, signature_specific, validated, decode_signature,"
                " decode_random_p95, reason, where_sql), NULL AS where_sql, 2 AS attempt, 0.62 AS mcc, 0.51 AS mcc_ci_low, 0.71 AS mcc_ci_high,"
                " 1 / 200 AS p_value, 0.012 AS q_value, true AS generalises, false AS signature_specific,"
                " false AS validated, 0.80 AS decode_signature, 0.85 AS decode_random_p95,"
                " 'generalises; signature not specific' AS reason FROM validations WHERE label_id = ?",
                [general_label])
            db.con.execute("UPDATE validations SET generalises = true, signature_specific = true, validated = true,"
                           " n_test_trials = 6, mcc = 0.55, mcc_ci_low = 0.40, mcc_ci_high = 0.66, p_value = 0.01,"
                           " q_value = 0.03, decode_signature = 0.9, decode_random_p95 = 0.8,"
                           " reason = 'generalises; signature-specific' WHERE label_id = ?", [both_label])
            db.con.execute("UPDATE validations SET duplicate_of = ?, mcc = 0.2, mcc_ci_low = 0.1, mcc_ci_high = 0.3,"
                           " reason = 'weaker duplicate' WHERE label_id = ?", [general_label, duplicate_label])
    return SplitVerdicts(general, both, duplicate)
