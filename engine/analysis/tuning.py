"""Tuning as a neuroscientist reads it: a feature's tuning curve split by a second variable, and its
peri-event histogram, computed on the fly from the stored activations (nothing new is stored).

Split tuning: the mean activation ± SEM per bin of a continuous or circular variable (the bins of the
ranking's stored tuning curve) separately for each level of a categorical or binary variable, e.g. position
per running direction on a linear track or per target in a centre-out task. Only the train + val bins of the
ranking's analysis epoch are read: a person labels from this, and the test split is kept for validation.
The split variable shown first is the one named in the feature's conjunctive suggestion
(`x in [a, b) and side = left`), else the one that separates the curves best: the share of the activation's
variance (over the binned bins) explained by the split levels within each bin of x.

Peri-event histogram: the feature's mean activation ± SEM across events in bins of time around each onset of
an event (−1 s … +1 s), from train + val bins and events of train + val trials. Events are found as
`--around EVENT` finds them (engine/epochs.py): a per-bin count or 0/1 column (one onset where a run of bins
above 0 starts: a flag that stays up six bins is one event, not six overlapping windows), or a trial-level
column of event times in seconds. Columns that are constant within every trial are trial conditions, not
events, and a trial-level column counts as event times only where most of its values fall inside their own
trial. The histogram reads every train + val bin, not only the analysis epoch's: an epoch cut to ±250 ms
around an event would otherwise hide the time course the histogram is there to show.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from engine.analysis.predicates import clause_parts
from engine.epochs import Epoch, centre_offset, select_epoch
from engine.ingest.variables import each_value_in_one_trial
from store import Store
from store.datasets import load_examples
from store.epochs import run_epochs

if TYPE_CHECKING:
    from engine.analysis.dataset_arrays import DatasetArrays

SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class TuningConfig:
    """What split tuning and peri-event histograms read."""

    max_split_levels: int = 8
    """A categorical or binary variable splits a tuning curve when it has 2 to this many levels."""
    peri_window_s: tuple[float, float] = (-1.0, 1.0)
    """Seconds around each event onset the peri-event histogram covers."""
    peri_bins: int = 20
    """Bins of the peri-event histogram (fewer where the dataset's bins are wider)."""
    min_events_in_trials: float = 0.5
    """A trial-level column is read as event times when at least this share of its values fall inside
    their own trial's bin times."""


class SplitTuning(NamedTuple):
    """A feature's tuning to `variable`, one curve per level of `split_by`."""

    variable: str
    split_by: str
    bin_labels: list[str]
    edges: np.ndarray
    levels: list[str]
    means: np.ndarray
    """[levels × bins] mean activation; NaN where a level never visits a bin."""
    sem: np.ndarray
    """[levels × bins] SD (ddof 1, zeros included) / √n; NaN where n < 2."""
    n: np.ndarray
    """[levels × bins] bins of data."""
    separation: float
    """Share of the activation's variance explained by the levels within the bins of `variable` (0–1)."""
    preferred: bool
    """Named by the feature's conjunctive suggestion."""


class PeriEvent(NamedTuple):
    """A feature's mean activation around the onsets of one event."""

    event: str
    offsets: np.ndarray
    """[bins + 1] edges in seconds from the onset."""
    means: np.ndarray
    """[bins] mean over events of each event's mean activation in the bin (NaN: no event reaches it)."""
    sem: np.ndarray
    """[bins] SEM across events."""
    n_events: int


class TuningInputs(NamedTuple):
    """What every feature of an SAE shares for split tuning and peri-event histograms; read once."""

    rows: np.ndarray
    """Example ids of the train + val bins of the ranking's epoch (what split tuning reads)."""
    split_variables: list[str]
    centres: np.ndarray
    """[n_examples] bin centres in seconds (NaN unknown)."""
    events: dict[str, np.ndarray]
    """Event name → sorted onsets (s) of train + val trials."""
    config: TuningConfig
    shared: dict[tuple, Any]
    """What no feature changes, computed for the first feature and reused by the rest (the bins of each
    split cell, each event's window around every onset): at 10⁶ examples it is most of a feature's
    panels' time, and Review shows thousands of features of the same SAE."""


def ranked_rows(db: Store, dataset: dict[str, Any], run_id: int) -> np.ndarray | None:
    """`dataset`: its row with options parsed (store.datasets.get_dataset, store.review.run_dataset). Example ids of the train + val bins the ranking's analysis epoch selected; None when it read them all."""
    row = run_epochs(db, run_id).get("rank")
    if row is None:
        return None
    examples = load_examples(db, dataset["dataset_id"])
    selection = select_epoch(db, dataset, examples, Epoch(row["where_sql"], row["around"]), "rank", "the ranking's")
    return examples["example_id"].to_numpy()[selection.selected & (examples["split"].to_numpy() != "test")]


def tuning_inputs(dataset: dict[str, Any], data: DatasetArrays, ranked: np.ndarray | None,
                  config: TuningConfig | None = None) -> TuningInputs:
    """`ranked`: the example ids `ranked_rows` gives (None: every train + val bin)."""
    config = config or TuningConfig()
    rows = np.flatnonzero(data.fit) if ranked is None else np.sort(ranked)
    splits = []
    for variable, code in data.codes.items():
        present = code[rows]
        n_levels = len(np.unique(present[present >= 0]))
        if 2 <= n_levels <= config.max_split_levels and not each_value_in_one_trial(present, data.trial[rows]):
            splits.append(variable)
    centres = data.time_s + centre_offset(dataset)
    return TuningInputs(rows, splits, centres, event_onsets(data, centres, config), config, {})


# -- events ------------------------------------------------------------------------------------------------


def event_onsets(data: DatasetArrays, centres: np.ndarray, config: TuningConfig) -> dict[str, np.ndarray]:
    """Each event column's onsets in seconds, from train + val trials only (see the module docstring)."""
    if np.isnan(centres).all():
        return {}
    trials, fit = data.trial, data.fit
    events = {}
    for variable, kind in sorted(data.kinds.items()):
        values = _numeric(data, variable)
        if values is None or _constant_within_trials(values, trials):
            if kind == "continuous" and values is not None:
                onsets = _trial_times(values, trials, centres, fit, config)
                if onsets is not None:
                    events[variable] = onsets
            continue
        if kind not in ("binary", "categorical"):
            continue
        up = values > 0
        previous = np.r_[False, up[:-1] & (trials[1:] == trials[:-1])]
        starts = up & ~previous & fit & ~np.isnan(centres)
        if starts.any():
            events[variable] = np.sort(centres[starts])
    return events


def _numeric(data: DatasetArrays, variable: str) -> np.ndarray | None:
    """The variable as numbers per example (NaN missing); None for text categories."""
    if variable in data.numbers:
        return data.numbers[variable]
    try:
        levels = np.array([float(level) for level in data.levels[variable]] + [np.nan])
    except ValueError:
        return None
    return levels[data.codes[variable]]  # code -1 picks the NaN at the end


def _constant_within_trials(values: np.ndarray, trials: np.ndarray) -> bool:
    present = ~np.isnan(values)
    if not present.any():
        return True
    order = np.lexsort((values[present], trials[present]))
    t, v = trials[present][order], values[present][order]
    same_trial = t[1:] == t[:-1]
    return bool(np.all(v[1:][same_trial] == v[:-1][same_trial]))


def _trial_times(values: np.ndarray, trials: np.ndarray, centres: np.ndarray, fit: np.ndarray,
                 config: TuningConfig) -> np.ndarray | None:
    """A trial-level column's values as event times, where most fall inside their own trial's bin times."""
    present = ~np.isnan(values) & ~np.isnan(centres)
    if not present.any():
        return None
    ids, first = np.unique(trials[present], return_index=True)
    value = values[present][first]
    low = np.full(len(ids), np.inf)
    high = np.full(len(ids), -np.inf)
    index = np.searchsorted(ids, trials[present])
    np.minimum.at(low, index, centres[present])
    np.maximum.at(high, index, centres[present])
    inside = (value >= low) & (value <= high)
    if inside.mean() < config.min_events_in_trials:
        return None
    fit_trials = np.unique(trials[fit])
    keep = inside & np.isin(ids, fit_trials)
    return np.sort(value[keep]) if keep.any() else None


class _Windows(NamedTuple):
    """One event's windows around its onsets, as every feature's histogram reads them."""

    data: DatasetArrays
    """The arrays they were made from (a cached entry of other arrays is made again)."""
    edges: np.ndarray
    examples: np.ndarray
    """Example id of each bin that falls in a window (a bin in two windows appears twice)."""
    cell: np.ndarray
    """onset × bins + bin of the window each of `examples` falls in."""
    n: np.ndarray
    """[onsets × bins] bins of data in each cell."""


def _windows(inputs: TuningInputs, data: DatasetArrays, event: str, bin_size_s: float | None) -> _Windows:
    key = ("windows", event, bin_size_s)
    cached = inputs.shared.get(key)
    if cached is not None and cached.data is data:
        return cached
    start, stop = inputs.config.peri_window_s
    if bin_size_s:
        # Bins centred on whole lags (multiples of the bin size): each holds whole lags, none on an edge.
        step = bin_size_s * max(1, math.ceil((stop - start) / bin_size_s / inputs.config.peri_bins - 1e-9))
        lags = np.arange(math.ceil(start / step - 1e-9), math.floor(stop / step + 1e-9) + 1) * step
        edges = np.r_[lags - step / 2, lags[-1] + step / 2]
    else:
        edges = np.linspace(start, stop, inputs.config.peri_bins + 1)
    n_bins = len(edges) - 1
    start, stop = edges[0], edges[-1]
    onsets = inputs.events[event]
    usable = data.fit & ~np.isnan(inputs.centres)
    ids = np.flatnonzero(usable)
    order = np.argsort(inputs.centres[ids], kind="stable")
    ids, times = ids[order], inputs.centres[ids][order]
    lo = np.searchsorted(times, onsets + start, side="left")
    hi = np.searchsorted(times, onsets + stop, side="left")
    counts = hi - lo
    event_of = np.repeat(np.arange(len(onsets)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    picked = lo[event_of] + within
    offset = times[picked] - onsets[event_of]
    column = np.clip(np.searchsorted(edges, offset, side="right") - 1, 0, n_bins - 1)
    cell = event_of * n_bins + column
    n = np.bincount(cell, minlength=len(onsets) * n_bins).reshape(len(onsets), n_bins)
    windows = inputs.shared[key] = _Windows(data, edges, ids[picked], cell, n)
    return windows


def peri_event(inputs: TuningInputs, data: DatasetArrays, activation: np.ndarray, event: str,
               bin_size_s: float | None) -> PeriEvent:
    """The feature's peri-event histogram around `event`'s onsets (train + val bins only).

    `activation`: [n_examples] the feature's activation (0 where inactive; test bins are never read)."""
    windows = _windows(inputs, data, event, bin_size_s)
    n = windows.n
    sums = np.bincount(windows.cell, weights=activation[windows.examples], minlength=n.size).reshape(n.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_event = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
        reached = (n > 0).sum(axis=0)
        means = np.where(reached > 0, np.nansum(per_event, axis=0) / np.maximum(reached, 1), np.nan)
        spread = np.sqrt(np.nansum((per_event - means) ** 2, axis=0) / np.maximum(reached - 1, 1))
        sem = np.where(reached > 1, spread / np.sqrt(np.maximum(reached, 1)), np.nan)
    return PeriEvent(event, windows.edges, means, sem, int((n.sum(axis=1) > 0).sum()))


# -- split tuning ------------------------------------------------------------------------------------------

def conjunction_parts(predicate: str | None) -> list[tuple[str, str | None]]:
    """(variable, level or None for a range) per part of `x in [a, b) and side = left`."""
    return clause_parts(predicate) if predicate else []


def tuned_variable(suggestions: list[dict], data: DatasetArrays, curves: dict[str, np.ndarray],
                   fallback: dict[str, float]) -> tuple[str | None, str | None]:
    """(continuous or circular variable to split, split variable the first suggestion names or None).

    The variable is the first one a suggestion (or a part of a conjunctive one) names that has a stored
    tuning curve; without one, the variable whose curve varies most (`fallback`: its range per variable)."""
    preferred = None
    first = suggestions[0]["predicate"] if suggestions else None
    for variable, value in conjunction_parts(first):
        if value is not None and variable in data.codes:
            preferred = variable
    for suggestion in suggestions:
        names = [suggestion["variable"], *(v for v, _ in conjunction_parts(suggestion["predicate"]))]
        for variable in names:
            if variable in curves:
                return variable, preferred
    candidates = [(spread, v) for v, spread in fallback.items() if v in curves and np.isfinite(spread)]
    return (max(candidates)[1] if candidates and max(candidates)[0] > 0 else None), preferred


def bin_codes(values: np.ndarray, edges: np.ndarray, circular: bool) -> np.ndarray:
    """Bin index of each value by the stored curve's edges (-1 where missing)."""
    if circular and len(edges) > 1:
        period = edges[-1] - edges[0]
        values = edges[0] + np.mod(values - edges[0], period)
    codes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isnan(values), -1, codes)


class _SplitCells(NamedTuple):
    """The cells (level of the split variable × bin of the tuned one) of the ranked train + val bins."""

    data: DatasetArrays
    """The arrays they were made from (a cached entry of other arrays is made again)."""
    cell: np.ndarray
    """Per row of TuningInputs.rows: level × bins + bin, -1 where either variable is missing."""
    n: np.ndarray
    """[levels × bins] rows in each cell, flat, float64."""
    bin_n: np.ndarray
    """[bins] rows in each bin of the tuned variable (every level), float64."""
    n_kept: int
    """Rows in some cell."""


def _split_cells(inputs: TuningInputs, data: DatasetArrays, variable: str, edges: np.ndarray,
                 split_by: str) -> _SplitCells:
    key = ("cells", variable, edges.tobytes(), split_by)
    cached = inputs.shared.get(key)
    if cached is not None and cached.data is data:
        return cached
    rows = inputs.rows
    x = bin_codes(data.numbers[variable][rows], edges, data.kinds[variable] == "circular")
    level = data.codes[split_by][rows]
    keep = (x >= 0) & (level >= 0)
    n_bins, n_levels = len(edges) - 1, len(data.levels[split_by])
    cell = np.where(keep, level * n_bins + x, -1)
    cells = inputs.shared[key] = _SplitCells(
        data, cell, np.bincount(cell[keep], minlength=n_levels * n_bins).astype(np.float64),
        np.bincount(x[keep], minlength=n_bins).astype(np.float64), int(keep.sum()))
    return cells


def split_tunings(inputs: TuningInputs, data: DatasetArrays, activation: np.ndarray, variable: str,
                  edges: np.ndarray, preferred: str | None = None, *,
                  active: tuple[np.ndarray, np.ndarray] | None = None) -> list[SplitTuning]:
    """The feature's tuning to `variable` split by each candidate variable, the one to show first first:
    `preferred` (named by the feature's conjunctive suggestion), then by separation.

    `active`: (ascending example ids, values) of the examples where `activation` is not 0, when the caller
    has them; then `activation` is not scanned."""
    # Only the rows where the feature is active add to a sum: the cells' counts are the SAE's, not the
    # feature's (_split_cells), so a feature costs its active bins rather than every ranked bin.
    if active is None:
        at_rows = activation[inputs.rows]
        where = np.flatnonzero(at_rows)
        active_values = at_rows[where].astype(np.float64)
    else:
        examples, values = active
        where = np.minimum(np.searchsorted(inputs.rows, examples), max(len(inputs.rows) - 1, 0))
        ranked = inputs.rows[where] == examples if len(inputs.rows) else np.zeros(len(examples), dtype=bool)
        nonzero = values != 0
        where, active_values = where[ranked & nonzero], values[ranked & nonzero].astype(np.float64)
    n_bins = len(edges) - 1
    labels = [f"[{a:.3g}, {b:.3g})" for a, b in itertools.pairwise(edges)]
    out = []
    for split_by in inputs.split_variables:
        if split_by == variable:
            continue
        cells = _split_cells(inputs, data, variable, edges, split_by)
        n_levels = len(data.levels[split_by])
        cell = cells.cell[where]
        kept = cell >= 0
        cell, a = cell[kept], active_values[kept]
        size, n = n_levels * n_bins, cells.n
        total = np.bincount(cell, weights=a, minlength=size)
        squares = np.bincount(cell, weights=a * a, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = total / n
            variance = np.maximum(squares - total * means, 0.0) / (n - 1)
            sem = np.where(n > 1, np.sqrt(variance / n), np.nan)
            bin_mean = np.bincount(cell % n_bins, weights=a, minlength=n_bins) / cells.bin_n
        between = np.nansum(n * (means - np.tile(bin_mean, n_levels)) ** 2)
        spread = 0.0
        if cells.n_kept:  # the squared deviations of the active rows, and of the inactive rows (all 0)
            mean = float(a.sum()) / cells.n_kept
            spread = float(((a - mean) ** 2).sum()) + (cells.n_kept - len(a)) * mean * mean
        present = n.reshape(n_levels, n_bins).sum(axis=1) > 0
        out.append(SplitTuning(
            variable, split_by, labels, edges, [lv for lv, p in zip(data.levels[split_by], present, strict=True) if p],
            means.reshape(n_levels, n_bins)[present], sem.reshape(n_levels, n_bins)[present],
            n.reshape(n_levels, n_bins)[present], between / spread if spread > 0 else 0.0, split_by == preferred))
    out.sort(key=lambda s: (not s.preferred, -s.separation))
    return out


# -- text (the report; Review draws the same sparklines) ----------------------------------------------------


def sparkline(values: np.ndarray, top: float) -> str:
    """One character per value, ▁ (0) to █ (top); a space where the value is missing."""
    out = []
    for value in values:
        if not np.isfinite(value):
            out.append(" ")
        elif top <= 0 or value <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int(value / top * (len(SPARKS) - 1) + 0.5))])
    return "".join(out)


def merge_columns(values: np.ndarray, weights: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """(values merged into at most `width` columns by weighted means of adjacent bins, bins per column)."""
    per = max(1, -(-values.shape[-1] // max(width, 1)))
    if per == 1:
        return values, 1
    n_cols = -(-values.shape[-1] // per)
    pad = n_cols * per - values.shape[-1]
    v = np.pad(np.nan_to_num(values), [(0, 0)] * (values.ndim - 1) + [(0, pad)])
    w = np.pad(np.where(np.isfinite(values), weights, 0.0), [(0, 0)] * (values.ndim - 1) + [(0, pad)])
    shape = (*values.shape[:-1], n_cols, per)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = (v * w).reshape(shape).sum(-1) / w.reshape(shape).sum(-1)
    return merged, per


def split_tuning_lines(split: SplitTuning) -> list[str]:
    """A split tuning as plain text lines: one sparkline per level, then mean ± SEM per bin and level."""
    top = float(np.nanmax(split.means)) if np.isfinite(split.means).any() else 0.0
    width = max(len(level) for level in split.levels)
    lines = [f"{split.variable} by {split.split_by} (separation {split.separation:.2f}; train + val, ranked bins):",
             *(f"  {level.rjust(width)} │{sparkline(row, top)}│ peak {_peak(row, split.bin_labels)}"
               for level, row in zip(split.levels, split.means, strict=True)),
             f"  {''.rjust(width)}  {split.edges[0]:.3g} … {split.edges[-1]:.3g}", ""]
    header = ["bin", *split.levels]
    rows = [[label, *(_mean_sem(split.means[i, b], split.sem[i, b]) for i in range(len(split.levels)))]
            for b, label in enumerate(split.bin_labels)]
    return [*lines, *_plain_table(header, rows)]


def peri_event_lines(peth: PeriEvent) -> list[str]:
    top = float(np.nanmax(peth.means)) if np.isfinite(peth.means).any() else 0.0
    centres = (peth.offsets[:-1] + peth.offsets[1:]) / 2
    lines = [f"around {peth.event} ({peth.n_events:,} train + val events):",
             f"  │{sparkline(peth.means, top)}│ peak at {_peak(peth.means, [f'{c:+.2f} s' for c in centres])}",
             f"   {peth.offsets[0]:+.2g} s … {peth.offsets[-1]:+.2g} s", ""]
    rows = [[f"{a:+.2f} … {b:+.2f}", _mean_sem(m, s)]
            for a, b, m, s in zip(peth.offsets[:-1], peth.offsets[1:], peth.means, peth.sem, strict=True)]
    return [*lines, *_plain_table(["seconds", "mean ± sem"], rows)]


def _peak(row: np.ndarray, labels: list[str]) -> str:
    if not np.isfinite(row).any():
        return "–"
    i = int(np.nanargmax(row))
    return f"{labels[i]} ({row[i]:.3g})"


def _mean_sem(mean: float, sem: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f}" + (f" ± {sem:.3f}" if np.isfinite(sem) else "")


def _plain_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in (header, *rows)]
