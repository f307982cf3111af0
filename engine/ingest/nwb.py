"""NWB files (e.g. from DANDI): the Units table, interval tables (trials) and behavioural time series.

pynwb is an optional extra (`pip install 'mini-sae[nwb]'`) and is imported only here, only when an
NWB file is read, so `mini` starts without it. What is read:
- `units`: one unit per row, its `spike_times` (seconds, the file's session clock), named `unit_<id>`; its
  other columns of one number or text per unit (`quality`, `location`, `cell_type` …) and, through its
  `electrodes` column, its electrodes' `location` and `group_name` become unit attributes (`unit_attributes`,
  for `mini train --inputs location=CA1`; see `_unit_attributes` for how keys and values are written);
- `intervals/`: every TimeIntervals table (trials, epochs, and the task's own, e.g. `encoding_table`) is
  listed in the notes. The trials are `trials`, or the table named by `trials_table`: `start_time`,
  `stop_time`; each other column of numbers or text (text stored as bytes is decoded) is a trial-level
  variable, except columns named `*_time` that hold times within the trials (a cue, a stimulus
  boundary): those are moments on the session clock, counted per bin as events. Ragged, array-valued
  and reference columns are skipped with a note. A table named in `events_tables` gives one event per
  row (its `start_time`), counted per bin;
- `processing/behavior` (or `behaviour`): every TimeSeries, also inside Position, BehavioralTimeSeries,
  CompassDirection … containers; a one-column series is a variable named after it, a multi-column
  one gives `<name>_x`, `<name>_y`, `<name>_z` (spatial) or `<name>_<i>`.
Everything is on the session clock, so no alignment between clocks is needed.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.behaviour import BehaviourSource, EventSource, check_times
from engine.ingest.spike_import import Recording
from engine.ingest.spikes import SpikeTrains
from engine.ingest.trials import Trials, check_trials
from engine.ingest.unit_meta import as_text
from engine.memory import check_fits

BEHAVIOUR_MODULES = ("behavior", "behaviour", "Behavior", "Behaviour")


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise InputError("reading NWB files needs pynwb: pip install 'mini-sae[nwb]'") from None
    return pynwb


def read_nwb(path: str | Path, *, behaviour: bool = True, trials_table: str | None = None,
             events_tables: Sequence[str] = ()) -> Recording:
    """Spike trains, behaviour sources, trials and events of an NWB file (nothing is binned yet).

    `trials_table` names the intervals table that gives the trials (default `trials`, when there is
    one); each of `events_tables` gives one event per row.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir() or path.stat().st_size == 0:
        raise InputError(f"{path}: {'is a folder' if path.is_dir() else 'file is empty'}, expected an NWB file")
    pynwb = _pynwb()
    try:
        io = pynwb.NWBHDF5IO(str(path), mode="r", load_namespaces=True)
    except Exception as error:  # h5py/hdmf raise OSError, ValueError, KeyError … for a damaged file
        raise InputError(f"{path}: cannot read as NWB ({_first_line(error)})") from None
    try:
        try:
            with warnings.catch_warnings():
                # pynwb warns about parts mini does not read (e.g. an OpticalSeries' frames); a warning
                # would break the one-line error and bury the notes.
                warnings.simplefilter("ignore")
                nwbfile = io.read()
            spikes = _units(nwbfile, path)
            attributes, attribute_notes = _unit_attributes(nwbfile.units, spikes.names, path)
            tables = interval_tables(nwbfile)
            notes = [_describe(path, name, table) for name, table in tables.items()]
            trials, events, trial_notes = _trials(tables, trials_table, path)
            events += [_row_events(_pick_table(tables, name, path, "--events-table"), name, path)
                       for name in events_tables]
            sources = _behaviour(nwbfile, path) if behaviour else []
        except InputError:
            raise
        except Exception as error:  # a file that opens but whose contents do not parse
            raise InputError(f"{path}: cannot read as NWB ({_first_line(error)})") from None
    finally:
        io.close()
    return Recording(spikes, sources, events, trials, str(path), notes=notes + trial_notes + attribute_notes,
                     unit_attributes=attributes)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:160]}" if text else type(error).__name__


