"""Label writes for the Review screen: what each labelling key writes, and the writer that commits them
one at a time, each on its own thread, never lost to a quit.

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
    from tui.thread_stores import ThreadStores

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


def note_action(label: dict | None, note: str) -> dict:
    """What `n` writes: the feature's current label again (verdict, name, predicate, source) with `note`;
    a feature without a label gets an 'unsure' one carrying the note."""
    if label is None:
        return dict(verdict="unsure", note=note)
    if label["verdict"] == "accept":
        return dict(name=label["name"], predicate=label["predicate"], note=note, source=label["source"])
    return dict(verdict=label["verdict"], note=note, source=label["source"])


def label_job(run_id: int, sae_id: int | None, feature_id: int, kind: str, what: dict, name: str | None) -> Job:
    """The write of one labelling action (`kind`: accept, name, reject/unsure verdict, note, undo) as a job
    for LabelWriter: it returns (label_id, name, a one-line summary for the screen). `what` holds
    label_feature's keyword arguments, or {"undo": label_id}; `name` is the label's name, for the summary.
    Labels go through engine.validation.labels.label_feature, the function `mini label` uses (undos through
    engine.validation.labels.undo_label): both refuse a change to a run whose labels are frozen."""
    verdict = what.get("verdict") or ("accept" if kind in ("accept", "name") else None)

    def job(db: Store) -> tuple[int, str | None, str]:
        from engine.validation.labels import label_feature, undo_label

        if kind == "undo":
            undo_label(db, what["undo"])
            return what["undo"], None, f"undid label {what['undo']} on #{feature_id}"
        label_id = label_feature(db, run_id, feature_id, sae_id=sae_id, **what)
        if kind == "note":
            return label_id, name, f"saved label {label_id}: a note on #{feature_id}"
        text = f" {name}" if name else ""
        return label_id, name, f"saved label {label_id}: {verdict}{text} on #{feature_id}"

    return job
