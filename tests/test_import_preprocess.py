"""`mini import --smooth/--normalize`, values that are not whole counts (rates), constant and untestable
metadata columns: through the real CLI, read back from the real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from importer_cases import (
    BIN_S,
    N_TRIALS,
    PER_TRIAL,
    make_recording,
    run_import,
    table_row_counts,
    write_counts,
    write_meta,
)
from spike_cases import assert_refused, run_mini

from store import Store
from store.migrations import MIGRATIONS


def _dataset(db_path: Path, name: str) -> dict:
    with Store.open(db_path, read_only=True) as db:
        row = db.frame("SELECT * FROM datasets WHERE name = ?", [name]).row(0, named=True)
        counts = db.frame("SELECT c.example_id, c.unit_id, c.value FROM counts c JOIN datasets d USING (dataset_id) "
                          "WHERE d.name = ?", [name])
        units = db.frame("SELECT u.unit_id, u.mean_count, u.firing_rate_hz FROM units u JOIN datasets d "
                         "USING (dataset_id) WHERE d.name = ? ORDER BY unit_id", [name])
        variables = dict(db.frame("SELECT v.variable, v.kind FROM natural_variables v JOIN datasets d "
                                  "USING (dataset_id) WHERE d.name = ?", [name]).iter_rows())
    dense = np.zeros((row["n_examples"], row["n_units"]))
    dense[counts["example_id"].to_numpy(), counts["unit_id"].to_numpy()] = counts["value"].to_numpy()
    return {**row, "options": json.loads(row["options"]), "matrix": dense, "units": units, "variables": variables}


def _gaussian_mean(block: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Reference: each row is the Gaussian-weighted mean of the rows of its own block (kernel cut at
    4 σ, as scipy's, and renormalised to the rows that exist)."""
    radius = int(4 * sigma_bins + 0.5)
    out = np.empty_like(block, dtype=np.float64)
    for i in range(len(block)):
        rows = np.arange(max(0, i - radius), min(len(block), i + radius + 1))
        weights = np.exp(-0.5 * ((rows - i) / sigma_bins) ** 2)
        out[i] = weights @ block[rows] / weights.sum()
    return out


