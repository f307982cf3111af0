"""Import a recording: validate counts and metadata together, split by trials, write in one transaction.

Nothing reaches the database until every check has passed, and the write itself is one
transaction, so a refused or interrupted import leaves the file as it was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.preprocess import PreprocessOptions, check_preprocess, preprocess
from engine.ingest.readers import CountMatrix, check_count_values, read_counts, read_metadata
from engine.ingest.splits import (
    DEFAULT_FRACTIONS,
    SPLITS,
    assign_splits,
    check_fractions,
    check_split_options,
    contiguous_blocks,
)
from engine.ingest.variables import (
    VariableSpec,
    describe_variables,
    each_value_in_one_trial,
    long_values,
    variables_frame,
)
from engine.memory import check_fits
from engine.options import check_name
from engine.quality_flags import QualityFlag, flags_frame, variance_flags
from store import Store
from store.datasets import GroundTruth, NewDataset, add_dataset
from store.quality import flag_line

DATASET_KINDS = ("spike_counts", "activations")
VALUE_TYPES = ("counts", "rates", "activations")
"""What a dataset's values are (`datasets.value_type`): whole spike counts, non-negative values that are not
all whole (smoothed counts, rates), or activations (kind 'activations': any finite value)."""

ROW_BYTES = 2 * 8 + 2 * 4 + 4
"""Bytes a nonzero count takes on its way to the counts table: np.nonzero's two int64 indices, their int32
copies and its float32 value."""

GAP_BINS = 1.5
"""A step of more than this many bins in the time column is a gap that smoothing does not bridge."""
_TRIAL_NAMES = ("trial", "trial_id", "trial_index")
_TIME_NAMES = ("time_s", "time", "t", "timestamp")


MAX_DATASET_NAME = 100
"""A dataset's name is what `--dataset NAME` and every table show: a short identifier."""


@dataclass(frozen=True)
class ImportOptions:
    """How to read a recording. Defaults suit a binned spike-count session with a trial column."""

    name: str | None = None
    """Dataset name; defaults to the counts file's stem."""
    kind: str = "spike_counts"
    """'spike_counts' (non-negative) or 'activations' (any finite value, e.g. a network's hidden units)."""
    trial_col: str | None = None
    """Metadata column of trial ids; found automatically if named trial/trial_id; else contiguous blocks."""
    time_col: str | None = None
    """Metadata column of bin times in seconds; found automatically if named time_s/time."""
    bin_size_s: float | None = None
    """Bin width in seconds; inferred from the time column when not given."""
    var_kinds: dict[str, str] = field(default_factory=dict)
    """Overrides of inferred variable kinds, e.g. {'heading': 'circular'}."""
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    """Shares of examples in train, val and test."""
    split_seed: int = 0
    """Seed of the trial shuffle that assigns splits."""
    n_blocks: int = 40
    """Contiguous blocks that stand in for trials when there is no trial column."""
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    """Smoothing and z-scoring within trials (`mini import`); spike imports do theirs while binning and
    leave this at its default."""

    def __post_init__(self) -> None:
        # Checked when built, so the CLI and the app refuse these before any file is read or written.
        if self.name is not None:
            check_name("--name", self.name, "a dataset", MAX_DATASET_NAME)
        check_fractions(self.split_fractions)
        check_split_options(self.split_seed, self.n_blocks)


@dataclass
class ImportResult:
    dataset_id: int
    name: str
    n_examples: int
    n_units: int
    n_trials: int
    split_sizes: dict[str, int]
    notes: list[str]
    flags: list[str] = field(default_factory=list)
    """Quality flags found at import, one line each: what is wrong, then what to try."""


def _pick_column(meta: pl.DataFrame, given: str | None, candidates: tuple[str, ...], label: str,
                 flag: str) -> str | None:
    if given is not None:
        if given not in meta.columns:
            raise InputError(f"{label}: no column '{given}' ({flag}); columns are {', '.join(meta.columns)}")
        return given
    return next((c for c in candidates if c in meta.columns), None)


