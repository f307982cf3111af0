"""`q` quits within a second whatever the app is doing (issue 17): the real app, real data, real work.

Each test starts a piece of work, waits until a worker thread is inside the phase named (read off the
threads' stacks, so the key lands where the test says it does), presses `q`, and measures from the key to
the moment `asyncio.run` returns: the app shut down, its database closed and its worker threads let go
(the standard executor would have joined them there). That is the app's own shutdown, not a process start,
so a busy 2-core machine has most of the second to spare. Then another process opens the database
read-write, as it must be able to at once, and what was written is checked: a training quit after its run
row exists is `cancelled` and `mini train --resume` finishes it; nothing else is left half-written.

PyTorch's first import needs a fresh interpreter: `test_q_while_pytorch_loads_in_a_real_terminal` runs
`mini` in tmux as a person does (ctrl+s on Train, then q at once) and times the process's exit.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input

from store import Store
from tests.conftest import ROOT, run_cli
from tests.pilot import until
from tui.app import MiniApp

QUIT_LIMIT_S = 1.0
"""The promise: from `q` to the app gone, database closed."""

Start = Callable[[MiniApp, Pilot], Awaitable[None]]


def worker_in(*functions: str) -> bool:
    """Whether a thread other than this one is inside one of `functions` (qualified names of mini's own code,
    e.g. `Trainer.run`) right now."""
    here = threading.get_ident()
    for ident, frame in sys._current_frames().items():
        while ident != here and frame is not None:
            if frame.f_code.co_qualname in functions and frame.f_code.co_filename.startswith(str(ROOT)):
                return True
            frame = frame.f_back
    return False


async def reach(phase: tuple[str, ...], timeout: float = 300) -> None:
    """Poll (every 2 ms: some phases last a tenth of a second) until a worker is inside `phase`."""
    deadline = time.monotonic() + timeout
    while not worker_in(*phase):
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker reached {phase} within {timeout} s")
        await asyncio.sleep(0.002)


def send_key(app: MiniApp, key: str) -> None:
    """The key arrives through the driver, as from a terminal. (pilot.press then waits for the process to go
    idle, which it never is while a worker computes: a second and more, by which time a phase may be over.)"""
    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    app._driver.send_message(event)


def seconds_to_quit(db_path: Path, start: Start, phase: tuple[str, ...], *, key: str = "q",
                    **app_kwargs: Any) -> float:
    """Run the app on `db_path`, `start` work, press `key` once a worker is inside `phase`; seconds from the
    key to the app shut down (asyncio.run returned). Checks the app closed its store and left no error."""
    marks: dict[str, float] = {}
    app = MiniApp(Store.open(db_path), **app_kwargs)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await app.workers.wait_for_complete()
            await start(app, pilot)
            await reach(phase)
            marks["q"] = time.monotonic()
            send_key(app, key)
            deadline = time.monotonic() + 30
            while not app._exit and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            marks["exit"] = time.monotonic()

    asyncio.run(main())
    seconds = time.monotonic() - marks["q"]
    assert app.stores.closed and app.return_code == 0
    print(f"quit during {phase[0]}: {seconds:.3f} s (the app decided to exit after "
          f"{marks['exit'] - marks['q']:.3f} s)")  # the report's figures (pytest -s)
    return seconds


def open_read_write_elsewhere(db_path: Path) -> None:
    """Another process opens the database read-write (DuckDB would refuse while this one held it)."""
    done = subprocess.run([sys.executable, "-c", "import sys; from store import Store; "
                           "Store.open(sys.argv[1]).close()", str(db_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def runs(db_path: Path) -> list[dict[str, Any]]:
    with Store.open(db_path, read_only=True) as db:
        return db.records("SELECT run_id, status, message FROM runs ORDER BY run_id")


# -- the two mechanisms underneath, on a real database file ---------------------------------------------------
def test_an_interrupted_transaction_is_rolled_back_whole_and_the_cursor_writes_again(tmp_path: Path) -> None:
    import numpy as np
    import polars as pl

    from store.errors import StoreInterrupted

    rows = pl.DataFrame({"a": np.arange(3_000_000, dtype=np.int32), "b": np.linspace(0, 1, 3_000_000)})
    with Store.open(tmp_path / "x.duckdb") as db:
        db.con.execute("CREATE TABLE big (a INTEGER, b DOUBLE)")
        db.con.execute("CREATE TABLE small (x INTEGER)")
        for delay in (0.0, 0.01, 0.03, 0.06, 0.1):  # lands in the first, a later or between INSERTs
            stop = threading.Event()
            threading.Timer(delay, stop.set).start()
            with (pytest.raises(StoreInterrupted, match="stopped on request; nothing of it was written"),
                  db.interrupted_when(stop), db.transaction()):
                for _ in range(20):
                    db.insert_frame("big", rows)
            assert db.scalar("SELECT count(*) FROM big") == 0  # all or nothing
            with db.transaction():  # the cursor is usable at once: no aborted transaction left behind
                db.con.execute("INSERT INTO small VALUES (1)")
        with db.interrupted_when(threading.Event()), db.transaction():  # never set: an ordinary block
            db.insert_frame("big", rows)
        assert db.scalar("SELECT count(*) FROM big") == rows.height
        assert db.scalar("SELECT count(*) FROM small") == 5


def test_a_transaction_under_a_stream_of_interrupts_is_all_or_nothing_and_the_next_one_begins(
        tmp_path: Path) -> None:
    """Interrupts land on BEGIN, on the statements and around COMMIT: DuckDB can leave an interrupted BEGIN's
    transaction open, and an interrupted COMMIT open or committed. Every transaction must either commit and
    say so, or raise and leave nothing; the next must begin. (Before the fix, a quit while a run's results
    were stored left the run 'running': its 'cancelled' mark could not begin a transaction.)"""
    import duckdb

    from store.errors import StoreInterrupted

    with Store.open(tmp_path / "x.duckdb") as db:
        db.con.execute("CREATE TABLE t (a INTEGER)")
        stop = threading.Event()

        def interrupt_again_and_again() -> None:
            while not stop.is_set():
                db.interrupt()
                time.sleep(0.0001)

        spammer = threading.Thread(target=interrupt_again_and_again, daemon=True)
        spammer.start()
        committed = interrupted = 0
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline or not (committed and interrupted):
                try:
                    with db.interrupted_when(threading.Event()), db.transaction():
                        db.con.execute("INSERT INTO t VALUES (1)")
                        db.con.execute("INSERT INTO t SELECT range FROM range(2000)")  # a COMMIT to land in
                    committed += 1
                except (StoreInterrupted, duckdb.InterruptException):
                    interrupted += 1
        finally:
            stop.set()
            spammer.join()
        with db.transaction():  # the cursor is usable: no transaction left open
            db.con.execute("INSERT INTO t VALUES (1)")
        assert db.scalar("SELECT count(*) FROM t") == 2001 * committed + 1
        assert committed and interrupted


def test_closing_does_not_wait_for_a_thread_computing_with_a_cursor_in_hand(tmp_path: Path) -> None:
    from tui.app import ThreadStores

    path = tmp_path / "x.duckdb"
    with Store.open(path) as db:
        db.con.execute("CREATE TABLE t AS SELECT range AS i FROM range(10)")
    stores = ThreadStores(Store.open(path))
    holding, outcome = threading.Event(), {}

    def compute_then_write() -> None:
        try:
            with stores.cursor() as db:
                db.con.execute("BEGIN TRANSACTION")
                db.con.execute("DELETE FROM t")
                holding.set()
                time.sleep(3)  # stands for seconds of numpy outside DuckDB
                db.con.execute("COMMIT")
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=compute_then_write, daemon=True)
    thread.start()
    assert holding.wait(10)
    started = time.monotonic()
    assert stores.close()
    assert time.monotonic() - started < 0.5
    open_read_write_elsewhere(path)  # closed for real: another process opens it read-write
    thread.join(10)
    assert "closed" in str(outcome["error"])  # its next call failed ...
    with Store.open(path, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM t") == 10  # ... and what it had not committed was rolled back


# -- a recording large enough that each phase of a training lasts long enough to land a key in -------------
@pytest.fixture(scope="module")
def big_db_template(tmp_path_factory) -> Path:
    """A dataset of 1,000,000 bins × 60 units (reading it takes a few tenths of a second)."""
    from engine.ingest.importer import ImportOptions, import_files
    from sample_data import SampleConfig, generate

    folder = tmp_path_factory.mktemp("quit_big")
    counts, meta = generate(SampleConfig(n_bins=1_000_000, n_units=60, n_conditions=4, seed=1)).write(folder / "data")
    with Store.open(folder / "big.duckdb") as db:
        import_files(db, counts, meta, ImportOptions(name="big", bin_size_s=0.05))
    return folder / "big.duckdb"


@pytest.fixture
def big_db(big_db_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(big_db_template, tmp_path / "big.duckdb"))


def start_training(values: dict[str, str]) -> Start:
    """Open Train on the selected dataset, type `values` into the form and press ctrl+s."""
    async def start(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("train")
        await pilot.pause()
        await app.workers.wait_for_complete()
        for name, value in values.items():
            app.screen.query_one(f"#{name}", Input).focus()
            await pilot.pause()
            await pilot.press(*value)
        await pilot.pause()
        send_key(app, "ctrl+s")  # not pilot.press: the dataset is read before that would return

    return start


BIG_RUN = {"d_sae": "256", "k": "8", "epochs": "1", "batch_size": "4096", "instances": "2"}
"""One epoch over 700,000 train bins, then the results of 2 SAEs: encoding and QC take seconds, and storing
16 M activation rows most of a second."""


@pytest.mark.slow
@pytest.mark.parametrize("phase", [("dense_counts", "load_counts_long"), ("build_stack",)],
                         ids=["reading the dataset", "building the stack"])
def test_q_before_the_run_row_quits_at_once_and_writes_nothing(big_db: Path, phase: tuple[str, ...]) -> None:
    seconds = seconds_to_quit(big_db, start_training(BIG_RUN), phase, dataset="big")
    assert seconds < QUIT_LIMIT_S
    open_read_write_elsewhere(big_db)
    assert runs(big_db) == []  # no run row: nothing to resume, nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("phase", [("Trainer.run",), ("collect_results",), ("save_run_results",)],
                         ids=["training", "computing the results", "storing the results"])
def test_q_after_the_run_row_quits_within_a_second_and_the_run_resumes(big_db: Path, phase: tuple[str, ...]) -> None:
    seconds = seconds_to_quit(big_db, start_training(BIG_RUN), phase, dataset="big")
    assert seconds < QUIT_LIMIT_S
    open_read_write_elsewhere(big_db)
    [run] = runs(big_db)
    assert run["status"] == "cancelled", run
    assert run["message"].startswith("cancelled when the app quit; mini train --resume 1 continues from ")
    with Store.open(big_db, read_only=True) as db:  # nothing of the results: their transaction rolled back
        assert db.scalar("SELECT count(*) FROM saes") == 0
        assert db.scalar("SELECT count(*) FROM activations") == 0

    if phase != ("save_run_results",):
        return  # one resume shows it (each takes minutes on a busy 2-core machine); the run rows are alike
    resumed = run_cli("train", "--resume", "1", "--db", str(big_db), cwd=big_db.parent, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    [run] = runs(big_db)
    assert run["status"] == "finished"
    with Store.open(big_db, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM saes WHERE run_id = 1") == 2


# -- the other screens' workers, on the app database ---------------------------------------------------------
def test_q_while_a_ranking_computes_associations(app_db: Path) -> None:
    from engine.analysis.rank import RankConfig

    async def start(app: MiniApp, pilot: Pilot) -> None:
        app.rank_config = RankConfig()  # mini rank's defaults: seconds of associations on two SAEs
        app.start_ranking(1)

    with Store.open(app_db, read_only=True) as db:
        before = db.frame("SELECT * FROM rankings ORDER BY ALL")
    assert seconds_to_quit(app_db, start, ("associate",), run_id=1) < QUIT_LIMIT_S
    open_read_write_elsewhere(app_db)
    with Store.open(app_db, read_only=True) as db:  # the earlier ranking, untouched
        assert db.frame("SELECT * FROM rankings ORDER BY ALL").equals(before)


def test_q_while_a_validation_shuffles(app_db: Path) -> None:
    from engine.validation.validate import ValidateConfig
    from tui.screens.validation import ValidationScreen

    async def start(app: MiniApp, pilot: Pilot) -> None:
        screen = ValidationScreen(app.stores, run_id=1, validate_config=ValidateConfig(), validate_jobs=1)
        app.push_screen(screen)
        await pilot.pause()
        await until(pilot, lambda: screen.loaded)
        screen.query_one("#pairings").focus()
        await pilot.press("r")

    with Store.open(app_db, read_only=True) as db:
        before = db.scalar("SELECT count(*) FROM validations")
    assert seconds_to_quit(app_db, start, ("shift_p_value",), run_id=1) < QUIT_LIMIT_S
    open_read_write_elsewhere(app_db)
    with Store.open(app_db, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM validations") == before  # no attempt of it stored


def test_q_while_review_reads_a_feature(app_db: Path) -> None:
    async def start(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("review")

    assert seconds_to_quit(app_db, start, ("load_feature", "load_context"), run_id=1) < QUIT_LIMIT_S
    open_read_write_elsewhere(app_db)


def test_q_while_a_long_sql_query_runs(app_db: Path) -> None:
    async def start(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("sql")
        await pilot.pause()
        await app.workers.wait_for_complete()
        box = app.screen.query_one("#query")
        box.text = "SELECT count(*) FROM range(1000000000000) a"  # hours, were it not interrupted
        box.focus()
        await pilot.press("f5")

    # ctrl+q: the cursor is in the query box, where q would be typed.
    assert seconds_to_quit(app_db, start, ("run_app_query",), key="ctrl+q", run_id=1) < QUIT_LIMIT_S
    open_read_write_elsewhere(app_db)


# -- in a real terminal: what only a whole process shows (PyTorch's first import, worker processes) --------------
TERMINAL_SLACK_S = 0.5
"""On top of the app's second: tmux's round trips to send the key and to see the process gone (polled every
10 ms through a tmux command), and the interpreter's own exit."""


