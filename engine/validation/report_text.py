"""The Markdown of a run's report (engine.validation.report): tables, numbers and text bar charts."""

from __future__ import annotations

import math

import polars as pl

BAR_WIDTH = 28
_EIGHTHS = " ▏▎▍▌▋▊▉"


def number_text(value) -> str:
    """A figure in a table or sentence: – when missing, yes / no, 3 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pl.DataFrame) -> list[str]:
    """A GitHub-flavoured Markdown table; numbers right-aligned, missing values as –."""
    if frame.is_empty():
        return ["(none)"]
    align = ["---:" if dtype.is_numeric() and dtype != pl.Boolean else "---" for dtype in frame.dtypes]
    lines = ["| " + " | ".join(frame.columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(number_text(v) for v in row) + " |" for row in frame.iter_rows()]
    return lines


def bar(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of value / top of the width, in eighths of a character."""
    if top <= 0 or value is None or not math.isfinite(value) or value <= 0:
        return ""
    eighths = round(min(value / top, 1.0) * width * 8)
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def bar_chart(rows: list[tuple[str, float, str]], marked: set[str] = frozenset()) -> list[str]:
    """Rows of (label, value, annotation) as bars in a fenced block; marked labels get a ◀."""
    finite = [v for _, v, _ in rows if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    width = max((len(label) for label, _, _ in rows), default=0)
    lines = ["```"]
    for label, value, note in rows:
        lines.append(f"{label.rjust(width)} │{bar(value, top).ljust(BAR_WIDTH)} {note}"
                     + ("  ◀" if label in marked else ""))
    return [*lines, "```"]