def _trial_codes(meta: pl.DataFrame, column: str, label: str) -> tuple[np.ndarray, list[str]]:
    """Dense trial codes 0..n-1 in order of appearance, and each trial's original label.

    Rows of one trial must be contiguous: later steps shift activity *within* trials and bootstrap
    whole trials, which would silently mix trials if a trial came back after another.
    """
    series = meta[column]
    nulls = series.is_null()
    if nulls.any():
        raise InputError(f"{label}: column '{column}' row {int(nulls.arg_max())} has no trial id")  # type: ignore[arg-type]
    starts = np.flatnonzero(np.r_[True, (series[1:] != series[:-1]).to_numpy()])
    run_labels = series.gather(starts)
    repeated = run_labels.is_duplicated()
    if repeated.any():
        run = int(repeated.arg_max())  # type: ignore[arg-type]
        again = int(np.flatnonzero(run_labels == run_labels[run])[1])
        raise InputError(
            f"{label}: column '{column}' row {int(starts[again])}: trial {run_labels[run]} appears again after "
            "other trials; rows of a trial must be contiguous (sort the table by time)"
        )
    codes = np.repeat(np.arange(len(starts), dtype=np.int32), np.diff(np.r_[starts, series.len()]))
    return codes, [str(v) for v in run_labels.to_list()]


def _times(meta: pl.DataFrame, column: str | None, bin_size: float | None, label: str
           ) -> tuple[np.ndarray | None, float | None, list[str]]:
    notes: list[str] = []
    if column is None:
        if bin_size is None:
            return None, None, ["no time column and no --bin-size: firing rates are not computed"]
        return np.arange(meta.height) * bin_size, bin_size, notes
    series = meta[column]
    if not series.dtype.is_numeric():
        raise InputError(f"{label}: time column '{column}' is {series.dtype}, expected seconds as numbers")
    if series.null_count():
        raise InputError(f"{label}: time column '{column}' row {int(series.is_null().arg_max())} is empty")  # type: ignore[arg-type]
    times = series.cast(pl.Float64).to_numpy()
    steps = np.diff(times)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise InputError(f"{label}: time column '{column}' row {row} ({times[row]}) is not after the row "
                         "before it; rows must be in time order")
    if bin_size is None and len(steps):
        bin_size = float(np.round(np.median(steps), 9))
        notes.append(f"bin size {bin_size:g} s inferred from '{column}'")
    elif len(steps):
        # Windows may overlap (80 ms counts every 10 ms) or leave gaps, but not by a factor of 100: that is a
        # mistyped option, and every firing rate would be off by it.
        step = float(np.median(steps))
        if not step / BIN_STEP_FACTOR <= bin_size <= step * BIN_STEP_FACTOR:
            raise InputError(f"--bin-size {bin_size:g} s, but '{column}' advances {step:g} s per row; give the "
                             f"bins' width (about {step:g} s) or leave --bin-size out to take it from '{column}'")
    return times, bin_size, notes


def _smoothing_segments(trial_of: np.ndarray, times: np.ndarray | None, bin_size: float | None
                        ) -> tuple[np.ndarray, int]:
    """Trials cut further at gaps in the bin times (the kernel must not bridge them), and the gap count."""
    if times is None or bin_size is None:
        return trial_of, 0
    gap = np.r_[False, np.diff(times) > GAP_BINS * bin_size] & np.r_[False, trial_of[1:] == trial_of[:-1]]
    return np.cumsum(np.r_[True, trial_of[1:] != trial_of[:-1]] | gap), int(gap.sum())


def _value_type(values: np.ndarray, kind: str, label: str, unit_names: list[str]) -> tuple[str, list[str]]:
    """'counts', 'rates' or 'activations', and a note when counts turn out not to be whole numbers."""
    if kind == "activations":
        return "activations", []
    fraction = values != np.round(values)
    if not fraction.any():
        return "counts", []
    row, col = np.argwhere(fraction)[0]
    return "rates", [f"{label}: values are not whole numbers (row {row}, unit '{unit_names[col]}' is "
                     f"{values[row, col]:.4g}), so the dataset holds rates, not spike counts (value_type 'rates'; "
                     "`mini train --loss poisson` is refused on it)"]


def _untestable(meta: pl.DataFrame, specs: list[VariableSpec], trial_of: np.ndarray) -> list[str]:
    """Categorical variables each of whose values occurs in one trial only (e.g. a clip name per trial)."""
    if trial_of.max() < 1:
        return []
    names = []
    for spec in specs:
        if spec.kind not in ("categorical", "binary"):
            continue
        codes = meta[spec.name].cast(pl.String).rank("dense").fill_null(0).to_numpy().astype(np.int64) - 1
        if each_value_in_one_trial(codes, trial_of):
            names.append(spec.name)
    return names