def _units(nwbfile, path: Path) -> SpikeTrains:
    units = nwbfile.units
    if units is None or len(units) == 0:
        raise InputError(f"{path}: no Units table (or it is empty); mini needs sorted spike times")
    if "spike_times" not in units.colnames:
        raise InputError(f"{path}: the Units table has no spike_times column")
    ids = units.id[:]
    column = units["spike_times"]
    flat = getattr(getattr(column, "target", column), "data", None)  # every unit's times, end to end
    if hasattr(flat, "shape") and len(flat.shape) == 1:
        check_fits(f"{path}: the Units table holds {flat.shape[0]:,} spike times of {len(ids):,} units, read as "
                   "float64 and binned (three copies)", flat.shape[0] * 8 * 3, "split the recording")
    times = [np.asarray(units["spike_times"][i], dtype=np.float64) for i in range(len(ids))]
    return SpikeTrains([f"unit_{i}" for i in ids], times, f"{path}:units",
                       notes=[f"read {len(ids)} unit(s) from {path.name}'s Units table"])


ELECTRODE_ATTRIBUTES = ("location", "group_name")
"""Columns of the electrodes table that each unit takes from its electrodes (through the Units table's
`electrodes` column)."""
NOT_ATTRIBUTES = ("spike_times", "electrodes", "electrode_group", "obs_intervals", "waveform_mean", "waveform_sd",
                  "waveforms")
"""Units table columns that are the spikes or what they were recorded on, never attributes (left out silently;
other columns that are not one value per unit are left out with a note)."""
_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
"""What a key may not hold: `,` `=` `|` `:` and spaces are, or may become, operators of the unit selection syntax
(engine.sae.unit_selection)."""
_VALUE_OPERATORS = re.compile(r"\s*[,|]\s*")
"""`,` separates a selection's terms and `|` a term's alternatives, so a value holding one could not be selected."""


def _unit_attributes(units, names: list[str], path: Path) -> tuple[pl.DataFrame, list[str]]:
    """unit, key, value rows of what the Units table says about each unit, and notes.

    Each column of one number or text per unit gives a key, the column's name; through the `electrodes` column
    each unit takes its electrodes' `location` and `group_name` (several electrodes that disagree give their
    distinct values sorted and joined with `;`), unless the Units table has a column of that name itself (the
    unit's own value is the more precise). Keys keep letters, digits, `_`, `.` and `-` (any other run of
    characters becomes `_`), so every key can be written in `--inputs key=value`; a key that is empty or repeats
    another after that is left out. In values, `,` and `|` (with the spaces around them) become `;`, surrounding
    spaces are dropped, and empty text and NaN mean no value.
    """
    columns: dict[str, list[str | None]] = {}
    skipped, renamed, notes = [], [], []
    for column in units.colnames:
        if column in NOT_ATTRIBUTES:
            continue
        values, why = _column_values(units, column)
        if values is None:
            skipped.append(f"'{column}' ({why})")
        else:
            columns[column] = _texts(values)
    from_units = set(columns)
    for column, values in _electrode_values(units, path).items():
        if column in columns:
            notes.append(f"{path.name}:units: '{column}' is the Units table's own column, not its electrodes'")
        else:
            columns[column] = values
    frames, origin = [], {}
    for column, values in columns.items():
        key = _KEY_CHARACTERS.sub("_", column).strip("_")
        if not key or key in origin:
            skipped.append(f"'{column}' ({'no letter or digit in its name' if not key else f'a second {key}'})")
            continue
        if key != column:
            renamed.append(f"'{column}' as {key}")
        origin[key] = "the Units table" if column in from_units else "the units' electrodes"
        frames.append(pl.DataFrame({"unit": names, "key": key, "value": pl.Series(values, dtype=pl.String)},
                                   schema={"unit": pl.String, "key": pl.String, "value": pl.String}))
    attributes = (pl.concat(frames).drop_nulls("value") if frames
                  else pl.DataFrame(schema={"unit": pl.String, "key": pl.String, "value": pl.String}))
    stored = set(attributes["key"].to_list())
    said = [f"{', '.join(k for k in origin if k in stored and origin[k] == where)} from {where}"
            for where in dict.fromkeys(origin[k] for k in origin if k in stored)]
    if said:
        notes.insert(0, f"{path.name}:units: unit attributes {'; '.join(said)} (mini train --inputs key=value)")
    if renamed:
        notes.append(f"{path.name}:units: attribute names written for the selection syntax: {', '.join(renamed)}")
    if skipped:
        notes.append(f"{path.name}:units: not unit attributes: {', '.join(skipped)}")
    changed = sum(v != _VALUE_OPERATORS.sub(";", v) for v in attributes["value"].to_list())
    if changed:
        attributes = attributes.with_columns(pl.col("value").str.replace_all(_VALUE_OPERATORS.pattern, ";"))
        notes.append(f"{path.name}:units: {changed} attribute value(s) held ',' or '|' (operators of --inputs and "
                     "--targets), written as ';'")
    return attributes, notes


