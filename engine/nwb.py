"""NWB files (e.g. from DANDI): the Units table, the trials table and behavioural time series.

pynwb is an optional extra (`pip install 'mini-sae[nwb]'`) and is imported only here, only when an
NWB file is read, so `mini` starts without it. What is read:
- `units`: one unit per row, its `spike_times` (seconds, the file's session clock), named `unit_<id>`;
- `trials`: `start_time`, `stop_time`; every other scalar column is a trial-level variable;
- `processing/behavior` (or `behaviour`): every TimeSeries, also inside Position, BehavioralTimeSeries,
  CompassDirection … containers; a one-column series is a variable named after it, a multi-column
  one gives `<name>_x`, `<name>_y`, `<name>_z` (spatial) or `<name>_<i>`.
Everything is on the session clock, so no alignment between clocks is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from engine.behaviour import BehaviourSource, check_times
from engine.errors import InputError
from engine.spike_import import Recording
from engine.spikes import SpikeTrains
from engine.trials import Trials, check_trials

BEHAVIOUR_MODULES = ("behavior", "behaviour", "Behavior", "Behaviour")


def _pynwb():
    try:
        import pynwb
    except ImportError:
        raise InputError("reading NWB files needs pynwb: pip install 'mini-sae[nwb]'") from None
    return pynwb


def read_nwb(path: str | Path, *, behaviour: bool = True) -> Recording:
    """Spike trains, behaviour sources and trials of an NWB file (nothing is binned yet)."""
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
            nwbfile = io.read()
            spikes = _units(nwbfile, path)
            trials = _trials(nwbfile, path)
            sources = _behaviour(nwbfile, path) if behaviour else []
        except InputError:
            raise
        except Exception as error:  # a file that opens but whose contents do not parse
            raise InputError(f"{path}: cannot read as NWB ({_first_line(error)})") from None
    finally:
        io.close()
    return Recording(spikes, sources, [], trials, str(path))


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
    times = [np.asarray(units["spike_times"][i], dtype=np.float64) for i in range(len(ids))]
    return SpikeTrains([f"unit_{i}" for i in ids], times, f"{path}:units",
                       notes=[f"read {len(ids)} unit(s) from {path.name}'s Units table"])


def _trials(nwbfile, path: Path) -> Trials | None:
    table = nwbfile.trials
    if table is None or len(table) == 0:
        return None
    where = f"{path}:trials"
    start = np.asarray(table["start_time"][:], dtype=np.float64)
    stop = np.asarray(table["stop_time"][:], dtype=np.float64)
    columns = {}
    for name in table.colnames:
        if name in ("start_time", "stop_time"):
            continue
        values = table[name][:]
        array = np.asarray(values) if not isinstance(values, list) or all(np.isscalar(v) for v in values) else None
        if array is None or array.ndim != 1 or (array.dtype == object and not all(isinstance(v, str) for v in array)):
            continue  # ragged or reference columns (tags, timeseries) are not trial-level variables
        columns[name] = array.astype(str) if array.dtype.kind in "SUO" else array
    variables = pl.DataFrame(columns).with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))
    return check_trials(Trials(where, start, stop, [str(i) for i in table.id[:]], variables))


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
