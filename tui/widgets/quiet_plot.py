"""A plotext plot that says what is missing instead of drawing empty axes."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot


class QuietPlot(PlotextPlot):
    """Base of mini's plots: `has_data` False shows `empty_text` (dim) in place of the figure. They fill their
    panel (PlotextPlot's CSS); a subclass's CSS adds only its min-height."""

    EMPTY_TEXT: ClassVar[str] = "nothing to show"
    """What an empty plot says when the screen gives no `empty_text`."""

    def __init__(self, *, empty_text: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.empty_text = self.EMPTY_TEXT if empty_text is None else empty_text
        self.has_data = False

    def _start_figure(self, empty_text: str | None):
        """Clear the figure for a new drawing (and take a new empty text); returns plotext's module."""
        if empty_text is not None:
            self.empty_text = empty_text
        self.plt.clear_figure()
        return self.plt

    def render(self) -> RenderResult:
        if not self.has_data:
            return Text(self.empty_text, style="dim")
        return super().render()
