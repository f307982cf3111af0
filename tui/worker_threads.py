"""The threads the app's thread workers run on: daemon threads that quitting does not wait for.

Textual runs a thread worker through the event loop's default executor. The standard one (a
ThreadPoolExecutor) is joined twice on the way out, when `asyncio.run` ends and again when the interpreter
exits, so a worker busy where it cannot look at a cancel event (PyTorch's first import, a numpy
computation, a query DuckDB has not seen the interrupt of yet) held `q` up for seconds. The app installs
`WorkerThreads` instead: every job runs on a daemon thread of its own, and shutting down waits only
`grace_s` for the jobs in hand. What must not be lost is waited for where it is started, not here: a label
being written (tui/labelling.py), a training marking its run cancelled (tui/screens/train.py); every other
worker only reads, or writes in one transaction that closing the database rolls back (tui.app.ThreadStores).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

GRACE_S = 0.1
"""How long shutting down waits for the jobs still running before leaving them to the process's end."""


class WorkerThreads(ThreadPoolExecutor):
    """An executor that runs each job on a fresh daemon thread and does not wait long for them at shutdown.

    A ThreadPoolExecutor only by type (asyncio accepts nothing else as a default executor): it starts none of
    the pool's threads, so the interpreter's exit has none of them to join."""

    def __init__(self, grace_s: float = GRACE_S):
        super().__init__(max_workers=1, thread_name_prefix="mini-worker")
        self._grace_s = grace_s
        self._running: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._shut_down = False
        self._numbers = itertools.count(1)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()

        def run() -> None:
            try:
                if not future.set_running_or_notify_cancel():
                    return
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:  # handed to whoever awaits the future, as a pool does
                    future.set_exception(error)
                else:
                    future.set_result(result)
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot run new work: the app is shutting down")
            thread = threading.Thread(target=run, name=f"mini-worker-{next(self._numbers)}", daemon=True)
            self._running.add(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new jobs; with `wait`, wait up to `grace_s` in all for the running ones to end."""
        with self._lock:
            self._shut_down = True
            running = list(self._running)
        if not wait:
            return
        deadline = time.monotonic() + self._grace_s
        for thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> int:
        """Jobs still running (those left behind after a shutdown included)."""
        with self._lock:
            return len(self._running)
