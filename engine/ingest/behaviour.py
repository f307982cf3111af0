"""Behaviour onto bins: time series with their own clock (60 Hz position, a running-speed log, events).

Each bin takes its value at its centre: continuous variables are interpolated linearly (circular ones
along the circle), categorical ones take the last value at or before the centre, events are counted
in the bin. Values are never invented across a gap: where the samples around a bin's centre are more
than `max_gap_s` apart (tracking lost, a dropped frame burst, a NaN stretch), the bin gets a missing
value. A source that does not cover the bins at all is an error, not a column of missing values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.readers import check_float_column, read_table
from engine.ingest.variables import circular_period, infer_kind

TIME_NAMES = ("time_s", "time", "t", "timestamp")
EVENT_NAME_COLUMNS = ("event", "name", "type", "label")
GAP_SAMPLES = 2.5
"""Default gap: samples further apart than this many median sample intervals leave a gap between them."""


@dataclass
class BehaviourSource:
    """Variables sampled at their own times (one source = one file or one NWB series)."""

    label: str
    """How errors refer to it (the file name, or the NWB path)."""
    times: np.ndarray
    """Sample times in seconds, strictly increasing."""
    columns: pl.DataFrame
    """One column per variable, one row per sample; null where the sample has no value."""
    notes: list[str] = field(default_factory=list)
    """What the reader decided (e.g. frozen tracking treated as lost)."""
    details: dict = field(default_factory=dict)
    """Reader-specific facts recorded with the dataset (e.g. the tracking's linearisation axis)."""


@dataclass
class EventSource:
    """Instantaneous events: each bin gets the number of events of each name inside it."""

    label: str
    times: np.ndarray
    """Event times in seconds (any order)."""
    names: np.ndarray
    """Event name per event; the variable each is counted in."""
    required: bool = True
    """False for events found in a file rather than asked for (an NWB trials table's `*_time` columns):
    when none falls in the kept bins they are left out with a note instead of refusing the import."""


MAX_TIME_S = 1e10
"""Latest time a sample, trial or event may have: 317 years, past any Unix-epoch clock in seconds. A later
time is another unit (samples, microseconds) or a corrupt value, and binning up to it would ask for more bins
than any machine holds."""


def check_times(times: np.ndarray, label: str, what: str = "time") -> None:
    """Refuse non-finite, far-future (MAX_TIME_S) and non-increasing sample times, naming the row."""
    bad = ~np.isfinite(times)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{label}: {what} row {row} is {times[row]}; sample times must be finite seconds")
    late = np.abs(times) > MAX_TIME_S
    if late.any():
        row = int(np.argmax(late))
        raise InputError(f"{label}: {what} row {row} is {times[row]:g} s, beyond {MAX_TIME_S:g} s (317 years); "
                         "times must be in seconds (convert samples or microseconds first)")
    steps = np.diff(times)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise InputError(f"{label}: {what} row {row} ({times[row]:.6g} s) is not after the row before it "
                         f"({times[row - 1]:.6g} s); samples must be in time order")


def _time_column(table: pl.DataFrame, label: str) -> str:
    name = next((c for c in TIME_NAMES if c in table.columns), None)
    if name is None:
        raise InputError(f"{label}: no time column (name one of {', '.join(TIME_NAMES)}, in seconds)")
    if not table[name].dtype.is_numeric():
        raise InputError(f"{label}: time column '{name}' is {table[name].dtype}, expected seconds as numbers")
    if table[name].null_count():
        raise InputError(f"{label}: time column '{name}' row {int(table[name].is_null().arg_max())} is empty")  # type: ignore[arg-type]
    return name


def read_behaviour_table(path: str) -> BehaviourSource:
    """A CSV/Parquet time series: a time column in seconds and one column per variable."""
    table = read_table(path, "behaviour")
    time_col = _time_column(table, path)
    times = table[time_col].cast(pl.Float64).to_numpy()
    check_times(times, path, f"column '{time_col}'")
    columns = table.drop(time_col)
    if columns.width == 0:
        raise InputError(f"{path}: only a time column; behaviour needs at least one variable column")
    for name, dtype in columns.schema.items():
        if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Categorical, pl.Enum)):
            raise InputError(f"{path}: column '{name}' has type {dtype}; use numbers, text or true/false")
        if dtype.is_float():
            check_float_column(columns[name], path)
    columns = columns.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))
    return BehaviourSource(path, times, columns)


def read_events_table(path: str) -> EventSource:
    """A CSV/Parquet table of events: a time column and, optionally, an event name column."""
    table = read_table(path, "events")
    time_col = _time_column(table, path)
    times = table[time_col].cast(pl.Float64).to_numpy()
    bad = ~np.isfinite(times)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{path}: column '{time_col}' row {row} is {times[row]}; event times must be finite")
    name_col = next((c for c in EVENT_NAME_COLUMNS if c in table.columns), None)
    if name_col is None:
        names = np.full(len(times), "events", dtype=object)
    else:
        if table[name_col].null_count():
            raise InputError(f"{path}: column '{name_col}' row {int(table[name_col].is_null().arg_max())} has no "  # type: ignore[arg-type]
                             "event name")
        names = table[name_col].cast(pl.String).to_numpy()
    return EventSource(path, times, names)


