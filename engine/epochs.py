"""Analysis epochs: the bins a step reads, chosen by each bin's metadata (`--where`) and by a window
around an event (`--around EVENT:START,STOP`), both at once when both are given.

An epoch only selects bins inside the dataset's split assignment; it never splits again. Training reads
the selected train bins (and the selected val bins for its validation loss), ranking the selected
train + val bins, validation the selected test bins (with the selected train + val bins to choose its
thresholds and decoder penalties).

Trials keep their meaning inside an epoch. A trial whose selected bins have gaps between them stays one
trial: its selected bins in time order are what the within-trial shift nulls rotate (engine.analysis.nulls,
engine.validation.validate), and the gaps are seams like the wrap-around seam every circular shift already has.
The alternative, cutting a trial into its contiguous stretches, would turn one trial into several
pseudo-trials that the trial-level swaps, MIS's other-trial draws and the bootstrap of whole trials
would treat as independent although they share the trial's context: an anti-conservative null made
from structure that is not there.

`--around` windows are matched by time: a bin is kept when its centre lies in [onset + START,
onset + STOP] (both ends included) for some onset of EVENT, in the same trial or not (bin times rise
through the recording). EVENT is either a per-bin column of event counts or 0/1 flags (binary or
numeric categorical; an onset is each bin where it is above 0, at that bin's centre) or a trial-level
column that holds an event time in seconds (continuous and constant within every trial; trials without
a value have no onset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from engine.errors import InputError
from store import Store
from store.datasets import load_natural_variables
from store.epochs import PredicateError, bin_metadata, epoch_row, has_results, run_epochs, select_examples

SPLITS = ("train", "val", "test")

NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "train": (("train",), ("val",)),
    "rank": (("train",), ("val",)),
    "validate": (("test",), ("train", "val")),
}
"""The splits (or pooled splits) each step reads; an epoch must leave bins in every one of them."""

STEP_VERBS = {"train": "trained on", "rank": "ranked on", "validate": "validated on"}
"""How a summary (`mini info`, the report) says what each step read."""


def read_splits(step: str) -> tuple[str, ...]:
    """The splits a step reads, in the order summaries list them: ('test', 'train', 'val') for validate."""
    return tuple(split for group in NEEDS[step] for split in group)

MIN_TRIALS = 2
"""An epoch must leave bins of at least this many trials in each split a step reads (or all of the split's
trials, where it has fewer): the nulls swap whole trials, MIS draws its explanations from trials other
than the query's, and validation's intervals resample whole test trials; one trial leaves them nothing
to compare."""

TIME_TOLERANCE_S = 1e-9
"""Window ends are inclusive to this much, so a bin centre exactly on an end is not lost to rounding."""


@dataclass(frozen=True)
class Epoch:
    """The bins a step reads, as a person asked for them; both None: every bin."""

    where: str | None = None
    """`--where`: one true/false expression over each bin's metadata, e.g. `phase in ('go', 'move')`."""
    around: str | None = None
    """`--around EVENT:START,STOP`: bins whose centre lies within [onset + START, onset + STOP] seconds."""

    @property
    def is_set(self) -> bool:
        return self.where is not None or self.around is not None

    def describe(self) -> str:
        """`speed > 5`, `around go:-0.25,0.25`, both joined by `and`, or `all bins`."""
        parts = [self.where] if self.where is not None else []
        if self.around is not None:
            parts.append(f"around {self.around}")
        return " and ".join(parts) if parts else "all bins"

    def options(self) -> str:
        """The epoch as command-line options, for messages: `--where "speed > 5" --around go:-1,1`."""
        parts = [f'--where "{self.where}"'] if self.where is not None else []
        if self.around is not None:
            parts.append(f"--around {self.around}")
        return " ".join(parts)

    def to_config(self) -> dict[str, Any]:
        return {"where": self.where, "around": self.around}

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Epoch:
        config = config or {}
        return cls(where=config.get("where"), around=config.get("around"))


class Around(NamedTuple):
    event: str
    start: float
    stop: float


MAX_AROUND_S = 86_400.0
"""How far from its event a window may reach: a day. Further is a typo (or 1e308), not a peri-event window."""


