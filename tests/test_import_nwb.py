"""`mini import-nwb` on NWB files written here with pynwb: units, trials and behaviour read back from the
real DuckDB file; damaged files and files without units refused with one line, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from spike_cases import UNIT_NAMES, Session, assert_refused, make_session, run_mini

from store import Store
from tests.conftest import shared_file


def write_nwb(path: Path, session: Session, *, units: bool = True, trials: bool = True) -> Path:
    """Units (spike times), trials (start, stop, direction) and processing/behavior with a Position
    (a 1-D SpatialSeries with timestamps) and a BehavioralTimeSeries (speed, at a fixed rate)."""
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries
    from pynwb.behavior import BehavioralTimeSeries, Position

    nwbfile = NWBFile(session_description="synthetic linear track", identifier="mini-test",
                      session_start_time=datetime(2024, 1, 1, tzinfo=UTC))
    if units:
        for name in UNIT_NAMES:
            nwbfile.add_unit(spike_times=session.trains[name])
    if trials:
        nwbfile.add_trial_column(name="direction", description="run direction")
        for row in session.trials.iter_rows(named=True):
            nwbfile.add_trial(start_time=row["start"], stop_time=row["stop"], direction=row["direction"])
    behavior = nwbfile.create_processing_module(name="behavior", description="tracking")
    b = session.behaviour
    position = Position(name="Position")
    position.create_spatial_series(name="position", data=b["position"].to_numpy(), timestamps=b["time_s"].to_numpy(),
                                   reference_frame="track start", unit="cm")
    behavior.add(position)
    speed = BehavioralTimeSeries(name="Speed")
    speed.add_timeseries(TimeSeries(name="speed", data=b["speed"].to_numpy(), unit="cm/s",
                                    starting_time=float(b["time_s"][0]), rate=50.0))
    behavior.add(speed)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def test_nwb_units_trials_and_behaviour(tmp_path: Path) -> None:
    session = make_session()
    write_nwb(tmp_path / "session.nwb", session)
    done = run_mini("import-nwb", "session.nwb", "--bin-size", "0.1", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 'session'" in done.stdout
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        ds = db.frame("SELECT * FROM datasets").row(0, named=True)
        units = db.frame("SELECT name FROM units ORDER BY unit_id")["name"].to_list()
        counts = db.frame("SELECT example_id, unit_id, value FROM counts")
        examples = db.frame("SELECT example_id, trial_id, time_s FROM examples ORDER BY example_id")
        trials = db.frame("SELECT label FROM trials ORDER BY trial_id")["label"].to_list()
        position = db.frame("SELECT example_id, value FROM natural_values WHERE variable = 'position' "
                            "ORDER BY example_id")
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables").iter_rows())
    # The file's own trials table is used by default; bins outside the runs are dropped.
    assert ds["trial_source"] == "column:trial" and ds["n_trials"] == session.trials.height
    assert trials == [str(i) for i in range(session.trials.height)]
    assert units == [f"unit_{i}" for i in range(len(UNIT_NAMES))]
    # The animal runs at one speed, and only the runs are kept: a constant is not a variable.
    assert kinds == {"position": "continuous", "direction": "categorical"}
    assert "'speed' is 33.3333 in every row" in done.stderr
    # Counts: the spikes in [start, start + 0.1) of each kept bin.
    starts = examples["time_s"].to_numpy()
    dense = np.zeros((len(starts), len(units)))
    dense[counts["example_id"].to_numpy(), counts["unit_id"].to_numpy()] = counts["value"].to_numpy()
    for i, name in enumerate(UNIT_NAMES):
        t = session.trains[name]
        expected = np.searchsorted(t, starts + 0.1) - np.searchsorted(t, starts)
        np.testing.assert_array_equal(dense[:, i], expected)
    b = session.behaviour
    np.testing.assert_allclose(position["value"].to_numpy(), np.interp(starts + 0.05, b["time_s"], b["position"]))
    options = json.loads(ds["options"])
    sources = {r["source"].split(":", 1)[1] for r in options["behaviour"]}
    assert sources == {"processing/behavior/Position/position", "processing/behavior/Speed/speed"}
    assert options["trials"]["source"].endswith("session.nwb:intervals/trials")


def test_nwb_without_trials_uses_blocks_and_laps_can_replace_them(tmp_path: Path) -> None:
    write_nwb(tmp_path / "s.nwb", make_session(), trials=False)
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_mini("import-nwb", "s.nwb", "--trials", "runs", "--name", "runs", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        sources = db.frame("SELECT name, trial_source, n_trials FROM datasets ORDER BY dataset_id").rows()
    assert sources[0][1] == "blocks"
    assert sources[1][1] == "column:trial" and sources[1][2] == make_session().trials.height  # one per run


def _truncated(folder: Path) -> str:
    path = write_nwb(folder / "whole.nwb", make_session())
    data = path.read_bytes()
    (folder / "s.nwb").write_bytes(data[: len(data) // 3])
    return "s.nwb"


def _garbage(folder: Path) -> str:
    (folder / "s.nwb").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 200)
    return "s.nwb"


def _empty(folder: Path) -> str:
    (folder / "s.nwb").write_bytes(b"")
    return "s.nwb"


def _no_units(folder: Path) -> str:
    return write_nwb(folder / "s.nwb", make_session(), units=False).name


@pytest.mark.parametrize(("build", "words"), [
    (_garbage, ("s.nwb", "cannot read as NWB")),
    (_truncated, ("s.nwb", "cannot read as NWB")),
    (_empty, ("s.nwb", "empty")),
    (_no_units, ("s.nwb", "no Units table")),
], ids=["corrupt", "truncated", "empty", "no_units"])
def test_bad_nwb_is_refused(tmp_path: Path, build, words: tuple[str, ...]) -> None:
    name = build(tmp_path)
    done = run_mini("import-nwb", name, "--db", "new.duckdb", cwd=tmp_path)
    assert_refused(done, words)
    assert not list(tmp_path.glob("new.duckdb*"))


def test_without_pynwb_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    write_nwb(tmp_path / "s.nwb", make_session())
    code = ("import sys; sys.modules['pynwb'] = None; from tui.cli import main; "
            "sys.exit(main(['import-nwb', 's.nwb', '--db', 'x.duckdb']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    assert_refused(done, ("pynwb", "pip install 'mini-sae[nwb]'"))
    assert not (tmp_path / "x.duckdb").exists()


# -- intervals tables other than `trials` ------------------------------------------------------------------
CUE_S = 1.0
"""Each run's cue, `cue_time`, comes this long after the run starts."""
REWARD_S = 2.0
"""Each row of `rewards_table` starts this long after a run starts."""