def _texts(values: np.ndarray) -> list[str | None]:
    """Values as attribute text (surrounding spaces dropped), None where there is none (NaN, empty text)."""
    texts = as_text(pl.Series(values)).str.strip_chars().to_list()
    return [t if t else None for t in texts]


def _electrode_values(units, path: Path) -> dict[str, list[str | None]]:
    """Per unit, its electrodes' location and group_name (the distinct values, sorted, joined with `;`).

    A region that does not fit its tables (a damaged or hand-edited file) is an InputError naming the unit."""
    from hdmf.common import DynamicTableRegion, VectorIndex

    if "electrodes" not in units.colnames:
        return {}
    column = units["electrodes"]
    if isinstance(column, VectorIndex):  # several electrodes per unit: ends into the region's rows
        region, ends = column.target, np.asarray(column.data[:], dtype=np.int64)
    elif isinstance(column, DynamicTableRegion):  # one electrode per unit
        region, ends = column, np.arange(1, len(units) + 1)
    else:
        return {}
    rows = np.asarray(region.data[:], dtype=np.int64)
    electrodes = region.table
    _check_region(path, ends, rows, n_units=len(units), n_electrodes=len(electrodes))
    out = {}
    for name in ELECTRODE_ATTRIBUTES:
        values = _electrode_column(electrodes, name)
        if values is None:
            continue
        starts = np.concatenate([[0], ends[:-1]])
        out[name] = [";".join(sorted({values[r] for r in rows[a:b] if values[r] is not None})) or None
                     for a, b in zip(starts, ends, strict=True)]
    return out


def _check_region(path: Path, ends: np.ndarray, rows: np.ndarray, *, n_units: int, n_electrodes: int) -> None:
    """The Units table's `electrodes` column must give each unit rows of the electrodes table."""
    where = f"{path.name}:units: column 'electrodes'"
    if len(ends) != n_units:
        raise InputError(f"{where} has {len(ends)} entries for {n_units} units; the file is damaged")
    steps = np.diff(ends, prepend=0)
    if len(ends) and (steps.min() < 0 or ends[-1] > len(rows)):
        unit = int(np.argmax((steps < 0) | (ends > len(rows))))
        raise InputError(f"{where}: unit row {unit} ends at electrode entry {int(ends[unit])}, outside the "
                         f"{len(rows)} entries (or before the previous unit's end); the file is damaged")
    outside = (rows < 0) | (rows >= n_electrodes)
    if outside.any():
        entry = int(np.argmax(outside))
        unit = int(np.searchsorted(ends, entry, side="right"))
        raise InputError(f"{where}: unit row {unit} names electrode row {int(rows[entry])}, but the electrodes "
                         f"table has {n_electrodes} rows (0-{n_electrodes - 1}); the file is damaged")


def _electrode_column(electrodes, name: str) -> list[str | None] | None:
    """The electrodes table's column as text, or None where it has none (or not one value per electrode)."""
    if name not in electrodes.colnames:
        return None
    values, _ = _column_values(electrodes, name)
    return None if values is None else _texts(values)


