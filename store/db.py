"""Open a mini database: one DuckDB file, one owning process, migrations applied at open.

DuckDB lets one process hold a file read-write and then shuts every other process out, even
read-only ones. So the first thing a second process learns must be *who* holds the file and
what to do about it, in one sentence, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from store.errors import StoreError, StoreInterrupted, StoreLockedError
from store.migrate import apply_migrations, missing_versions, schema_version
from store.migrations import MIGRATIONS, Migration

if TYPE_CHECKING:  # polars and pyarrow cost ~0.3 s to import; the app's first frame needs neither
    import polars as pl
    import pyarrow as pa

CONNECTION_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
"""Every connection mini opens: no query installs or loads an extension by itself, so none reaches the
network (a `FROM 'https://…'` says the httpfs extension is missing instead of fetching it)."""

_OPEN: weakref.WeakSet[Store] = weakref.WeakSet()
"""Every Store of this process (cursors included), for interrupt_open_stores."""


def interrupt_open_stores() -> None:
    """Stop the query running on every Store of this process (what a ctrl+c does to a command: tui/interrupts.py);
    a transaction's COMMIT still finishes (see Store.interrupt)."""
    for store in list(_OPEN):
        store.interrupt()


def is_interrupt(error: BaseException) -> bool:
    """Whether an error is a query stopped by an interrupt: `Store.interrupt()` makes DuckDB raise
    InterruptException, and a ctrl+c that DuckDB's Python client notices by itself (on some paths only) becomes a
    RuntimeError('Query interrupted'), with Python's KeyboardInterrupt consumed."""
    return (isinstance(error, (KeyboardInterrupt, duckdb.InterruptException))
            or (type(error) is RuntimeError and str(error).startswith("Query interrupted")))


_LOCK_PID = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def default_db_path() -> Path:
    """`$MINI_DB` if set, else `./mini.duckdb`."""
    return Path(os.environ.get("MINI_DB") or "mini.duckdb")


