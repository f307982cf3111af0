"""Predicates as the screens show them: numbers rounded for reading, and cut or wrapped only between
their terms, so that a range is never half shown.

The stored predicate keeps six significant digits (it is what validation evaluates); a person reads
`position in [0.533, 0.867)` as well as `position in [0.533333, 0.866667)`, and at 80 columns the
difference decides whether the range is seen at all. Accepting a suggestion stores the exact predicate.
"""

from __future__ import annotations

import re
import textwrap

NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])")
"""A decimal number standing alone (not part of a name such as `spikes{1}.x2`)."""
NO_BREAK = "\u00a0"
"""Joins the parts of a term that must stay on one line (textwrap does not break at it)."""


def round_number(text: str, digits: int = 3) -> str:
    """`0.533333` → `0.533`, `12.3456` → `12.3`, `1234.56` → `1235`: `digits` significant digits, but
    never fewer than the number's whole part."""
    value = float(text)
    if "e" in text.lower():
        return f"{value:.{digits}g}"
    whole = len(str(int(abs(value)))) if abs(value) >= 1 else 0
    decimals = max(0, digits - whole)
    if abs(value) < 1:  # leading zeros after the point do not count as significant
        fraction = text.split(".")[1]
        decimals = len(fraction) - len(fraction.lstrip("0")) + digits
    shown = f"{value:.{decimals}f}"
    if "." in shown:
        shown = shown.rstrip("0").rstrip(".")
    return shown if len(shown) < len(text) else text


def readable(predicate: str | None) -> str:
    """A predicate with its long numbers rounded for reading; '' for None."""
    if not predicate:
        return predicate or ""
    return NUMBER.sub(lambda match: round_number(match.group()), predicate)


def terms(predicate: str) -> list[str]:
    """`a in [1, 2) and b = x` → [`a in [1, 2)`, `and b = x`]: the pieces a line may end between."""
    parts = re.split(r" (?=(?:and|or) )", predicate)
    return [part for part in parts if part]


def fit(predicate: str | None, width: int) -> str:
    """`predicate` in at most `width` cells: whole terms only, and `+N` for the terms left out
    (`position in [60, 80) +1`). A first term longer than `width` is the only thing ever cut with …"""
    text = readable(predicate)
    if len(text) <= width:
        return text
    pieces = terms(text)
    for n in range(len(pieces), 0, -1):
        left = len(pieces) - n
        shown = " ".join(pieces[:n]) + (f" +{left}" if left else "")
        if len(shown) <= width:
            return shown
    # The first term alone is too long: shorten the variable's name, which the column header and the
    # detail line give in full, and keep what it is tested against.
    more = f" +{len(pieces) - 1}" if len(pieces) > 1 else ""
    named = re.match(r"(\S+)( (?:in|=|!=|<|<=|>|>=) .*)", pieces[0])
    if named:
        for tail in (more, ""):  # the +N goes before the range does
            room = width - len(named[2]) - len(tail) - 1
            if room >= 1:
                return named[1][:room] + "…" + named[2] + tail
    return text[: max(1, width - 1)] + "…"


def wrap(predicate: str | None, width: int) -> list[str]:
    """`predicate` over as many lines of at most `width` cells as it needs; lines break between terms
    first, then between words, never inside a range such as `[60, 80)`."""
    text = readable(predicate)
    if len(text) <= width:
        return [text]
    glued = re.sub(r"\[[^\]\)]*[\]\)]", lambda match: match.group().replace(" ", NO_BREAK), text)
    lines: list[str] = []
    for piece in terms(glued):
        if lines and len(lines[-1]) + 1 + len(piece) <= width:
            lines[-1] = f"{lines[-1]} {piece}"
        else:
            lines.extend(textwrap.wrap(piece, width, break_long_words=True, break_on_hyphens=False) or [""])
    return [line.replace(NO_BREAK, " ") for line in lines]