def parse_around(text: str) -> Around:
    """EVENT:START,STOP with finite START ≤ STOP in seconds; InputError naming what is wrong."""
    event, sep, window = text.rpartition(":")
    parts = window.split(",")
    if not sep or not event.strip() or len(parts) != 2:
        raise InputError(f"--around {text}: expected EVENT:START,STOP in seconds, e.g. move_onset:-0.25,0.25")
    try:
        start, stop = (float(p) for p in parts)
    except ValueError:
        raise InputError(f"--around {text}: START and STOP must be numbers of seconds, e.g. "
                         f"{event}:-0.25,0.25") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise InputError(f"--around {text}: START and STOP must be finite seconds")
    if max(abs(start), abs(stop)) > MAX_AROUND_S:
        raise InputError(f"--around {text}: START and STOP must lie within a day ({MAX_AROUND_S:,.0f} s) of the "
                         "event")
    if start > stop:
        raise InputError(f"--around {text}: START {start:g} is after STOP {stop:g}")
    return Around(event.strip(), start, stop)


def epoch_from_options(where: str | None, around: str | None) -> Epoch:
    """The epoch `--where` / `--around` ask for, checked as far as it can be without the data."""
    if where is not None and not where.strip():
        raise InputError("--where is empty; write a condition such as speed > 5")
    if around is not None:
        parse_around(around)
    return Epoch(where.strip() if where is not None else None, around.strip() if around is not None else None)


class EpochSelection(NamedTuple):
    """Which bins an epoch selects in one dataset."""

    epoch: Epoch
    selected: np.ndarray
    """[n_examples] bool, every split."""
    counts: dict[str, int]
    """Selected bins per split."""
    source: str
    """Where the epoch came from: 'given', "the run's", "the ranking's", "the validations'"."""

    def row(self) -> dict[str, Any] | None:
        """The analysis_epochs row to store (None for every bin)."""
        e = self.epoch
        return epoch_row(e.where, e.around, self.counts) if e.is_set else None

    def summary(self, splits: tuple[str, ...] = SPLITS) -> str:
        """One line: what was selected and how many bins of each of `splits` (those a step reads)."""
        sizes = " · ".join(f"{split} {self.counts[split]:,}" for split in splits)
        origin = "" if self.source == "given" else f" ({self.source})"
        return f"epoch: {self.epoch.describe()}{origin}; bins {sizes}"


def select_epoch(db: Store, dataset: dict[str, Any], examples: pl.DataFrame, epoch: Epoch, step: str,
                 source: str = "given") -> EpochSelection:
    """The bins `epoch` selects, checked for what `step` needs; InputError (one line) before anything is
    written when the predicate or the window is wrong, or when a split `step` reads is left empty or with
    too few trials (MIN_TRIALS)."""
    splits = examples["split"].to_numpy()
    if not epoch.is_set:
        return EpochSelection(epoch, np.ones(len(splits), dtype=bool), _counts(splits, None), source)
    label = epoch.options() if source == "given" else f"{source} epoch ({epoch.options()})"
    selected = np.ones(len(splits), dtype=bool)
    bins = bin_metadata(db, dataset["dataset_id"])  # one pivot of the metadata for both options
    if epoch.where is not None:
        try:
            ids = select_examples(bins, epoch.where).to_numpy()
        except PredicateError as error:
            raise InputError(f'--where "{epoch.where}": {error}') from None
        chosen = np.zeros(len(splits), dtype=bool)
        chosen[ids] = True
        selected &= chosen
    if epoch.around is not None:
        selected &= _around(db, dataset, examples, bins, parse_around(epoch.around), epoch.around)
    _check(selected, splits, examples["trial_id"].to_numpy(), step, label)
    return EpochSelection(epoch, selected, _counts(splits, selected), source)


def _counts(splits: np.ndarray, selected: np.ndarray | None) -> dict[str, int]:
    chosen = splits if selected is None else splits[selected]
    return {split: int(np.count_nonzero(chosen == split)) for split in SPLITS}


def _check(selected: np.ndarray, splits: np.ndarray, trials: np.ndarray, step: str, label: str) -> None:
    total = len(selected)
    if not selected.any():
        raise InputError(f"{label}: selects no bins (of {total:,})")
    for group in NEEDS[step]:
        name = " + ".join(group)
        in_group = np.isin(splits, group)
        chosen = selected & in_group
        counts = ", ".join(f"{s} {np.count_nonzero(selected & (splits == s)):,}" for s in SPLITS)
        if not chosen.any():
            raise InputError(f"{label}: selects no {name} bins ({counts}); mini {step} reads {name}, and "
                             "splits stay as imported (whole trials), so widen the epoch")
        have, of = len(np.unique(trials[chosen])), len(np.unique(trials[in_group]))
        if have < min(MIN_TRIALS, of):
            raise InputError(f"{label}: selects {name} bins of only {have} trial (of {of}); mini {step} needs "
                             f"bins of at least {MIN_TRIALS} {name} trials, because nulls, MIS and validation's "
                             "intervals compare or resample whole trials")