def interval_tables(nwbfile) -> dict[str, object]:
    """Every TimeIntervals table of the file by name: `intervals/…`, trials, epochs, invalid_times."""
    tables = dict(nwbfile.intervals or {})
    for name in ("trials", "epochs", "invalid_times"):
        table = getattr(nwbfile, name, None)
        if table is not None:
            tables.setdefault(name, table)
    return {name: table for name, table in tables.items() if len(table) > 0}


def _describe(path: Path, name: str, table) -> str:
    return f"{path.name}: intervals table '{name}', {len(table)} rows: {', '.join(table.colnames)}"


def _pick_table(tables: dict[str, object], name: str, path: Path, flag: str):
    if name not in tables:
        have = ", ".join(tables) if tables else "none"
        raise InputError(f"{path}: no intervals table '{name}' ({flag} {name}); the file's intervals tables: {have}")
    return tables[name]


def _trials(tables: dict[str, object], name: str | None, path: Path
            ) -> tuple[Trials | None, list[EventSource], list[str]]:
    """The trials (the named table, else `trials`), the events in their `*_time` columns, and notes."""
    if name is None:
        if "trials" not in tables:
            others = [t for t in tables if t not in ("epochs", "invalid_times")]
            hint = (f"; --trials-table NAME takes them from one of: {', '.join(others)}" if others else "")
            return None, [], [f"{path.name}: no trials table{hint}"]
        name = "trials"
    table = _pick_table(tables, name, path, "--trials-table")
    where, short = f"{path}:intervals/{name}", f"{path.name}:intervals/{name}"
    start = np.asarray(table["start_time"][:], dtype=np.float64)
    stop = np.asarray(table["stop_time"][:], dtype=np.float64)
    columns, events, skipped = {}, [], []
    moments, placeholders, elsewhere = [], [], []
    for column in table.colnames:
        if column in ("start_time", "stop_time"):
            continue
        values, why = _column_values(table, column)
        if values is None:
            skipped.append(f"'{column}' ({why})")
        elif _holds_moments(column, values, start, stop):
            # A time equal to the trial's own start_time is what files write for "did not happen" (e.g. a
            # second boundary in a clip that has one); were it real, it would only repeat the trial start.
            # A moment outside its own trial (a fixation cross before it) is not counted: binned with the
            # kept bins it would land in a neighbouring trial's edge.
            at_start = values == start
            inside = (values > start) & (values < stop)
            if inside.any():
                events.append(EventSource(f"{where}.{column}", values[inside],
                                          np.full(int(inside.sum()), column, dtype=object), required=False))
                moments.append(f"'{column}'")
            if at_start.any():
                placeholders.append(f"'{column}' {int(at_start.sum())} of {len(values)}")
            outside = np.isfinite(values) & ~inside & ~at_start
            if outside.any():
                elsewhere.append(f"'{column}' {int(outside.sum())} of {len(values)}")
        else:
            columns[column] = values
    notes = []
    if moments:
        notes.append(f"{short}: {', '.join(moments)} are moments within the trials: counted per bin as events, "
                     "not trial-level variables")
    if placeholders:
        notes.append(f"{short}: times equal to the trial's start_time ({', '.join(placeholders)}) are read as "
                     "'did not happen' and not counted")
    if elsewhere:
        notes.append(f"{short}: times outside their own trial ({', '.join(elsewhere)}) are not counted")
    if skipped:
        notes.append(f"{short}: skipped {', '.join(skipped)}: not one number or text per trial")
    variables = pl.DataFrame(columns).with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))
    empty = [c for c in variables.columns if variables[c].null_count() == variables.height]
    if empty:
        notes.append(f"{short}: skipped {', '.join(empty)}: no values")
        variables = variables.drop(empty)
    trials = check_trials(Trials(where, start, stop, [str(i) for i in table.id[:]], variables))
    return trials, events, notes


