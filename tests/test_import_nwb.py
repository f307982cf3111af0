"""`mini import-nwb` on NWB files written here with pynwb: units, trials and behaviour read back from the
real DuckDB file; damaged files and files without units refused with one line, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from spike_cases import UNIT_NAMES, Session, assert_refused, make_session, run_mini

from store import Store


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
    assert kinds == {"position": "continuous", "speed": "continuous", "direction": "categorical"}
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
    assert options["trials"]["source"].endswith("session.nwb:trials")


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
