"""`mini import` on good input: every counts and metadata format, read back from the real DuckDB file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from importer_cases import (
    BIN_S,
    CONDITIONS,
    HEADING_NULL_ROWS,
    N_EXAMPLES,
    N_TRIALS,
    N_UNITS,
    SPEED_NAN_ROWS,
    UNIT_NAMES,
    make_recording,
    run_import,
    write_counts,
    write_meta,
)

from store import Store


def _read_back(db_path: Path) -> dict[str, pl.DataFrame]:
    with Store.open(db_path, read_only=True) as db:
        return {
            table: db.frame(f"SELECT * FROM {table}")
            for table in ("datasets", "units", "trials", "examples", "counts", "natural_variables",
                          "natural_values")
        }


def _dense(counts: pl.DataFrame, n_examples: int, n_units: int) -> np.ndarray:
    dense = np.zeros((n_examples, n_units), dtype=np.float64)
    dense[counts["example_id"].to_numpy(), counts["unit_id"].to_numpy()] = counts["value"].to_numpy()
    return dense


def _check_splits(tables: dict[str, pl.DataFrame]) -> None:
    """Every trial in exactly one split, examples agree with their trial, all three splits used."""
    examples, trials = tables["examples"], tables["trials"]
    per_trial = examples.group_by("trial_id").agg(pl.col("split").n_unique().alias("n"), pl.col("split").first())
    assert per_trial["n"].to_list() == [1] * per_trial.height
    joined = per_trial.join(trials.select("trial_id", pl.col("split").alias("trial_split")), on="trial_id")
    assert joined.height == trials.height == per_trial.height
    assert (joined["split"] == joined["trial_split"]).all()
    assert set(trials["split"]) == {"train", "val", "test"}
    assert set(examples["split"]) == {"train", "val", "test"}
    # Each trial's examples are the contiguous run the trials table says.
    for row in trials.iter_rows(named=True):
        ids = examples.filter(pl.col("trial_id") == row["trial_id"])["example_id"].sort().to_list()
        assert ids == list(range(row["first_example"], row["first_example"] + row["n_examples"]))


COUNT_FORMATS = (".npy", ".npz", ".parquet", ".csv")
META_FORMATS = (".csv", ".parquet")


@pytest.mark.parametrize("meta_suffix", META_FORMATS)
@pytest.mark.parametrize("counts_suffix", COUNT_FORMATS)
def test_import_every_format(tmp_path: Path, counts_suffix: str, meta_suffix: str) -> None:
    rec = make_recording()
    counts_path = write_counts(rec.counts, tmp_path / f"session{counts_suffix}")
    meta_path = write_meta(rec.meta, tmp_path / f"meta{meta_suffix}")
    db_path = tmp_path / "mini.duckdb"

    done = run_import(counts_path.name, "--meta", meta_path.name, "--db", db_path.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 'session'" in done.stdout
    # Not declared circular: the CLI suggests it for the angle-like column.
    assert "--var-kind heading=circular" in done.stderr
    assert "bin size 0.02 s inferred from 'time_s'" in done.stderr

    tables = _read_back(db_path)
    datasets = tables["datasets"]
    assert datasets.height == 1
    ds = datasets.row(0, named=True)
    assert ds["name"] == "session"
    assert (ds["n_examples"], ds["n_units"], ds["n_trials"]) == (N_EXAMPLES, N_UNITS, N_TRIALS)
    assert ds["kind"] == "spike_counts"
    assert ds["bin_size_s"] == pytest.approx(BIN_S, abs=1e-12)
    assert ds["trial_source"] == "column:trial"

    # Unit names: from the file where the format carries them, generated for a bare .npy.
    expected_names = [f"unit_{i}" for i in range(N_UNITS)] if counts_suffix == ".npy" else UNIT_NAMES
    assert tables["units"].sort("unit_id")["name"].to_list() == expected_names
    assert tables["units"].sort("unit_id")["mean_count"].to_numpy() == pytest.approx(rec.counts.mean(axis=0))

    # Only nonzero entries are stored, and they rebuild the matrix exactly.
    counts = tables["counts"]
    assert (counts["value"] != 0).all()
    assert counts.height == np.count_nonzero(rec.counts)
    assert counts.select("example_id", "unit_id").is_duplicated().sum() == 0
    np.testing.assert_array_equal(_dense(counts, N_EXAMPLES, N_UNITS), rec.counts)

    examples = tables["examples"].sort("example_id")
    assert examples["example_id"].to_list() == list(range(N_EXAMPLES))
    np.testing.assert_allclose(examples["time_s"].to_numpy(), rec.meta["time_s"].to_numpy())
    assert sorted(tables["trials"]["label"].to_list()) == [str(101 + i) for i in range(N_TRIALS)]
    _check_splits(tables)

    variables = {r["variable"]: r for r in tables["natural_variables"].iter_rows(named=True)}
    assert set(variables) == {"condition", "speed", "reward", "heading", "block"}  # not trial, not time
    kinds = {name: v["kind"] for name, v in variables.items()}
    assert kinds == {"condition": "categorical", "speed": "continuous", "reward": "binary",
                     "block": "categorical", "heading": "continuous"}
    assert all(v["source"] == "inferred" for v in variables.values())
    assert variables["condition"]["n_levels"] == len(CONDITIONS)
    assert variables["block"]["n_levels"] == 3
    assert variables["heading"]["period"] is None
    assert variables["speed"]["n_missing"] == len(SPEED_NAN_ROWS)
    assert variables["heading"]["n_missing"] == len(HEADING_NULL_ROWS)

    # Missing values have no row; NaN in a float column is missing, not an error.
    values = tables["natural_values"]
    per_variable = dict(values.group_by("variable").len().iter_rows())
    assert per_variable == {"condition": N_EXAMPLES, "speed": N_EXAMPLES - len(SPEED_NAN_ROWS),
                            "reward": N_EXAMPLES, "heading": N_EXAMPLES - len(HEADING_NULL_ROWS),
                            "block": N_EXAMPLES}
    speed = values.filter(pl.col("variable") == "speed")
    assert not set(speed["example_id"]) & set(SPEED_NAN_ROWS)
    assert speed["value"].is_nan().sum() == 0 and speed["value"].null_count() == 0

    # A categorical keeps its text in `category`, row for row.
    condition = values.filter(pl.col("variable") == "condition").sort("example_id")
    assert condition["category"].to_list() == rec.meta["condition"].to_list()
    assert condition["value"].null_count() == N_EXAMPLES
    block = values.filter(pl.col("variable") == "block").sort("example_id")
    assert block["category"].to_list() == [str(b) for b in rec.meta["block"]]
    reward = values.filter(pl.col("variable") == "reward").sort("example_id")
    assert reward["value"].to_list() == [float(r) for r in rec.meta["reward"]]


def test_var_kind_declares_heading_circular(tmp_path: Path) -> None:
    rec = make_recording()
    write_counts(rec.counts, tmp_path / "c.npy")
    write_meta(rec.meta, tmp_path / "m.parquet")
    done = run_import("c.npy", "--meta", "m.parquet", "--db", "x.duckdb", "--var-kind", "heading=circular",
                      "--var-kind", "block=continuous", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "heading" not in done.stderr  # declared: no suggestion
    tables = _read_back(tmp_path / "x.duckdb")
    variables = {r["variable"]: r for r in tables["natural_variables"].iter_rows(named=True)}
    assert variables["heading"]["kind"] == "circular"
    assert variables["heading"]["period"] == pytest.approx(2 * math.pi)
    assert variables["heading"]["source"] == "declared"
    assert variables["block"]["kind"] == "continuous" and variables["block"]["source"] == "declared"
    assert variables["condition"]["source"] == "inferred"
    heading = tables["natural_values"].filter(pl.col("variable") == "heading").sort("example_id")
    expected = rec.meta.with_row_index("example_id").filter(pl.col("heading").is_not_null())
    assert heading["example_id"].to_list() == expected["example_id"].to_list()
    np.testing.assert_allclose(heading["value"].to_numpy(), expected["heading"].to_numpy())


def test_activations_accept_negative_values(tmp_path: Path) -> None:
    rec = make_recording()
    values = np.random.default_rng(3).standard_normal((N_EXAMPLES, N_UNITS)).astype(np.float32)
    values[5, 2] = 0.0
    assert (values < 0).any()
    write_counts(values, tmp_path / "hidden.npz")
    write_meta(rec.meta, tmp_path / "m.csv")
    done = run_import("hidden.npz", "--meta", "m.csv", "--db", "x.duckdb", "--kind", "activations",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = _read_back(tmp_path / "x.duckdb")
    assert tables["datasets"]["kind"].to_list() == ["activations"]
    assert tables["counts"].height == np.count_nonzero(values)
    np.testing.assert_array_equal(_dense(tables["counts"], N_EXAMPLES, N_UNITS), values)

    # The same file as spike counts is refused.
    refused = run_import("hidden.npz", "--meta", "m.csv", "--db", "y.duckdb", cwd=tmp_path)
    assert refused.returncode == 2
    assert "negative" in refused.stderr and "--kind activations" in refused.stderr
    assert not (tmp_path / "y.duckdb").exists()


def test_no_trial_column_makes_contiguous_blocks(tmp_path: Path) -> None:
    rec = make_recording()
    write_counts(rec.counts, tmp_path / "c.csv")
    write_meta(rec.meta.drop("trial"), tmp_path / "m.csv")
    done = run_import("c.csv", "--meta", "m.csv", "--db", "x.duckdb", "--blocks", "8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "contiguous blocks" in done.stderr
    tables = _read_back(tmp_path / "x.duckdb")
    ds = tables["datasets"].row(0, named=True)
    assert ds["trial_source"] == "blocks"
    assert ds["n_trials"] == 8
    trials = tables["trials"].sort("trial_id")
    assert trials["label"].to_list() == [f"block {b}" for b in range(8)]
    assert trials["n_examples"].sum() == N_EXAMPLES
    # Blocks are contiguous in example order and tile the recording.
    examples = tables["examples"].sort("example_id")
    trial_of = examples["trial_id"].to_numpy()
    assert (np.diff(trial_of) >= 0).all()
    assert trials["first_example"].to_list() == np.r_[0, np.cumsum(trials["n_examples"])[:-1]].tolist()
    _check_splits(tables)
    np.testing.assert_array_equal(_dense(tables["counts"], N_EXAMPLES, N_UNITS), rec.counts)
    # The variables are all there; none is taken for the trial column.
    assert set(tables["natural_variables"]["variable"]) == {"condition", "speed", "reward", "heading", "block"}
