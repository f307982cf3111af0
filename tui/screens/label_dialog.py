"""The boxes Review opens over a feature: type a label (`l`) and write a note (`n`).

Nothing is written here: a box checks what was typed, shows what is wrong beside the field, and hands
back what to write; the screen writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from engine.errors import InputError
from engine.validation.labels import parse_predicate
from tui.widgets.modal_box import box_css

# Inside the box (tui.widgets.modal_box draws it): the fields and their errors.
DIALOG_CSS = """
{cls} .field {{
    color: $text-muted;
}}
{cls} .error {{
    color: $error;
    height: auto;
}}
{cls} Input {{
    margin: 0;
}}
"""


@dataclass(frozen=True)
class LabelEntry:
    name: str
    predicate: str | None
    """Parsed and checked against the dataset's variables; None: the label is not testable."""


def read_label(name: str, predicate: str, kinds: dict[str, str]) -> tuple[LabelEntry | None, str, str]:
    """(entry or None, error for the name, error for the predicate) from what was typed.

    `name | predicate` in the name field splits into the two. A name that is itself a valid predicate
    (`condition = 3`) is also the predicate when none was typed, as when a suggestion is accepted.
    """
    name, predicate = name.strip(), predicate.strip()
    if " | " in name and not predicate:
        name, predicate = (part.strip() for part in name.split(" | ", 1))
    if not name:
        return None, "name: type a label (esc cancels)", ""
    if predicate:
        try:
            return LabelEntry(name, parse_predicate(predicate, kinds).text), "", ""
        except InputError as error:
            message = str(error)
            return None, "", message if message.startswith("predicate") else f"predicate: {message}"
    try:
        return LabelEntry(name, parse_predicate(name, kinds).text), "", ""
    except InputError:
        return LabelEntry(name, None), "", ""


class LabelDialog(ModalScreen[LabelEntry | None]):
    """Type a label: a name (completes the run's names and predicates) and an optional predicate."""

    DEFAULT_CSS = box_css("LabelDialog", "dialog", title_align="left") + DIALOG_CSS.format(cls="LabelDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, feature_id: int, kinds: dict[str, str], names: list[str], predicates: list[str]):
        """names, predicates: what each field completes, best first."""
        super().__init__()
        self._feature_id = feature_id
        self._kinds = kinds
        self._names = list(dict.fromkeys(names))
        self._predicates = list(dict.fromkeys(predicates))

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Label feature {self._feature_id}"
            yield Static("name  (→ completes; `name | predicate` also works)", classes="field")
            yield Input(id="name", placeholder="e.g. condition = 3, or any text",
                        suggester=SuggestFromList(self._names, case_sensitive=False))
            yield Static("", id="name-error", classes="error")
            yield Static("predicate  (optional: what validation tests)", classes="field")
            yield Input(id="predicate", placeholder="e.g. condition = 3, speed in [20, 35), or both joined by and",
                        suggester=SuggestFromList(self._predicates, case_sensitive=False))
            yield Static("", id="predicate-error", classes="error")
            yield Static("", id="outcome", classes="field")
            yield Static("enter saves · tab next field · esc cancels", classes="field")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()
        self._check(show_errors=False)

    @on(Input.Changed)
    def _typed(self) -> None:
        self._check(show_errors=False)

    @on(Input.Submitted)
    def _submit(self) -> None:
        entry = self._check(show_errors=True)
        if entry is not None:
            self.dismiss(entry)

    def _check(self, *, show_errors: bool) -> LabelEntry | None:
        entry, name_error, predicate_error = read_label(self.query_one("#name", Input).value,
                                                        self.query_one("#predicate", Input).value, self._kinds)
        # Errors show when enter is pressed and clear as soon as the person types again.
        self.query_one("#name-error", Static).update(name_error if show_errors else "")
        self.query_one("#predicate-error", Static).update(predicate_error if show_errors else "")
        outcome = self.query_one("#outcome", Static)
        if entry is None:
            outcome.update("")
        elif entry.predicate:
            outcome.update(f"will be validated as: {entry.predicate}")
        else:
            outcome.update("no predicate: saved as a name only, reported as not testable")
        return entry

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoteDialog(ModalScreen[str | None]):
    """Write a note on the feature's current label (or on a new 'unsure' when it has none)."""

    DEFAULT_CSS = box_css("NoteDialog", "dialog", title_align="left") + DIALOG_CSS.format(cls="NoteDialog")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, feature_id: int, current: str | None):
        super().__init__()
        self._feature_id = feature_id
        self._current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog") as box:
            box.border_title = f"Note on feature {self._feature_id}"
            yield Static(f"on its label: {self._current}" if self._current else
                         "it has no label yet: the note is saved with verdict unsure", classes="field")
            yield Input(id="note", placeholder="anything: quotes, emoji, long text")
            yield Static("", id="note-error", classes="error")
            yield Static("enter saves · esc cancels", classes="field")

    def on_mount(self) -> None:
        self.query_one("#note", Input).focus()

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.query_one("#note-error", Static).update("note: type some text (esc cancels)")
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
