"""Help: the key map, over whatever screen is open. docs/keys.md says the same for readers."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.screens.home import HELP_KEYS as HOME_KEYS

# The app-wide sections; each screen module adds its own as HELP_KEYS (see key_map), and docs/keys.md
# says the same in prose. tests/test_app_keys.py checks that every binding of every screen is in both.
BASE_KEY_MAP: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Everywhere",
        (
            ("f1", "show or hide this help"),
            ("ctrl+p", "command palette: every screen and action by name"),
            ("q, ctrl+q", "quit (closes the database)"),
        ),
    ),
    ("Home", HOME_KEYS),
)


def key_map() -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Everywhere and Home, then each screen of tui.app.SCREENS with the keys its module declares."""
    import importlib.util

    from tui.app import SCREENS

    sections = list(BASE_KEY_MAP)
    for entry in SCREENS.values():
        if importlib.util.find_spec(entry.module) is None:
            continue  # a screen still being built on another branch (tests/test_app_keys.py wants them all)
        module = importlib.import_module(entry.module)
        sections.append((entry.title, tuple(module.HELP_KEYS)))
    return sections


def key_map_text() -> Text:
    text = Text()
    for section, keys in key_map():
        text.append(f"{section}\n", style="bold underline")
        for key, meaning in keys:
            text.append(f"  {key:<16}", style="bold")
            text.append(f"{meaning}\n")
        text.append("\n")
    text.append("esc, f1 or q closes this help.", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    """The key map in a box; any of esc, f1, q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen #help {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        padding: 0 1;
        border: round $primary;
        border-title-align: center;
        background: $panel;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as box:
            box.border_title = "mini keys"
            yield Static(key_map_text(), id="key-map")

    def action_close(self) -> None:
        self.dismiss()
