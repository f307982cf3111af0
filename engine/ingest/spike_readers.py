"""Read spike times from spike-sorting output: a Kilosort/Phy folder, a MATLAB file, a (unit, time) table.

Each reader returns engine.ingest.spikes.SpikeTrains in seconds and refuses malformed input with a one-line
InputError naming the file and the unit, column or row. The checks every format shares (finite,
non-negative, sorted) are in engine.ingest.spikes.check_trains.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError, printable
from engine.ingest.readers import check_npy_fits, read_table
from engine.ingest.spikes import SpikeTrains

SPIKE_FORMATS = ("kilosort", "mat", "table")
_UNIT_NAMES = ("unit", "unit_id", "cluster", "cluster_id", "neuron", "cell")
_TIME_NAMES = ("time", "time_s", "spike_time", "spike_times", "t", "timestamp")
_LABEL_FILES = ("cluster_group.tsv", "cluster_info.tsv", "cluster_KSLabel.tsv")
"""Where a cluster's label is found, the person's curation (Phy) first, Kilosort's own guess last."""


def detect_format(source: Path) -> str:
    if source.is_dir():
        return "kilosort"
    if source.suffix.lower() == ".mat":
        return "mat"
    if source.suffix.lower() in (".csv", ".parquet"):
        return "table"
    raise InputError(f"{source}: cannot tell the spike format from the name (a Kilosort folder, .mat, .csv or "
                     ".parquet); pass --format")


def read_spike_source(source: str | Path, fmt: str = "auto", *, groups: tuple[str, ...] = ("good",),
                      mat_field: str = "time", mat_var: str | None = None, unit_col: str | None = None,
                      time_col: str | None = None, time_scale: float = 1.0) -> SpikeTrains:
    """Read spike times from any supported source; `fmt` 'auto' looks at the path."""
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in SPIKE_FORMATS:
        raise InputError(f"--format {fmt}: unknown (use auto, {', '.join(SPIKE_FORMATS)})")
    if not (time_scale > 0 and np.isfinite(time_scale)):
        raise InputError(f"--time-scale {time_scale}: must be a positive number of seconds per time unit")
    if fmt == "kilosort":
        return read_kilosort(path, groups)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --format {fmt} reads a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    if fmt == "mat":
        return _scaled(read_matlab_spikes(path, mat_field, mat_var), time_scale)
    return _scaled(read_spike_table(path, unit_col, time_col), time_scale)


def _scaled(trains: SpikeTrains, scale: float) -> SpikeTrains:
    if scale != 1.0:
        trains.times = [t * scale for t in trains.times]
        trains.span = None if trains.span is None else (trains.span[0] * scale, trains.span[1] * scale)
    return trains


# -- Kilosort / Phy -----------------------------------------------------------------------------------
def _sample_rate(folder: Path) -> float:
    """`sample_rate` from params.py, read as a literal (the file is never executed)."""
    params = folder / "params.py"
    if not params.exists():
        raise InputError(f"{params}: no such file (Kilosort writes the sample rate there)")
    try:
        tree = ast.parse(params.read_text())
    except (SyntaxError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{params}: cannot read ({type(error).__name__})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "sample_rate" for t in node.targets):
            try:
                rate = float(ast.literal_eval(node.value))
            except (ValueError, TypeError):
                break
            if rate > 0 and np.isfinite(rate):
                return rate
            raise InputError(f"{params}: sample_rate is {rate}; it must be a positive number of Hz")
    raise InputError(f"{params}: no `sample_rate = <number>` line")


def _load_vector(path: Path, what: str) -> np.ndarray:
    if not path.exists():
        raise InputError(f"{path}: no such file (a Kilosort folder holds {what})")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        check_npy_fits(path, copies=3)  # the file's values, in seconds, sorted per unit
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot read as npy ({first})") from None
    if values.ndim == 2 and 1 in values.shape:
        values = values.ravel()
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype,
                                                                                          np.floating)):
        raise InputError(f"{path}: expected a vector of numbers, got shape {values.shape} of {values.dtype}")
    return values


