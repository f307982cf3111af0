"""ctrl+c in a command-line command stops the database query it is in, at once.

DuckDB runs a query in C++ with the main thread inside it, where Python cannot run a signal handler until the query
returns, and its Python client notices a ctrl+c by itself on some paths only. Measured on DuckDB 2.0: a ctrl+c two
seconds into a 30-billion-row count in `mini sql` did nothing; the query ran to its end, printed its result and
exited 0. Where the client does notice one, it raises RuntimeError('Query interrupted') and Python's
KeyboardInterrupt is gone, so a `mini sweep` owner ingesting a finished pack took it for the pack failing and trained
on. Python's C-level handler writes each signal's number to the wakeup fd as it arrives, whatever the main thread is
doing: a watcher thread reads it and interrupts every open Store (store.db.interrupt_open_stores).

Only while SIGINT has Python's default handler (a ctrl+c means KeyboardInterrupt): `mini train` installs its own, whose
first ctrl+c cancels the training cleanly, checkpoint written; its second is the default again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ctrl_c_stops_queries() -> Iterator[threading.Event]:
    """While the block runs, a ctrl+c (SIGINT with Python's default handler) also interrupts every open Store's query;
    yields an event set once one was heard. Only the main thread can set the wakeup fd: elsewhere, a plain block."""
    heard = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield heard
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block on a full pipe
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            numbers = os.read(read_end, 64)
            if not numbers:
                return
            if signal.SIGINT in numbers and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                heard.set()
                store_db = _store_db()
                if store_db is not None:  # else no database is open: nothing to stop
                    store_db.interrupt_open_stores()

    watcher = threading.Thread(target=watch, name="mini-ctrl-c-watch", daemon=True)
    watcher.start()
    try:
        yield heard
    finally:
        signal.set_wakeup_fd(previous)
        done.set()
        os.write(write_end, b"\0")  # wakes the watcher to see `done`
        watcher.join(timeout=1)
        os.close(write_end)
        if not watcher.is_alive():
            os.close(read_end)


def is_query_interrupt(error: BaseException) -> bool:
    """Whether an error is a database query stopped by an interrupt (store.db.is_interrupt), for an error that may
    arrive before the watcher has marked the ctrl+c heard."""
    store_db = _store_db()
    return store_db is not None and store_db.is_interrupt(error)


def _store_db():
    """store.db where a command has imported it (then it may have open Stores), else None: importing it here would
    put DuckDB on the path of every command, the ones that open no database too."""
    return sys.modules.get("store.db")
