"""The lines for a feature of an SAE trained with --history L: its encoder's share of each lag, against the 1/L of
a feature that reads every lag alike, and the input unit that weighs most at each lag, wrapped to the panel.

    lags (oldest→current): 12% 18% 30% 40% vs 1/L 25% · top unit per lag: u3 u3 u7 u7
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

if TYPE_CHECKING:
    from engine.analysis.review import FeatureLags


def lags_text(lags: FeatureLags, width: int) -> Text:
    """The line, wrapped between words at `width` cells; a share above 1/L is bold (the lags the feature leans
    on)."""
    even = 1 / len(lags.shares)
    words = [("lags", "dim"), ("(oldest→current):", "dim"),
             *((f"{100 * share:.0f}%", "bold" if share > even else "") for share in lags.shares),
             ("vs", "dim"), ("1/L", "dim"), (f"{100 * even:.0f}%", "dim"), ("·", "dim"), ("top", "dim"),
             ("unit", "dim"), ("per", "dim"), ("lag:", "dim"), *((unit, "") for unit in lags.top_units)]
    text, used = Text(), 0
    for word, style in words:
        if used and used + 1 + len(word) > width:
            text.append("\n")
            used = 0
        elif used:
            text.append(" ")
            used += 1
        text.append(word, style=style)
        used += len(word)
    return text