def _holder_description(pid: int, exe: str) -> str:
    """The holder's command line, read from /proc where we can; else its executable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    except OSError:
        args = []
    if args:
        # Show `mini tui --db x` rather than `/usr/bin/python3 /venv/bin/mini tui --db x`.
        for i, arg in enumerate(args):
            if Path(arg).name == "mini":
                args = ["mini", *args[i + 1 :]]
                break
        command = " ".join(" ".join(args).split())  # one line, even for `python -c "<script>"`
        return command if len(command) <= 80 else command[:77] + "..."
    return exe


def _lock_message(path: Path, error: duckdb.Error) -> str | None:
    match = _LOCK_PID.search(str(error))
    if not match:
        return None
    pid = int(match["pid"])
    holder = _holder_description(pid, match["exe"])
    return (
        f"{path} is in use by another process (PID {pid}: {holder}); a mini database has one owner at "
        f"a time, so close that app or wait for that command to finish, then try again."
    )


class Store:
    """One open mini database. Use one Store per process and `for_thread()` in each worker thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool):
        # DuckDB draws a progress bar on stdout for a query over 2 s: into `mini sql`'s CSV, or across the app's
        # screen. A session setting, so each Store's connection or cursor sets it.
        con.execute("SET enable_progress_bar = false")
        self.con = con
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        self._interrupts = threading.Lock()
        """Held while an interrupt is sent, and while `_committing` changes (see `interrupt`)."""
        self._committing = False
        """True while a COMMIT of `transaction` runs: no interrupt is sent then."""
        _OPEN.add(self)

    # -- opening -------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        read_only: bool = False,
        create: bool = True,
        migrations: tuple[Migration, ...] = MIGRATIONS,
    ) -> Store:
        """Open (and, read-write, create and migrate) the database at `path`.

        Raises StoreLockedError when another process holds the file and StoreError for a file
        that is missing (read-only or `create=False`), not a DuckDB database, or from a newer mini.
        """
        path = Path(path) if path is not None else default_db_path()
        if not path.exists() and (read_only or not create):
            raise StoreError(f"{path}: no such database; create one with `mini demo` or `mini import`")
        if path.exists() and path.is_dir():
            raise StoreError(f"{path}: is a directory, not a database file")
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=dict(CONNECTION_CONFIG))
        except duckdb.Error as error:
            message = _lock_message(path, error)
            if message:
                raise StoreLockedError(message) from None
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise StoreError(f"{path}: cannot open as a DuckDB database ({first_line})") from None
        try:
            current, latest = schema_version(con), migrations[-1].version
            if current > latest:
                raise StoreError(
                    f"{path}: made by a newer mini (schema version {current}, this mini knows up to "
                    f"{latest}); upgrade mini to open it"
                )
            if not read_only:
                apply_migrations(con, path, migrations)
                mark_stale_runs_interrupted(cls(con, path, read_only))
            elif missing := missing_versions(con, migrations):
                older = (f"schema version {current} is older than this mini's {latest}" if current < latest
                         else f"lacks schema migration {', '.join(map(str, missing))}")
                raise StoreError(
                    f"{path}: {older}; open it once read-write (e.g. `mini sql --write \"SELECT 1\"`) to upgrade it"
                )
        except BaseException:
            con.close()
            raise
        return cls(con, path, read_only)

    def for_thread(self) -> Store:
        """A Store on its own cursor of the same connection, for use in one worker thread."""
        return Store(self.con.cursor(), self.path, self.read_only)

    def close(self) -> None:
        self.con.close()

    def close_unless_busy(self) -> bool:
        """Close unless a cursor of this connection is inside a query (DuckDB refuses then, rather than wait);
        returns whether it closed. What the cursors had not committed is rolled back, and their next call fails."""
        try:
            self.con.close()
        except duckdb.Error:
            return False
        return True

    def interrupt(self) -> None:
        """Stop the query running on this Store's cursor, if any (one that has not started yet is not stopped;
        a closed cursor has nothing to stop), unless it is a transaction's COMMIT.

        An interrupted COMMIT is ambiguous: measured on DuckDB 2.0, most leave the transaction open and a few
        raise after committing. So a COMMIT is never interrupted; it takes milliseconds. (DuckDB clears an
        interrupt when its next query starts, so one sent before `_committing` was set cannot reach the COMMIT.)
        """
        with self._interrupts:
            if self._committing:
                return
            with contextlib.suppress(duckdb.ConnectionException):
                self.con.interrupt()

    @contextmanager
    def interrupted_when(self, event: threading.Event | None) -> Iterator[None]:
        """Run the block so that setting `event` stops its queries: the block raises StoreInterrupted, and a
        transaction inside it is rolled back whole. None: an ordinary block."""
        if event is None:
            yield
            return
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if event.wait(0.05):
                    # Again and again: an interrupt that arrives between two statements is lost.
                    self.interrupt()
                    done.wait(0.02)

        watcher = threading.Thread(target=watch, name="mini-interrupt-watch", daemon=True)
        watcher.start()
        try:
            yield
        except duckdb.InterruptException as error:
            if event.is_set():
                raise StoreInterrupted(f"{self.path}: stopped on request; nothing of it was written") from error
            raise
        finally:
            done.set()
            watcher.join()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives the domain modules build on ------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a failure (or a kill) inside leaves the database as it was."""
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only; this action writes")
        with self._lock:
            try:
                self.con.execute("BEGIN TRANSACTION")
            except BaseException:
                self._rollback()  # an interrupted BEGIN can leave the transaction begun
                raise
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            with self._interrupts:
                self._committing = True
            try:
                self.con.execute("COMMIT")
            except BaseException:
                self._rollback()  # a COMMIT that failed (a conflict, the disk) can leave the transaction open
                raise
            finally:
                with self._interrupts:
                    self._committing = False

    def _rollback(self) -> None:
        # Under `interrupted_when` the ROLLBACK itself can be interrupted; each interrupt stops one statement
        # only, and they come tens of milliseconds apart, so the next try goes through. An interrupt can also
        # land after the ROLLBACK has finished (seen on a loaded machine): the next try then finds no
        # transaction, which means the rollback is done.
        for _ in range(100):
            try:
                self.con.execute("ROLLBACK")
                return
            except duckdb.InterruptException:
                continue
            except duckdb.TransactionException as error:
                if "no transaction is active" in str(error):
                    return
                raise
        self.con.execute("ROLLBACK")

    def insert_frame(self, table: str, frame: pl.DataFrame | pa.Table) -> int:
        """Bulk-insert a polars frame or Arrow table by column name in one statement; returns rows."""
        arrow = _arrow(frame)
        view = f"_mini_insert_{table}"
        self.con.register(view, arrow)
        try:
            self.con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
        except BaseException:
            # In a transaction the failed INSERT aborted, unregistering fails too ("please ROLLBACK"): the
            # caller must hear the first error (e.g. an interrupt), and the rollback drops the view anyway.
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(view)
            raise
        self.con.unregister(view)
        return arrow.num_rows

    @contextmanager
    def registered(self, name: str, frame: pl.DataFrame | pa.Table) -> Iterator[None]:
        """A frame visible to SQL as view ``name`` for the duration of the block."""
        self.con.register(name, _arrow(frame))
        try:
            yield
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # as in insert_frame: the first error is the one to hear
                self.con.unregister(name)
            raise
        self.con.unregister(name)

    def frame(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run a query of ours and return a polars frame."""
        return self.con.sql(sql, params=params or None).pl()

    def records(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a query of ours and return its rows as dicts: for a few rows, without polars."""
        cursor = self.con.execute(sql, params or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def row(self, sql: str, params: list[Any] | None = None) -> dict[str, Any] | None:
        """Run a query of ours and return its first row as a dict; None when it returns none."""
        rows = self.records(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        rows = self.con.execute(sql, params or []).fetchall()  # fetch all: DuckDB 2 rejects unfinished results
        return rows[0][0] if rows else None


def _arrow(frame: pl.DataFrame | pa.Table) -> pa.Table:
    """An Arrow table for DuckDB to read (a polars frame converts without copying)."""
    return frame.to_arrow() if hasattr(frame, "to_arrow") else frame


def mark_stale_runs_interrupted(db: Store) -> int:
    """Runs still 'running' when a process opens the file read-write belong to a process that died
    (only one process can hold the file), so say so. Returns how many."""
    if not db.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'"):
        return 0  # a file opened with an older list of migrations (tests of the migration mechanism)
    with db.transaction():
        count = int(db.scalar("SELECT count(*) FROM runs WHERE status = 'running'"))
        if count:
            db.con.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = current_timestamp, "
                "message = 'the process training it stopped before it finished; resume with mini train "
                "--resume ' || run_id WHERE status = 'running'"
            )
    return count
