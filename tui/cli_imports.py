"""`mini import` (a count matrix and its metadata) and `import-spikes`, `import-nwb`, `import-activations`
(recordings that are not yet a count matrix).

Like every command, each reads, bins and checks everything before it opens the database, so a refused
import leaves no file behind. Shared helpers (one-line errors, the store, the import summary) live in
tui.cli_common.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tui.cli_common import open_store, parse_fractions, parse_var_kinds, print_imported


def cmd_import(args: argparse.Namespace) -> int:
    from engine.ingest.importer import ImportOptions, prepare_files, store_dataset
    from engine.ingest.preprocess import PreprocessOptions, check_preprocess

    preprocess = PreprocessOptions(smooth_s=args.smooth, normalize=args.normalize)
    check_preprocess(preprocess)  # option errors first, before any file is read
    options = ImportOptions(
        name=args.name, kind=args.kind, trial_col=args.trial_col, time_col=args.time_col,
        bin_size_s=args.bin_size, var_kinds=parse_var_kinds(args.var_kind),
        split_fractions=parse_fractions(args.split), split_seed=args.seed, n_blocks=args.blocks,
        preprocess=preprocess,
    )
    # Read and validate before opening the database, so a refused import leaves no file behind.
    new, notes = prepare_files(args.counts, args.meta, options)
    _add_unit_meta(new, args.unit_meta, notes)
    with open_store(args) as db:
        print_imported(store_dataset(db, new, notes))
    return 0


def _parse_range(text: str | None) -> tuple[float, float] | None:
    from engine.errors import InputError

    if text is None:
        return None
    try:
        start, stop = (float(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"--time-range {text}: expected START,STOP in seconds, e.g. 4400,5380") from None
    return start, stop


def _import_options(args: argparse.Namespace, default_name: str):
    from engine.ingest.importer import ImportOptions

    name = args.name if args.name is not None else default_name
    return ImportOptions(name=name, var_kinds=parse_var_kinds(args.var_kind), split_fractions=parse_fractions(
        args.split), split_seed=args.seed, n_blocks=args.blocks)


def _binning(args: argparse.Namespace, trials: str):
    from engine.ingest.preprocess import PreprocessOptions
    from engine.ingest.spike_import import BinningOptions
    from engine.ingest.spikes import UnitFilter

    return BinningOptions(
        bin_size_s=args.bin_size, time_range=_parse_range(args.time_range),
        units=UnitFilter(min_rate_hz=args.min_rate, max_isi_violations=args.max_isi_violations,
                         refractory_s=args.refractory_ms / 1000),
        trials=trials, outside_trials=args.outside_trials, max_gap_s=args.max_gap,
        preprocess=PreprocessOptions(smooth_s=args.smooth, normalize=args.normalize),
    )


def _trials_mode(value: str | None) -> tuple[str, str | None]:
    """--trials none|laps|runs|FILE → (BinningOptions.trials, the trials file to read)."""
    if value in (None, "none", "laps", "runs"):
        return value or "none", None
    return "table", value


def cmd_import_spikes(args: argparse.Namespace) -> int:
    from engine.ingest.importer import store_dataset
    from engine.ingest.spike_import import SpikeSourceOptions, prepare_spike_dataset, read_recording
    from engine.ingest.tracking import TrackingOptions

    trials, trials_file = _trials_mode(args.trials)
    source = SpikeSourceOptions(format=args.format, groups=tuple(g.strip() for g in args.groups.split(",")),
                                mat_field=args.mat_field, mat_var=args.mat_var, unit_col=args.unit_col,
                                time_col=args.spike_time_col, time_scale=args.time_scale)
    binning = _binning(args, trials)  # option errors first, before any file is read
    options = _import_options(args, Path(args.source.rstrip("/")).stem)
    # Read, bin and validate before opening the database, so a refused import leaves no file behind.
    recording = read_recording(args.source, source, behaviour=args.behaviour, events=args.events,
                               trials=trials_file, tracking=TrackingOptions(frozen_s=args.frozen_s))
    new, notes = prepare_spike_dataset(recording, binning, options)
    _add_unit_meta(new, args.unit_meta, notes)
    with open_store(args) as db:
        print_imported(store_dataset(db, new, notes))
    return 0


def cmd_import_nwb(args: argparse.Namespace) -> int:
    from engine.ingest.importer import store_dataset
    from engine.ingest.nwb import read_nwb
    from engine.ingest.spike_import import prepare_spike_dataset, read_behaviour_files
    from engine.ingest.tracking import TrackingOptions
    from engine.ingest.trials import read_trials_table

    if args.trials_table is not None and args.trials is not None:
        from engine.errors import InputError

        raise InputError(f"--trials-table {args.trials_table} and --trials {args.trials} both say where the trials "
                         "are; give one")
    trials, trials_file = _trials_mode(args.trials)
    binning = _binning(args, trials)
    options = _import_options(args, Path(args.file).stem)
    recording = read_nwb(args.file, behaviour=not args.no_behaviour, trials_table=args.trials_table,
                         events_tables=args.events_table)
    recording.behaviour += read_behaviour_files(args.behaviour, TrackingOptions(frozen_s=args.frozen_s))
    if trials_file is not None:
        recording.trials = read_trials_table(trials_file)
    elif args.trials is None and recording.trials is not None:
        binning = _binning(args, "table")  # the file's own trials (or --trials-table), unless told otherwise
    new, notes = prepare_spike_dataset(recording, binning, options)
    _add_unit_meta(new, args.unit_meta, notes)
    with open_store(args) as db:
        print_imported(store_dataset(db, new, notes))
    return 0


def cmd_import_activations(args: argparse.Namespace) -> int:
    from engine.ingest.capture import capture_activations, load_model, prepare_activation_dataset, read_inputs
    from engine.ingest.importer import store_dataset
    from engine.options import check_integer

    check_integer("--batch-size", args.batch_size, 1)  # before the model and the table are read
    options = _import_options(args, Path(args.data).stem)
    inputs, table = read_inputs(args.data, [c.strip() for c in args.inputs.split(",")])
    model = load_model(args.model)
    values = capture_activations(model, args.layer, inputs, batch_size=args.batch_size)
    new, notes = prepare_activation_dataset(values, table, options, layer=args.layer,
                                            source=f"{args.model} + {args.data}")
    _add_unit_meta(new, args.unit_meta, notes)
    with open_store(args) as db:
        print_imported(store_dataset(db, new, notes))
    return 0



def _add_unit_meta(new, path: str | None, notes: list[str]) -> None:
    """The units' attributes from --unit-meta, read and checked before the database is opened; where the
    recording gave attributes too (an NWB file's Units table), the file's replace them key by key (noted)."""
    if path is not None:
        from engine.ingest.unit_meta import merge_unit_attributes, read_unit_meta

        given = read_unit_meta(path, new.units["name"].to_list())
        new.unit_attributes, merged = merge_unit_attributes(new.unit_attributes, given, path)
        notes += merged


def _add_dataset_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--unit-meta", metavar="FILE",
                     help="a .csv/.parquet table of unit attributes: a column 'unit' (0-based index or name) and any "
                          "columns such as area or shank, one row per unit; `mini train --inputs area=CA1` selects "
                          "by them")
    sub.add_argument("--name", help="dataset name (default: the file's name)")
    sub.add_argument("--var-kind", action="append", default=[], metavar="NAME=KIND",
                     help="override a variable's kind: continuous, categorical, circular or binary (repeatable)")
    sub.add_argument("--split", default="0.7,0.15,0.15", metavar="TRAIN,VAL,TEST",
                     help="shares of examples per split, by whole trials (default 0.7,0.15,0.15)")
    sub.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    sub.add_argument("--blocks", type=int, default=40,
                     help="contiguous blocks used as trials when there are no trials (default 40)")


def _add_binning_options(sub: argparse.ArgumentParser, trials_default: str) -> None:
    sub.add_argument("--trials", metavar="FILE|laps|runs|none",
                     help="trials: a .csv/.parquet table (start, stop, trial-level columns), laps or runs found in "
                          f"the behaviour's position on a linear track, or none (default: {trials_default})")
    sub.add_argument("--behaviour", action="append", default=[], metavar="FILE",
                     help="behaviour with its own timestamps: a .csv/.parquet time series (a time_s or time column "
                          "plus one column per variable) or a .videoPositionTracking file (position, speed); "
                          "repeatable")
    sub.add_argument("--bin-size", type=float, default=0.05, help="bin width in seconds (default 0.05)")
    sub.add_argument("--time-range", metavar="START,STOP",
                     help="seconds to import (default: the span the file states, else first to last spike)")
    sub.add_argument("--outside-trials", default="drop", choices=["drop", "keep"],
                     help="bins outside every trial: drop them (default) or keep each stretch as its own segment")
    sub.add_argument("--max-gap", type=float, metavar="S",
                     help="behaviour samples further apart than this leave the bins between them missing "
                          "(default 2.5 sample intervals)")
    sub.add_argument("--frozen-s", type=float, default=10.0, metavar="S",
                     help="position tracking: a position unchanged for this long is tracking lost (default 10; "
                          "0 keeps all)")
    sub.add_argument("--min-rate", type=float, default=0.0, metavar="HZ",
                     help="drop units firing below this rate in the time range (default 0)")
    sub.add_argument("--max-isi-violations", type=float, metavar="FRACTION",
                     help="drop units with a larger fraction of inter-spike intervals below the refractory period")
    sub.add_argument("--refractory-ms", type=float, default=1.5, help="refractory period (default 1.5 ms)")
    _add_preprocess_options(sub, "default 0: none")
    _add_dataset_options(sub)


def _add_preprocess_options(sub: argparse.ArgumentParser, smooth_default: str) -> None:
    sub.add_argument("--smooth", type=float, default=0.0, metavar="S",
                     help=f"Gaussian smoothing σ in seconds, within trials ({smooth_default})")
    sub.add_argument("--normalize", default="none", choices=["none", "zscore"],
                     help="zscore: per unit and trial (the dataset becomes signed activations); default none")


def add_import_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    imp = add("import", cmd_import, "import binned counts and their metadata as a dataset")
    imp.add_argument("counts", help="counts [examples × units]: .npy, .npz, .parquet or .csv")
    imp.add_argument("--meta", required=True, help="metadata, one row per example: .parquet or .csv")
    imp.add_argument("--trial-col", help="trial id column (default: 'trial' or 'trial_id' if present, "
                                         "else contiguous blocks)")
    imp.add_argument("--time-col", help="bin time column in seconds (default: 'time_s' or 'time' if present)")
    imp.add_argument("--bin-size", type=float, help="bin width in seconds (default: from the time column)")
    imp.add_argument("--kind", default="spike_counts", choices=["spike_counts", "activations"],
                     help="spike_counts (non-negative, default) or activations (any finite value)")
    _add_preprocess_options(imp, "needs the bin size; the values become rates; default 0: none")
    _add_dataset_options(imp)

    spikes = add("import-spikes", cmd_import_spikes,
                 "bin spike times (Kilosort/Phy folder, MATLAB file, unit-time table) with behaviour into a dataset")
    spikes.add_argument("source", help="a Kilosort/Phy folder, a .mat file of per-unit spike times, or a .csv/.parquet "
                                       "table with one row per spike (unit, time)")
    spikes.add_argument("--format", default="auto", choices=["auto", "kilosort", "mat", "table"],
                        help="how to read SOURCE (default: from the path)")
    spikes.add_argument("--events", action="append", default=[], metavar="FILE",
                        help="a .csv/.parquet table of events (time, optional event name), counted per bin; "
                             "repeatable")
    spikes.add_argument("--groups", default="good", help="Kilosort/Phy: cluster labels to keep, comma-separated, or "
                                                         "all (default good)")
    spikes.add_argument("--mat-field", default="time", help="MATLAB: struct field of spike times (default time)")
    spikes.add_argument("--mat-var", help="MATLAB: the variable to read when the file holds several")
    spikes.add_argument("--unit-col", help="table: the unit column (default: unit, unit_id, cluster, …)")
    spikes.add_argument("--spike-time-col", help="table: the spike time column (default: time, time_s, …)")
    spikes.add_argument("--time-scale", type=float, default=1.0,
                        help="MATLAB/table: seconds per stored time unit (0.001 for ms; default 1)")
    _add_binning_options(spikes, "contiguous blocks")

    nwb = add("import-nwb", cmd_import_nwb,
              "bin an NWB file's Units table with its trials and behavioural time series (needs pynwb)")
    nwb.add_argument("file", help="an .nwb file")
    nwb.add_argument("--trials-table", metavar="NAME",
                     help="take the trials from this intervals table (e.g. encoding_table): start_time, stop_time; "
                          "its other columns become trial-level variables (the import's notes list the tables)")
    nwb.add_argument("--events-table", action="append", default=[], metavar="NAME",
                     help="count the rows of this intervals table per bin, as events at their start_time "
                          "(repeatable)")
    nwb.add_argument("--no-behaviour", action="store_true",
                     help="leave out the time series in processing/behavior")
    _add_binning_options(nwb, "the file's trials table if it has one, else contiguous blocks")

    acts = add("import-activations", cmd_import_activations,
               "capture a layer's activations of a saved PyTorch model on a table of inputs and import them")
    acts.add_argument("model", help="a model saved with torch.save(model, PATH), built from torch.nn layers")
    acts.add_argument("data", help="a .csv/.parquet table: the model's input columns and any others (targets, "
                                   "conditions); every column becomes a natural feature")
    acts.add_argument("--inputs", required=True, metavar="COL,COL,…",
                      help="the input columns, in the order the model takes them")
    acts.add_argument("--layer", required=True, help="the module whose output to capture (a name from "
                                                     "model.named_modules(), e.g. 4 or encoder.relu)")
    acts.add_argument("--batch-size", type=int, default=1024, help="inputs per forward pass (default 1024)")
    _add_dataset_options(acts)
