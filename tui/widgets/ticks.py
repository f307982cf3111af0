"""Axis ticks for small terminal plots: few of them, round values, short labels.

plotext's own ticks are evenly spaced floats ("322.0", "268.3", "9.8"), which read badly in a
10-row plot and waste columns; counts and examples deserve round whole numbers.
"""

from __future__ import annotations

import math


def nice_ticks(low: float, high: float, max_ticks: int = 5) -> list[float]:
    """Round values (1, 2 or 5 × 10ⁿ apart) covering [low, high], at most max_ticks of them."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(1, max_ticks - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def compact_number(value: float) -> str:
    """1234567 → '1.2M', 25000 → '25k', 0.25 → '0.25', 3.0 → '3': labels that fit a narrow axis."""
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"
