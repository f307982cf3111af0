"""Read count matrices and metadata tables from disk, refusing anything malformed before it is stored.

Every refusal is an InputError whose message starts with the file name and names the column and
row, so a person can go straight to the problem.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.memory import check_fits, human_bytes

COUNT_FORMATS = (".npy", ".npz", ".parquet", ".csv")
META_FORMATS = (".parquet", ".csv")


@dataclass
class CountMatrix:
    """An [examples × units] matrix with a name per unit."""

    values: np.ndarray
    unit_names: list[str]
    label: str
    """How errors refer to where it came from (usually the file name)."""


def _check_path(path: Path, formats: tuple[str, ...], what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a {what} file")
    if path.suffix.lower() not in formats:
        raise InputError(f"{path}: unsupported {what} format '{path.suffix}' (use {', '.join(formats)})")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")


def _duplicate(names: list[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _read_table(path: Path) -> pl.DataFrame:
    """A CSV or Parquet table with its column names checked for duplicates."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
            names = [name.strip() for name in header]
            frame = pl.read_csv(path, infer_schema_length=10_000, null_values=["", "NA", "NaN", "nan"])
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names
            frame = pl.read_parquet(path) if _duplicate(names) is None else pl.DataFrame()
    except (OSError, UnicodeDecodeError, pl.exceptions.PolarsError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot read as {suffix[1:]} ({first})") from None
    duplicate = _duplicate(names)
    if duplicate is not None:
        raise InputError(f"{path}: column name '{duplicate}' appears more than once")
    blank = next((i for i, name in enumerate(names) if not str(name).strip()), None)
    if blank is not None:  # it would become a unit or variable with no name
        raise InputError(f"{path}: column {blank + 1} has no name; give every column a name")
    if frame.width == 0:
        raise InputError(f"{path}: no columns")
    if frame.height == 0:
        raise InputError(f"{path}: no rows (header only)")
    return frame


def _npy_header(handle) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype a .npy stream's header declares, read without the data (None: a header numpy's
    reader will refuse itself)."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(handle)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(handle)
    except (ValueError, OSError, EOFError):
        return None
    return shape, dtype


def check_array_fits(label: str, shape: tuple[int, ...], dtype: np.dtype, copies: int = 2) -> None:
    """Refuse an array whose declared size (times `copies`: the array and its working copies while it is
    checked and stored) would not fit in memory, before it is read."""
    cells = math.prod(shape)
    shown = " × ".join(f"{n:,}" for n in shape)
    check_fits(f"{label} declares {shown} {dtype} values, read with "
               f"{'a working copy' if copies == 2 else f'{copies - 1} working copies'}", cells * dtype.itemsize
               * copies, "split the recording")


def check_npy_fits(path: Path, copies: int = 2) -> None:
    """check_array_fits on the shape and dtype a .npy file's header declares (nothing when numpy's reader
    will refuse the header itself)."""
    with path.open("rb") as handle:
        declared = _npy_header(handle)
    if declared is not None:
        check_array_fits(str(path), *declared, copies=copies)


def _load_array(path: Path) -> tuple[np.ndarray, list[str] | None]:
    try:
        if path.suffix.lower() == ".npy":
            check_npy_fits(path)
            return np.load(path, allow_pickle=False), None
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "counts" not in keys:  # a guess at another array could import the wrong one
                raise InputError(
                    f"{path}: no array named 'counts' (it holds {', '.join(keys) or 'none'}); save the count matrix "
                    "as counts, e.g. np.savez(path, counts=matrix)"
                )
            key = "counts"
            for member in (key, "unit_names") if "unit_names" in keys else (key,):
                with archive.zip.open(f"{member}.npy") as handle:
                    declared = _npy_header(handle)
                if declared is not None:
                    check_array_fits(f"{path}: array '{member}'", *declared)
            names = [str(n) for n in archive["unit_names"]] if "unit_names" in keys else None
            values = archive[key]
            if not isinstance(values, np.ndarray):  # a member that is not a .npy comes back as raw bytes
                raise InputError(f"{path}: 'counts' is not a NumPy array (save it with np.savez)")
            return values, names
    except InputError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot read as {path.suffix[1:]} ({first})") from None


