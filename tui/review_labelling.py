"""Review's labelling and validating keys (tui/screens/review.py is the screen).

A labelling key writes one row through engine.validation.labels.label_feature (the function `mini label`
uses), waits for its commit, then moves on; keys pressed while a write is in flight, or before what they act
on has been read, are held and replayed after it, in order. `v` validates the shown feature's label on the
test split in a worker.

ReviewLabelling is the screen's base class. The screen reads and shows the features (its `_stores`, `run_id`,
`sae_id`, `_validate_config`, `context`, `shown` panel, `index`, panel `_cache` and `_versions`; `_current`,
`_go`, `_show_panel`, `_show_status`); this part writes labels and validations, and bumps the version of each
feature written to so that its panel is read again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from textual import on, work
from textual.screen import Screen

from tui.labelling import LabelWriter, label_job, note_action
from tui.review_messages import LabelFailed, LabelSaved, LabelValidated

if TYPE_CHECKING:
    from tui.thread_stores import ThreadStores

READ_AHEAD = "read ahead"
"""The purpose Review's reads ahead borrow their cursors for: a label being written interrupts them."""


class ReviewLabelling(Screen):
    """Review's labelling, undo, note and validate keys, and the keys held while a write is in flight."""

    def __init__(self, stores: ThreadStores):
        super().__init__()
        self._writer = LabelWriter(stores)
        self._write_interrupts = 0
        """Odd while a write begun interrupts the reads ahead, then even again: a read ahead that sees it odd,
        or changed since it began, gives way (_read_panels)."""
        self._deferred: list[tuple[Any, tuple]] = []
        self._undo: list[tuple[int, int]] = []
        """(label_id, feature_id) of the labels made on this screen, newest last."""
        self._replaying = False
        self._in_dialog = False
        self._validating: int | None = None
        self._status = ""
        self.last_saved: LabelSaved | None = None
        """The last labelling action committed from this screen."""

    async def on_unmount(self) -> None:
        # The app closes the database after its screens unmount: let a label in flight commit first.
        await asyncio.to_thread(self._writer.wait, 30)

    # -- holding keys ----------------------------------------------------------------------------------
    def _held(self, action: Any, *args: Any, needs_panel: bool = False) -> bool:
        """True, and the key is kept to be replayed in order, while a write is in flight, the SAE is still
        being read, an earlier key is waiting, or (needs_panel) the shown feature is still being read."""
        blocked = self._writer.busy or self.context is None or (needs_panel and self.shown is None)
        if blocked or (self._deferred and not self._replaying):
            self._deferred.append((action, args))
            return True
        return False

    # -- labelling -------------------------------------------------------------------------------------
    def action_accept(self, position: int) -> None:
        if self._held(self.action_accept, position):
            return
        feature_id = self._current()
        if feature_id is None:
            return
        count = len(self.context.suggestions.get(feature_id, []))
        if position > count:
            have = f"only {count} suggestion{'s' if count != 1 else ''}" if count else "no suggestions"
            self.notify(f"Feature {feature_id} has {have}: nothing saved. Press l to type a label.",
                        title=f"No suggestion {position}", severity="warning")
            return
        self._write("accept", feature_id, dict(accept=position), advance=True)

    def action_verdict(self, verdict: str) -> None:
        if self._held(self.action_verdict, verdict):
            return
        feature_id = self._current()
        if feature_id is not None:
            self._write(verdict, feature_id, dict(verdict=verdict), advance=True)

    def action_type_label(self) -> None:
        if self._held(self.action_type_label):
            return
        feature_id = self._current()
        if feature_id is None:
            return
        from tui.screens.label_dialog import LabelDialog, LabelEntry

        # This feature's own suggestions complete first, then names and predicates used on the run.
        own = [s["predicate"] for s in self.context.suggestions.get(feature_id, [])]
        names = [*own, *self.context.names, *self.context.predicates]
        predicates = [*own, *self.context.predicates]

        def chosen(entry: LabelEntry | None) -> None:
            if entry is not None:
                self._write("name", feature_id, dict(name=entry.name, predicate=entry.predicate), advance=True)

        self._in_dialog = True
        self.app.push_screen(LabelDialog(feature_id, self.context.data.kinds, names, predicates), chosen)

    def action_note(self) -> None:
        if self._held(self.action_note, needs_panel=True):
            return
        feature_id = self._current()
        if feature_id is None or self.shown is None:
            return
        from tui.screens.label_dialog import NoteDialog

        label = self.shown.label
        current = None if label is None else f"{label['verdict']} {label['name'] or ''}".strip()

        def written(note: str | None) -> None:
            if note is not None:
                self._write("note", feature_id, note_action(label, note), advance=False)

        self._in_dialog = True
        self.app.push_screen(NoteDialog(feature_id, current), written)

    def action_undo(self) -> None:
        if self._held(self.action_undo):
            return
        if not self._undo:
            self.notify("Nothing to undo: undo reverses labels made since this screen opened.", timeout=3)
            return
        label_id, feature_id = self._undo[-1]
        self._write("undo", feature_id, dict(undo=label_id), advance=False)

    def _write(self, kind: str, feature_id: int, what: dict, *, advance: bool) -> None:
        """Start one write; LabelSaved / LabelFailed follow once it has committed or failed."""
        name = what.get("name")
        if kind == "accept":
            name = self.context.suggestions[feature_id][what["accept"] - 1]["predicate"]
        job = label_job(self.run_id, self.sae_id, feature_id, kind, what, name)
        self._write_interrupts += 1
        self._stores.interrupt(READ_AHEAD)
        self._write_interrupts += 1

        def done(result: tuple[int, str | None, str] | None, error: Exception | None) -> None:
            committed_at = time.perf_counter()
            if error is not None:
                self.post_message(LabelFailed(kind, feature_id, str(error)))
            else:
                self.post_message(LabelSaved(kind if not advance else f"{kind}+next", feature_id, *result,
                                             committed_at))

        self._writer.start(job, done)

    @on(LabelSaved)
    def _saved(self, message: LabelSaved) -> None:
        feature_id = message.feature_id
        self._versions[feature_id] = self._versions.get(feature_id, 0) + 1
        self._cache.pop(feature_id, None)
        kind = message.kind.removesuffix("+next")
        if kind == "undo":
            self._undo.pop()
        else:
            self._undo.append((message.label_id, feature_id))
        if self.context is not None:
            self.context.labelled.add(feature_id)
            if message.name and message.name not in self.context.names:
                self.context.names.insert(0, message.name)  # the label box completes it from now on
        self._status = message.summary
        self.last_saved = message
        position = self.context.position(feature_id) if self.context else None
        if message.kind.endswith("+next") and position is not None:
            if position + 1 < len(self.context.order):
                self._go(position + 1)
            else:
                self._go(position)
                self.notify("That was the last feature in rank order.", timeout=3)
        elif position is not None:
            self._go(position)
        self._replay()

    @on(LabelFailed)
    def _failed(self, message: LabelFailed) -> None:
        self.notify(f"Nothing saved for feature {message.feature_id}: {message.reason}", title="Label",
                    severity="error")
        self._replay()

    def _replay(self) -> None:
        """Run the keys held back (pressed during a write, or before what they act on was read), in order,
        until one has to wait again."""
        if self._replaying:
            return
        self._replaying = True
        try:
            while self._deferred and not self._writer.busy and self.context is not None:
                action, args = self._deferred.pop(0)
                waiting = len(self._deferred)
                action(*args)
                if len(self._deferred) > waiting:  # held again: back to the front, keep the order
                    self._deferred.insert(0, self._deferred.pop())
                    break
        finally:
            self._replaying = False

    # -- validating ------------------------------------------------------------------------------------
    def action_validate(self) -> None:
        if self._held(self.action_validate, needs_panel=True):
            return
        panel = self.shown
        if panel is None:
            return
        label = panel.label
        if label is None or label["verdict"] != "accept" or not label["predicate"]:
            self.notify(f"Feature {panel.feature_id} has no accepted label with a predicate to validate"
                        " (accept a suggestion with 1-9, or type one with l).", title="Validate", severity="warning")
            return
        if self._validating is not None:
            self.notify(f"Still validating feature {self._validating}; one at a time.", title="Validate")
            return
        self._validating = panel.feature_id
        self._show_status(f"validating label {label['label_id']} ({label['predicate']}) on the test split…")
        self._run_validation(panel.feature_id, label["label_id"])

    @work(thread=True, exclusive=True, group="validate")
    def _run_validation(self, feature_id: int, label_id: int) -> None:
        from engine.validation.validate_run import validate_label

        try:
            with self._stores.cursor() as db:
                row = validate_label(db, self.run_id, label_id, self._validate_config)
        except Exception as error:  # shown on screen
            self.post_message(LabelValidated(feature_id, None, str(error)))
            return
        self.post_message(LabelValidated(feature_id, row))

    @on(LabelValidated)
    def _validated(self, message: LabelValidated) -> None:
        self._validating = None
        row = message.row
        if row is None:
            self.notify(f"Feature {message.feature_id}: {message.reason}", title="Validation failed",
                        severity="error")
            self._status = ""
        else:
            from engine.validation.validation_text import verdict_words

            verdicts = " · ".join(verdict_words(row))
            self.notify(f"Feature {message.feature_id} ({row['predicate']}), attempt {row['attempt']}: "
                        f"{row['reason']}.", title=verdicts[:1].upper() + verdicts[1:],
                        severity="information" if row["generalises"] else "warning", timeout=8)
            self._status = f"label {row['label_id']}, attempt {row['attempt']}: {verdicts}"
        self._versions[message.feature_id] = self._versions.get(message.feature_id, 0) + 1
        self._cache.pop(message.feature_id, None)
        if self._current() == message.feature_id and not self._writer.busy:
            self._go(self.index)
        elif self.shown is not None:
            self._show_panel(self.shown)
