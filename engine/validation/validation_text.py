"""How a validation's figures read, the same in `mini validate`, the app and the report.

Two things are easy to misread. A Monte-Carlo p-value that no null draw reached is (1 + 0) / (1 + n): the
true p is below it, so it reads `< 1/(n+1)` and never as an exact number. And a bootstrap interval over
whole test trials is only as good as the number of trials behind it: with a handful, a percentile interval
is too narrow, so the count is shown beside every interval and flagged when it is small.
"""

from __future__ import annotations

import math
from typing import Any

MIN_CI_TRIALS = 10
"""Test trials below which a bootstrap interval over trials is flagged as unreliable: a percentile interval
from resampling fewer than ~10 units undercovers badly (it cannot reach beyond the few trial values seen)."""

FLOOR_TOLERANCE = 1e-9
"""A p within this relative distance of 1/(n+1) is at the floor (stored doubles round)."""


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _short(value: float) -> str:
    """Two significant digits below 0.01, else up to three decimals without trailing zeros."""
    return f"{value:.2g}" if value < 0.01 else f"{value:.3f}".rstrip("0").rstrip(".")


def at_floor(p: Any, n_null: Any) -> bool:
    """Whether p is the smallest value its null allows, 1/(n_null + 1): no null draw reached the observed."""
    if _missing(p) or _missing(n_null) or not n_null:
        return False
    return abs(p * (n_null + 1) - 1) <= FLOOR_TOLERANCE


def p_text(p: Any, n_null: Any = None) -> str:
    """`–` when missing; `< 0.005` for the floor of 200 draws (the bound rounded up, so it stays true); else
    the value."""
    if _missing(p):
        return "–"
    if at_floor(p, n_null):
        return f"< {float(f'{1 / (n_null + 1):.2g}'):g}"
    return _short(p)


def q_text(q: Any, p: Any = None, n_null: Any = None) -> str:
    """The q-value, read as an upper bound (`≤ 0.012`) when its p is at the floor: BH scales the p, so a p
    that is only a bound gives a q that is only a bound."""
    if _missing(q):
        return "–"
    return f"≤ {_short(q)}" if at_floor(p, n_null) else _short(q)


def trials_text(n_trials: Any) -> str:
    """`12 test trials`, with a warning when too few for a reliable interval; `–` when unknown."""
    if _missing(n_trials):
        return "–"
    n = int(n_trials)
    text = f"{n} test trial{'s' if n != 1 else ''}"
    return text + " (too few for a reliable interval)" if n < MIN_CI_TRIALS else text


def verdict_words(row: dict) -> tuple[str, str]:
    """(generalisation, specificity) in words for a stored validation row."""
    if not row.get("testable"):
        return "not testable", "not testable"
    general = "generalises" if row.get("generalises") else "does not generalise"
    specific = "signature-specific" if row.get("signature_specific") else "signature not specific"
    return general, specific


def necessity_text(row: dict, prefix: str = "", signature: bool = False) -> str:
    """`necessary: drop 0.21 > null 95th percentile 0.03, p < 0.0099` for the feature ablation (``signature``:
    the signature-unit ablation); `necessity –` (with the stored note) where it was not computed. A third
    figure beside the two verdicts, which it never changes."""
    name = "signature_ablation" if signature else "necessity"
    drop, p95, p = row.get(f"{name}_drop"), row.get(f"{name}_null_p95"), row.get(f"{name}_p")
    what = prefix or ("signature units" if signature else "feature")
    if not row.get("testable") or _missing(drop) or _missing(p95):
        note = row.get("ablation_note") if signature else None
        return f"{what} necessity –" + (f" ({note})" if note else "")
    necessary = drop > p95
    words = f"{what} {'necessary' if necessary else 'not necessary'}"
    return (f"{words}: drop {drop:.3f} {'>' if necessary else 'vs'} null 95th percentile {p95:.3f}, "
            f"p {p_text(p, row.get('n_signature_ablation_null' if signature else 'n_ablation_null'))}")


def necessity_cell(row: dict) -> str:
    """`✓ 0.214 (p < 0.0099)` / `✗ 0.001 (p 0.6)` / `–`: the feature ablation in a table cell."""
    drop, p95 = row.get("necessity_drop"), row.get("necessity_null_p95")
    if not row.get("testable") or _missing(drop) or _missing(p95):
        return "–"
    p = p_text(row.get("necessity_p"), row.get("n_ablation_null"))
    return f"{'✓' if drop > p95 else '✗'} {drop:.3f} (p {p})"
