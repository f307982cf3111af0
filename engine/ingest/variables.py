"""Natural variables: infer each metadata column's kind, accept a person's overrides, go long-format."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl

from engine.errors import InputError

KINDS = ("continuous", "categorical", "circular", "binary")
MAX_CATEGORICAL_LEVELS = 20
"""Integer columns with at most this many distinct values are read as categories (conditions, phases)."""
_ANGLE_LIKE = re.compile(r"(angle|direction|heading|orientation|phase_rad|theta|azimuth|bearing|_deg$|_rad$)",
                         re.IGNORECASE)


@dataclass(frozen=True)
class VariableSpec:
    name: str
    """Metadata column name."""
    kind: str
    """continuous, categorical, circular or binary."""
    period: float | None
    """Circular variables only: 2π for radians, 360 for degrees."""
    n_levels: int | None
    """Distinct values for categorical and binary variables."""
    n_missing: int
    """Rows with no value."""
    source: str
    """'inferred' or 'declared' (by --var-kind)."""


def _is_integral(series: pl.Series) -> bool:
    values = series.drop_nulls()
    if values.dtype.is_integer() or values.dtype == pl.Boolean:
        return True
    return values.dtype.is_float() and bool((values == values.round(0)).all())


def _infer_kind(series: pl.Series) -> str:
    dtype = series.dtype
    if dtype == pl.Boolean:
        return "binary"
    if not dtype.is_numeric():
        return "categorical"
    levels = series.drop_nulls().unique()
    if _is_integral(series):
        if levels.len() <= 2 and set(levels.cast(pl.Float64).to_list()) <= {0.0, 1.0}:
            return "binary"
        if levels.len() <= MAX_CATEGORICAL_LEVELS:
            return "categorical"
    return "continuous"


def _circular_period(series: pl.Series, label: str) -> float:
    values = series.drop_nulls()
    if not series.dtype.is_numeric():
        raise InputError(f"{label}: column '{series.name}' is declared circular but holds text")
    if values.len() and values.min() >= -2 * math.pi - 1e-6 and values.max() <= 2 * math.pi + 1e-6:
        return 2 * math.pi
    return 360.0


def _check_declared(series: pl.Series, kind: str, label: str) -> None:
    if kind in ("continuous", "circular") and not series.dtype.is_numeric():
        raise InputError(f"{label}: column '{series.name}' is declared {kind} but holds text")
    if kind == "binary":
        levels = set(series.drop_nulls().unique().cast(pl.String).to_list())
        if not levels <= {"0", "1", "true", "false", "0.0", "1.0"}:
            shown = ", ".join(sorted(levels)[:4])
            raise InputError(
                f"{label}: column '{series.name}' is declared binary but holds {shown}; binary values are "
                "0/1 or true/false"
            )


def each_value_in_one_trial(codes: np.ndarray, trials: np.ndarray) -> bool:
    """Whether every value (an integer code per bin, -1 missing) occurs in one trial only, e.g. a clip name
    per trial: with splits by whole trials, no value seen in training ever comes back in the test split."""
    seen = codes >= 0
    if not seen.any():
        return False
    code, trial = codes[seen].astype(np.int64), trials[seen].astype(np.int64)
    trial -= trial.min()
    # (value, trial) pairs that occur, each as one integer: np.unique(axis=0) on the pairs sorted them as
    # opaque records, 0.5 s at 10⁶ bins with the GIL held (the app froze while a ranking began).
    pairs = np.unique(code * (int(trial.max()) + 1) + trial)
    return len(np.unique(code)) == len(pairs)


class DescribedVariables(NamedTuple):
    specs: list[VariableSpec]
    """The natural variables, in column order."""
    notes: list[str]
    """For the person: angle-like names, constant columns left out."""
    constant: dict[str, object]
    """Columns left out because they hold one value in every row that has one: column → that value."""


def _constant_value(series: pl.Series) -> tuple[bool, object]:
    values = series.drop_nulls().unique()
    if values.len() != 1:
        return False, None
    value = values[0]
    return True, value if isinstance(value, str | int | bool) or value is None else float(value)


def describe_variables(
    meta: pl.DataFrame, exclude: set[str], declared: dict[str, str], label: str
) -> DescribedVariables:
    """The natural variables of a metadata table, and notes for the person (e.g. angle-like names).

    A column with a single value carries no information about the bins (nothing to tell apart), so it
    never becomes a variable; it is named in a note and in `constant`.
    """
    for name, kind in declared.items():
        if name not in meta.columns:
            raise InputError(f"{label}: --var-kind names column '{name}', which is not in the metadata")
        if name in exclude:
            raise InputError(f"{label}: column '{name}' is the trial or time column, not a natural feature")
        if kind not in KINDS:
            raise InputError(f"{label}: --var-kind {name}={kind}: unknown kind (use {', '.join(KINDS)})")
    specs, notes, constant = [], [], {}
    for name in meta.columns:
        if name in exclude:
            continue
        series = meta[name]
        if series.null_count() == series.len():
            raise InputError(f"{label}: column '{name}' has no values at all")
        is_constant, value = _constant_value(series)
        if is_constant:
            constant[name] = value
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            notes.append(f"'{name}' is {shown} in every row{' that has a value' if series.null_count() else ''}: "
                         "a constant carries no information, so it is not a variable")
            continue
        if name in declared:
            kind, source = declared[name], "declared"
            _check_declared(series, kind, label)
        else:
            kind, source = _infer_kind(series), "inferred"
            if kind == "continuous" and _ANGLE_LIKE.search(name):
                notes.append(f"'{name}' looks like an angle; pass --var-kind {name}=circular if it is one")
        period = _circular_period(series, label) if kind == "circular" else None
        n_levels = series.drop_nulls().n_unique() if kind in ("categorical", "binary") else None
        specs.append(VariableSpec(name, kind, period, n_levels, series.null_count(), source))
    return DescribedVariables(specs, notes, constant)


def variables_frame(specs: list[VariableSpec]) -> pl.DataFrame:
    return pl.DataFrame(
        [vars(s) for s in specs] or None,
        schema={"name": pl.String, "kind": pl.String, "period": pl.Float64, "n_levels": pl.Int32,
                "n_missing": pl.Int32, "source": pl.String},
    ).rename({"name": "variable"})


def long_values(meta: pl.DataFrame, specs: list[VariableSpec]) -> pl.DataFrame:
    """example_id, variable, value, category; a missing value has no row.

    Numbers go to `value` (binary as 0/1); categories go to `category` as text, and keep their
    number in `value` too when they were numeric, so SQL can filter either way.
    """
    parts = []
    example_id = pl.int_range(0, meta.height, dtype=pl.Int32).alias("example_id")
    for spec in specs:
        column = pl.col(spec.name)
        if spec.kind == "categorical":
            numeric = meta[spec.name].dtype.is_numeric()
            value = column.cast(pl.Float64) if numeric else pl.lit(None, pl.Float64)
            category = (column.cast(pl.Int64) if numeric and _is_integral(meta[spec.name]) else column)
            category = category.cast(pl.String)
        elif spec.kind == "binary" and meta[spec.name].dtype == pl.String:
            value, category = column.str.to_lowercase().is_in(["1", "true", "1.0"]).cast(pl.Float64), None
        else:
            value, category = column.cast(pl.Float64), None
        parts.append(
            meta.select(
                example_id,
                pl.lit(spec.name).alias("variable"),
                value.alias("value"),
                (category if category is not None else pl.lit(None, pl.String)).alias("category"),
                column.is_null().alias("_missing"),
            ).filter(~pl.col("_missing")).drop("_missing")
        )
    if not parts:
        return pl.DataFrame(schema={"example_id": pl.Int32, "variable": pl.String, "value": pl.Float64,
                                    "category": pl.String})
    return pl.concat(parts)


# Public names for the spike importer, which aligns behaviour by the same rules before binning.
infer_kind = _infer_kind
circular_period = _circular_period
