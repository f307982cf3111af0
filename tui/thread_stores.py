"""ThreadStores: the open database lent to worker threads, one cursor each (tui.app owns one for as long as it
runs; every screen gets it to read in its workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from store.db import Store


class ThreadStores:
    """Lends each worker thread its own cursor and takes every one back before the store closes.

    DuckDB refuses to close a connection while one of its cursors is still running a query, so
    closing has to interrupt the queries in flight and wait for their threads to let go.
    """

    def __init__(self, db: Store, *, close_timeout_s: float = 5.0):
        self._db = db
        self._close_timeout_s = close_timeout_s
        self._lent: set[Store] = set()
        self._changed = threading.Condition()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def cursor(self) -> Iterator[Store]:
        """A Store on a fresh cursor for the calling thread, closed when the block ends."""
        with self._changed:
            if self._closed:
                raise RuntimeError(f"{self._db.path}: the database is closing")
            thread_db = self._db.for_thread()
            self._lent.add(thread_db)
        try:
            yield thread_db
        finally:
            with self._changed:
                self._lent.discard(thread_db)
                thread_db.close()
                self._changed.notify_all()

    def close(self) -> None:
        """Interrupt the queries still running, wait for their threads, then close the store.

        Safe to call more than once.
        """
        deadline = time.monotonic() + self._close_timeout_s
        with self._changed:
            if self._closed:
                return
            self._closed = True
            # Interrupt again and again: a thread holding a cursor may not have started its query
            # yet, and an interrupt that arrives before the query starts is lost.
            while self._lent and time.monotonic() < deadline:
                for thread_db in self._lent:
                    thread_db.con.interrupt()
                self._changed.wait(timeout=0.05)
        self._db.close()