def quit_in_terminal(db_path: Path, get_there: Callable[[Any], str]) -> tuple[float, str]:
    """Run `mini --db DB` in tmux, let `get_there(terminal)` bring it into a phase (it returns the screen it
    saw there), send q; (seconds from q to the process gone, the screen seen before q). Checks that the
    process exited with status 0 and printed nothing.

    The shell that started mini says its exit status: tmux's own (`pane_dead_status`) was sometimes never
    filled in on a busy machine, though the process was gone."""
    from tests.test_app_tmux import TMUX, Terminal

    assert shutil.which("tmux"), "tmux is needed for this test (it is on every machine this project runs on)"
    term = Terminal(f"cd {ROOT} && env -u COLORTERM TERM=xterm-256color PYTHONPATH={ROOT} "
                    f"{sys.executable} -m tui.cli --db {db_path}; echo \"mini exited with status $?\"; sleep 60")
    try:
        seen = get_there(term)
        pressed = time.monotonic()
        subprocess.run([*TMUX, "send-keys", "-t", term.name, "q"], check=True)
        last = term.screen()
        while time.monotonic() - pressed < 60 and "mini exited with status" not in last:
            time.sleep(0.01)
            last = term.screen()
        seconds = time.monotonic() - pressed
    finally:
        term.close()
    printed = [line for line in last.splitlines() if line.strip()]
    # Status 0 and nothing else printed on the way out: no traceback, no resource tracker's leak warnings.
    assert printed == ["mini exited with status 0"], last
    return seconds, seen