def centre_offset(dataset: dict[str, Any]) -> float:
    """Seconds from a bin's time_s to its centre: half a bin where time_s is the bin's start (spike imports,
    and count imports without a time column, whose times are k × bin size), 0 where it is the time
    column of `mini import` (taken as the bin's own time)."""
    options, bin_size = dataset["options"], dataset["bin_size_s"]
    if bin_size is None:
        return 0.0
    starts = "binning" in options or ("time_col" in options and options["time_col"] is None)
    return bin_size / 2 if starts else 0.0


def _around(db: Store, dataset: dict[str, Any], examples: pl.DataFrame, bins: pl.DataFrame, around: Around,
            text: str) -> np.ndarray:
    """[n_examples] bool: bins whose centre lies in [onset + start, onset + stop] of some onset.

    Times and trials come from `examples`, not from `bins`: a variable may take those columns' names."""
    kinds = dict(load_natural_variables(db, dataset["dataset_id"]).select("variable", "kind").iter_rows())
    if around.event not in kinds:
        raise InputError(f"--around {text}: no variable '{around.event}' in dataset '{dataset['name']}' "
                         f"(variables: {', '.join(sorted(kinds)) or 'none'})")
    times = examples["time_s"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if np.isnan(times).all():
        raise InputError(f"--around {text}: dataset '{dataset['name']}' has no bin times (imported without a "
                         "time column or --bin-size)")
    centres = times + centre_offset(dataset)
    column = bins[around.event]
    if not column.dtype.is_numeric():
        raise InputError(f"--around {text}: '{around.event}' is text; give a column of event counts (0/1) or "
                         "of event times in seconds")
    values = column.cast(pl.Float64).fill_null(np.nan).to_numpy()
    trials = examples["trial_id"].to_numpy()
    kind = kinds[around.event]
    if kind == "continuous" and _constant_within_trials(values, trials):
        onsets = np.unique(values[~np.isnan(values)])
        what = "times"
    elif kind in ("binary", "categorical"):
        onsets = np.sort(centres[(values > 0) & ~np.isnan(centres)])
        what = "bins above 0"
    else:
        raise InputError(f"--around {text}: '{around.event}' ({kind}) changes within trials, so it is neither "
                         "a per-bin event column (counts or 0/1) nor a trial-level event time in seconds")
    if len(onsets) == 0:
        raise InputError(f"--around {text}: '{around.event}' has no onsets (no {what}); the event never occurs")
    lowest = centres - around.stop - TIME_TOLERANCE_S  # an onset o keeps the bin when o ∈ [c − stop, c − start]
    first = np.searchsorted(onsets, lowest, side="left")
    inside = first < len(onsets)
    keep = np.zeros(len(centres), dtype=bool)
    keep[inside] = onsets[first[inside]] <= centres[inside] - around.start + TIME_TOLERANCE_S
    return keep & ~np.isnan(centres)


def _constant_within_trials(values: np.ndarray, trials: np.ndarray) -> bool:
    """True when every trial's present values are one value (missing values aside)."""
    present = ~np.isnan(values)
    if not present.any():
        return False
    frame = pl.DataFrame({"trial": trials[present], "value": values[present]})
    return bool((frame.group_by("trial").agg(pl.col("value").n_unique())["value"] == 1).all())


# -- which epoch a step uses when none is given ---------------------------------------------------------
def default_epoch(db: Store, run_id: int, step: str) -> tuple[Epoch, str]:
    """(epoch, where it came from) for a step run without --where/--around: ranking uses the run's epoch;
    validation the ranking's (the run's when it was never ranked); a single label validated later
    (`validate_label`) the epoch of the run's stored validations, so they stay comparable."""
    if step == "validate_label" and has_results(db, run_id, "validate"):
        name, source = "validate", "the validations'"
    elif step in ("validate", "validate_label") and has_results(db, run_id, "rank"):
        name, source = "rank", "the ranking's"
    else:
        name, source = "train", "the run's"
    row = run_epochs(db, run_id).get(name)
    return (Epoch(row["where_sql"], row["around"]) if row else Epoch()), source


def resolve_epoch(db: Store, run_id: int, step: str, given: Epoch | None) -> tuple[Epoch, str, str | None]:
    """(epoch, source, note): the given epoch when there is one (with a note when it replaces another),
    else the default one."""
    inherited, source = default_epoch(db, run_id, step)
    if given is None or not given.is_set:
        return inherited, source, None
    note = f"{given.options()} replaces {source} epoch ({inherited.describe()})" if inherited != given else None
    return given, "given", note
