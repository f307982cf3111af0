"""Trials for binned spikes: from a trials table (start, stop, trial-level variables) or from laps.

A bin belongs to the trial that contains its centre. Trials must not overlap: a bin in two trials
could not be given to one split, and splits are made by whole trials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.readers import read_table

START_NAMES = ("start_time", "start", "start_s", "t_start")
STOP_NAMES = ("stop_time", "stop", "stop_s", "end", "end_time", "t_stop")
LABEL_NAMES = ("trial", "trial_id", "id")


@dataclass
class Trials:
    """Non-overlapping time intervals in time order, each with a label and trial-level variables."""

    label: str
    """Where they came from (a file, 'laps', an NWB trials table)."""
    start: np.ndarray
    stop: np.ndarray
    names: list[str]
    """The label of each trial, unique (stored as `trials.label`)."""
    variables: pl.DataFrame
    """One row per trial; each column becomes a natural variable of every bin in that trial."""


@dataclass(frozen=True)
class LapOptions:
    """How laps are found on a linear track."""

    end_zone: float = 0.15
    """Share of the track at each end that counts as being at that end."""
    max_gap_s: float = 1.0
    """Position lost for longer than this ends the lap under way (a dropped frame or two does not)."""
    with_ends: bool = True
    """True: laps tile the session, each with the time spent at the end it leaves from. False: runs,
    from the last moment at one end to the arrival at the other; the time at the ends is outside."""


def check_trials(trials: Trials) -> Trials:
    """Refuse bad intervals (naming the row), sort by start, and refuse overlaps."""
    where = trials.label
    for name, values in (("start", trials.start), ("stop", trials.stop)):
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"{where}: row {row} has {name} {values[row]}; trial times must be finite seconds")
    backwards = trials.stop <= trials.start
    if backwards.any():
        row = int(np.argmax(backwards))
        raise InputError(f"{where}: row {row} stops at {trials.stop[row]:g} s, not after its start "
                         f"{trials.start[row]:g} s")
    if len(set(trials.names)) != len(trials.names):
        seen: set[str] = set()
        repeated = next(n for n in trials.names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise InputError(f"{where}: trial '{repeated}' appears more than once; trial labels must be unique")
    order = np.argsort(trials.start, kind="stable")
    start, stop = trials.start[order], trials.stop[order]
    overlap = start[1:] < stop[:-1]
    if overlap.any():
        i = int(np.argmax(overlap))
        a, b = int(order[i]), int(order[i + 1])
        raise InputError(f"{where}: rows {a} and {b} overlap ({start[i]:g}-{stop[i]:g} s and {start[i + 1]:g}-"
                         f"{stop[i + 1]:g} s); a bin can belong to one trial only")
    return Trials(where, start, stop, [trials.names[i] for i in order], trials.variables[order.tolist()])


def _pick(table: pl.DataFrame, names: tuple[str, ...], path: str, what: str) -> str:
    found = next((c for c in names if c in table.columns), None)
    if found is None:
        raise InputError(f"{path}: no {what} column (name one of {', '.join(names)}, in seconds)")
    column = table[found]
    if not column.dtype.is_numeric():
        raise InputError(f"{path}: column '{found}' is {column.dtype}, expected seconds as numbers")
    if column.null_count():
        raise InputError(f"{path}: column '{found}' row {int(column.is_null().arg_max())} is empty")  # type: ignore[arg-type]
    return found


def read_trials_table(path: str) -> Trials:
    """A CSV/Parquet table: start and stop (seconds), optionally a trial label, other columns are variables."""
    table = read_table(path, "trials")
    start_col = _pick(table, START_NAMES, path, "start")
    stop_col = _pick(table, STOP_NAMES, path, "stop")
    label_col = next((c for c in LABEL_NAMES if c in table.columns), None)
    if label_col is not None and table[label_col].null_count():
        raise InputError(f"{path}: column '{label_col}' row {int(table[label_col].is_null().arg_max())} has no "  # type: ignore[arg-type]
                         "trial label")
    names = (table[label_col].cast(pl.String).to_list() if label_col else [str(i) for i in range(table.height)])
    variables = table.drop([c for c in (start_col, stop_col, label_col) if c])
    for name, dtype in variables.schema.items():
        if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.String, pl.Categorical, pl.Enum)):
            raise InputError(f"{path}: column '{name}' has type {dtype}; use numbers, text or true/false")
    variables = variables.with_columns(pl.col(pl.Float32, pl.Float64).fill_nan(None))
    return check_trials(Trials(path, table[start_col].cast(pl.Float64).to_numpy(),
                               table[stop_col].cast(pl.Float64).to_numpy(), names, variables))


def find_laps(times: np.ndarray, position: np.ndarray, options: LapOptions | None = None,
              label: str = "laps") -> Trials:
    """Laps on a linear track: from arriving at one end to arriving at the other end.

    Consecutive laps tile the session with no holes: the time at an end (reward, turning round, an
    aborted run that comes back) goes with the lap that leaves from there. Losing the position for
    longer than max_gap_s ends the lap under way without counting it, so no lap spans a tracking gap.
    Each lap's `direction` is `increasing` or `decreasing` position.
    """
    options = options or LapOptions()
    valid = np.isfinite(position)
    if valid.sum() < 2:
        raise InputError(f"{label}: no position to find laps in")
    low, high = np.nanpercentile(position, [1, 99])
    share = (position - low) / (high - low) if high > low else np.full(len(position), 0.5)
    zone = np.where(share < options.end_zone, 0, np.where(share > 1 - options.end_zone, 1, -1))
    starts, stops, directions = [], [], []
    at, entered, left, previous_time = None, None, None, None
    for i in np.flatnonzero(valid):
        t = times[i]
        if previous_time is not None and t - previous_time > options.max_gap_s:
            at = None  # tracking lost: whatever lap was under way is not trusted
        previous_time = t
        z = zone[i]
        if z == at:
            left = t  # still (or again) at the end it will leave from
        if z < 0 or z == at:
            continue
        if at is not None:
            starts.append(entered if options.with_ends else left)
            stops.append(t)
            directions.append("increasing" if z == 1 else "decreasing")
        at, entered, left = z, t, t
    if len(starts) < 3:
        raise InputError(f"{label}: found {len(starts)} lap(s) end to end; need at least 3 (is this a linear "
                         "track? try --trials with a table)")
    names = [f"{'lap' if options.with_ends else 'run'} {i + 1}" for i in range(len(starts))]
    return check_trials(Trials(label, np.array(starts), np.array(stops), names,
                               pl.DataFrame({"direction": directions})))


def assign_bins(centres: np.ndarray, trials: Trials) -> np.ndarray:
    """Index of the trial holding each bin centre, -1 for bins outside every trial."""
    which = np.searchsorted(trials.start, centres, side="right") - 1
    inside = (which >= 0) & (centres < trials.stop[np.maximum(which, 0)])
    return np.where(inside, which, -1)