def test_q_while_pytorch_loads_in_a_real_terminal(app_db: Path) -> None:
    from tests.test_app_tmux import TMUX

    def get_there(term) -> str:
        term.wait_for("sample")
        term.keys("t")  # Train on the selected dataset: PyTorch starts loading in the background
        term.wait_for("ctrl+s")
        subprocess.run([*TMUX, "send-keys", "-t", term.name, "C-s"], check=True)
        return term.wait_for("loading PyTorch", timeout=10)  # the worker waits on the import

    seconds, seen = quit_in_terminal(app_db, get_there)
    print(f"quit while PyTorch loads: {seconds:.3f} s to the process's exit")
    assert "loading PyTorch" in seen
    assert seconds < QUIT_LIMIT_S + TERMINAL_SLACK_S
    open_read_write_elsewhere(app_db)
    assert [run["run_id"] for run in runs(app_db)] == [1]  # no run row for the training that never began


def test_q_while_a_validation_runs_in_worker_processes_in_a_real_terminal(app_db: Path) -> None:
    def get_there(term) -> str:
        term.wait_for("sample")
        term.keys("Tab", "Enter")  # open run 1
        term.wait_for("suggestion")
        term.keys("C-p")
        term.wait_for("Search")
        term.type("Validation")
        term.keys("Enter")
        term.wait_for("Validation · run 1")
        term.keys("r")  # validate with mini validate's defaults, on one worker process per core
        screen = term.wait_for("Validating run 1:", timeout=60)
        time.sleep(1)  # the workers have groups in hand
        return screen

    with Store.open(app_db, read_only=True) as db:
        before = db.scalar("SELECT count(*) FROM validations")
    seconds, seen = quit_in_terminal(app_db, get_there)
    print(f"quit while validating in worker processes: {seconds:.3f} s to the process's exit")
    assert "Validating run 1:" in seen
    assert seconds < QUIT_LIMIT_S + TERMINAL_SLACK_S
    open_read_write_elsewhere(app_db)
    with Store.open(app_db, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM validations") == before