def _column_values(table, column: str) -> tuple[np.ndarray | None, str]:
    """One number or text per row (bytes decoded), or None and why the column cannot be a variable."""
    from hdmf.common import DynamicTableRegion, VectorIndex
    from pynwb.base import TimeSeriesReferenceVectorData

    data = table[column]
    if isinstance(data, VectorIndex):
        refs = isinstance(data.target, TimeSeriesReferenceVectorData)
        return None, "references to time series" if refs else "several values per row"
    if isinstance(data, TimeSeriesReferenceVectorData):
        return None, "references to time series"
    if isinstance(data, DynamicTableRegion):
        return None, "references to rows of another table"
    values = np.asarray(data[:])
    if values.ndim != 1:
        return None, f"an array of shape {values.shape[1:]} per row"
    if values.dtype.kind == "S" or (values.dtype == object and all(isinstance(v, bytes) for v in values)):
        return np.array([bytes(v).decode("utf-8", errors="replace") for v in values]), ""
    if values.dtype.kind in "UO":
        if all(isinstance(v, str) for v in values):
            return values.astype(str), ""
        return None, "values that are neither numbers nor text"
    if values.dtype.kind not in "biuf":
        return None, f"values of type {values.dtype}"
    return values, ""


def _holds_moments(column: str, values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> bool:
    """A `*_time` column whose values lie in or near their own trial: times on the session clock.

    As a trial-level variable such a time would only say when in the session the trial was; as an
    event per bin it says when the cue or the boundary happened. A duration (e.g. a reaction time
    named `reaction_time`) lies far from its trial's times and stays a variable.
    """
    if not column.endswith("_time") or values.dtype.kind != "f":
        return False
    present = np.isfinite(values)
    if not present.any():
        return False
    slack = float(np.max(stop - start))
    near = (values >= start - slack) & (values <= stop + slack)
    return bool(near[present].all())


def _row_events(table, name: str, path: Path) -> EventSource:
    """One event per row of an intervals table, at its start_time, named after the table."""
    times = np.asarray(table["start_time"][:], dtype=np.float64)
    times = times[np.isfinite(times)]
    return EventSource(f"{path}:intervals/{name}", times, np.full(len(times), name, dtype=object))


def _series_in(container) -> list:
    """TimeSeries directly, or inside a behaviour container (Position → spatial_series, …)."""
    from pynwb import TimeSeries

    if isinstance(container, TimeSeries):
        return [container]
    for attribute in ("spatial_series", "time_series"):
        found = getattr(container, attribute, None)
        if isinstance(found, dict):
            return [s for s in found.values() if isinstance(s, TimeSeries)]
    return []


def _behaviour(nwbfile, path: Path) -> list[BehaviourSource]:
    from pynwb.behavior import SpatialSeries

    module = next((nwbfile.processing[m] for m in BEHAVIOUR_MODULES if m in nwbfile.processing), None)
    if module is None:
        return []
    sources = []
    for container in module.data_interfaces.values():
        for series in _series_in(container):
            where = f"{path}:processing/{module.name}/{container.name}" + (
                f"/{series.name}" if series is not container else "")
            declared = getattr(series.data, "shape", None)
            if declared is not None and hasattr(series.data, "dtype"):
                # the samples as stored, as float64, as a frame, plus the timestamps
                check_fits(f"{where}: {' × '.join(f'{n:,}' for n in declared)} {series.data.dtype} samples, read "
                           "as float64 columns with their timestamps", math.prod(declared) * (
                               series.data.dtype.itemsize + 16) + declared[0] * 8 if declared else 0,
                           "leave this series out of the file, or downsample it")
            data = np.asarray(series.data[:])
            if data.ndim not in (1, 2) or not np.issubdtype(data.dtype, np.number):
                continue
            times = (np.asarray(series.timestamps[:], dtype=np.float64) if series.timestamps is not None
                     else series.starting_time + np.arange(len(data)) / series.rate)
            if len(times) != len(data):
                raise InputError(f"{where}: {len(data)} samples but {len(times)} timestamps")
            check_times(times, where, "timestamps")
            data = data.reshape(len(data), -1).astype(np.float64)
            axes = "xyz" if isinstance(series, SpatialSeries) and data.shape[1] <= 3 else None
            names = [series.name] if data.shape[1] == 1 else [
                f"{series.name}_{axes[j] if axes else j}" for j in range(data.shape[1])]
            columns = pl.DataFrame({n: data[:, j] for j, n in enumerate(names)}).fill_nan(None)
            sources.append(BehaviourSource(where, times, columns))
    return sources
