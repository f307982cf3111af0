"""A feature's activation over time as columns of block characters, with the natural feature beneath.

Drawn by hand rather than with plotext: a column per group of time bins (the tallest activation in the
group, in eighths of a cell) is what a sparse, spiky trace needs, and it draws in well under a
millisecond, so moving to the next feature never waits for a plot.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text
from textual.widget import Widget

if TYPE_CHECKING:
    from engine.review import Trace

BLOCKS = " ▁▂▃▄▅▆▇█"
SPARK = "▁▂▃▄▅▆▇█"
AXIS_WIDTH = 6
BAR_STYLE = "cyan"
HOLDS_STYLE = "bold green"
"""Where the context predicate holds: the bars above and the strip beneath."""


def column_groups(n_values: int, width: int) -> list[slice]:
    """Split n_values consecutive values into at most `width` contiguous groups of (nearly) equal size."""
    width = max(1, min(width, n_values))
    edges = np.linspace(0, n_values, width + 1).round().astype(int)
    return [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _number(value: float) -> str:
    return f"{value:.3g}"


def render_trace(trace: Trace, width: int, height: int) -> Text:
    """The trace as `height` lines of `width` cells: bars, the context strip, the time axis."""
    text = Text(no_wrap=True, overflow="crop")
    bar_rows = max(1, height - 2)
    plot_width = max(1, width - AXIS_WIDTH)
    groups = column_groups(len(trace.activation), plot_width)
    tallest = np.array([trace.activation[g].max() for g in groups])
    holds = np.array([trace.holds[g].mean() >= 0.5 for g in groups])
    top = float(tallest.max()) if tallest.size and tallest.max() > 0 else 1.0
    eighths = np.round(tallest / top * bar_rows * 8).astype(int)
    for row in range(bar_rows):
        level_below = (bar_rows - 1 - row) * 8
        axis = _number(top) if row == 0 else ("0" if row == bar_rows - 1 else "")
        text.append(f"{axis:>{AXIS_WIDTH - 1}}┤", style="dim")
        for height_8, on in zip(eighths, holds, strict=True):
            cell = BLOCKS[int(np.clip(height_8 - level_below, 0, 8))]
            text.append(cell, style=HOLDS_STYLE if on else BAR_STYLE)
        text.append("\n")
    text.append(_strip(trace, groups, holds))
    text.append("\n")
    text.append(_axis(trace, plot_width))
    return text


def _strip(trace: Trace, groups: list[slice], holds: np.ndarray) -> Text:
    """The context variable beneath the bars: a sparkline of its value (a continuous variable) or a low
    mark (a categorical one), full height and bright where the predicate holds; blank where missing."""
    strip = Text(f"{'':>{AXIS_WIDTH - 1}} ", style="dim")
    values = trace.context_values
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low or 1.0
    for group, on in zip(groups, holds, strict=True):
        part = values[group]
        part = part[np.isfinite(part)]
        if not part.size:
            strip.append(" ")
            continue
        if trace.context_is_level:
            strip.append(SPARK[-1] if on else SPARK[0], style=HOLDS_STYLE if on else "dim")
            continue
        level = int(np.clip((np.median(part) - low) / span * (len(SPARK) - 1), 0, len(SPARK) - 1))
        strip.append(SPARK[level], style=HOLDS_STYLE if on else "dim")
    return strip


def _axis(trace: Trace, plot_width: int) -> Text:
    times = trace.time_s
    if np.isfinite(times).all() and len(times):
        left, right = f"{times[0]:.1f} s", f"{times[-1]:.1f} s"
    else:
        left, right = f"ex {trace.example_ids[0]}", f"ex {trace.example_ids[-1]}"
    middle = f"peak: example {trace.peak}"
    gap = plot_width - len(left) - len(right)
    if gap >= len(middle) + 2:
        pad = gap - len(middle)
        line = left + " " * (pad // 2) + middle + " " * (pad - pad // 2) + right
    else:
        line = left + " " * max(1, gap) + right
    return Text(" " * AXIS_WIDTH + line, style="dim")


class ActivationTrace(Widget):
    """Shows one `engine.review.Trace` (or a message when there is none)."""

    DEFAULT_CSS = """
    ActivationTrace {
        height: 1fr;
        width: 1fr;
    }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trace: Trace | None = None
        self._message = ""

    def show(self, trace: Trace | None, message: str = "") -> None:
        self._trace, self._message = trace, message
        self.refresh()

    def render(self) -> Text:
        if self._trace is None:
            return Text(self._message, style="dim")
        return render_trace(self._trace, self.size.width, self.size.height)
