"""Attributes of a dataset's units from a table given at import (`--unit-meta FILE`): which area, shank or cell
type each unit is, for `mini train --inputs area=CA1` (engine.sae.unit_selection).

The table (CSV or Parquet) has one row per unit of the dataset: a column naming the unit (`unit`, `unit_id` or
`name`: an integer column holds 0-based unit indices, a text column unit names) and any number of attribute
columns, stored as text. An empty cell means the unit has no value for that attribute. Every unit needs a row, so a
table written for another recording (or another sorting) is refused rather than half applied.

An NWB import also reads attributes from the file's Units table (engine.ingest.nwb); with `--unit-meta` as well,
the table's attributes are added and replace the file's where both give the same key.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from engine.errors import InputError
from engine.ingest.readers import read_table

UNIT_COLUMNS = ("unit", "unit_id", "name")
"""Column names that name the unit, the first one present wins."""

_SCALAR = (pl.String, pl.Categorical, pl.Boolean, pl.Enum)

KEY_OPERATORS = (",", "=", "|")
"""Characters an attribute's name cannot hold: engine.sae.unit_selection splits a selection on them."""
VALUE_OPERATORS = (",", "|")
"""Characters a value cannot hold (a selection splits on the first '=' only, so '=' in a value is fine)."""


def read_unit_meta(path: str | Path, unit_names: list[str]) -> pl.DataFrame:
    """unit_id, key, value rows of the table's attributes for a dataset with these unit names, refused in one
    line naming the file (and the row or column) when the table does not describe exactly these units."""
    table = read_table(path, "unit metadata")
    if table.height == 0:
        raise InputError(f"{path}: no rows (one row per unit is needed)")
    column = next((name for name in UNIT_COLUMNS if name in table.columns), None)
    if column is None:
        raise InputError(f"{path}: no column naming the unit (call it {', '.join(UNIT_COLUMNS[:-1])} or "
                         f"{UNIT_COLUMNS[-1]}; columns: {', '.join(table.columns)})")
    keys = [name for name in table.columns if name != column]
    if not keys:
        raise InputError(f"{path}: no attribute columns beside '{column}'")
    units = table[column]
    missing_row = units.is_null().arg_max() if units.null_count() else None
    if missing_row is not None:
        raise InputError(f"{path}: row {missing_row + 1} has no {column}")
    if units.dtype.is_integer():
        ids = units.to_list()
        bad = next((i for i, u in enumerate(ids) if not 0 <= u < len(unit_names)), None)
        if bad is not None:
            raise InputError(f"{path}: row {bad + 1}: unit index {ids[bad]} is not a unit of the dataset (it has "
                             f"{len(unit_names)} units, 0-{len(unit_names) - 1})")
    elif units.dtype == pl.String:
        index_of = {name: i for i, name in enumerate(unit_names)}
        bad = next((i for i, u in enumerate(units.to_list()) if u not in index_of), None)
        if bad is not None:
            raise InputError(f"{path}: row {bad + 1}: no unit named '{units[bad]}' in the dataset")
        ids = [index_of[u] for u in units.to_list()]
    else:
        raise InputError(f"{path}: column '{column}' holds {units.dtype}; it must hold unit indices (whole "
                         "numbers) or unit names (text)")
    seen: dict[int, int] = {}
    for row, unit in enumerate(ids):
        if unit in seen:
            raise InputError(f"{path}: rows {seen[unit] + 1} and {row + 1} both describe unit {unit_names[unit]}")
        seen[unit] = row
    if len(seen) < len(unit_names):
        absent = [name for i, name in enumerate(unit_names) if i not in seen]
        raise InputError(f"{path}: {len(absent)} unit(s) of the dataset have no row (first: {absent[0]}); give "
                         "every unit a row, with empty cells where an attribute is unknown")
    frames = []
    for key in keys:
        values = table[key]
        if not (values.dtype.is_numeric() or isinstance(values.dtype, _SCALAR) or values.dtype in _SCALAR):
            raise InputError(f"{path}: column '{key}' holds {values.dtype}; attributes must be text, numbers or "
                             "true/false")
        operator = next((c for c in KEY_OPERATORS if c in key), None)
        if operator is not None:
            raise InputError(f"{path}: column '{key}': an attribute's name cannot hold '{operator}', which --inputs and "
                             "--targets read as an operator; rename the column")
        text = as_text(values)
        bad = next((row for row, value in enumerate(text.to_list()) if value is not None
                    and any(c in value for c in VALUE_OPERATORS)), None)
        if bad is not None:
            raise InputError(f"{path}: row {bad + 1}, column '{key}': value '{text[bad]}' holds "
                             f"'{next(c for c in VALUE_OPERATORS if c in text[bad])}', which --inputs and --targets "
                             "read as an operator (',' joins terms, '|' alternatives); write it another way, e.g. "
                             "with ';'")
        frames.append(pl.DataFrame({"unit_id": pl.Series(ids, dtype=pl.Int32), "key": key,
                                    "value": text}).drop_nulls("value"))
    return pl.concat(frames).filter(pl.col("value").str.strip_chars() != "")


def as_text(values: pl.Series) -> pl.Series:
    """Attribute values as text: whole floats without a decimal point (2.0 read from a CSV column with gaps is the
    attribute value "2"), NaN as no value, true/false for booleans."""
    if values.dtype.is_float():
        values = values.fill_nan(None)
        whole = values.is_not_null() & values.is_finite() & (values == values.round(0))
        if bool(whole.fill_null(False).eq(values.is_not_null()).all()):
            values = values.cast(pl.Int64)
    return values.cast(pl.String)


def merge_unit_attributes(read: pl.DataFrame | None, given: pl.DataFrame, label: str
                          ) -> tuple[pl.DataFrame, list[str]]:
    """The attributes read from the recording (an NWB file's unit columns) with those of --unit-meta `label`: where
    both give a key, the file's values replace the recording's for every unit (a unit with an empty cell in the
    file then has no value), so a person can correct what the recording says."""
    if read is None or read.height == 0:
        return given, []
    replaced = sorted(set(given["key"].to_list()) & set(read["key"].to_list()))
    merged = pl.concat([read.filter(~pl.col("key").is_in(replaced)), given])
    notes = [f"--unit-meta {label}: its {', '.join(replaced)} replace the values read from the recording (the "
             "file wins)"] if replaced else []
    return merged, notes
