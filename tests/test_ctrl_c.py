"""ctrl+c stops a command inside a database query at once (tui/interrupts.py), and a ctrl+c that reaches a sweep's
owner while it ingests a finished pack stops the sweep instead of passing for the pack failing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.sweep import run_sweep
from engine.sweep.plan import SweepConfig
from store.db import Store, interrupt_open_stores, is_interrupt
from tests.app_data import copy_database

ROOT = Path(__file__).resolve().parents[1]
LONG_QUERY = "SELECT count(*) FROM range(1000000000000) t(i) WHERE i % 7 = 3"
"""About an hour of DuckDB's time on two cores: only an interrupt ends it within the test."""


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    return copy_database(small_db, tmp_path, "ctrl_c.duckdb")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_ctrl_c_in_mini_sql_stops_the_running_query_at_once(db: Path) -> None:
    # Before: the ctrl+c waited for DuckDB's query to end (105 s for a 30-billion-row count), then said interrupted.
    command = subprocess.Popen([sys.executable, "-m", "tui.cli", "sql", "--db", str(db), LONG_QUERY], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Starting and opening the database take about half a CPU-second; three more mean the query is running.
        deadline = time.monotonic() + 120
        while _cpu_seconds(command.pid) < 3.5:
            assert command.poll() is None and time.monotonic() < deadline, "the query never ran"
            time.sleep(0.1)
        command.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = command.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        command.kill()
    assert command.returncode == 130, err
    assert err.strip() == "mini: interrupted" and out == ""  # no traceback, no DuckDB progress bar on stdout
    assert waited < 15, f"the query ran on for {waited:.1f} s after the ctrl+c"


def test_is_interrupt_knows_both_ways_duckdb_reports_one(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "x.duckdb")
    try:
        threading.Timer(0.5, interrupt_open_stores).start()
        with pytest.raises(Exception) as stopped:
            store.scalar(LONG_QUERY)
        assert is_interrupt(stopped.value)
        with pytest.raises(Exception) as other:
            store.scalar("SELECT * FROM no_such_table")
        assert not is_interrupt(other.value)
    finally:
        store.close()
    assert is_interrupt(RuntimeError("Query interrupted"))  # DuckDB's Python client noticing a ctrl+c itself
    assert not is_interrupt(RuntimeError("something else"))


@pytest.mark.parametrize("error", [RuntimeError("Query interrupted"), OSError(28, "No space left on device")],
                         ids=["ctrl+c", "disk full"])
def test_an_error_while_the_owner_ingests_stops_the_sweep_and_is_not_the_pack_failing(db: Path, monkeypatch,
                                                                                      error: Exception) -> None:
    """The first pack to finish is being ingested when a ctrl+c arrives (DuckDB reports it as its own error), or the
    disk fills: the sweep stops (after a ctrl+c saying how to resume), its workers with it, and no pack is recorded as
    failed. Before, either error passed for the pack failing, and the sweep trained on."""
    save_trials = run_sweep.save_trials
    calls = []

    def failing_on_the_first_pack(store, frame):
        calls.append(len(calls))
        if len(calls) == 2:  # the first call ingests what a resume finds; the second, the first finished pack
            raise error
        return save_trials(store, frame)

    monkeypatch.setattr(run_sweep, "save_trials", failing_on_the_first_pack)
    lines: list[str] = []
    config = SweepConfig(dataset="small", grid="d_sae=16,24,32 k=2", epochs=3, max_parallel=1)
    interrupt = is_interrupt(error)
    with pytest.raises(KeyboardInterrupt if interrupt else OSError):
        run_sweep.start_sweep(db, config, report=lines.append)
    # After a ctrl+c what finished is ingested once more on the way out; a failed write is not tried again.
    assert len(calls) == (3 if interrupt else 2), calls
    assert any("interrupted; mini sweep --resume 1 trains what is left" in line for line in lines) == interrupt, lines
    assert not any("failed" in line or "pack 2 of 3" in line for line in lines), lines
