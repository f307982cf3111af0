"""Predicates: what a label claims a feature signals, parsed from its text and evaluated over bins.

A predicate is one clause or a conjunction of clauses joined by ` and `:

    condition = 3                      categorical or binary: VARIABLE = VALUE
    speed in [20, 35)                  continuous or circular: VARIABLE in [LOW, HIGH) (HIGH may be inf;
                                       a circular range may wrap, LOW > HIGH)
    position in [0.2, 0.5) and direction = left

The text is the label: validation and Review parse it (here) and evaluate it (here), so what a person
reads is what is tested. A categorical value that holds ` and ` between two words of its own is read as
part of the value when what follows it is no clause (`condition = rock and roll`); in quotes it always is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl

from engine.errors import InputError

_EQUALS = re.compile(r"^\s*(?P<variable>[^=\s][^=]*?)\s*=\s*(?P<value>.+?)\s*$")
_RANGE = re.compile(r"^\s*(?P<variable>[^=\s][^=]*?)\s+in\s+\[\s*(?P<low>[^,\s]+)\s*,\s*(?P<high>[^)\s]+)\s*\)\s*$")
# Quoted values are matched whole so that an ` and ` inside quotes never separates clauses.
_PIECES = re.compile(r"'[^']*'|\"[^\"]*\"|(?P<sep>\s+and\s+)", re.IGNORECASE)
_EDGE_AND = re.compile(r"^and(\s|$)|\sand$", re.IGNORECASE)
_BINARY_VALUES = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}
RANGE_KINDS = ("continuous", "circular")


@dataclass(frozen=True)
class Clause:
    """One condition on one natural variable."""

    variable: str
    kind: str
    """The variable's kind: categorical and binary clauses hold a value, continuous and circular a range."""
    value: str | None = None
    """The level (categorical) or 0/1 (binary, as typed); None for a range."""
    low: float | None = None
    high: float | None = None
    """None: no upper bound (`inf`)."""


@dataclass(frozen=True)
class Predicate:
    """A parsed predicate: one clause, or a conjunction (every clause holds)."""

    text: str
    """What was typed, trimmed: what labels store and reports show."""
    clauses: tuple[Clause, ...]

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(c.variable for c in self.clauses)

    @property
    def variable(self) -> str:
        """The clause variables joined by ' and ' in predicate order (the labels' `variable` column)."""
        return " and ".join(self.variables)

    @property
    def value(self) -> str | None:
        return self.clauses[0].value if len(self.clauses) == 1 else None

    @property
    def low(self) -> float | None:
        return self.clauses[0].low if len(self.clauses) == 1 else None

    @property
    def high(self) -> float | None:
        return self.clauses[0].high if len(self.clauses) == 1 else None

    @property
    def target(self) -> tuple[Clause, ...]:
        """The clauses in a fixed order: two texts with the same target (spacing, clause order) share it."""
        return tuple(sorted(self.clauses, key=lambda c: c.variable))


def parse_predicate(text: str, kinds: dict[str, str]) -> Predicate:
    """`condition = 3`, `reward = 1`, `speed in [20, 35)` (high may be inf), or clauses like these joined
    by ` and `, checked against `kinds` (variable -> kind). Raises InputError with one line saying what
    is wrong (and which clause)."""
    stripped = text.strip()
    if _EDGE_AND.search(stripped):
        raise InputError(f"predicate '{text}': `and` at the start or end; join clauses as `A and B`")
    pieces = _split(stripped)
    if len(pieces) == 1:
        return Predicate(stripped, (_clause(stripped, text, kinds),))
    clauses = []
    for number, piece in enumerate(pieces, 1):
        if not piece or re.match(r"(?i)and(\s|$)", piece):
            raise InputError(f"predicate '{text}': clause {number} is empty; join clauses as `A and B`")
        clauses.append(_clause(piece, text, kinds, f"clause {number} '{piece}': "))
    seen: set[str] = set()
    for clause in clauses:
        if clause.variable in seen:
            raise InputError(f"predicate '{text}': '{clause.variable}' appears in two clauses; "
                             "give each variable once")
        seen.add(clause.variable)
    return Predicate(stripped, tuple(clauses))


def clause_parts(text: str) -> list[tuple[str, str | None]]:
    """(variable, value or None for a range) of each clause, by the parser's own grammar but without
    checking the variables: for reading a stored suggestion's clauses where no kinds are at hand."""
    parts = []
    for piece in _split(text):
        match = _RANGE.match(piece) or _EQUALS.match(piece)
        if match:
            value = match.groupdict().get("value")
            parts.append((match["variable"], None if value is None else value.strip("'\"")))
    return parts


def _split(text: str) -> list[str]:
    """The clauses of `text` at each ` and ` outside quotes; a piece that is no clause (neither `=` nor
    ` in [`) stays with the value before it, as in `condition = rock and roll`."""
    pieces, start = [], 0
    for match in _PIECES.finditer(text):
        if match["sep"] is not None:
            pieces.append(text[start:match.start()])
            start = match.end()
    pieces.append(text[start:])
    merged: list[str] = []
    for piece in pieces:
        is_clause = "=" in piece or _RANGE.match(piece) or not piece.strip() or re.match(r"(?i)and(\s|$)", piece)
        if merged and not is_clause and "=" in merged[-1] and not _RANGE.match(merged[-1]):
            merged[-1] = f"{merged[-1]} and {piece}"
        else:
            merged.append(piece)
    return [p.strip() for p in merged]


