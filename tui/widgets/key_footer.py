"""The footer every screen uses: it shows as many of the screen's keys as its width holds, the essential
ones first, and says that f1 lists the rest.

Textual's Footer shows every key in a row and cuts the row at the terminal's edge, so at 80 columns the
keys a screen is for (Review's `v Validate`, `esc Back`, `f1 Help`) were the ones lost. Here a screen
names its keys in the order they matter (`FOOTER_KEYS`, action names); when the row does not fit, the
footer turns compact, drops the palette's key (f1 lists ctrl+p) and then the least important keys, keeps
the rest in the screen's own order, and renames `f1 Help` to `f1 All keys` so that the cut is visible.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from textual.app import ComposeResult
from textual.binding import Binding
from textual.events import Resize
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

HELP_ACTION = "help"
ALL_KEYS = "All keys"
"""What f1 is called in a footer that had to leave keys out."""


class FooterEntry(NamedTuple):
    binding: Binding
    key_display: str
    enabled: bool
    tooltip: str


def entry_width(key_display: str, description: str, compact: bool) -> int:
    """Cells one key takes: FooterKey pads the key by one on each side and the description by one on
    its right; compact, one space between them and none around."""
    return len(key_display) + len(description) + (1 if compact else 3)


def fit_keys(entries: list[tuple[str, str, str]], priority: Iterable[str], width: int,
             palette_width: int) -> tuple[list[int], bool, bool]:
    """Which keys a footer `width` cells wide shows.

    `entries`: (action, key display, description) in display order. `priority`: actions, most
    important first; actions not named follow in display order, the help key always comes first.
    Returns (indices shown in display order, compact, palette shown).
    """
    if sum(entry_width(k, d, False) for _, k, d in entries) + palette_width <= width:
        return list(range(len(entries))), False, True
    ranked = sorted(range(len(entries)), key=_ranker(entries, list(priority)))
    chosen: set[int] = set()
    used = 0
    for index in ranked:
        action, key, description = entries[index]
        if action == HELP_ACTION:
            description = ALL_KEYS
        cost = entry_width(key, description, True) + 1  # and the margin after it
        if used + cost <= width or action == HELP_ACTION:
            chosen.add(index)
            used += cost
    return sorted(chosen), True, False


def _ranker(entries: list[tuple[str, str, str]], priority: list[str]):
    def rank(index: int) -> tuple[int, int]:
        action = entries[index][0]
        if action == HELP_ACTION:
            return (-1, index)
        for name in (action, action.split("(")[0]):  # "step(1)" may be named whole or as "step"
            if name in priority:
                return (priority.index(name), index)
        return (len(priority), index)
    return rank


class KeyFooter(Footer):
    """A Footer that fits its keys to its width (see the module's docstring). A screen sets
    `FOOTER_KEYS: ClassVar[tuple[str, ...]]`, its actions in the order they matter."""

    DEFAULT_CSS = """
    KeyFooter.-compact FooterKey {
        margin-right: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._composed_width = 0
        self.shown_actions: list[str] = []
        """The actions the footer shows now (the layout tests read them)."""

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        entries: list[FooterEntry] = []
        seen: set[str] = set()
        for _node, binding, enabled, tooltip in active.values():
            if binding.show and binding.action not in seen:
                seen.add(binding.action)
                entries.append(FooterEntry(binding, self.app.get_key_display(binding), enabled, tooltip))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING) if self.app.ENABLE_COMMAND_PALETTE else None
        palette_width = entry_width(self.app.get_key_display(palette[1]), palette[1].description, False) + 2 \
            if palette else 0
        width = self._width()
        self._composed_width = width
        shown, compact, with_palette = fit_keys(
            [(e.binding.action, e.key_display, e.binding.description) for e in entries],
            getattr(self.screen, "FOOTER_KEYS", ()), width, palette_width)
        self.compact = compact
        self.shown_actions = [entries[i].binding.action for i in shown]
        for index in shown:
            entry = entries[index]
            description = entry.binding.description
            if compact and entry.binding.action == HELP_ACTION and len(shown) < len(entries):
                description = ALL_KEYS
            yield FooterKey(entry.binding.key, entry.key_display, description, entry.binding.action,
                            disabled=not entry.enabled, tooltip=entry.tooltip).data_bind(compact=Footer.compact)
        if palette and with_palette:
            _node, binding, enabled, _tooltip = palette
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                            classes="-command-palette", disabled=not enabled,
                            tooltip=binding.tooltip or binding.description)

    def _width(self) -> int:
        return self.size.width or self.screen.size.width or self.app.size.width

    def on_resize(self, event: Resize) -> None:
        if event.size.width != self._composed_width:
            self.call_after_refresh(self.recompose)
