"""Spike times + behaviour + trials → a binned dataset, through the same path as `mini import`.

Steps, each refusing bad input with one line before anything is written:
1. check the spike trains (engine.ingest.spikes), pick the time range, filter units, bin;
2. assign bins to trials (a trials table, laps found in the position, or none: contiguous blocks)
   and drop the bins outside trials, or keep each stretch between trials as its own segment;
3. align every behaviour source to the kept bins' centres (engine.ingest.behaviour) and count events;
4. smooth / normalise within trials (engine.ingest.preprocess);
5. hand counts and metadata to engine.ingest.importer.prepare_dataset, which splits by whole trials and
   builds the NewDataset that store_dataset writes in one transaction.
Every choice made on the way is recorded in the dataset's `options` JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.behaviour import (
    MAX_TIME_S,
    BehaviourSource,
    EventSource,
    align_source,
    count_events,
    read_behaviour_table,
    read_events_table,
)
from engine.ingest.importer import ImportOptions, add_flags, prepare_dataset
from engine.ingest.preprocess import PreprocessOptions, check_preprocess, preprocess
from engine.ingest.readers import CountMatrix
from engine.ingest.spike_readers import read_spike_source
from engine.ingest.spikes import (
    SpikeTrains,
    UnitFilter,
    bin_edges,
    bin_spikes,
    check_trains,
    filter_units,
    time_range,
)
from engine.ingest.splits import contiguous_blocks
from engine.ingest.tracking import TrackingOptions, is_tracking_file, read_position_tracking
from engine.ingest.trials import LapOptions, Trials, assign_bins, find_laps, read_trials_table
from engine.options import Bound, check_number, positive
from engine.quality_flags import track_flag
from store.datasets import NewDataset

OUTSIDE = ("drop", "keep")
TRIAL_COLUMN = "trial"
TIME_COLUMN = "time_s"


MIN_TIME_SCALE, MAX_TIME_SCALE = 1e-12, 86_400.0
"""--time-scale: seconds per stored time unit, from picoseconds to days."""


@dataclass(frozen=True)
class BinningOptions:
    """How spike times become a dataset; the defaults suit a behaving-animal session at 50 ms."""

    bin_size_s: float = 0.05
    """Bin width in seconds."""
    time_range: tuple[float, float] | None = None
    """(start, stop) in seconds; default: the span the source states, else first to last spike."""
    units: UnitFilter = field(default_factory=UnitFilter)
    """Which units to keep."""
    trials: str = "none"
    """'none' (contiguous blocks stand in for trials), 'table' (Recording.trials), 'laps' (end to end on a
    linear track, tiling the session) or 'runs' (laps without the time spent at the ends)."""
    laps: LapOptions = field(default_factory=LapOptions)
    """How laps and runs are found."""
    outside_trials: str = "drop"
    """Bins outside every trial: 'drop' them, or 'keep' each stretch between trials as its own segment."""
    max_gap_s: float | None = None
    """Behaviour samples further apart than this leave the bins between them missing; default
    2.5 median sample intervals per source."""
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    """Smoothing and normalisation, within trials."""

    def __post_init__(self) -> None:
        if self.max_gap_s is not None:
            positive("--max-gap", self.max_gap_s, "s", high=MAX_TIME_S)


@dataclass
class Recording:
    """Everything read from the files, before binning."""

    spikes: SpikeTrains
    behaviour: list[BehaviourSource] = field(default_factory=list)
    events: list[EventSource] = field(default_factory=list)
    trials: Trials | None = None
    source: str = ""
    """What `datasets.source` says (the files, joined with ' + ')."""
    notes: list[str] = field(default_factory=list)
    """What the readers found worth saying (e.g. an NWB file's intervals tables)."""
    unit_attributes: pl.DataFrame | None = None
    """unit (the unit's name), key, value (text): attributes the recording gives its units (an NWB file's Units
    table); stored for the units kept."""


def _trials_for(recording: Recording, options: BinningOptions) -> Trials | None:
    if options.trials == "none":
        return None
    if options.trials == "table":
        if recording.trials is None:
            raise InputError("--trials: no trials table was read")
        return recording.trials
    if options.trials not in ("laps", "runs"):
        raise InputError(f"--trials {options.trials}: unknown (use a table file, laps, runs or none)")
    with_position = [s for s in recording.behaviour if "position" in s.columns.columns]
    if not with_position:
        raise InputError(f"--trials {options.trials}: needs a behaviour source with a 'position' column (e.g. --behaviour "
                         "FILE.videoPositionTracking)")
    source = with_position[0]
    position = source.columns["position"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    laps = replace(options.laps, with_ends=options.trials == "laps")
    return find_laps(source.times, position, laps, label=f"{options.trials} in {source.label}")


def _segments(trial_of: np.ndarray, trials: Trials | None, outside: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Which bins to keep and, per kept bin, its trial label; plus notes."""
    if trials is None:
        return np.ones(len(trial_of), dtype=bool), [], []
    if outside not in OUTSIDE:
        raise InputError(f"--outside-trials {outside}: unknown (use drop or keep)")
    inside = trial_of >= 0
    used = len(np.unique(trial_of[inside]))
    notes = [f"{used} of {len(trials.names)} trials from {trials.label} hold at least one bin"]
    if used < len(trials.names):
        notes.append(f"{len(trials.names) - used} trial(s) lie outside the time range or are shorter than a bin")
    if outside == "drop":
        if not inside.any():
            raise InputError(f"{trials.label}: no bin lies inside any trial (check the time range and the clock)")
        notes.append(f"dropped {int((~inside).sum()):,} bins outside trials (--outside-trials keep keeps them)")
        return inside, [trials.names[i] for i in trial_of[inside]], notes
    # Each stretch between trials becomes a segment of its own, so it is split and shifted as a whole.
    stretch = np.cumsum(np.r_[True, inside[1:] != inside[:-1]] & ~inside)
    labels = [trials.names[t] if t >= 0 else f"outside {s}" for t, s in zip(trial_of, stretch, strict=True)]
    notes.append(f"kept {int((~inside).sum()):,} bins outside trials as {len(set(stretch[~inside]))} segment(s)")
    return np.ones(len(trial_of), dtype=bool), labels, notes


def _trial_variables(trials: Trials | None, trial_of: np.ndarray) -> pl.DataFrame:
    if trials is None or trials.variables.width == 0:
        return pl.DataFrame()
    rows = pl.Series(np.maximum(trial_of, 0))
    frame = trials.variables[rows]
    outside = pl.Series(trial_of < 0)
    return frame.with_columns(pl.when(outside).then(None).otherwise(pl.col(c)).alias(c) for c in frame.columns)


def _add_columns(meta: dict[str, pl.Series], frame: pl.DataFrame, origin: str, owners: dict[str, str]) -> None:
    for name in frame.columns:
        if name in owners:
            raise InputError(f"{origin}: variable '{name}' also comes from {owners[name]}; rename one of them")
        owners[name] = origin
        meta[name] = frame[name]


def prepare_spike_dataset(recording: Recording, binning: BinningOptions, options: ImportOptions
                          ) -> tuple[NewDataset, list[str]]:
    """Bin, align, segment and validate; returns the NewDataset to store and notes (nothing is written)."""
    spikes = recording.spikes
    check_preprocess(binning.preprocess)
    check_trains(spikes)
    window = time_range(spikes, binning.time_range)
    edges = bin_edges(window, binning.bin_size_s, len(spikes.times))
    centres = (edges[:-1] + edges[1:]) / 2
    kept_units, metrics, notes = filter_units(spikes, (float(edges[0]), float(edges[-1])), binning.units)
    notes = [*recording.notes, *spikes.notes, *notes]
    counts = bin_spikes([spikes.times[i] for i in kept_units], edges)

    trials = _trials_for(recording, binning)
    trial_of = assign_bins(centres, trials) if trials is not None else np.full(len(centres), -1)
    keep, labels, trial_notes = _segments(trial_of, trials, binning.outside_trials)
    notes += trial_notes
    kept_centres = centres[keep]

    meta: dict[str, pl.Series] = {}
    owners = {TRIAL_COLUMN: "mini (the trial column)", TIME_COLUMN: "mini (the bin times)"}
    behaviour_record = []
    for source in recording.behaviour:
        notes += source.notes
        aligned, record = align_source(source, kept_centres, options.var_kinds, binning.max_gap_s)
        _add_columns(meta, aligned, source.label, owners)
        record["n_missing"] = {c: int(aligned[c].null_count()) for c in aligned.columns}
        behaviour_record.append(record)
    events_counted = []
    for events in recording.events:
        counted = count_events(events, edges, keep)
        if not counted.width or not counted.select(pl.all().sum()).sum_horizontal().item():
            if not events.required:
                notes.append(f"{events.label}: none of its {len(events.times):,} events falls in the kept bins; "
                             "left out")
                continue
            in_range = ((events.times >= edges[0]) & (events.times < edges[-1])).any()
            why = ("they lie outside the trials (--outside-trials keep keeps the bins between trials)" if in_range
                   else "same clock as the spikes?")
            raise InputError(f"{events.label}: none of its {len(events.times):,} events falls in the kept bins "
                             f"({edges[0]:.3f}-{edges[-1]:.3f} s); {why}")
        _add_columns(meta, counted, events.label, owners)
        events_counted.append(events)
    _add_columns(meta, _trial_variables(trials, trial_of[keep]), trials.label if trials else "", owners)

    if trials is not None:
        segment_of = np.unique(labels, return_inverse=True)[1]
    else:  # the same blocks the importer will make, so smoothing stays inside each of them too
        segment_of = contiguous_blocks(int(keep.sum()), options.n_blocks)
    changes = binning.preprocess != PreprocessOptions()
    values = preprocess(counts[keep], segment_of, binning.bin_size_s, binning.preprocess) if changes else counts[keep]
    kind = "activations" if binning.preprocess.normalize == "zscore" else options.kind
    if kind != options.kind:
        notes.append("z-scored counts are signed: the dataset's kind is 'activations'")

    columns = {TIME_COLUMN: pl.Series(edges[:-1][keep])}
    if trials is not None:
        columns[TRIAL_COLUMN] = pl.Series(labels, dtype=pl.String)
    metadata = pl.DataFrame({**columns, **meta})
    names = [spikes.names[i] for i in kept_units]
    smoothed = f" after --smooth {binning.preprocess.smooth_s:g}" if binning.preprocess.smooth_s else ""
    matrix = CountMatrix(values=values, unit_names=names, label=spikes.label + smoothed)
    new, import_notes = prepare_dataset(
        matrix, metadata,
        replace(options, kind=kind, trial_col=TRIAL_COLUMN if trials is not None else None, time_col=TIME_COLUMN,
                bin_size_s=binning.bin_size_s),
        meta_label=recording.source or spikes.label, source=recording.source or spikes.label)
    # Firing rates from the spikes themselves: after smoothing or z-scoring, mean value / bin width is not one.
    raw = counts[keep].mean(axis=0) / binning.bin_size_s
    new.units = new.units.with_columns(pl.Series("firing_rate_hz", raw))
    new.options.update(_record(spikes, binning, window, names, metrics, trials, keep, behaviour_record,
                               events_counted))
    new.unit_attributes = _kept_unit_attributes(recording.unit_attributes, names)
    add_flags(new, [flag for source in recording.behaviour
                    if (flag := track_flag(Path(source.label).name,
                                           source.details.get("axis_share", float("nan"))))])
    return new, notes + import_notes


def _kept_unit_attributes(attributes: pl.DataFrame | None, names: list[str]) -> pl.DataFrame | None:
    """unit_id, key, value rows of the kept units (a unit left out by --min-rate takes its attributes with it)."""
    if attributes is None or attributes.height == 0:
        return None
    index = pl.DataFrame({"unit": names, "unit_id": pl.Series(range(len(names)), dtype=pl.Int32)})
    return attributes.join(index, on="unit").select("unit_id", "key", "value")


def _record(spikes: SpikeTrains, binning: BinningOptions, window: tuple[float, float], names: list[str],
            metrics: dict, trials: Trials | None, keep: np.ndarray, behaviour: list[dict],
            events: list[EventSource]) -> dict:
    """What the dataset was made from and how: stored in `datasets.options`, read by later steps."""
    return {
        "binning": {"bin_size_s": binning.bin_size_s, "time_range": list(window),
                    "time_range_given": binning.time_range is not None, "n_bins": len(keep),
                    "n_bins_kept": int(keep.sum()), "bin_time": "start (behaviour is aligned at bin centres)"},
        "spikes": {"source": spikes.label, "n_units_read": len(spikes.names), "units_kept": names,
                   "unit_filter": asdict(binning.units), "unit_metrics": _finite(metrics)},
        "trials": {"from": binning.trials, "source": trials.label if trials else None,
                   "outside_trials": binning.outside_trials if trials else None,
                   "laps": (asdict(replace(binning.laps, with_ends=binning.trials == "laps"))
                            if binning.trials in ("laps", "runs") else None)},
        "behaviour": behaviour,
        "events": [e.label for e in events],
        "preprocess": {**asdict(binning.preprocess), "within": "trials" if trials else "blocks"},
    }


def _finite(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """NaN (e.g. the ISI violations of a unit with one spike) as null: JSON has no NaN."""
    return {name: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in m.items()}
            for name, m in metrics.items()}


@dataclass(frozen=True)
class SpikeSourceOptions:
    """How to read the spike source."""

    format: str = "auto"
    """'auto' (from the path), 'kilosort', 'mat' or 'table'."""
    groups: tuple[str, ...] = ("good",)
    """Kilosort/Phy: cluster labels to keep; ('all',) keeps every cluster."""
    mat_field: str = "time"
    """MATLAB: the struct field holding a unit's spike times."""
    mat_var: str | None = None
    """MATLAB: the variable to read when the file holds several."""
    unit_col: str | None = None
    """Table: the unit column (default: unit, unit_id, cluster, …)."""
    time_col: str | None = None
    """Table: the spike time column (default: time, time_s, spike_time, …)."""
    time_scale: float = 1.0
    """MATLAB and table: seconds per unit of the stored times (0.001 for ms, 1/30000 for 30 kHz samples)."""

    def __post_init__(self) -> None:
        check_number("--time-scale", self.time_scale, Bound(MIN_TIME_SCALE), Bound(MAX_TIME_SCALE), "s per unit",
                     "from picoseconds to days per stored unit")


def read_behaviour_files(paths: Sequence[str], tracking: TrackingOptions) -> list[BehaviourSource]:
    """Behaviour tables, or position tracking files, each its own source with its own clock."""
    return [read_position_tracking(p, tracking) if is_tracking_file(p) else read_behaviour_table(str(p))
            for p in paths]


def read_recording(source: str, spikes: SpikeSourceOptions, *, behaviour: Sequence[str] = (),
                   events: Sequence[str] = (), trials: str | None = None,
                   tracking: TrackingOptions | None = None) -> Recording:
    """Read the spike source and every behaviour, events and trials file (nothing is binned yet)."""
    trains = read_spike_source(source, spikes.format, groups=spikes.groups, mat_field=spikes.mat_field,
                               mat_var=spikes.mat_var, unit_col=spikes.unit_col, time_col=spikes.time_col,
                               time_scale=spikes.time_scale)
    recording = Recording(
        trains, read_behaviour_files(behaviour, tracking or TrackingOptions()),
        [read_events_table(p) for p in events],
        read_trials_table(trials) if trials else None,
        " + ".join([str(source), *behaviour, *events, *([trials] if trials else [])]))
    return recording
