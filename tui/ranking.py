"""Ranking a run from inside the app: one ranking at a time, owned by the app rather than by a screen.

The app starts it (from Features' `R`, the palette's `Rank run N`, or Train's offer after a run finishes)
and runs `engine.analysis.rank.rank_run` in a thread worker on its own cursor, so every screen keeps reading and
answering keys. Because the app owns it, leaving Features does not stop it: Review can label while the
ranking runs. Its progress reaches the screens as `RankChanged` messages, which the app hands to every
open screen that has a `ranking_changed(state)` method (Features shows a progress line and reads the
new ranking when it is stored). `cancel` sets rank_run's event: it stops between SAEs and between
blocks of shuffles, and nothing of it is stored (rank_run writes in one transaction at the end).

The ranking keeps every core busy for minutes, and the screen's thread had to win its share of the CPU
back from it on every key. On Linux its threads therefore run at a lower priority (RANKING_NICENESS): the
screen gets a core the moment it has work, and the ranking uses whatever is left.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from textual.message import Message

if TYPE_CHECKING:
    from engine.analysis.rank import RankConfig, RankOutcome
    from engine.epochs import Epoch
    from tui.thread_stores import ThreadStores

PROGRESS_INTERVAL_S = 0.2
"""At most one progress message per this many seconds reaches the event loop (stage changes always do)."""

RUNNING, RANKED, CANCELLED, FAILED = "running", "ranked", "cancelled", "failed"

RANKING_NICENESS = 10
"""How much nicer than the app's other threads the ranking's run (Linux, where niceness is per thread; the
threads the ranking starts inherit it)."""


class RankState(NamedTuple):
    """Where the app's ranking stands."""

    run_id: int
    status: str
    """RUNNING, RANKED, CANCELLED or FAILED."""
    done: int = 0
    """SAEs ranked so far."""
    total: int | None = None
    """SAEs in the run (None until rank_run has read them)."""
    stage: str = "reading the run and its epoch"
    """What rank_run is doing now (its latest report)."""
    message: str = ""
    """When ended: the sentence to show (how long it took, why it failed)."""
    cancelling: bool = False
    """Cancel was asked for; the ranking stops at its next check."""

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def line(self) -> str:
        """The progress line: `Ranking run 1: SAE 1 of 2 · associations (c cancels)`, or how it ended."""
        if not self.running:
            return self.message
        count = f"SAE {min(self.done + 1, self.total)} of {self.total} · " if self.total else ""
        if self.cancelling:
            return f"Ranking run {self.run_id}: {count}cancelling at the next block of shuffles…"
        return f"Ranking run {self.run_id}: {count}{self.stage} (c cancels)"


@dataclass
class RankChanged(Message):
    """The app's ranking moved on or ended (posted to the app from the worker thread)."""

    state: RankState


def _stage(report: str) -> str:
    """`SAE 3: associations` → `associations` (the SAE count is said apart); other reports as they are."""
    head, sep, tail = report.partition(": ")
    return tail if sep and head.startswith("SAE ") else report


def rank_in_thread(stores: ThreadStores, run_id: int, epoch: Epoch | None, config: RankConfig | None,
                   cancel: threading.Event, post: Callable[[RankState], None]) -> None:
    """Rank `run_id` on a cursor of `stores`, telling `post` how it goes; runs on a worker thread and never
    raises (a failure is a FAILED state with the reason in one sentence)."""
    from engine.errors import Cancelled

    state = RankState(run_id, RUNNING)
    last_post = 0.0

    def tell(new: RankState, *, now: bool = False) -> None:
        nonlocal state, last_post
        state = new
        moment = time.monotonic()
        if now or moment - last_post >= PROGRESS_INTERVAL_S:
            last_post = moment
            post(new)

    def on_progress(done: int, total: int) -> None:
        tell(state._replace(done=done, total=total), now=True)

    def report(text: str) -> None:
        tell(state._replace(stage=_stage(text)), now=True)

    post(state)
    try:
        outcome = _at_low_priority(lambda: _rank(stores, run_id, config, report, on_progress, epoch, cancel))
    except Cancelled as error:
        post(state._replace(status=CANCELLED, message=f"{str(error)[:1].upper()}{str(error)[1:]}."))
    except Exception as error:  # an InputError (bad --where, no SAEs) or a failure: one sentence, app stays up
        post(state._replace(status=FAILED, message=f"Ranking run {run_id} failed: {error}"))
    else:
        where = ""
        if outcome.epoch is not None and outcome.epoch.epoch.is_set:
            where = f" on epoch {outcome.epoch.epoch.describe()}"
        n = len(outcome.sae_ids)
        post(state._replace(status=RANKED, done=n, total=n,
                            message=f"Ranked {n} SAE{'s' if n != 1 else ''} of run {run_id}{where} in "
                                    f"{outcome.seconds:.0f} s."))


def _rank(stores: ThreadStores, run_id: int, config: RankConfig | None, report: Callable[[str], None],
          on_progress: Callable[[int, int], None], epoch: Epoch | None, cancel: threading.Event) -> RankOutcome:
    from engine.analysis.rank import rank_run

    with stores.cursor() as db:
        return rank_run(db, run_id, config, report=report, on_progress=on_progress, epoch=epoch, cancel=cancel)


def _at_low_priority(job: Callable[[], RankOutcome]) -> RankOutcome:
    """Run `job` on a thread of its own at RANKING_NICENESS and return what it returns (or raise what it
    raises). A thread of its own: the worker's thread goes back to the app's pool, and a thread's priority
    cannot be raised again without privileges."""
    if not sys.platform.startswith("linux"):  # elsewhere the call would set the whole process's priority
        return job()
    # Threads inherit the priority of the thread that starts them: the pools that numpy (BLAS) and polars
    # start when first used must start here, or every later read in the app would run at the lower one.
    import polars as pl

    import engine.analysis.rank  # noqa: F401 (numpy, scipy, polars)

    pl.thread_pool_size()
    outcome: list[RankOutcome] = []
    failure: list[BaseException] = []

    def run() -> None:
        with contextlib.suppress(OSError):  # not allowed here: rank at the same priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + RANKING_NICENESS)
        try:
            outcome.append(job())
        except BaseException as error:  # raised again on the worker's thread
            failure.append(error)

    thread = threading.Thread(target=run, name="mini-rank")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
