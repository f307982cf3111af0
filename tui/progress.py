"""Training from the command line: a progress bar on stderr, and ctrl+c that cancels cleanly.

The first ctrl+c asks the trainer to stop at the next step (its work so far is stored and can be
resumed); a second one interrupts at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from engine.pipeline import RunOutcome, RunSpec
    from engine.sae.train import TrainProgress
    from store import Store


def _summary(event: TrainProgress) -> str:
    n = len(event.loss)
    mean = lambda values: sum(values) / len(values)  # noqa: E731 - one-liner for the three columns
    recon, aux = event.mean_losses()
    text = (f"{event.examples_per_s:>9,.0f} ex/s  recon {recon:.4f}"
            + (f" + aux {aux:.4f}" if aux > 0 else "")
            + f"  L0 {mean(event.l0):.1f}  dead {100 * mean(event.dead_fraction):.1f}%")
    if event.val_loss is not None:
        text += f"  val {mean(event.val_loss):.4f}"
    return text + (f"  ({n} SAEs)" if n > 1 else "")


@contextmanager
def training_progress() -> Iterator[tuple[Callable[[TrainProgress], None], threading.Event]]:
    """A progress callback that draws a bar on stderr (one line per epoch when not a terminal), and
    a cancel event that the first ctrl+c sets."""
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):  # first ctrl+c: stop cleanly; second: the default behaviour
        cancel.set()
        signal.signal(signal.SIGINT, previous)

    console = Console(stderr=True)
    columns = (TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[summary]}"))
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        with Progress(*columns, console=console, disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("train", total=None, epoch=0, summary="starting…")

            def on_progress(event: TrainProgress) -> None:
                progress.update(task, completed=event.step, total=event.total_steps, epoch=event.epoch,
                                summary=_summary(event))
                if event.val_loss is not None and not sys.stderr.isatty():
                    console.print(f"epoch {event.epoch}: {_summary(event)}")

            yield on_progress, cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def run_with_progress(db: Store, spec: RunSpec, resume_run: int | None = None,
                      report: Callable[[str], None] = lambda _: None) -> RunOutcome:
    from engine.pipeline import train_run

    with training_progress() as (on_progress, cancel):
        return train_run(db, spec, on_progress=on_progress, cancel=cancel, resume_run=resume_run, report=report)


@contextmanager
def steps_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A bar over whole steps (e.g. the SAEs a ranking goes through), on stderr when it is a terminal."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(label, total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield on_progress