def _cluster_labels(folder: Path) -> tuple[dict[int, str], str] | None:
    """Cluster id → label from the first label file there is, and that file's name."""
    for name in _LABEL_FILES:
        path = folder / name
        if not path.exists():
            continue
        try:
            table = pl.read_csv(path, separator="\t", infer_schema_length=10_000)
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot read as a tab-separated table ({printable(str(error).splitlines()[0])})"
                             ) from None
        column = next((c for c in ("group", "KSLabel") if c in table.columns), None)
        if "cluster_id" not in table.columns or column is None:
            if name == "cluster_info.tsv":
                continue  # Phy's info file may lack labels; look further
            raise InputError(f"{path}: expected columns cluster_id and group (or KSLabel), got "
                             f"{printable(', '.join(table.columns))}")
        if not table["cluster_id"].dtype.is_integer():
            raise InputError(f"{path}: column 'cluster_id' is {table['cluster_id'].dtype}, expected integers")
        labels = table[column].cast(pl.String).fill_null("unsorted").str.strip_chars()
        return dict(zip(table["cluster_id"].to_list(), labels.to_list(), strict=True)), name
    return None


def read_kilosort(folder: Path, groups: tuple[str, ...] = ("good",)) -> SpikeTrains:
    """Spike times of the clusters labelled with one of `groups` (('all',) keeps every cluster)."""
    rate = _sample_rate(folder)
    samples = _load_vector(folder / "spike_times.npy", "spike_times.npy")
    clusters_path = folder / "spike_clusters.npy"
    if not clusters_path.exists() and (folder / "spike_templates.npy").exists():
        clusters_path = folder / "spike_templates.npy"  # before any curation, clusters are the templates
    clusters = _load_vector(clusters_path, "spike_clusters.npy")
    if len(samples) != len(clusters):
        raise InputError(f"{folder}: spike_times.npy has {len(samples):,} spikes but {clusters_path.name} has "
                         f"{len(clusters):,}; they must match spike for spike")
    if not np.issubdtype(clusters.dtype, np.integer):
        raise InputError(f"{clusters_path}: cluster ids are {clusters.dtype}, expected integers")
    present = np.unique(clusters)
    notes = []
    if groups == ("all",):
        keep = present.tolist()
    else:
        found = _cluster_labels(folder)
        if found is None:
            raise InputError(f"{folder}: no cluster_group.tsv, cluster_info.tsv or cluster_KSLabel.tsv to pick "
                             f"{'/'.join(groups)} units from; pass --groups all to keep every cluster")
        labels, label_file = found
        keep = sorted(c for c, label in labels.items() if label in groups)
        empty = sorted(set(keep) - set(present.tolist()))
        if empty:
            raise InputError(f"{folder / label_file}: cluster {empty[0]} is labelled '{labels[empty[0]]}' but has no "
                             f"spikes in {clusters_path.name}; the files do not belong together")
        unlabelled = np.setdiff1d(present, list(labels))
        if len(unlabelled):
            notes.append(f"{len(unlabelled)} cluster(s) have no label in {label_file} and are left out")
        notes.append(f"kept {len(keep)} cluster(s) labelled {'/'.join(groups)} in {label_file}")
        if not keep:
            raise InputError(f"{folder / label_file}: no cluster is labelled {'/'.join(groups)} "
                             f"(labels there: {', '.join(sorted(set(labels.values())))})")
    seconds = samples.astype(np.float64) / rate
    order = np.argsort(clusters, kind="stable")  # keeps each cluster's spikes in file order
    sorted_clusters = clusters[order]
    times = []
    for cluster in keep:
        lo, hi = np.searchsorted(sorted_clusters, [cluster, cluster + 1])
        times.append(seconds[order[lo:hi]])
    return SpikeTrains([f"cluster_{c}" for c in keep], times, str(folder), notes=notes)


