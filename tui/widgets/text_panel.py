"""A scrollable panel of pre-formatted lines that changes content without a layout pass.

Review replaces five panels on every key press. A Static (or a Rich Table in it) re-measures its
content and asks the whole screen for a new layout each time: that cost ~100 ms per feature at 80×24.
This widget draws its lines itself (Textual's line API) and only tells its own scroll area how tall the
content is, so showing the next feature repaints the panels and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

Builder = Callable[[int], Text]
"""Makes the panel's text for a width in cells (it is rebuilt when the width changes)."""


class TextPanel(ScrollView, can_focus=True):
    """Lines of Rich text, scrolled with the arrow keys when focused (tab moves focus between panels)."""

    DEFAULT_CSS = """
    TextPanel {
        height: 1fr;
        width: 1fr;
        overflow-x: hidden;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._builder: Builder | None = None
        self._lines: list[Text] = []
        self._strips: dict[int, Strip] = {}
        self._built_width = -1
        self._base: Style | None = None

    def show(self, builder: Builder) -> None:
        self._builder = builder
        self._build(self._width())
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    @property
    def plain(self) -> str:
        """The panel's whole text (tests read it)."""
        return "\n".join(line.plain for line in self._lines)

    def _width(self) -> int:
        """Cells a line has, with no scrollbar."""
        return self.content_region.width or self.size.width or 40

    def _build(self, width: int) -> None:
        self._built_width = width
        self._strips.clear()
        self._base = None
        self._lines = self._lines_for(width)
        if len(self._lines) > self.content_region.height > 0:
            # Too tall: a scrollbar will take its columns, so lay the text out narrower.
            self._lines = self._lines_for(width - self.styles.scrollbar_size_vertical)
        self.virtual_size = Size(width, len(self._lines))

    def _lines_for(self, width: int) -> list[Text]:
        text = self._builder(max(width, 8)) if self._builder is not None else Text("")
        return text.split("\n", allow_blank=True) if text.plain else []

    def on_resize(self) -> None:
        if self._builder is not None and self._width() != self._built_width:
            self._build(self._width())
            self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = y + int(self.scroll_offset.y)
        if index >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        strip = self._strips.get(index)
        if strip is None:
            if self._base is None:  # looked up once per content: it walks the CSS of every ancestor
                self._base = self.rich_style
            base, line = self._base, self._lines[index]
            segments = [Segment(s.text, base + s.style if s.style else base) for s in line.render(self.app.console)]
            strip = self._strips[index] = Strip(segments, line.cell_len)
        return strip.crop_extend(0, width, self._base if self._base is not None else self.rich_style)