def test_smoothing_stays_within_trials_and_makes_rates(tmp_path: Path) -> None:
    rec = make_recording()
    counts = rec.counts.copy()
    counts[:, 0] = 0
    counts[PER_TRIAL - 1, 0] = 10  # last bin of trial 0, right at the boundary with trial 1
    write_counts(counts, tmp_path / "c.npy")
    write_meta(rec.meta, tmp_path / "m.csv")
    for name, extra in (("raw", ()), ("smooth", ("--smooth", "0.06"))):
        done = run_import("c.npy", "--meta", "m.csv", "--name", name, *extra, "--db", "x.duckdb", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    raw, smooth = _dataset(tmp_path / "x.duckdb", "raw"), _dataset(tmp_path / "x.duckdb", "smooth")

    sigma_bins = 0.06 / BIN_S
    for trial in range(N_TRIALS):
        rows = slice(trial * PER_TRIAL, (trial + 1) * PER_TRIAL)
        np.testing.assert_allclose(smooth["matrix"][rows], _gaussian_mean(counts[rows], sigma_bins), rtol=1e-5,
                                   atol=1e-6)
    # The spike at the end of trial 0 spreads back into trial 0 and never forward into trial 1.
    assert (smooth["matrix"][PER_TRIAL:, 0] == 0).all()
    assert 0 < smooth["matrix"][PER_TRIAL - 4, 0] < smooth["matrix"][PER_TRIAL - 1, 0] < 10
    assert raw["value_type"] == "counts" and raw["kind"] == "spike_counts"
    assert smooth["value_type"] == "rates" and smooth["kind"] == "spike_counts"
    assert "not whole numbers" in done.stderr and "value_type 'rates'" in done.stderr
    assert smooth["options"]["preprocess"] == {"smooth_s": 0.06, "normalize": "none", "within": "trials"}
    assert raw["options"]["preprocess"] == {"smooth_s": 0.0, "normalize": "none", "within": "trials"}
    # Firing rates are those of the counts as read, not of the smoothed values.
    np.testing.assert_allclose(smooth["units"]["firing_rate_hz"].to_numpy(), counts.mean(0) / BIN_S)

    info = run_mini("info", "--db", "x.duckdb", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    lines = {line.split()[1]: line for line in info.stdout.splitlines() if line.strip()[:1].isdigit()}
    assert "rates" in lines["smooth"].split() and "counts" in lines["raw"].split()


def test_zscore_makes_activations_per_unit_and_trial(tmp_path: Path) -> None:
    rec = make_recording()
    write_counts(rec.counts, tmp_path / "c.npy")
    write_meta(rec.meta, tmp_path / "m.csv")
    done = run_import("c.npy", "--meta", "m.csv", "--smooth", "0.04", "--normalize", "zscore", "--db", "x.duckdb",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the dataset's kind is 'activations'" in done.stderr
    z = _dataset(tmp_path / "x.duckdb", "c")
    assert z["kind"] == "activations" and z["value_type"] == "activations"
    assert z["options"]["preprocess"] == {"smooth_s": 0.04, "normalize": "zscore", "within": "trials"}
    for trial in range(N_TRIALS):
        rows = slice(trial * PER_TRIAL, (trial + 1) * PER_TRIAL)
        block = z["matrix"][rows]
        expected = _gaussian_mean(rec.counts[rows], 0.04 / BIN_S)
        expected = (expected - expected.mean(0)) / np.where(expected.std(0) > 0, expected.std(0), 1)
        np.testing.assert_allclose(block, expected, atol=1e-5)
        moving = block.std(0) > 0
        np.testing.assert_allclose(block[:, moving].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(block[:, moving].std(0), 1, atol=1e-4)


def test_without_a_trial_column_smoothing_stays_within_blocks_and_gaps(tmp_path: Path) -> None:
    rec = make_recording()
    counts = np.zeros_like(rec.counts)
    counts[49, 1] = 4  # the last row of block 0 of 4 (50 rows each)
    counts[119, 2] = 4  # the row before a gap in the time column, inside block 2
    times = np.arange(len(counts)) * BIN_S + np.where(np.arange(len(counts)) >= 120, 5.0, 0.0)
    meta = rec.meta.drop("trial").with_columns(pl.Series("time_s", np.round(times, 6)))
    write_counts(counts, tmp_path / "c.npy")
    write_meta(meta, tmp_path / "m.csv")
    done = run_import("c.npy", "--meta", "m.csv", "--blocks", "4", "--smooth", "0.1", "--db", "x.duckdb",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "does not bridge the 1 gap(s) in 'time_s'" in done.stderr
    d = _dataset(tmp_path / "x.duckdb", "c")
    assert d["options"]["preprocess"]["within"] == "blocks"
    assert d["matrix"][45:50, 1].min() > 0 and (d["matrix"][50:, 1] == 0).all()
    assert d["matrix"][115:120, 2].min() > 0 and (d["matrix"][120:, 2] == 0).all()


def test_counts_that_are_not_whole_numbers_are_rates(tmp_path: Path) -> None:
    rec = make_recording()
    write_counts(rec.counts.astype(np.float64), tmp_path / "whole.npy")
    rates = rec.counts * 0.5
    write_counts(rates, tmp_path / "half.npy")
    write_meta(rec.meta, tmp_path / "m.csv")
    whole = run_import("whole.npy", "--meta", "m.csv", "--db", "x.duckdb", cwd=tmp_path)
    assert whole.returncode == 0 and "rates" not in whole.stderr, whole.stderr
    half = run_import("half.npy", "--meta", "m.csv", "--db", "x.duckdb", cwd=tmp_path)
    assert half.returncode == 0, half.stderr
    row, col = np.argwhere(rates != np.round(rates))[0]
    note = next(line for line in half.stderr.splitlines() if "not whole numbers" in line)
    assert f"half.npy: values are not whole numbers (row {row}, unit 'unit_{col}' is {rates[row, col]:g})" in note
    assert "not spike counts" in note and "--loss poisson" in note
    assert _dataset(tmp_path / "x.duckdb", "whole")["value_type"] == "counts"
    assert _dataset(tmp_path / "x.duckdb", "half")["value_type"] == "rates"


def test_poisson_loss_is_refused_on_rates_and_runs_on_counts(tmp_path: Path) -> None:
    rec = make_recording()
    write_counts(rec.counts, tmp_path / "c.npy")
    write_meta(rec.meta, tmp_path / "m.csv")
    for extra in ((), ("--smooth", "0.04", "--name", "smoothed")):
        done = run_import("c.npy", "--meta", "m.csv", *extra, "--db", "x.duckdb", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    before = table_row_counts(tmp_path / "x.duckdb")
    train = ("train", "--loss", "poisson", "--d-sae", "8", "--k", "2", "--epochs", "1", "--db", "x.duckdb")
    refused = run_mini(*train, "--dataset", "smoothed", cwd=tmp_path)
    assert_refused(refused, ("--loss poisson", "'smoothed'", "rates", "whole spike counts", "--loss mse"))
    assert table_row_counts(tmp_path / "x.duckdb") == before  # no run row, nothing else
    # MSLE makes no Poisson assumption and trains on rates; Poisson trains on the whole counts.
    assert run_mini(*train[:2], "msle", *train[3:], "--dataset", "smoothed", cwd=tmp_path).returncode == 0
    done = run_mini(*train, "--dataset", "c", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_constant_columns_are_not_variables_and_unique_per_trial_ones_are_flagged(tmp_path: Path) -> None:
    rec = make_recording()
    trial = rec.meta["trial"]
    meta = rec.meta.with_columns(
        pl.lit(70.0).alias("experiment"),
        pl.lit("rig A").alias("rig"),
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.lit(3)).alias("gain"),
        ("clip_" + trial.cast(pl.String)).alias("clip"),
        (trial % 2).alias("parity"),
    )
    write_counts(rec.counts, tmp_path / "c.npy")
    write_meta(meta, tmp_path / "m.csv")
    done = run_import("c.npy", "--meta", "m.csv", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    d = _dataset(tmp_path / "x.duckdb", "c")
    assert not {"experiment", "rig", "gain"} & set(d["variables"])
    assert {"clip", "parity", "condition", "speed"} <= set(d["variables"])
    assert d["options"]["constant_columns"] == {"experiment": 70.0, "rig": "rig A", "gain": 3}
    assert "'experiment' is 70 in every row: a constant carries no information" in done.stderr
    assert "'gain' is 3 in every row that has a value" in done.stderr
    # Every clip is shown in one trial only: with splits by whole trials a label on it cannot be tested.
    assert d["options"]["untestable_variables"] == ["clip"]
    assert "'clip': each of its values occurs in one trial only" in done.stderr


def test_bad_preprocessing_leaves_the_file_byte_for_byte(tmp_path: Path) -> None:
    """test_import_errors covers every bad value against row counts; here the whole file is compared."""
    rec = make_recording()
    write_counts(rec.counts, tmp_path / "c.npy")
    write_meta(rec.meta, tmp_path / "m.csv")
    assert run_import("c.npy", "--meta", "m.csv", "--name", "good", "--db", "x.duckdb", cwd=tmp_path).returncode == 0
    before = (tmp_path / "x.duckdb").read_bytes()
    for extra in (("--smooth", "nan"), ("--smooth", "0.5"), ("--smooth", "-1")):
        done = run_import("c.npy", "--meta", "m.csv", *extra, "--db", "x.duckdb", cwd=tmp_path)
        assert_refused(done, (f"--smooth {extra[1]}",))
    assert (tmp_path / "x.duckdb").read_bytes() == before
    # Without a time column the bin size comes from --bin-size (without either, test_import_errors).
    write_meta(rec.meta.drop("time_s"), tmp_path / "untimed.csv")
    done = run_import("c.npy", "--meta", "untimed.csv", "--smooth", "0.05", "--bin-size", str(BIN_S), "--name",
                      "fine", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _dataset(tmp_path / "x.duckdb", "fine")["value_type"] == "rates"


def test_migration_marks_stored_datasets_by_their_values(tmp_path: Path) -> None:
    """A file from before value_type: its datasets are classified from the counts they hold."""
    path = tmp_path / "old.duckdb"
    before = tuple(m for m in MIGRATIONS if "value_type" not in m.sql)
    assert len(before) == len(MIGRATIONS) - 1
    Store.open(path, migrations=before).close()
    con = duckdb.connect(str(path))
    for dataset_id, kind, values in ((1, "spike_counts", (0.0, 2.0, 5.0)), (2, "spike_counts", (0.25, 1.0)),
                                     (3, "activations", (-1.5, 2.0))):
        con.execute("INSERT INTO datasets (dataset_id, name, source, kind, n_examples, n_units, n_trials, "
                    "trial_source, split_seed, options) VALUES (?, ?, 'test', ?, 3, 1, 1, 'blocks', 0, '{}')",
                    [dataset_id, f"d{dataset_id}", kind])
        for example, value in enumerate(values):
            con.execute("INSERT INTO counts VALUES (?, ?, 0, ?)", [dataset_id, example, value])
    con.close()
    with Store.open(path) as db:
        types = db.frame("SELECT name, value_type FROM datasets ORDER BY dataset_id").rows()
    assert types == [("d1", "counts"), ("d2", "rates"), ("d3", "activations")]