# -- MATLAB ---------------------------------------------------------------------------------------------
def read_matlab_spikes(path: Path, field: str = "time", variable: str | None = None) -> SpikeTrains:
    """Per-unit spike-time arrays from a MATLAB file, however deeply nested in cell arrays.

    A unit is a struct with a `field` (e.g. `time`) or a numeric vector inside a cell array. Units are
    named by their MATLAB index, e.g. `spikes{1}{1}{4}{10}`, so a person can find them again. Empty
    cells (`[]`) are placeholders, not units; a struct whose field is empty is a unit with no spikes.
    """
    import scipy.io

    try:
        contents = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError:
        raise InputError(f"{path}: is a MATLAB v7.3 (HDF5) file; save it with save(..., '-v7') to import") from None
    except (ValueError, TypeError, OSError, EOFError, AssertionError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot read as a MATLAB file ({first})") from None
    names = [k for k in contents if not k.startswith("__")]
    if variable is None:
        if len(names) != 1 and "spikes" not in names:
            raise InputError(f"{path}: holds variables {', '.join(names) or '(none)'}; pick one with --mat-var")
        variable = names[0] if len(names) == 1 else "spikes"
    if variable not in contents:
        raise InputError(f"{path}: no variable '{variable}' (variables: {', '.join(names)})")
    found: list[tuple[str, np.ndarray]] = []
    _walk(contents[variable], variable, field, path, found)
    if not found:
        raise InputError(f"{path}: no spike times in '{variable}' (looked for structs with a '{field}' field and "
                         "numeric vectors in cell arrays)")
    span = _struct_span(contents[variable])
    notes = [f"read {len(found)} unit(s) from '{variable}' ('{field}' field of each struct)"]
    return SpikeTrains([n for n, _ in found], [t for _, t in found], str(path), span=span, notes=notes)


def _walk(value: np.ndarray, where: str, field: str, path: Path, found: list[tuple[str, np.ndarray]]) -> None:
    if not isinstance(value, np.ndarray):
        raise InputError(f"{path}: {where} is {type(value).__name__}, expected spike times")
    if value.dtype.names is not None:  # struct array
        if field not in value.dtype.names:
            # A struct without the field may hold units further down (in cells or structs); its numeric
            # fields are not spike times (a wrong --mat-field must not turn `meanrate` into a unit).
            for element, index in _elements(value, where, "()"):
                for name in value.dtype.names:
                    inner = element[name]
                    if isinstance(inner, np.ndarray) and (inner.dtype == object or inner.dtype.names is not None):
                        _walk(inner, f"{index}.{name}", field, path, found)
            return
        for element, index in _elements(value, where, "()"):
            found.append((index, _times_of(element[field], f"{index}.{field}", path, allow_empty=True)))
        return
    if value.dtype == object:  # cell array
        for element, index in _elements(value, where, "{}"):
            _walk(element, index, field, path, found)
        return
    if value.size == 0:
        return  # an empty cell: a placeholder, not a unit
    found.append((where, _times_of(value, where, path, allow_empty=False)))


def _elements(array: np.ndarray, where: str, brackets: str):
    """Elements in MATLAB's linear (column-major) order with their MATLAB index expression."""
    flat = array.ravel(order="F")
    if flat.size == 1 and brackets == "()":
        yield flat[0], where  # a 1×1 struct is the struct itself: no index needed
        return
    for i, element in enumerate(flat):
        yield element, f"{where}{brackets[0]}{i + 1}{brackets[1]}"


def _times_of(value: object, where: str, path: Path, *, allow_empty: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.names is not None or not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: {where} holds {array.dtype}, expected a vector of spike times in seconds")
    if array.size == 0 and allow_empty:
        return np.empty(0)
    if sum(d > 1 for d in array.shape) > 1:
        raise InputError(f"{path}: {where} has shape {array.shape}; a unit's spike times are a vector")
    return array.ravel().astype(np.float64)


def _struct_span(value: np.ndarray) -> tuple[float, float] | None:
    """A recording range common to every unit struct (`timerange` in Frank-lab files), if there is one."""
    spans: set[tuple[float, float]] = set()

    def visit(v: np.ndarray) -> None:
        if v.dtype.names is not None and "timerange" in v.dtype.names:
            for element in v.ravel():
                r = np.asarray(element["timerange"], dtype=float).ravel()
                if r.size == 2:
                    spans.add((float(r[0]), float(r[1])))
        elif v.dtype == object:
            for element in v.ravel():
                if isinstance(element, np.ndarray):
                    visit(element)

    visit(value)
    if len(spans) == 1:
        start, stop = spans.pop()
        if np.isfinite(start) and np.isfinite(stop) and stop > start >= 0:
            return start, stop
    return None


# -- (unit, time) table ---------------------------------------------------------------------------------
def read_spike_table(path: Path, unit_col: str | None = None, time_col: str | None = None) -> SpikeTrains:
    """A CSV/Parquet table with one row per spike: a unit column and a time column (seconds)."""
    table = read_table(path, "spike table")
    unit_col = _column(table, unit_col, _UNIT_NAMES, path, "--unit-col", "unit")
    time_col = _column(table, time_col, _TIME_NAMES, path, "--spike-time-col", "time")
    if unit_col == time_col:
        raise InputError(f"{path}: '{unit_col}' cannot be both the unit and the time column")
    times, units = table[time_col], table[unit_col]
    if not times.dtype.is_numeric():
        raise InputError(f"{path}: time column '{time_col}' is {times.dtype}, expected seconds as numbers")
    if units.null_count():
        raise InputError(f"{path}: row {int(units.is_null().arg_max())} has no unit in column '{unit_col}'")  # type: ignore[arg-type]
    blank = units.cast(pl.String).str.strip_chars() == ""
    if blank.any():  # it would become a unit with no name
        raise InputError(f"{path}: row {int(blank.arg_max())} has an empty unit name in column '{unit_col}'")  # type: ignore[arg-type]
    if times.null_count():
        row = int(times.is_null().arg_max())  # type: ignore[arg-type]
        raise InputError(f"{path}: row {row}, unit '{units[row]}': time is empty (column '{time_col}')")
    labels = units.cast(pl.String).to_numpy()
    values = times.cast(pl.Float64).to_numpy()
    # Sorted (numerically for integer ids), so the unit order does not depend on the row order.
    names = sorted(set(labels.tolist()), key=int if units.dtype.is_integer() else str)
    by_unit = {}
    for name in names:
        rows = np.flatnonzero(labels == name)
        unit_times = values[rows]
        bad = ~np.isfinite(unit_times) | (unit_times < 0) | np.r_[False, np.diff(unit_times) < 0]
        if bad.any():  # name the table's row, which is what a person can open and fix
            row = int(rows[int(np.argmax(bad))])
            problem = ("not a finite number" if not np.isfinite(values[row]) else "negative" if values[row] < 0
                       else "earlier than the unit's previous spike (spike times must be sorted per unit)")
            raise InputError(f"{path}: row {row}, unit '{name}': time {values[row]:g} is {problem}")
        by_unit[name] = unit_times
    display = [f"unit_{n}" if units.dtype.is_integer() else n for n in names]
    return SpikeTrains(display, [by_unit[n] for n in names], str(path))


def _column(table: pl.DataFrame, given: str | None, candidates: tuple[str, ...], path: Path, flag: str,
            what: str) -> str:
    if given is not None:
        if given not in table.columns:
            raise InputError(f"{path}: no column '{given}' ({flag}); columns are {', '.join(table.columns)}")
        return given
    found = next((c for c in candidates if c in table.columns), None)
    if found is None:
        raise InputError(f"{path}: no {what} column (looked for {', '.join(candidates)}); name it with {flag}")
    return found