def default_max_gap(times: np.ndarray) -> float:
    """GAP_SAMPLES median sample intervals: one dropped frame is bridged, a longer loss is not."""
    return GAP_SAMPLES * float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def check_coverage(source_label: str, times: np.ndarray, centres: np.ndarray, max_gap: float) -> None:
    """The source must reach the first and the last bin; anything less is not this recording's behaviour."""
    first, last = float(times[0]), float(times[-1])
    if first - centres[0] > max_gap / 2 or centres[-1] - last > max_gap / 2:
        lo, hi = max(first, centres[0]), min(last, centres[-1])
        hint = (f"; import the part it covers with --time-range {lo:.3f},{hi:.3f}" if hi > lo else
                "; it does not overlap them at all (same clock?)")
        raise InputError(f"{source_label}: covers {first:.3f}-{last:.3f} s but the bins run "
                         f"{centres[0]:.3f}-{centres[-1]:.3f} s (bin centres){hint}")


def _bracket(times: np.ndarray, centres: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last sample at or before each centre, and whether the centre may take a value.

    A centre between two samples is covered when they are at most max_gap apart; before the first or
    after the last sample, when it is within max_gap / 2 of it (the same half-gap a sample stands for).
    """
    after = np.searchsorted(times, centres, side="right")
    before = after - 1
    inside = (before >= 0) & (after < len(times))
    span = np.where(inside, times[np.minimum(after, len(times) - 1)] - times[np.maximum(before, 0)], np.inf)
    ok = inside & (span <= max_gap)
    ok |= (before < 0) & (times[0] - centres <= max_gap / 2)
    ok |= (after >= len(times)) & (centres - times[-1] <= max_gap / 2)
    return before, ok


def _interpolate(times: np.ndarray, values: np.ndarray, centres: np.ndarray, max_gap: float,
                 period: float | None) -> np.ndarray:
    low = 0.0
    if period is not None:  # along the circle: unwrap, interpolate, wrap back into the data's own range
        low = 0.0 if values.min() >= 0 else -period / 2
        values = np.unwrap(values, period=period)
    _, ok = _bracket(times, centres, max_gap)
    out = np.interp(centres, times, values)  # np.interp holds the end values, used only within max_gap / 2
    if period is not None:
        out = np.mod(out - low, period) + low
    return np.where(ok, out, np.nan)


def _last_value(times: np.ndarray, series: pl.Series, centres: np.ndarray, max_gap: float) -> pl.Series:
    before, ok = _bracket(times, centres, max_gap)
    picked = series.gather(np.maximum(before, 0))
    return picked.zip_with(pl.Series(ok), pl.Series([None] * len(ok), dtype=series.dtype)).alias(series.name)


def alignment_method(series: pl.Series, declared: str | None) -> str:
    """'interpolate', 'circular' or 'last': continuous numbers are interpolated, the rest hold."""
    kind = declared or infer_kind(series)
    if kind == "circular":
        return "circular"
    return "interpolate" if kind == "continuous" else "last"


def align_source(source: BehaviourSource, centres: np.ndarray, declared: dict[str, str],
                 max_gap_s: float | None) -> tuple[pl.DataFrame, dict]:
    """The source's variables at the bin centres, and what was done (recorded with the dataset)."""
    if len(source.times) < 2:
        raise InputError(f"{source.label}: needs at least 2 samples to align to bins, has {len(source.times)}")
    max_gap = default_max_gap(source.times) if max_gap_s is None else max_gap_s
    check_coverage(source.label, source.times, centres, max_gap)
    aligned, methods = {}, {}
    for name in source.columns.columns:
        series = source.columns[name]
        present = ~series.is_null().to_numpy()
        if not present.any():
            raise InputError(f"{source.label}: column '{name}' has no values at all")
        times = source.times[present]  # a missing sample is a gap like any other
        method = alignment_method(series, declared.get(name))
        methods[name] = method
        if method == "last":
            aligned[name] = _last_value(times, series.filter(pl.Series(present)), centres, max_gap)
        else:
            if not series.dtype.is_numeric():
                raise InputError(f"{source.label}: column '{name}' is declared {declared.get(name)} but holds text")
            values = series.cast(pl.Float64).to_numpy()[present]
            period = circular_period(series, source.label) if method == "circular" else None
            aligned[name] = pl.Series(name, _interpolate(times, values, centres, max_gap, period)).fill_nan(None)
    record = {"source": source.label, "max_gap_s": max_gap, "methods": methods, **source.details}
    return pl.DataFrame(aligned), record


def count_events(events: EventSource, edges: np.ndarray, keep: np.ndarray) -> pl.DataFrame:
    """Per kept bin, the number of events of each name in [edge_i, edge_i+1)."""
    which = np.searchsorted(edges, events.times, side="right") - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    columns = {}
    for name in sorted(set(events.names.tolist())):
        mine = inside & (events.names == name)
        columns[name] = np.bincount(which[mine], minlength=len(edges) - 1)[keep].astype(np.int32)
    return pl.DataFrame(columns)
