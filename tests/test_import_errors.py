"""`mini import` on bad input: one line naming the file and the column/row, exit status 2, nothing written.

Each case runs twice through the real CLI: against a database path that does not exist yet (no file
may appear) and against a database that already holds a good dataset (every table keeps its rows).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from importer_cases import Recording, make_recording, run_import, table_row_counts, write_counts, write_meta
from spike_cases import assert_refused

GOOD_NAME = "good"


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Recording], list[str]]
    """Writes the input files into a folder and returns the import arguments (without --db)."""
    words: tuple[str, ...]
    """What the one-line error must say: the file and the column / row / unit / flag at fault."""
    fresh_db: bool = True
    """Also run against a database path that does not exist yet."""


def _files(folder: Path, rec: Recording, *, counts: np.ndarray | None = None, meta: pl.DataFrame | None = None,
           counts_name: str = "c.npy", meta_name: str = "m.csv", extra: tuple[str, ...] = ()) -> list[str]:
    write_counts(rec.counts if counts is None else counts, folder / counts_name)
    write_meta(rec.meta if meta is None else meta, folder / meta_name)
    return [counts_name, "--meta", meta_name, *extra]


def _with_cell(values: np.ndarray, row: int, col: int, value: float) -> np.ndarray:
    out = values.astype(np.float64 if np.isnan(value) or np.isinf(value) else values.dtype)
    out[row, col] = value
    return out


def _raw(folder: Path, rec: Recording, *, counts_name: str = "c.npy", counts_bytes: bytes | None = None,
         meta_name: str = "m.csv", meta_bytes: bytes | None = None) -> list[str]:
    """Good files except the one given as raw bytes."""
    if counts_bytes is None:
        write_counts(rec.counts, folder / counts_name)
    else:
        (folder / counts_name).write_bytes(counts_bytes)
    if meta_bytes is None:
        write_meta(rec.meta, folder / meta_name)
    else:
        (folder / meta_name).write_bytes(meta_bytes)
    return [counts_name, "--meta", meta_name]


def _object_npy(folder: Path, rec: Recording) -> list[str]:
    np.save(folder / "c.npy", np.array([{"spikes": 1}] * 4, dtype=object), allow_pickle=True)
    write_meta(rec.meta, folder / "m.csv")
    return ["c.npy", "--meta", "m.csv"]


def _npz_two_arrays(folder: Path, rec: Recording) -> list[str]:
    np.savez(folder / "c.npz", rates=rec.counts, spikes=rec.counts)
    write_meta(rec.meta, folder / "m.csv")
    return ["c.npz", "--meta", "m.csv"]


def _csv_text_column(folder: Path, rec: Recording) -> list[str]:
    write_counts(rec.counts, folder / "c.csv")
    frame = pl.read_csv(folder / "c.csv").with_columns(
        pl.when(pl.int_range(pl.len()) == 12).then(pl.lit("lots")).otherwise(pl.col("cell_d").cast(pl.String))
        .alias("cell_d"))
    frame.write_csv(folder / "c.csv")
    write_meta(rec.meta, folder / "m.csv")
    return ["c.csv", "--meta", "m.csv"]


def _duplicate_csv_header(folder: Path, rec: Recording, *, which: str) -> list[str]:
    """Rename the second column to the first one's name in the counts or metadata CSV."""
    args = _files(folder, rec, counts_name="c.csv")
    path = folder / ("c.csv" if which == "counts" else "m.csv")
    header, rest = path.read_text().split("\n", 1)
    names = header.split(",")
    target = 1 if which == "counts" else 4  # metadata: 'speed' twice (columns 3 and 4 -> speed, speed)
    names[target] = names[target - 1]
    path.write_text(",".join(names) + "\n" + rest)
    return args


def _meta_column(name: str, expr: pl.Expr) -> Callable[[Path, Recording], list[str]]:
    def build(folder: Path, rec: Recording) -> list[str]:
        return _files(folder, rec, meta=rec.meta.with_columns(expr.alias(name)))
    return build


def _row_is(row: int, value: object, column: str) -> pl.Expr:
    return pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column))


