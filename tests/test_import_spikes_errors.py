"""`mini import-spikes` on bad input: one line naming the file and the unit/column/row, exit status 2,
nothing written. Each case runs against a database path that does not exist yet (no file may appear)
and against a database that already holds a dataset (every table keeps its rows)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from importer_cases import table_row_counts
from spike_cases import (
    Session,
    assert_refused,
    make_session,
    run_mini,
    session_pixels,
    write_kilosort,
    write_mat,
    write_spike_table,
    write_tracking,
)


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Session], list[str]]
    """Writes the files into a folder; returns the import-spikes arguments (without --db)."""
    words: tuple[str, ...]
    """What the one-line error must say."""


def _table(folder: Path, s: Session, *, spikes: pl.DataFrame | None = None, behaviour: pl.DataFrame | None = None,
           extra: tuple[str, ...] = ()) -> list[str]:
    """A (unit, time) table and a behaviour table, optionally replaced."""
    if spikes is None:
        write_spike_table(folder / "s.csv", s)
    else:
        spikes.write_csv(folder / "s.csv")
    (s.behaviour if behaviour is None else behaviour).write_csv(folder / "b.csv")
    return ["s.csv", "--behaviour", "b.csv", *extra]


def _parquet(folder: Path, s: Session, spikes: pl.DataFrame) -> list[str]:
    spikes.write_parquet(folder / "s.parquet")
    s.behaviour.write_csv(folder / "b.csv")
    return ["s.parquet", "--behaviour", "b.csv"]


def _spike_rows(s: Session) -> pl.DataFrame:
    return pl.concat([pl.DataFrame({"unit": [n] * len(t), "time": t}) for n, t in s.trains.items()])


def _set_time(s: Session, unit: str, index: int, value: float) -> pl.DataFrame:
    """The spike table (grouped by unit) with one spike time changed."""
    rows = _spike_rows(s)
    row = int(np.flatnonzero(rows["unit"].to_numpy() == unit)[index])
    return rows.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col("time"))
                             .alias("time"))


def _mat(folder: Path, s: Session, unit: str, change: Callable[[np.ndarray], np.ndarray]) -> list[str]:
    trains = dict(s.trains)
    trains[unit] = change(trains[unit].copy())
    write_mat(folder / "s.mat", s, trains)
    s.behaviour.write_csv(folder / "b.csv")
    return ["s.mat", "--behaviour", "b.csv"]


def _kilosort(folder: Path, s: Session, fix: Callable[[Path], None], extra: tuple[str, ...] = ()) -> list[str]:
    write_kilosort(folder / "ks", s)
    fix(folder / "ks")
    s.behaviour.write_csv(folder / "b.csv")
    return ["ks", "--behaviour", "b.csv", *extra]


def _drop_last_cluster(ks: Path) -> None:
    np.save(ks / "spike_clusters.npy", np.load(ks / "spike_clusters.npy")[:-1])


def _label_missing_cluster(ks: Path) -> None:
    with (ks / "cluster_group.tsv").open("a") as handle:
        handle.write("7\tgood\n")


def _with_file(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda ks: (ks / name).write_bytes(content)


def _two_behaviours(folder: Path, s: Session) -> list[str]:
    args = _table(folder, s)
    s.behaviour.select("time_s", "speed").write_csv(folder / "b2.csv")
    return [*args, "--behaviour", "b2.csv"]


def _trials(folder: Path, s: Session, trials: pl.DataFrame, extra: tuple[str, ...] = ()) -> list[str]:
    trials.write_csv(folder / "trials.csv")
    return _table(folder, s, extra=("--trials", "trials.csv", *extra))


def _tracking(folder: Path, s: Session, mangle: Callable[[bytes], bytes]) -> list[str]:
    times, x, y = session_pixels(s)
    path = write_tracking(folder / "t.videoPositionTracking", times, x, y)
    path.write_bytes(mangle(path.read_bytes()))
    write_spike_table(folder / "s.csv", s)
    return ["s.csv", "--behaviour", "t.videoPositionTracking"]


def _raw(folder: Path, s: Session, name: str, content: bytes, args: list[str]) -> list[str]:
    """Good files, plus `name` written with `content`; returns `args`."""
    _table(folder, s)
    (folder / name).write_bytes(content)
    return args


def _row_is(row: int, value: object, column: str) -> pl.Expr:
    return pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)


CASES: dict[str, Case] = {
    # spike times
    "nan_spike_time_csv": Case(lambda d, s: _table(d, s, spikes=_set_time(s, "place40", 3, float("nan"))),
                               ("s.csv", "row 360", "unit 'place40'", "empty")),
    "nan_spike_time_parquet": Case(lambda d, s: _parquet(d, s, _set_time(s, "speedy", 5, float("nan"))),
                                   ("s.parquet", "unit 'speedy'", "nan", "not a finite number")),
    "negative_spike_time": Case(lambda d, s: _table(d, s, spikes=_set_time(s, "rare", 0, -0.5)),
                                ("s.csv", "unit 'rare'", "-0.5", "negative")),
    "unsorted_spike_times_table": Case(lambda d, s: _table(d, s, spikes=_set_time(s, "place60", 10, 11.0)),
                                       ("s.csv", "unit 'place60'", "earlier than", "sorted")),
    "unsorted_spike_times_mat": Case(lambda d, s: _mat(d, s, "place20", lambda t: t[::-1]),
                                     ("s.mat", "unit 'spikes{1}{1}'", "comes before", "sorted")),
    "inf_spike_time_mat": Case(lambda d, s: _mat(d, s, "speedy", lambda t: np.r_[t[:-1], np.inf]),
                               ("s.mat", "unit 'spikes{2}{2}'", "inf", "finite")),
    "negative_spike_time_mat": Case(lambda d, s: _mat(d, s, "place80", lambda t: np.r_[-1.0, t]),
                                    ("s.mat", "unit 'spikes{2}{1}'", "spike 0", ">= 0")),
    "empty_spike_file": Case(lambda d, s: _raw(d, s, "s.mat", b"", ["s.mat", "--behaviour", "b.csv"]),
                             ("s.mat", "empty")),
    "corrupt_mat": Case(lambda d, s: _raw(d, s, "s.mat", b"MATLAB 5.0 garbage" * 20, ["s.mat", "--behaviour", "b.csv"]),
                        ("s.mat", "cannot read as a MATLAB file")),
    "mat_wrong_field": Case(lambda d, s: [*_mat(d, s, "rare", lambda t: t), "--mat-field", "spike_times"],
                            ("s.mat", "no spike times", "'spike_times'")),
    "text_spike_times": Case(lambda d, s: _table(d, s, spikes=_spike_rows(s).with_columns(
        pl.col("time").cast(pl.String) + "s")), ("s.csv", "time column 'time'", "expected seconds")),
    "no_unit_column": Case(lambda d, s: _table(d, s, spikes=_spike_rows(s).rename({"unit": "who"})),
                           ("s.csv", "no unit column", "--unit-col")),
    # Kilosort: mismatched files
    "kilosort_length_mismatch": Case(lambda d, s: _kilosort(d, s, _drop_last_cluster),
                                     ("spike_times.npy", "spike_clusters.npy", "must match")),
    "kilosort_good_cluster_without_spikes": Case(lambda d, s: _kilosort(d, s, _label_missing_cluster),
                                                 ("cluster_group.tsv", "cluster 7", "no spikes", "do not belong")),
    "kilosort_no_params": Case(lambda d, s: _kilosort(d, s, lambda ks: (ks / "params.py").unlink()),
                               ("params.py", "no such file", "sample rate")),
    "kilosort_no_labels": Case(lambda d, s: _kilosort(d, s, lambda ks: (ks / "cluster_group.tsv").unlink()),
                               ("ks", "cluster_group.tsv", "--groups all")),
    "kilosort_garbage_cluster_group": Case(
        lambda d, s: _kilosort(d, s, _with_file("cluster_group.tsv", b"\x1b[31m\xff\xfe\x00garbage\nmore\r\n" * 40)),
        ("cluster_group.tsv",)),
    "kilosort_corrupt_spike_times": Case(lambda d, s: _kilosort(d, s, _with_file("spike_times.npy", b"nope" * 9)),
                                         ("spike_times.npy", "cannot read as npy")),
    "kilosort_no_good_cluster": Case(lambda d, s: _kilosort(d, s, lambda ks: None, ("--groups", "excellent")),
                                     ("cluster_group.tsv", "no cluster is labelled excellent", "good, noise")),
    # behaviour
    "behaviour_does_not_cover": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.filter(pl.col("time_s") < 50)),
                                     ("b.csv", "covers", "--time-range")),
    "behaviour_time_backwards": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.with_columns(
        _row_is(120, 5.0, "time_s"))), ("b.csv", "row 120", "not after")),
    "behaviour_no_time_column": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.rename({"time_s": "clock"})),
                                     ("b.csv", "no time column")),
    "behaviour_text_time": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.with_columns(
        pl.col("time_s").cast(pl.String) + " s")), ("b.csv", "time column 'time_s'", "expected seconds")),
    "behaviour_inf": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.with_columns(
        _row_is(33, float("inf"), "speed"))), ("b.csv", "column 'speed'", "row 33", "inf")),
    "behaviour_empty_file": Case(lambda d, s: _raw(d, s, "e.csv", b"", ["s.csv", "--behaviour", "e.csv"]),
                                 ("e.csv", "empty")),
    "behaviour_twice_the_same_variable": Case(_two_behaviours, ("b2.csv", "'speed'", "also comes from b.csv")),
    "tracking_truncated": Case(lambda d, s: _tracking(d, s, lambda b: b[:-3]),
                               ("t.videoPositionTracking", "not a whole number")),
    "tracking_no_header_end": Case(lambda d, s: _tracking(d, s, lambda b: b.replace(b"<End settings>", b"<End>")),
                                   ("t.videoPositionTracking", "<End settings>")),
    # trials
    "trials_overlap": Case(lambda d, s: _trials(d, s, s.trials.with_columns(_row_is(3, 20.5, "start"))),
                           ("trials.csv", "rows 2 and 3 overlap")),
    "trial_stops_before_start": Case(lambda d, s: _trials(d, s, s.trials.with_columns(_row_is(1, 14.0, "stop"))),
                                     ("trials.csv", "row 1", "not after its start")),
    "trials_no_stop_column": Case(lambda d, s: _trials(d, s, s.trials.drop("stop")), ("trials.csv", "no stop column")),
    "laps_without_position": Case(lambda d, s: _table(d, s, behaviour=s.behaviour.drop("position"),
                                                      extra=("--trials", "laps")), ("--trials laps", "'position'")),
    "events_outside_recording": Case(
        lambda d, s: _raw(d, s, "e.csv", b"time\n1.0\n2.0\n", ["s.csv", "--behaviour", "b.csv", "--events", "e.csv"]),
        ("e.csv", "none of its 2 events")),
    # options
    "bin_size_zero": Case(lambda d, s: _table(d, s, extra=("--bin-size", "0")), ("--bin-size", "positive")),
    # sizes refused before anything is allocated, with the numbers (engine.memory)
    "bin_size_1e-9": Case(lambda d, s: _table(d, s, extra=("--bin-size", "1e-9")),
                          ("--bin-size 1e-09 over", "bins ×", "units:", "TiB", "available")),
    "bin_size_1e-300": Case(lambda d, s: _table(d, s, extra=("--bin-size", "1e-300")), ("--bin-size 1e-300", "EiB")),
    "spike_time_1e12": Case(lambda d, s: _table(d, s, spikes=_set_time(s, "speedy", len(s.trains["speedy"]) - 1, 1e12)),
                            ("--bin-size", "bins ×", "available")),
    "spike_time_1e308": Case(lambda d, s: _table(d, s, spikes=_set_time(s, "speedy", len(s.trains["speedy"]) - 1,
                                                                         1e308)), ("--bin-size", "1e+308 s", "too many bins")),
    "time_range_backwards": Case(lambda d, s: _table(d, s, extra=("--time-range", "50,20")),
                                 ("--time-range", "START < STOP")),
    "every_unit_filtered": Case(lambda d, s: _table(d, s, extra=("--min-rate", "1000")),
                                ("s.csv", "no unit is left", "--min-rate 1000")),
    "unknown_var_kind_column": Case(lambda d, s: _table(d, s, extra=("--var-kind", "heading=circular")),
                                    ("'heading'", "--var-kind")),
}


@pytest.fixture(scope="module")
def good_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    done = run_mini("import-spikes", *_table(folder, make_session()), "--name", "good", "--db", "good.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "good.duckdb"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused(name: str, tmp_path: Path, good_db: Path) -> None:
    args = CASES[name].build(tmp_path, make_session())
    assert args, "the case wrote no arguments"
    done = run_mini("import-spikes", *args, "--db", "new.duckdb", cwd=tmp_path)
    assert_refused(done, CASES[name].words)
    assert not list(tmp_path.glob("new.duckdb*")), "a refused import left a database file behind"

    db_path = tmp_path / "mini.duckdb"
    shutil.copy(good_db, db_path)
    before = table_row_counts(db_path)
    assert before["datasets"] == 1 and before["counts"] > 0
    assert_refused(run_mini("import-spikes", *args, "--db", db_path.name, cwd=tmp_path), CASES[name].words)
    assert table_row_counts(db_path) == before


def test_dataset_name_taken_is_refused(tmp_path: Path, good_db: Path) -> None:
    shutil.copy(good_db, tmp_path / "mini.duckdb")
    before = table_row_counts(tmp_path / "mini.duckdb")
    done = run_mini("import-spikes", *_table(tmp_path, make_session()), "--name", "good", "--db", "mini.duckdb",
                    cwd=tmp_path)
    assert_refused(done, ("mini.duckdb", "'good'", "already exists"))
    assert table_row_counts(tmp_path / "mini.duckdb") == before
