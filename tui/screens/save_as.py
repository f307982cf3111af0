"""Save as: ask for a file to write, with a sensible default, checked before anything is written.

`app.push_screen(SaveAsScreen(title, prompt, default, check=...), callback)` calls back with the chosen
absolute Path, or None when the person cancels. The default's folder may be missing (the default export
folder, engine.exports): the caller creates it when it writes there. A bad path is refused in place with one line naming the
field and the problem; an existing file is only replaced after a yes in ConfirmScreen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "write to the path in the box (asks first before replacing a file)"),
    ("esc", "cancel: nothing is written"),
)


def path_problem(text: str, check: Callable[[Path], str | None] | None = None,
                 creatable: Path | None = None) -> tuple[Path | None, str | None]:
    """(the absolute path, None) for a usable file path, else (None, what is wrong with it). `creatable`: a
    folder that need not exist yet (the default export folder, which the writer creates)."""
    if not text.strip():
        return None, "path: give a file name"
    path = Path(text.strip()).expanduser().absolute()
    if path.is_dir():
        return None, f"path: {path} is a folder; add a file name"
    if not path.parent.is_dir() and path.parent != creatable:
        return None, f"path: there is no folder {path.parent}"
    problem = check(path) if check else None
    return (None, f"path: {problem}") if problem else (path, None)


class SaveAsScreen(ModalScreen[Path | None]):
    """A path box over the current screen."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    SaveAsScreen {
        align: center middle;
    }
    SaveAsScreen #save-as {
        width: 72;
        max-width: 100%;
        height: auto;
        padding: 0 1;
        border: round $primary;
        border-title-align: center;
        background: $panel;
    }
    SaveAsScreen #prompt {
        margin-top: 1;
    }
    SaveAsScreen #error {
        color: $error;
        height: auto;
    }
    """

    def __init__(self, title: str, prompt: str, default: Path,
                 check: Callable[[Path], str | None] | None = None):
        super().__init__()
        self._title = title
        self._prompt = prompt
        self._default = default
        self._check = check
        self._creatable = default.parent  # the default's folder may not exist yet: the writer makes it

    def compose(self) -> ComposeResult:
        with Vertical(id="save-as") as box:
            box.border_title = self._title
            box.border_subtitle = "enter write · esc cancel"
            yield Static(self._prompt, id="prompt", markup=False)
            yield Input(str(self._default), id="path")
            yield Static("", id="error", markup=False)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    @on(Input.Changed, "#path")
    def forget_error(self) -> None:
        self.query_one("#error", Static).update("")

    @on(Input.Submitted, "#path")
    def submit(self, event: Input.Submitted) -> None:
        path, problem = path_problem(event.value, self._check, self._creatable)
        if problem or path is None:
            self.query_one("#error", Static).update(problem or "")
            return
        if not path.exists():
            self.dismiss(path)
            return
        from tui.screens.confirm import ConfirmScreen

        def answered(replace: bool | None) -> None:
            if replace:
                self.dismiss(path)

        self.app.push_screen(ConfirmScreen(f"{path} exists. Replace it?", title="Replace file?"), answered)

    def action_cancel(self) -> None:
        self.dismiss(None)