CASES: dict[str, Case] = {
    "nan_in_counts": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts, 5, 2, np.nan)),
        ("c.npy", "row 5", "unit 'unit_2'", "NaN")),
    "inf_in_counts": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts, 7, 3, np.inf)),
        ("c.npy", "row 7", "unit 'unit_3'", "inf")),
    # Values the stored float32 cannot hold: 1e308 would be stored as inf, whole counts beyond 2^24 inexactly.
    "count_1e308": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts.astype(np.float64), 7, 3, 1e308)),
        ("c.npy", "row 7", "unit 'unit_3'", "1e+308", "16,777,216 (2^24)")),
    "count_uint64_max": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts.astype(np.uint64), 9, 1, np.iinfo(np.uint64).max)),
        ("c.npy", "row 9", "unit 'unit_1'", "18446744073709551615", "2^24")),
    "count_2_to_62": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts.astype(np.int64), 3, 0, 2 ** 62)),
        ("c.npy", "row 3", "unit 'unit_0'", "4611686018427387904", "stores exactly")),
    "count_2_to_24_plus_1": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts.astype(np.int64), 2, 4, 2 ** 24 + 1)),
        ("c.npy", "row 2", "unit 'unit_4'", "16777217")),
    "activation_beyond_float32": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts.astype(np.float64), 4, 2, -1e300),
                            extra=("--kind", "activations")),
        ("c.npy", "row 4", "unit 'unit_2'", "-1e+300", "largest float32", "inf")),
    "negative_count": Case(
        lambda d, r: _files(d, r, counts=_with_cell(r.counts, 4, 1, -1)),
        ("c.npy", "row 4", "unit 'unit_1'", "negative", "--kind activations")),
    "npy_1d": Case(lambda d, r: _files(d, r, counts=r.counts[:, 0]), ("c.npy", "2-D", "(200,)")),
    "npy_3d": Case(lambda d, r: _files(d, r, counts=r.counts.reshape(200, 3, 2)), ("c.npy", "2-D", "(200, 3, 2)")),
    "npy_object_pickled": Case(_object_npy, ("c.npy", "cannot read as npy")),
    "npy_text_dtype": Case(
        lambda d, r: _files(d, r, counts=r.counts.astype(str)), ("c.npy", "<U", "expected integer or floating")),
    "text_column_in_counts_csv": Case(_csv_text_column, ("c.csv", "column 'cell_d'", "expected numbers")),
    "empty_cell_in_counts_csv": Case(
        lambda d, r: _raw(d, r, counts_name="c.csv", counts_bytes=b"cell_a,cell_b\n1,2\n3,\n5,6\n"),
        ("c.csv", "column 'cell_b'", "row 1", "empty")),
    "row_count_mismatch": Case(
        lambda d, r: _files(d, r, meta=r.meta.head(180)), ("m.csv", "180 rows", "c.npy", "200 examples")),
    "empty_counts_file": Case(lambda d, r: _raw(d, r, counts_bytes=b""), ("c.npy", "empty")),
    "empty_meta_file": Case(lambda d, r: _raw(d, r, meta_bytes=b""), ("m.csv", "empty")),
    "header_only_counts_csv": Case(
        lambda d, r: _raw(d, r, counts_name="c.csv", counts_bytes=b"cell_a,cell_b,cell_c\n"), ("c.csv", "no rows")),
    "header_only_meta_csv": Case(
        lambda d, r: _raw(d, r, meta_bytes=b"trial,time_s,condition\n"), ("m.csv", "no rows")),
    "zero_columns": Case(
        lambda d, r: _files(d, r, counts=np.zeros((10, 0), dtype=np.int64)), ("c.npy", "empty", "(10, 0)")),
    "duplicate_column_counts_csv": Case(
        lambda d, r: _duplicate_csv_header(d, r, which="counts"), ("c.csv", "'cell_a'", "more than once")),
    "duplicate_column_meta_csv": Case(
        lambda d, r: _duplicate_csv_header(d, r, which="meta"), ("m.csv", "'speed'", "more than once")),
    "trial_col_missing": Case(
        lambda d, r: _files(d, r, extra=("--trial-col", "session")), ("m.csv", "'session'", "--trial-col")),
    "time_col_missing": Case(
        lambda d, r: _files(d, r, extra=("--time-col", "clock")), ("m.csv", "'clock'", "--time-col")),
    "unsupported_extension": Case(
        lambda d, r: _raw(d, r, counts_name="c.txt", counts_bytes=b"1 2 3\n4 5 6\n"), ("c.txt", "unsupported")),
    "missing_counts_file": Case(
        lambda d, r: ["gone.npy", "--meta", *_files(d, r)[2:3]], ("gone.npy", "no such file")),
    "missing_meta_file": Case(
        lambda d, r: [*_files(d, r)[:2], "gone.csv"], ("gone.csv", "no such file")),
    "corrupt_npy": Case(
        lambda d, r: _raw(d, r, counts_bytes=b"this is not a numpy file\n" * 8), ("c.npy", "cannot read as npy")),
    "corrupt_counts_parquet": Case(
        lambda d, r: _raw(d, r, counts_name="c.parquet", counts_bytes=b"PAR1" + bytes(range(256)) * 4),
        ("c.parquet", "cannot read as parquet")),
    "corrupt_meta_parquet": Case(
        lambda d, r: _raw(d, r, meta_name="m.parquet", meta_bytes=b"\x00garbage\xff" * 64),
        ("m.parquet", "cannot read as parquet")),
    "npz_without_counts_key": Case(_npz_two_arrays, ("c.npz", "rates", "spikes", "'counts'")),
    "inf_in_meta": Case(
        _meta_column("speed", _row_is(9, float("inf"), "speed")), ("m.csv", "column 'speed'", "row 9", "inf")),
    "trial_comes_back": Case(
        _meta_column("trial", pl.when(pl.int_range(pl.len()).is_between(100, 119)).then(101)
                     .otherwise(pl.col("trial"))),
        ("m.csv", "column 'trial'", "row 100", "101", "appears again")),
    "time_not_increasing": Case(
        _meta_column("time_s", _row_is(50, 0.98, "time_s")), ("m.csv", "'time_s'", "row 50")),
    "fewer_than_3_trials": Case(
        _meta_column("trial", pl.int_range(pl.len()) // 100), ("m.csv", "2 trial(s)", "at least 3")),
    "empty_trial_id": Case(
        _meta_column("trial", _row_is(33, None, "trial")), ("m.csv", "column 'trial'", "row 33", "no trial id")),
    "var_kind_unknown_kind": Case(
        lambda d, r: _files(d, r, extra=("--var-kind", "heading=angular")),
        ("m.csv", "--var-kind heading=angular", "unknown kind")),
    "var_kind_missing_column": Case(
        lambda d, r: _files(d, r, extra=("--var-kind", "nope=categorical")), ("m.csv", "'nope'", "--var-kind")),
    "var_kind_binary_on_text": Case(
        lambda d, r: _files(d, r, meta=r.meta.with_columns(
            pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("a")).otherwise(pl.lit("b")).alias("x")),
            extra=("--var-kind", "x=binary")),
        ("m.csv", "column 'x'", "declared binary", "a, b")),
    "dataset_name_exists": Case(
        lambda d, r: _files(d, r, extra=("--name", GOOD_NAME)), ("mini.duckdb", f"'{GOOD_NAME}'", "already exists"),
        fresh_db=False),
    "bin_size_zero": Case(lambda d, r: _files(d, r, extra=("--bin-size", "0")), ("--bin-size", "positive")),
    "bin_size_1e-300": Case(lambda d, r: _files(d, r, extra=("--bin-size", "1e-300")), ("--bin-size 1e-300", "1e-06 s")),
    "bin_size_1e308": Case(lambda d, r: _files(d, r, extra=("--bin-size", "1e308")), ("--bin-size 1e+308", "a day")),
    "bin_size_far_from_time_column": Case(lambda d, r: _files(d, r, extra=("--bin-size", "60")),
                                          ("--bin-size 60 s", "'time_s' advances", "leave --bin-size out")),
    "split_two_numbers": Case(
        lambda d, r: _files(d, r, extra=("--split", "0.5,0.5")), ("--split 0.5,0.5", "three numbers")),
    "smooth_negative": Case(lambda d, r: _files(d, r, extra=("--smooth", "-0.1")), ("--smooth -0.1", ">= 0")),
    "smooth_nan": Case(lambda d, r: _files(d, r, extra=("--smooth", "nan")), ("--smooth nan", ">= 0")),
    "smooth_inf": Case(lambda d, r: _files(d, r, extra=("--smooth", "inf")), ("--smooth inf", ">= 0")),
    "smooth_huge": Case(
        lambda d, r: _files(d, r, extra=("--smooth", "1e300")), ("--smooth 1e+300", "longest trial (0.4 s)")),
    "smooth_longer_than_trials": Case(
        lambda d, r: _files(d, r, extra=("--smooth", "0.5")), ("--smooth 0.5", "longest trial (0.4 s)", "flatten")),
    "smooth_without_bin_size": Case(
        lambda d, r: _files(d, r, meta=r.meta.drop("time_s"), extra=("--smooth", "0.05")),
        ("--smooth 0.05", "needs the bin size", "--bin-size")),
    "normalize_unknown": Case(lambda d, r: _files(d, r, extra=("--normalize", "max")), ("--normalize", "'max'")),
}


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database that already holds one good dataset, made once and copied into each test."""
    folder = tmp_path_factory.mktemp("good")
    rec = make_recording()
    args = _files(folder, rec, extra=("--name", GOOD_NAME))
    done = run_import(*args, "--db", "good.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "good.duckdb"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused(name: str, tmp_path: Path, good_db: Path) -> None:
    case = CASES[name]
    args = case.build(tmp_path, make_recording())

    if case.fresh_db:
        done = run_import(*args, "--db", "new.duckdb", cwd=tmp_path)
        assert_refused(done, case.words)
        assert not list(tmp_path.glob("new.duckdb*")), "a refused import left a database file behind"

    db_path = tmp_path / "mini.duckdb"
    shutil.copy(good_db, db_path)
    before = table_row_counts(db_path)
    assert before["datasets"] == 1 and before["counts"] > 0
    done = run_import(*args, "--db", db_path.name, cwd=tmp_path)
    assert_refused(done, case.words)
    assert table_row_counts(db_path) == before