def check_table_fits(path: Path, label: str) -> None:
    """Refuse a table whose values would not fit in memory, before it is read: a Parquet file's footer gives
    its rows and columns; a CSV file of S bytes holds at most S / 2 values (one character and a separator
    each). Every value is counted at 8 bytes, twice (the frame and its NumPy copy)."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            footer = pq.read_metadata(path)
        except (OSError, ValueError):
            return  # unreadable: _read_table says why
        cells, shape = footer.num_rows * footer.num_columns, f"{footer.num_rows:,} rows × {footer.num_columns} columns"
        check_fits(f"{path} holds {shape}, read as numbers with a working copy", cells * 16,
                   f"split the {label}")
    else:
        size = path.stat().st_size
        check_fits(f"{path} is {human_bytes(size)}, up to {size // 2:,} values, read as numbers with a working "
                   "copy", size // 2 * 16, f"split the {label}")


def read_counts(path: str | Path) -> CountMatrix:
    """Read a count (or activation) matrix: rows are examples, columns are units."""
    path = Path(path)
    _check_path(path, COUNT_FORMATS, "counts")
    if path.suffix.lower() in (".npy", ".npz"):
        values, names = _load_array(path)
        if values.ndim != 2:
            raise InputError(f"{path}: expected a 2-D array [examples × units], got shape {values.shape}")
        if names is not None and len(names) != values.shape[1]:
            raise InputError(f"{path}: unit_names has {len(names)} names for {values.shape[1]} units")
        names = names or [f"unit_{i}" for i in range(values.shape[1])]
    else:
        check_table_fits(path, "counts")
        frame = _read_table(path)
        for name, dtype in frame.schema.items():
            if not (dtype.is_numeric() or dtype == pl.Boolean):
                raise InputError(f"{path}: column '{name}' is {dtype}, expected numbers (one column per unit)")
            nulls = frame[name].is_null()
            if nulls.any():
                row = int(nulls.arg_max())  # type: ignore[arg-type]
                raise InputError(f"{path}: column '{name}' row {row} is empty (missing value)")
        names = frame.columns
        wide = next((n for n, t in frame.schema.items() if t in (pl.Int128, getattr(pl, "UInt128", pl.Int128))), None)
        if wide is not None:  # polars reads whole numbers beyond 64 bits as 128-bit integers
            row = int((frame[wide].abs() > np.iinfo(np.int64).max).arg_max())  # type: ignore[arg-type]
            raise InputError(f"{path}: column '{wide}' row {row} is {frame[wide][row]}, beyond 64-bit integers (and "
                             f"far beyond {FLOAT32_EXACT:,}, the largest count stored exactly)")
        values = frame.to_numpy()
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise InputError(f"{path}: empty matrix, shape {values.shape} (need examples × units)")
    if values.dtype == np.bool_:
        values = values.astype(np.int32)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise InputError(f"{path}: values are {values.dtype}, expected integer or floating-point numbers")
    duplicate = _duplicate(names)
    if duplicate is not None:
        raise InputError(f"{path}: unit name '{duplicate}' appears more than once")
    return CountMatrix(values=values, unit_names=list(names), label=str(path))


FLOAT32_EXACT = 2 ** 24
"""Largest whole number float32 (how counts are stored) holds exactly, with every smaller one: a spike count
above it would be stored as a neighbouring number."""
FLOAT32_MAX = float(np.finfo(np.float32).max)
"""Largest magnitude float32 holds: beyond it a value is stored as inf."""


def check_count_values(matrix: CountMatrix, *, allow_negative: bool) -> None:
    """Refuse NaN, inf, values the stored float32 cannot hold (beyond its range; for spike counts, whole numbers
    beyond 2^24, which it cannot hold exactly) and (for spike counts) negative values, naming the first
    offending cell."""
    values = matrix.values
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            what = "NaN" if np.isnan(values[row, col]) else str(values[row, col])
            raise InputError(
                f"{matrix.label}: row {row}, unit '{matrix.unit_names[col]}' (column {col}) is {what}; "
                "counts must be finite numbers"
            )
    if not allow_negative and (values < 0).any():
        row, col = np.argwhere(values < 0)[0]
        raise InputError(
            f"{matrix.label}: row {row}, unit '{matrix.unit_names[col]}' (column {col}) is negative "
            f"({values[row, col]}); spike counts must be >= 0 (use --kind activations for signed data)"
        )
    limit = FLOAT32_MAX if allow_negative else FLOAT32_EXACT
    if values.dtype.kind in "iuf" and values.size:
        big = (values > limit) | (values < -limit)  # no float64 copy of a matrix that may be large
        if big.any():
            row, col = np.argwhere(big)[0]
            what = ("the largest float32, so it would be stored as inf" if allow_negative else
                    f"{FLOAT32_EXACT:,} (2^24), the largest count float32 stores exactly")
            raise InputError(
                f"{matrix.label}: row {row}, unit '{matrix.unit_names[col]}' (column {col}) is {values[row, col]}, "
                f"beyond {what}")


MAX_VARIABLE = 1e150
"""Largest magnitude a variable's value may have: beyond about 1.3e154 its square overflows float64, so its
variance, z-score and every decoder on it become inf or NaN. No measured quantity comes near it."""


def check_float_column(column: pl.Series, label: str) -> None:
    """Refuse inf and values beyond ±MAX_VARIABLE in a variable's column, naming the row (NaN is missing)."""
    bad = (column.is_infinite() | ((column.abs() > MAX_VARIABLE) & column.is_not_nan())).fill_null(False)
    if bad.any():
        row = int(bad.arg_max())  # type: ignore[arg-type]
        value = column[row]
        why = ("leave missing values empty (or NaN)" if not np.isfinite(value) else
               f"beyond ±{MAX_VARIABLE:g}, where its square (and any variance) overflows")
        raise InputError(f"{label}: column '{column.name}' row {row} is {value:g}; {why}")


def read_metadata(path: str | Path) -> pl.DataFrame:
    """Read the metadata table: one row per example, one column per natural feature (plus trial, time)."""
    path = Path(path)
    _check_path(path, META_FORMATS, "metadata")
    if path.suffix.lower() == ".parquet":  # a CSV's size bounds a text table too loosely to refuse on
        check_table_fits(path, "metadata")
    frame = _read_table(path)
    for name, dtype in frame.schema.items():
        if dtype.is_float():
            check_float_column(frame[name], str(path))
        elif not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Categorical, pl.Enum)):
            raise InputError(f"{path}: column '{name}' has type {dtype}; use numbers, text or true/false")
    # NaN in a float column means "not measured" (e.g. tracking lost): store it as missing.
    return frame.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))


def read_table(path: str | Path, what: str = "table") -> pl.DataFrame:
    """Any CSV or Parquet table (spikes, behaviour, trials), checked like the metadata table."""
    path = Path(path)
    _check_path(path, META_FORMATS, what)
    if path.suffix.lower() == ".parquet":
        check_table_fits(path, what)
    return _read_table(path)