MIN_BIN_S, MAX_BIN_S = 1e-6, 86_400.0
"""Bin widths accepted: a microsecond (no spike-count or activation time base is finer) to a day."""
BIN_STEP_FACTOR = 100
"""--bin-size may differ from the time column's median step by at most this factor either way."""


def prepare_dataset(counts: CountMatrix, meta: pl.DataFrame, options: ImportOptions, *, meta_label: str,
                    source: str) -> tuple[NewDataset, list[str]]:
    """Validate counts and metadata together, preprocess, and build the frames to store (nothing is written)."""
    if options.kind not in DATASET_KINDS:
        raise InputError(f"--kind {options.kind}: unknown (use {' or '.join(DATASET_KINDS)})")
    if options.bin_size_s is not None and not (options.bin_size_s > 0 and np.isfinite(options.bin_size_s)):
        raise InputError(f"--bin-size {options.bin_size_s}: must be a positive number of seconds")
    if options.bin_size_s is not None and not MIN_BIN_S <= options.bin_size_s <= MAX_BIN_S:
        raise InputError(f"--bin-size {options.bin_size_s:g}: bins from {MIN_BIN_S:g} s to {MAX_BIN_S:g} s (a day)"
                         " are accepted")
    check_fractions(options.split_fractions)
    check_preprocess(options.preprocess)
    check_count_values(counts, allow_negative=options.kind == "activations")
    n_examples, n_units = counts.values.shape
    if meta.height != n_examples:
        raise InputError(f"{meta_label} has {meta.height} rows but {counts.label} has {n_examples} examples; "
                         "they must match row for row")
    trial_col = _pick_column(meta, options.trial_col, _TRIAL_NAMES, meta_label, "--trial-col")
    time_col = _pick_column(meta, options.time_col, _TIME_NAMES, meta_label, "--time-col")
    if trial_col is not None and trial_col == time_col:
        raise InputError(f"{meta_label}: '{trial_col}' cannot be both the trial and the time column")
    times, bin_size, notes = _times(meta, time_col, options.bin_size_s, meta_label)
    if trial_col is not None:
        trial_of, trial_labels = _trial_codes(meta, trial_col, meta_label)
        trial_source = f"column:{trial_col}"
    else:
        trial_of = contiguous_blocks(n_examples, options.n_blocks)
        trial_labels = [f"block {b}" for b in range(int(trial_of.max()) + 1)]
        trial_source = "blocks"
        notes.append(f"no trial column: splitting by {len(trial_labels)} contiguous blocks")
    trial_sizes = np.bincount(trial_of)
    try:
        split_of_trial = assign_splits(trial_sizes, options.split_fractions, options.split_seed)
    except InputError as error:
        raise InputError(f"{meta_label}: {error}") from None
    described = describe_variables(meta, {c for c in (trial_col, time_col) if c}, options.var_kinds, meta_label)
    specs, notes = described.specs, notes + described.notes
    untestable = _untestable(meta, specs, trial_of)
    notes += [f"'{name}': each of its values occurs in one trial only, so a label on it cannot be tested on "
              "held-out trials (kept as a variable)" for name in untestable]

    kind, values = options.kind, counts.values
    if options.preprocess != PreprocessOptions():
        check_fits(f"{counts.label}: smoothing or z-scoring {n_examples:,} × {n_units:,} values in float64",
                   n_examples * n_units * 8 * 2, "import without --smooth/--normalize, or split the recording")
        smooth_of, gaps = _smoothing_segments(trial_of, times, bin_size)
        values = preprocess(values, trial_of, bin_size, options.preprocess, smooth_of)
        if gaps and options.preprocess.smooth_s:
            notes.append(f"smoothing does not bridge the {gaps} gap(s) in '{time_col}' inside trials")
        if options.preprocess.normalize == "zscore" and kind != "activations":
            kind = "activations"
            notes.append("z-scored counts are signed: the dataset's kind is 'activations'")
    smoothed = f" after --smooth {options.preprocess.smooth_s:g}" if options.preprocess.smooth_s else ""
    value_type, value_notes = _value_type(values, kind, counts.label + smoothed, counts.unit_names)
    notes += value_notes

    split_names = np.array(SPLITS)
    in_train = split_of_trial[trial_of] == SPLITS.index("train")
    flags = variance_flags(values[in_train], counts.unit_names)  # what training will see
    first_example = np.r_[0, np.cumsum(trial_sizes)[:-1]].astype(np.int32)
    mean_count = values.mean(axis=0, dtype=np.float64)
    # The rate of the values as read: after smoothing or z-scoring, mean value / bin width is not one.
    mean_read = counts.values.mean(axis=0, dtype=np.float64)
    nonzero = int(np.count_nonzero(values))
    check_fits(f"{counts.label}: {nonzero:,} nonzero values of {n_examples:,} × {n_units:,}, stored as rows",
               nonzero * ROW_BYTES, "split the recording")
    rows, cols = np.nonzero(values)
    new = NewDataset(
        name=options.name or Path(counts.label).stem,
        source=source,
        kind=kind,
        value_type=value_type,
        bin_size_s=bin_size,
        trial_source=trial_source,
        split_seed=options.split_seed,
        options={"split_fractions": list(options.split_fractions), "n_blocks": options.n_blocks,
                 "trial_col": trial_col, "time_col": time_col, "var_kinds": options.var_kinds,
                 "preprocess": {**asdict(options.preprocess), "within": "trials" if trial_col else "blocks"},
                 "constant_columns": described.constant, "untestable_variables": untestable},
        units=pl.DataFrame({
            "unit_id": np.arange(n_units, dtype=np.int32), "name": counts.unit_names, "mean_count": mean_count,
            "firing_rate_hz": mean_read / bin_size if bin_size else np.full(n_units, None),
        }, schema_overrides={"firing_rate_hz": pl.Float64}),
        trials=pl.DataFrame({
            "trial_id": np.arange(len(trial_sizes), dtype=np.int32), "label": trial_labels,
            "split": split_names[split_of_trial], "first_example": first_example,
            "n_examples": trial_sizes.astype(np.int32),
        }),
        examples=pl.DataFrame({
            "example_id": np.arange(n_examples, dtype=np.int32), "trial_id": trial_of,
            "time_s": times if times is not None else np.full(n_examples, None),
            "split": split_names[split_of_trial[trial_of]],
        }, schema_overrides={"time_s": pl.Float64}),
        counts=pl.DataFrame({"example_id": rows.astype(np.int32), "unit_id": cols.astype(np.int32),
                             "value": values[rows, cols].astype(np.float32)}),
        variables=variables_frame(specs),
        values=long_values(meta, specs),
        flags=flags_frame(flags),
    )
    return new, notes


