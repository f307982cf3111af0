"""A feature's activation over time as columns of block characters, with the natural feature beneath.

Drawn by hand rather than with plotext: a column per group of time bins (the tallest activation in the
group, in eighths of a cell) is what a sparse, spiky trace needs, and it draws in well under a
millisecond, so moving to the next feature never waits for a plot.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

if TYPE_CHECKING:
    from engine.analysis.review import Trace

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


Run = tuple[str, str]
"""Characters and the style they share."""


def _runs(chars: np.ndarray, on: np.ndarray, style_on: str, style_off: str) -> list[Run]:
    """Consecutive characters with the same style joined into one run (few segments: a cheap repaint)."""
    runs: list[Run] = []
    edges = np.flatnonzero(np.diff(on.astype(np.int8))) + 1
    for part_chars, part_on in zip(np.split(chars, edges), np.split(on, edges), strict=True):
        if len(part_chars):
            runs.append(("".join(part_chars), style_on if part_on[0] else style_off))
    return runs


def trace_rows(trace: Trace, width: int, height: int) -> list[list[Run]]:
    """The trace as `height` rows of `width` cells: bars, the context strip, the time axis."""
    bar_rows = max(1, height - 2)
    plot_width = max(1, width - AXIS_WIDTH)
    groups = column_groups(len(trace.activation), plot_width)
    tallest = np.array([trace.activation[g].max() for g in groups])
    holds = np.array([trace.holds[g].mean() >= 0.5 for g in groups])
    top = float(tallest.max()) if tallest.size and tallest.max() > 0 else 1.0
    eighths = np.round(tallest / top * bar_rows * 8).astype(int)
    blocks = np.array(list(BLOCKS))
    rows: list[list[Run]] = []
    for row in range(bar_rows):
        axis = _number(top) if row == 0 else ("0" if row == bar_rows - 1 else "")
        cells = blocks[np.clip(eighths - (bar_rows - 1 - row) * 8, 0, 8)]
        rows.append([(f"{axis:>{AXIS_WIDTH - 1}}┤", "dim"), *_runs(cells, holds, HOLDS_STYLE, BAR_STYLE)])
    rows.append(_strip(trace, groups, holds))
    rows.append([(_axis(trace, plot_width), "dim")])
    return rows


def render_trace(trace: Trace, width: int, height: int) -> Text:
    """trace_rows as one Text (for tests and anything that wants a renderable)."""
    text = Text(no_wrap=True, overflow="crop")
    for i, row in enumerate(trace_rows(trace, width, height)):
        if i:
            text.append("\n")
        for chars, style in row:
            text.append(chars, style=style)
    return text


def _strip(trace: Trace, groups: list[slice], holds: np.ndarray) -> list[Run]:
    """The context variable beneath the bars: a sparkline of its value (a continuous variable) or a low
    mark (a categorical one), full height and bright where the predicate holds; blank where missing."""
    values = trace.context_values
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = high - low or 1.0
    chars = []
    for group, on in zip(groups, holds, strict=True):
        part = values[group]
        part = part[np.isfinite(part)]
        if not part.size:
            chars.append(" ")
        elif trace.context_is_level:
            chars.append(SPARK[-1] if on else SPARK[0])
        else:
            chars.append(SPARK[int(np.clip((np.median(part) - low) / span * (len(SPARK) - 1), 0, len(SPARK) - 1))])
    return [(" " * AXIS_WIDTH, ""), *_runs(np.array(chars), holds, HOLDS_STYLE, "dim")]


def _axis(trace: Trace, plot_width: int) -> str:
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
    return " " * AXIS_WIDTH + line


class ActivationTrace(Widget):
    """Shows one `engine.analysis.review.Trace` (or a message when there is none), drawn line by line."""

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
        self._strips: list[Strip] = []
        self._strips_for: tuple[object, int, int] | None = None

    def show(self, trace: Trace | None, message: str = "") -> None:
        self._trace, self._message = trace, message
        self._strips_for = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._strips_for != (self._trace, width, height):
            base = self.rich_style
            if self._trace is None:
                rows = [[(self._message, "dim")]]
            else:
                rows = trace_rows(self._trace, width, height)
            self._strips = [Strip([Segment(chars, base + _style(style)) for chars, style in row])
                            .crop_extend(0, width, base) for row in rows]
            self._strips_for = (self._trace, width, height)
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)


@lru_cache(maxsize=16)
def _style(name: str) -> Style:
    return Style.parse(name) if name else Style()
