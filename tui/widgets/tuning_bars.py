"""Tuning of a feature to its suggested variables: one horizontal bar per level or bin.

Bars rather than a plotext plot: in a 40 × 9 panel a row per level with its mean and n stays readable
(exact numbers, the suggested level marked) where a plot's axes take half the space, and it draws in
well under a millisecond. `mini report` draws tuning the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich.text import Text

if TYPE_CHECKING:
    from engine.analysis.review import Tuning

EIGHTHS = " ▏▎▍▌▋▊▉█"
MARK_STYLE = "bold green"


def bar(value: float, top: float, width: int) -> str:
    """A left-aligned bar of `width` cells for value / top, in eighths of a cell."""
    if not np.isfinite(value) or top <= 0 or value <= 0:
        return " " * width
    eighths = round(min(value / top, 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def render_tunings(tunings: list[Tuning], width: int) -> Text:
    """Every tuning, one block per variable: a title line, then a row per level or bin."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if not tunings:
        text.append("no suggestions to show tuning for", style="dim")
        return text
    for index, tuning in enumerate(tunings):
        if index:
            text.append("\n")
        what = "bin" if tuning.kind in ("continuous", "circular") else "level"
        text.append(f"{tuning.variable}", style="bold")
        text.append(f"  mean activation by {what}\n", style="dim")
        labels = tuning.labels
        label_width = min(max(len(s) for s in labels), max(6, width * 9 // 20))
        numbers = [f"{m:.3f}" if np.isfinite(m) else "–" for m in tuning.means]
        number_width = max(len(s) for s in numbers)
        bar_width = max(4, width - label_width - number_width - 5)
        finite = tuning.means[np.isfinite(tuning.means)]
        top = float(finite.max()) if finite.size else 0.0
        for i, label in enumerate(labels):
            marked = bool(tuning.marked[i])
            style = MARK_STYLE if marked else ""
            text.append("▶ " if marked else "  ", style=style)
            text.append(f"{label[:label_width]:<{label_width}} ", style=style)
            text.append(bar(float(tuning.means[i]), top, bar_width), style=MARK_STYLE if marked else "cyan")
            text.append(f" {numbers[i]:>{number_width}}", style=style)
            if i < len(labels) - 1 or index < len(tunings) - 1:
                text.append("\n")
    return text

