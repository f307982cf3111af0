"""Label writes for the Review screen: one at a time, each on its own thread, never lost to a quit.

A Textual worker starts on the next turn of the event loop, and a quit pressed right after a labelling
key can cancel it before it runs; a label must survive that. So the write starts on a plain thread the
moment the key is handled, the screen waits for it before it unmounts (and so before the app closes the
database), and the thread is not a daemon, so even an interpreter shutting down lets it commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.db import Store
    from tui.app import ThreadStores

Job = Callable[["Store"], Any]
Done = Callable[[Any, Exception | None], None]


class LabelWriter:
    """Runs one write job at a time on a cursor of its own; `done(result, error)` is called on the
    writing thread when the job has committed (or failed)."""

    def __init__(self, stores: ThreadStores):
        self._stores = stores
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, job: Job, done: Done) -> None:
        if self.busy:
            raise RuntimeError("a label write is still running")

        def run() -> None:
            try:
                with self._stores.cursor() as db:
                    result = job(db)
            except Exception as error:  # reported on screen by `done`
                done(None, error)
                return
            done(result, None)

        self._thread = threading.Thread(target=run, name="mini-label-writer", daemon=False)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the write in flight, if any; True when none is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy
