"""Lines over training progress (loss, L0, dead fraction against examples seen), one per SAE.

Used live by the Train screen (fed from progress events) and by the QC screen (from train_log, and
for R² per unit as points with the bad-unit threshold drawn as a rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tui.widgets.quiet_plot import QuietPlot
from tui.widgets.ticks import compact_number, nice_ticks

Series = tuple[Sequence[float], Sequence[float]]
"""(x, y) of one line."""


class CurvePlot(QuietPlot):
    """Line plots of several series on shared axes; `points` series are drawn as markers only."""

    DEFAULT_CSS = "CurvePlot { min-height: 5; }"
    EMPTY_TEXT = "no points yet"

    def show_series(self, lines: Sequence[Series], *, points: Sequence[Series] = (),
                    hline: float | None = None, xlabel: str | None = None,
                    empty_text: str | None = None) -> None:
        """Draw `lines` (and marker-only `points`, and a horizontal rule at `hline`), replacing what was
        drawn; NaNs and None are left out."""
        plt = self._start_figure(empty_text)
        drawn: list[tuple[list[float], list[float], bool]] = []
        for series, as_points in ((lines, False), (points, True)):
            for x, y in series:
                pairs = [(a, b) for a, b in zip(x, y, strict=True) if b is not None and math.isfinite(b)]
                if pairs:
                    drawn.append(([a for a, _ in pairs], [b for _, b in pairs], as_points))
        self.has_data = bool(drawn)
        if self.has_data:
            for x, y, as_points in drawn:
                if as_points:
                    plt.scatter(x, y, marker="dot")
                else:
                    plt.plot(x, y, marker="braille")
            xs = [a for x, _, _ in drawn for a in x]
            ys = [b for _, y, _ in drawn for b in y] + ([hline] if hline is not None else [])
            if hline is not None:  # keep the rule in view even when every point is on one side of it
                plt.hline(hline)
                plt.ylim(min(ys), max(ys))
            xticks = nice_ticks(min(xs), max(xs), 5)
            plt.xticks(xticks, [compact_number(t) for t in xticks])
            yticks = nice_ticks(min(ys), max(ys), 4)
            plt.yticks(yticks, [compact_number(t) for t in yticks])
            if xlabel:
                plt.xlabel(xlabel)
        self.refresh()