def write_nwb_intervals(path: Path, session: Session) -> Path:
    """Units and no trials table; the runs sit in `intervals/runs_table` (as shared files do) with a text
    column written as bytes, a constant, a name unique to each run, a cue time, a ragged and an
    array-valued column; `rewards_table` and `epochs` are other interval tables."""
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.epoch import TimeIntervals

    nwbfile = NWBFile(session_description="runs in an intervals table", identifier="mini-intervals",
                      session_start_time=datetime(2024, 1, 1, tzinfo=UTC))
    for name in UNIT_NAMES:
        nwbfile.add_unit(spike_times=session.trains[name])
    runs = TimeIntervals(name="runs_table", description="one row per run")
    for column, text in (("direction", "run direction, stored as bytes"), ("experiment", "constant id"),
                         ("clip", "unique per run"), ("cue_time", "cue onset"), ("gains", "ragged"),
                         ("xy", "two numbers per run")):
        runs.add_column(column, text, index=column == "gains")
    for i, row in enumerate(session.trials.iter_rows(named=True)):
        runs.add_row(start_time=row["start"], stop_time=row["stop"], direction=row["direction"].encode(),
                     experiment=70.0, clip=f"clip_{i}".encode(), cue_time=row["start"] + CUE_S,
                     gains=[1.0] * (1 + i % 3), xy=[0.5, 1.5])
    nwbfile.add_time_intervals(runs)
    rewards = TimeIntervals(name="rewards_table", description="rewards")
    for start in session.trials["start"]:
        rewards.add_row(start_time=start + REWARD_S, stop_time=start + REWARD_S + 0.2)
    nwbfile.add_time_intervals(rewards)
    nwbfile.add_epoch(start_time=0.0, stop_time=50.0, tags=["first"])
    nwbfile.add_epoch(start_time=50.0, stop_time=100.0, tags=["second"])
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def _variables(db_path: Path) -> tuple[dict, dict[str, str], pl.DataFrame, np.ndarray]:
    with Store.open(db_path, read_only=True) as db:
        row = db.frame("SELECT * FROM datasets").row(0, named=True)
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables").iter_rows())
        values = db.frame("SELECT example_id, variable, value, category FROM natural_values ORDER BY example_id")
        starts = db.frame("SELECT time_s FROM examples ORDER BY example_id")["time_s"].to_numpy()
    return {**row, "options": json.loads(row["options"])}, kinds, values, starts