def prepare_files(counts_path: str | Path, meta_path: str | Path, options: ImportOptions
                  ) -> tuple[NewDataset, list[str]]:
    """Read and validate a recording from its files; nothing is written."""
    name = options.name if options.name is not None else Path(counts_path).stem
    check_name("--name", name, "a dataset", MAX_DATASET_NAME)
    counts = read_counts(counts_path)
    meta = read_metadata(meta_path)
    return prepare_dataset(counts, meta, replace(options, name=name), meta_label=str(meta_path),
                           source=f"{counts_path} + {meta_path}")


def store_dataset(db: Store, new: NewDataset, notes: list[str]) -> ImportResult:
    """Write a prepared dataset in one transaction and describe what was stored."""
    dataset_id = add_dataset(db, new)
    split_sizes = dict(new.examples["split"].value_counts().iter_rows())
    flags = [] if new.flags is None else [flag_line(r, with_sae=False) for r in new.flags.iter_rows(named=True)]
    return ImportResult(dataset_id, new.name, new.examples.height, new.units.height, new.trials.height,
                        {s: int(split_sizes.get(s, 0)) for s in SPLITS}, notes, flags)


def add_flags(new: NewDataset, flags: list[QualityFlag]) -> None:
    """Append flags found outside prepare_dataset (e.g. by a behaviour reader) to a prepared dataset."""
    if flags:
        new.flags = pl.concat([frame for frame in (new.flags, flags_frame(flags)) if frame is not None])


def import_files(db: Store, counts_path: str | Path, meta_path: str | Path, options: ImportOptions,
                 ground_truth: GroundTruth | None = None) -> ImportResult:
    """Read, validate and store a recording; returns what was stored and notes for the person."""
    new, notes = prepare_files(counts_path, meta_path, options)
    new.ground_truth = ground_truth
    return store_dataset(db, new, notes)