def _clause(piece: str, text: str, kinds: dict[str, str], where: str = "") -> Clause:
    match = _RANGE.match(piece)
    if match:
        variable = match["variable"]
        try:
            low, high = float(match["low"]), float(match["high"])
        except ValueError:
            raise InputError(f"predicate '{text}': {where}the range bounds must be numbers") from None
        kind = _known(variable, kinds, text, where)
        if kind not in RANGE_KINDS:
            raise InputError(f"predicate '{text}': {where}'{variable}' is {kind}; use `{variable} = VALUE`")
        if math.isnan(low) or math.isnan(high) or (low >= high and kind != "circular"):
            raise InputError(f"predicate '{text}': {where}the range must have low < high")
        if kind == "circular" and (math.isinf(low) or math.isinf(high)):
            raise InputError(f"predicate '{text}': {where}a circular range needs finite bounds")
        return Clause(variable, kind, None, low, None if math.isinf(high) else high)
    match = _EQUALS.match(piece)
    if match:
        variable, value = match["variable"], match["value"].strip("'\"")
        kind = _known(variable, kinds, text, where)
        if kind in RANGE_KINDS:
            raise InputError(f"predicate '{text}': {where}'{variable}' is {kind}; use `{variable} in [LOW, HIGH)`")
        if kind == "binary" and value.lower() not in _BINARY_VALUES:
            raise InputError(f"predicate '{text}': {where}'{variable}' is binary; its value is 0 or 1")
        return Clause(variable, kind, value)
    raise InputError(f"predicate '{text}': {where}expected `VARIABLE = VALUE` or `VARIABLE in [LOW, HIGH)`"
                     " (clauses joined by ` and `)")


def _known(variable: str, kinds: dict[str, str], text: str, where: str) -> str:
    if variable not in kinds:
        raise InputError(f"predicate '{text}': {where}no natural variable '{variable}' "
                         f"(variables: {', '.join(sorted(kinds))})")
    return kinds[variable]


# --------------------------------------------------------------------------- evaluation


class VariableValues(NamedTuple):
    """One natural variable over the bins a predicate is evaluated on."""

    numbers: np.ndarray | None
    """float64, NaN where missing: continuous, circular and binary variables (None for categorical)."""
    codes: np.ndarray | None = None
    """Categorical: index into `levels`, -1 where missing (None for the other kinds)."""
    levels: Sequence[str] = ()


class PredicateMask(NamedTuple):
    holds: np.ndarray
    """bool per bin: every clause holds there (a missing value in any clause: it does not)."""
    measured: np.ndarray
    """bool per bin: every clause's variable has a value there. Validation scores only these bins, in the
    co-occurrence and the decoders alike: where a variable is unknown (position while tracking is lost, the
    stimulus between trials) the predicate is neither true nor false, and counting it as false would score
    the feature's silence there as a correct rejection."""


def evaluate(predicate: Predicate, values: Callable[[str], VariableValues], n_bins: int) -> PredicateMask:
    """Where `predicate` holds over `n_bins` bins, given each clause variable's values (`values(name)`)."""
    holds, measured = np.ones(n_bins, dtype=bool), np.ones(n_bins, dtype=bool)
    for clause in predicate.clauses:
        column = values(clause.variable)
        if clause.low is not None:
            number = column.numbers
            low, high = clause.low, np.inf if clause.high is None else clause.high
            with np.errstate(invalid="ignore"):
                inside = (number >= low) | (number < high) if low > high else (number >= low) & (number < high)
            known = ~np.isnan(number)
            holds &= inside & known
            measured &= known
        elif clause.kind == "categorical":
            levels = list(column.levels)
            holds &= (column.codes == levels.index(clause.value)) if clause.value in levels else False
            measured &= column.codes >= 0
        else:
            holds &= column.numbers == _BINARY_VALUES[clause.value.lower()]
            measured &= ~np.isnan(column.numbers)
    return PredicateMask(holds, measured)


def long_values(values: pl.DataFrame, kinds: dict[str, str], n_bins: int) -> Callable[[str], VariableValues]:
    """`values(name)` for `evaluate` from natural values in long form (example_id, variable, value,
    category; a missing value has no row), as the store keeps them."""

    def column(variable: str) -> VariableValues:
        rows = values.filter(pl.col("variable") == variable)
        example = rows["example_id"].to_numpy()
        if kinds[variable] == "categorical":
            levels = rows["category"].unique().drop_nulls().sort().to_list()
            codes = np.full(n_bins, -1, dtype=np.int32)
            codes[example] = rows["category"].replace_strict({name: i for i, name in enumerate(levels)},
                                                             default=-1, return_dtype=pl.Int32).to_numpy()
            return VariableValues(None, codes, levels)
        numbers = np.full(n_bins, np.nan)
        numbers[example] = rows["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return VariableValues(numbers)

    return column
