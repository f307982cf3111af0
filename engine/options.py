"""The one check every numeric option goes through, and the limits of each.

The CLI, the app's forms and the engine's config dataclasses (TrainConfig, RunSpec, ImportOptions,
UnitFilter, RankConfig, …) all check a number here, so that `--seed 2**80`, `--lr nan` or `--top -1` is
refused in the same words wherever it is typed, and before any database is opened or file is read.

A refusal is one line that starts with the option and the value as given (`--lr nan: must be …`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import InputError, printable

MAX_SEED = 2**32
"""Seeds are below 2**32: NumPy's generators take no larger, and every seed of a run feeds one."""
MAX_INDEX = 2**31 - 1
"""The largest id, count or size any option takes: the database stores ids as 32-bit integers, and torch
and NumPy index arrays with them; a larger number is a typo, not a request."""


def shown(value: object) -> str:
    """The value as the person typed it, for the start of a refusal: 1e+308 → 1e+308, 2**80 in full."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def check_integer(option: str, value: int, low: int, high: int = MAX_INDEX, why: str = "") -> int:
    """`value` when low <= value <= high, else an InputError naming the option, the value and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{option} {shown(value)}: must be a whole number")
    if not low <= value <= high:
        limit = f"at least {low:,}" if high == MAX_INDEX else f"between {low:,} and {high:,}"
        raise InputError(f"{option} {value}: must be {limit}" + (f" ({why})" if why else ""))
    return value


def check_seed(option: str, value: int, taken: int = 1, taken_by: str = "") -> int:
    """A seed NumPy and torch take: 0 <= value, and value + taken - 1 < 2**32 (a run of `taken` SAEs takes
    consecutive seeds; `taken_by` names the option that asks for them)."""
    if taken > 1:
        return check_integer(option, value, 0, MAX_SEED - taken,
                             f"seeds are below 2**32, and {taken_by or f'{taken:,} SAEs'} take one each")
    return check_integer(option, value, 0, MAX_SEED - 1, "2**32 - 1, the largest seed NumPy takes")


@dataclass(frozen=True)
class Bound:
    """One end of a number's range."""

    value: float
    inclusive: bool = True

    def holds(self, number: float, above: bool) -> bool:
        if above:
            return number >= self.value if self.inclusive else number > self.value
        return number <= self.value if self.inclusive else number < self.value


def check_number(option: str, value: float, low: Bound | None = None, high: Bound | None = None,
                 unit: str = "", why: str = "") -> float:
    """`value` when finite and within [low, high] (ends inclusive or not), else one line saying the range."""
    number = float(value)
    fits = math.isfinite(number) and (low is None or low.holds(number, True)) and \
        (high is None or high.holds(number, False))
    if not fits:
        raise InputError(f"{option} {shown(value)}: must be {range_text(low, high, unit)}"
                         + (f" ({why})" if why else ""))
    return number


def range_text(low: Bound | None, high: Bound | None, unit: str = "") -> str:
    """'a finite number above 0 and at most 1', 'a finite number from 0 to 1', … as a refusal says it."""
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None and low.inclusive and high.inclusive:
        return f"a finite number from {low.value:g}{unit} to {high.value:g}{unit}"
    parts = []
    if low is not None:
        parts.append(f"{'at least' if low.inclusive else 'above'} {low.value:g}{unit}")
    if high is not None:
        parts.append(f"{'at most' if high.inclusive else 'below'} {high.value:g}{unit}")
    return f"a finite number {' and '.join(parts)}" if parts else "a finite number"


def positive(option: str, value: float, unit: str = "", high: float | None = None, why: str = "") -> float:
    """A finite number above 0 (and at most `high`)."""
    return check_number(option, value, Bound(0, inclusive=False), None if high is None else Bound(high), unit, why)


def non_negative(option: str, value: float, unit: str = "", high: float | None = None, why: str = "") -> float:
    """A finite number of 0 or more (and at most `high`)."""
    return check_number(option, value, Bound(0), None if high is None else Bound(high), unit, why)


def fraction(option: str, value: float) -> float:
    """A finite number from 0 to 1."""
    return check_number(option, value, Bound(0), Bound(1))


MAX_EPOCHS = 1_000_000
"""Most training epochs one run may ask for: every epoch is at least one step, and a run of a million steps
is already days of training; beyond it the number is a typo."""
MAX_LR = 1.0
"""Adam moves each weight by up to the learning rate per step: above 1 the weights (of order 0.1) jump past
their own scale every step and training can only diverge."""


def check_name(option: str, text: str, what: str, limit: int) -> str:
    """A name a person gives (a dataset, a label): some text, at most `limit` characters, no control
    characters (a newline or a terminal escape code in a name would break every table that shows it)."""
    if not text.strip():
        raise InputError(f"{option}: {what} needs some text")
    if len(text) > limit:
        raise InputError(f"{option}: {len(text):,} characters; {what} takes at most {limit} (put more in a note)")
    if not all(c.isprintable() for c in text):
        raise InputError(f"{option} '{printable(text)}': {what} cannot hold control characters (newlines, tabs, "
                         "terminal codes)")
    return text
