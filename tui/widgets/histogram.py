"""A bar chart of counts (a histogram) for small terminal panels, with round whole-number ticks."""

from __future__ import annotations

from collections.abc import Sequence

from tui.widgets.quiet_plot import QuietPlot
from tui.widgets.ticks import compact_number, nice_ticks


class BarPlot(QuietPlot):
    """Bars of `heights` at positions `x`; says `empty_text` instead of drawing empty axes."""

    DEFAULT_CSS = "BarPlot { min-height: 6; }"

    def show_bars(self, x: Sequence[float], heights: Sequence[float], *, width: float = 0.8,
                  xticks: Sequence[float] | None = None, xlabels: Sequence[str] | None = None,
                  xlabel: str | None = None, empty_text: str | None = None) -> None:
        """Draw the bars (replacing what was drawn). x ticks default to a few round values of x."""
        plt = self._start_figure(empty_text)
        self.has_data = bool(heights) and max(heights, default=0) > 0
        if self.has_data:
            plt.bar(list(x), list(heights), width=width)
            if xticks is None:
                xticks = [t for t in nice_ticks(min(x), max(x), 6) if t == int(t)]
                xlabels = [compact_number(t) for t in xticks]
            plt.xticks(list(xticks), list(xlabels) if xlabels is not None else None)
            yticks = [t for t in nice_ticks(0, max(heights), 5) if t == int(t)]
            plt.yticks(yticks, [compact_number(t) for t in yticks])
            if xlabel:
                plt.xlabel(xlabel)
        self.refresh()
