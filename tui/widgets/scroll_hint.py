"""One line under a table that is wider than the terminal, saying that it scrolls sideways and which way.

At 80 columns Home's runs table and the Features table end mid-column at the right edge, and nothing
showed that the validated column or the one being sorted on was only off-screen. A row-cursor table
scrolls sideways with ← and →; this line says so while columns are hidden, and is blank otherwise.
"""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Static


def hint_text(scroll_x: float, max_scroll_x: float) -> str:
    """What the line says for a table scrolled to `scroll_x` of `max_scroll_x` cells."""
    left, right = scroll_x > 0, scroll_x < max_scroll_x
    if left and right:
        return "← more columns →  (← → scroll)"
    if right:
        return "more columns →  (→ scrolls)"
    if left:
        return "← more columns  (← scrolls back)"
    return ""


class ScrollHint(Static):
    """The hint for the table `table` (a DataTable or ArrowTable), kept up to date as it scrolls, is
    resized or gets new data."""

    DEFAULT_CSS = """
    ScrollHint {
        height: 1;
        padding: 0 1;
        color: $text-muted;
        text-align: right;
    }
    """

    def __init__(self, table: Widget, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self._table = table
        self.text = ""
        """What the line says now (tests read it)."""

    def on_mount(self) -> None:
        for attribute in ("scroll_x", "virtual_size", "size"):
            self.watch(self._table, attribute, self._changed, init=False)
        self.display = False
        self.call_after_refresh(self._update)

    def _changed(self, *_args) -> None:
        # Read the table once its layout has settled: while a table fills, its width and its scroll
        # bars change in turn, and a hint read in between could stay on for a table that fits.
        self.call_after_refresh(self._update)

    def _update(self) -> None:
        table = self._table
        text = hint_text(table.scroll_x, table.max_scroll_x) if table.display else ""
        if text != self.text:
            self.text = text
            self.update(text)
            self.display = bool(text)  # the line is there only while columns are hidden
