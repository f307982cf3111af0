"""ThreadStores: the open database lent to worker threads, one cursor each (tui.app owns one for as long as it
runs; every screen gets it to read in its workers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from textual.worker import get_current_worker

from store.db import Store

if TYPE_CHECKING:
    from textual.message import Message
    from textual.message_pump import MessagePump


class ThreadStores:
    """Lends each worker thread its own cursor and takes the connection back from all of them on the way out.

    Closing must not wait for a worker: DuckDB refuses to close a connection while one of its cursors is
    inside a query, so closing interrupts the queries in flight, waits a moment (`grace_s`) for their threads
    to let go, and then closes the connection even under the threads still holding a cursor (they are
    computing outside DuckDB). Closing rolls back whatever those had not committed; their next call fails.
    """

    def __init__(self, db: Store, *, grace_s: float = 0.1, close_timeout_s: float = 5.0):
        self._db = db
        self._grace_s = grace_s
        self._close_timeout_s = close_timeout_s
        self._lent: dict[Store, str | None] = {}
        """Each cursor lent, with the purpose it was lent for (see `interrupt`)."""
        self._changed = threading.Condition()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @contextmanager
    def cursor(self, purpose: str | None = None) -> Iterator[Store]:
        """A Store on a fresh cursor for the calling thread, closed when the block ends; `purpose` names what
        it reads, for `interrupt`."""
        with self._changed:
            if self._closed:
                raise RuntimeError(f"{self._db.path}: the database is closing")
            thread_db = self._db.for_thread()
            self._lent[thread_db] = purpose
        try:
            yield thread_db
        finally:
            with self._changed:
                self._lent.pop(thread_db, None)
                thread_db.close()
                self._changed.notify_all()

    def read_and_post(self, to: MessagePump, read: Callable[[Store], Sequence[Message]],
                      failed: Callable[[Exception], Message]) -> None:
        """In a thread worker: post to `to` the messages `read` makes from a cursor, or `failed(error)` where it
        raised (a failed read must not take the app down); nothing once the worker is cancelled, as a newer
        read replaced it and its result will be the one shown."""
        worker = get_current_worker()
        try:
            with self.cursor() as db:
                messages = read(db)
        except Exception as error:
            messages = [failed(error)]
        if not worker.is_cancelled:
            for message in messages:
                to.post_message(message)

    def close(self) -> bool:
        """Interrupt the queries still running, wait up to `grace_s` for their threads, then close the store;
        returns whether it closed (False only if a query ignored interrupts for `close_timeout_s`).

        Safe to call more than once.
        """
        started = time.monotonic()
        with self._changed:
            if self._closed:
                return True
            self._closed = True
            # Interrupt again and again: a thread holding a cursor may not have started its query
            # yet, and an interrupt that arrives before the query starts is lost.
            while self._lent and time.monotonic() < started + self._grace_s:
                self._interrupt_lent()
                self._changed.wait(timeout=0.02)
            while not self._db.close_unless_busy():  # a query has not seen its interrupt yet
                if time.monotonic() > started + self._close_timeout_s:
                    return False  # the lock goes with the process, and committed rows are in the WAL
                self._interrupt_lent()
                self._changed.wait(timeout=0.02)
        return True

    def interrupt(self, purpose: str) -> None:
        """Stop each cursor lent for `purpose`: its query in flight is interrupted, and a cursor between two
        queries (computing on what it read) is closed, so that its next query fails at once. Either way its
        block raises."""
        with self._changed:
            for thread_db, lent_for in self._lent.items():
                if lent_for == purpose:
                    thread_db.interrupt()
                    thread_db.close_unless_busy()

    def _interrupt_lent(self) -> None:
        for thread_db in self._lent:
            thread_db.interrupt()
