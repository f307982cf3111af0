"""Help: the key map, over whatever screen is open. docs/keys.md says the same for readers."""

from __future__ import annotations

import importlib
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.screen_registry import SCREENS
from tui.screens.home import HELP_KEYS as HOME_KEYS
from tui.widgets.modal_box import box_css

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


def key_map(current: str | None = None) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Everywhere and Home, then each screen of tui.screen_registry.SCREENS with the keys its module
    declares; the `current` screen's section (its title) first, marked as this screen's, so f1 opens on the
    keys that work where the person is."""
    sections = list(BASE_KEY_MAP)
    for entry in SCREENS.values():
        module = importlib.import_module(entry.module)
        sections.append((entry.title, tuple(module.HELP_KEYS)))
    here = [section for section in sections if section[0] == current]
    if here:
        sections.remove(here[0])
        sections.insert(0, (f"{current}: this screen", here[0][1]))
    return sections


KEY_WIDTH = 16
"""Characters of the key column; a meaning wraps beside it, never under it."""
TEXT_WIDTH = 68
"""Characters a line may take inside the help box: 76 wide, less its border, padding and the scroll bar
(at 80 columns the key map is longer than the box, and a line one cell too long wrapped under the key)."""


def section_of(screen: object) -> str:
    """The key-map section of a screen: its palette title (tui.screen_registry.SCREENS), Home for the home
    screen."""
    name = type(screen).__name__
    return next((entry.title for entry in SCREENS.values() if entry.cls == name), "Home")


def key_map_text(current: str | None = None) -> Text:
    import textwrap

    text = Text()
    indent = " " * (2 + KEY_WIDTH)
    for section, keys in key_map(current):
        text.append(f"{section}\n", style="bold underline")
        for key, meaning in keys:
            lines = textwrap.wrap(meaning, TEXT_WIDTH - len(indent)) or [""]
            if len(key) >= KEY_WIDTH:  # a long key gets its own line; the meaning starts below it
                text.append(f"  {key}\n", style="bold")
                text.append(indent)
            else:
                text.append(f"  {key:<{KEY_WIDTH}}", style="bold")
            text.append("\n".join([lines[0], *(indent + line for line in lines[1:])]) + "\n")
        text.append("\n")
    text.append("esc, f1 or q closes this help.", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    """The key map in a box, opening on the keys of the screen below it (`current`); esc, f1, q close it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("f1", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    DEFAULT_CSS = box_css("HelpScreen", "help")

    def __init__(self, current: str | None = None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help") as box:
            box.border_title = "mini keys" + (f": {self.current}" if self.current else "")
            yield Static(key_map_text(self.current), id="key-map")

    def action_close(self) -> None:
        self.dismiss()
