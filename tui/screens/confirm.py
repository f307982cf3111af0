"""Confirm: a yes/no question over the current screen, for anything that cannot be undone.

`app.push_screen(ConfirmScreen("Delete run 3?"), callback)` calls back with True (yes) or False (no).
No is the focused button, so an absent-minded `enter` never destroys anything.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("y", "yes: go ahead"),
    ("n, esc", "no: leave everything as it is"),
    ("left, right, tab", "move between the buttons; enter presses the focused one (No at first)"),
)


class ConfirmScreen(ModalScreen[bool]):
    """Ask `question`; dismisses with True for yes and False for no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
        Binding("left", "app.focus_previous", show=False),
        Binding("right", "app.focus_next", show=False),
    ]

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen #confirm {
        width: 64;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $warning;
        border-title-align: center;
        background: $panel;
    }
    ConfirmScreen #question {
        height: auto;
        margin: 1 0;
    }
    ConfirmScreen #buttons {
        height: auto;
        align: center middle;
    }
    ConfirmScreen Button {
        margin: 0 2;
        min-width: 10;
    }
    """

    def __init__(self, question: str, *, title: str = "Are you sure?", yes: str = "Yes", no: str = "No"):
        super().__init__()
        self.question = question
        self._title = title
        self._yes, self._no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm") as box:
            box.border_title = self._title
            box.border_subtitle = "y yes · n or esc no"
            yield Static(self.question, id="question", markup=False)
            with Horizontal(id="buttons"):
                yield Button(self._yes, id="yes", variant="warning")
                yield Button(self._no, id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