def test_trials_and_events_from_named_intervals_tables(tmp_path: Path) -> None:
    session = make_session()
    write_nwb_intervals(tmp_path / "s.nwb", session)
    done = run_mini("import-nwb", "s.nwb", "--trials-table", "runs_table", "--events-table", "rewards_table",
                    "--bin-size", "0.1", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    n_runs = session.trials.height
    notes = done.stderr
    for listed in (f"'runs_table', {n_runs} rows: start_time, stop_time, direction, experiment, clip, cue_time",
                   f"'rewards_table', {n_runs} rows: start_time, stop_time", "'epochs', 2 rows: start_time, stop_time"):
        assert f"s.nwb: intervals table {listed}" in notes, notes
    assert "skipped 'gains' (several values per row), 'xy' (an array of shape (2,) per row)" in notes
    assert "'cue_time' are moments within the trials: counted per bin as events" in notes
    assert "'experiment' is 70 in every row" in notes
    assert "'clip': each of its values occurs in one trial only" in notes

    dataset, kinds, values, starts = _variables(tmp_path / "x.duckdb")
    assert dataset["n_trials"] == n_runs and dataset["options"]["trials"]["source"].endswith("intervals/runs_table")
    # experiment is constant: not a variable; xy and gains are not one value per run; cue_time is an event.
    assert kinds == {"direction": "categorical", "clip": "categorical", "cue_time": "binary",
                     "rewards_table": "binary"}
    assert dataset["options"]["constant_columns"] == {"experiment": 70.0}
    assert dataset["options"]["untestable_variables"] == ["clip"]
    # Text written as bytes is read as text.
    direction = values.filter(pl.col("variable") == "direction")["category"]
    assert set(direction) == {"out", "back"}
    assert set(values.filter(pl.col("variable") == "clip")["category"]) == {f"clip_{i}" for i in range(n_runs)}
    # Events: one per run, each in the bin that holds its time.
    for variable, offset in (("cue_time", CUE_S), ("rewards_table", REWARD_S)):
        counted = values.filter(pl.col("variable") == variable)
        expected = np.zeros(len(starts))
        for t in session.trials["start"].to_numpy() + offset:
            expected[np.searchsorted(starts, t, side="right") - 1] += 1
        np.testing.assert_array_equal(counted["value"].to_numpy(), expected)
        assert expected.sum() == n_runs


def test_without_a_trials_table_the_note_names_the_tables(tmp_path: Path) -> None:
    write_nwb_intervals(tmp_path / "s.nwb", make_session())
    done = run_mini("import-nwb", "s.nwb", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    note = next(line for line in done.stderr.splitlines() if "no trials table" in line)
    assert note.startswith("note: s.nwb: no trials table; --trials-table NAME takes them from one of: ")
    assert sorted(note.rsplit(": ", 1)[1].split(", ")) == ["rewards_table", "runs_table"]  # not epochs
    assert "splitting by 40 contiguous blocks" in done.stderr


@pytest.mark.parametrize(("args", "words"), [
    (("--trials-table", "nope"), ("s.nwb", "no intervals table 'nope'", "--trials-table nope",
                                  "the file's intervals tables: ", "runs_table", "rewards_table", "epochs")),
    (("--events-table", "rewardz"), ("s.nwb", "no intervals table 'rewardz'", "--events-table rewardz",
                                     "the file's intervals tables: ", "runs_table", "rewards_table", "epochs")),
    (("--trials-table", "runs_table", "--trials", "laps"), ("--trials-table runs_table", "--trials laps", "one")),
    (("--trials-table", "runs_table", "--smooth", "nan"), ("--smooth nan",)),
    (("--trials-table", "runs_table", "--smooth", "3.5"), ("--smooth 3.5", "longest trial (3 s)")),
], ids=["unknown_trials_table", "unknown_events_table", "two_trials_sources", "nan_sigma", "sigma_above_trials"])
def test_bad_table_options_are_refused(tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]) -> None:
    write_nwb_intervals(tmp_path / "s.nwb", make_session())
    done = run_mini("import-nwb", "s.nwb", *args, "--db", "new.duckdb", cwd=tmp_path)
    assert_refused(done, words)
    assert not list(tmp_path.glob("new.duckdb*"))


PYNAPPLE_FILE = Path("shared", "data", "pynapple-nwb", "sub-4_ses-4_ecephys+image.nwb")


def test_real_nwb_file_with_its_task_in_an_intervals_table(tmp_path: Path) -> None:
    """pynapple's example file (human MTL, 35 units): no trials table, the encoding task in
    `intervals/encoding_table` with a constant ExperimentID and a clip name per trial stored as bytes."""
    path = shared_file(PYNAPPLE_FILE)
    done = run_mini("import-nwb", str(path), "--trials-table", "encoding_table", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for table, rows in (("encoding_table", 90), ("recognition_table", 180), ("timediscrimination_table", 180)):
        assert f"intervals table '{table}', {rows} rows: start_time, stop_time, fixcross_time, ExperimentID" in done.stderr
    assert "'ExperimentID' is 70 in every row" in done.stderr
    assert "Warning" not in done.stderr
    dataset, kinds, values, _ = _variables(tmp_path / "x.duckdb")
    assert (dataset["n_units"], dataset["n_trials"]) == (35, 90)
    assert kinds == {"stimCategory": "categorical", "Clip_name": "categorical", "boundary1_time": "binary",
                     "boundary2_time": "binary", "boundary3_time": "binary"}
    assert dataset["options"]["constant_columns"] == {"ExperimentID": 70.0}
    assert dataset["options"]["untestable_variables"] == ["Clip_name"]
    clips = set(values.filter(pl.col("variable") == "Clip_name")["category"])
    assert len(clips) == 90 and all(c.endswith(".mp4") and not c.startswith("b'") for c in clips)
    boundaries = values.filter(pl.col("variable") == "boundary1_time")["value"].sum()
    assert boundaries == 90  # one first boundary (or its no-boundary control time) per clip
