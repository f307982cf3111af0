"""The `mini` command line. Heavy modules are imported inside each command so `mini --help` is instant.

Errors a person can fix (bad input, a locked database) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from tui.cli_common import add_unit_options, db_path, open_store, say

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
"""build_parser's `add(name, handler, help)`: a subcommand with the common options, run by `handler`."""


# -- commands -------------------------------------------------------------------------------------------
def cmd_tui(args: argparse.Namespace) -> int:
    from engine.errors import InputError
    from tui.app import run_app

    path = db_path(args)
    if not path.exists():  # an empty file would open on nothing; say how to get data in instead
        raise InputError(f"{path}: no database here; make one with `mini demo` (a sample recording, 2-3 min) or "
                         "`mini import COUNTS --meta META`, or open another with --db PATH")
    run_app(open_store(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.analysis.rank import rank_config
    from engine.demo import check_demo_options, run_demo
    from engine.validation.validate import validate_config
    from sample_data import SampleConfig
    from tui.progress import training_progress

    check_demo_options(args.seed, args.epochs, args.auto_accept, args.data)  # before the database is made
    ranking = rank_config(args.max_shuffles)
    validation = validate_config(args.max_draws)
    db = open_store(args)
    data_folder = Path(args.data) if args.data else db.path.resolve().parent / "demo_data"
    try:
        with training_progress() as (on_progress, cancel):
            run_demo(db, data_folder, SampleConfig(seed=args.seed), report=lambda m: say(f"demo: {m}"),
                     on_train_progress=on_progress, cancel=cancel, epochs=args.epochs,
                     auto_accept=args.auto_accept, rank_settings=ranking, validate_settings=validation)
    except BaseException:
        db.close()
        raise
    if args.no_tui:
        db.close()
        say(f"demo: done; open it with `mini --db {db.path}`")
        return 0
    from tui.app import run_app

    run_app(db)
    return 0


def _parse_ks(text: str | None) -> tuple[int, ...]:
    from engine.errors import InputError

    if text is None:
        return ()
    try:
        ks = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--k {text}: expected an integer or a comma-separated list such as 4,8,16") from None
    return ks


def _epoch(args: argparse.Namespace):
    """The analysis epoch --where / --around ask for (engine.epochs.Epoch), or None when neither is given."""
    from engine.epochs import epoch_from_options

    if args.where is None and args.around is None:
        return None
    return epoch_from_options(args.where, args.around)


def _say_epoch(command: str, outcome) -> None:
    """The epoch a command (rank, validate) read, on stderr; nothing when it read every bin and none was
    asked for."""
    from engine.epochs import read_splits

    if outcome.epoch_note:
        say(f"{command}: note: {outcome.epoch_note}")
    if outcome.epoch is not None and (outcome.epoch.epoch.is_set or outcome.epoch_note):
        say(f"{command}: {outcome.epoch.summary(read_splits(command))}")


def _or(value: int | None, placeholder: int) -> int:
    """A given setting as given (0 included, to be refused), or a placeholder for one to choose."""
    return placeholder if value is None else value


def cmd_train(args: argparse.Namespace) -> int:
    ks = _parse_ks(args.k)  # before the slow imports, so a typo is answered at once
    epoch = _epoch(args)
    from engine.errors import InputError
    from engine.pipeline import RunSpec
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from tui.progress import run_with_progress

    given = {"d_sae": args.d_sae, "k": ks or None, "batch_size": args.batch_size, "epochs": args.epochs}
    if args.patience is not None and args.patience < 1:
        raise InputError(f"--patience {args.patience}: must be at least 1 epoch")
    spec = RunSpec(
        dataset=args.dataset or "",
        sae=SAEConfig(architecture=args.arch, d_sae=_or(args.d_sae, 1), loss=args.loss, output=args.output),
        train=TrainConfig(epochs=_or(args.epochs, 1), batch_size=_or(args.batch_size, 1), lr=args.lr, seed=args.seed,
                          device=args.device, patience=args.patience),
        ks=ks or (1,), instances=args.instances, seed=args.seed, normalize_units=args.normalize,
        auto=tuple(name for name, value in given.items() if value is None),
        inputs=args.inputs, targets=args.targets, history=args.history,
    )
    if args.resume is None and not args.dataset:
        raise InputError("--dataset NAME is required (or --resume RUN); `mini info` lists the datasets")
    if epoch is not None:
        from dataclasses import replace

        if args.resume is not None:
            raise InputError("--where/--around: a resumed run keeps the epoch it started with")
        spec = replace(spec, epoch=epoch)
    with open_store(args, create=False) as db:
        outcome = run_with_progress(db, spec, resume_run=args.resume, report=lambda m: say(f"train: {m}"))
        from store.quality import flag_line, run_flags

        flags = run_flags(db, outcome.run_id)
    trained = outcome.outcome
    if trained.stopped_early:
        say(f"train: stopped early after epoch {trained.epochs} (the val loss stopped improving); each SAE "
             f"keeps the weights of its best epoch ({', '.join(str(e) for e in trained.best_epoch)})")
    for row in flags:
        say(f"flag: {flag_line(row)}")
    if outcome.status == "cancelled":
        say(f"run {outcome.run_id} cancelled after {outcome.outcome.examples_seen:,} examples; "
             f"resume it with `mini train --resume {outcome.run_id}`")
    print(outcome.run_id)
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from engine.analysis.rank import rank_config, rank_run
    from engine.options import check_integer
    from store.rankings import top_features
    from tui.progress import steps_progress
    from tui.table_text import render_table

    check_integer("--top", args.top, 1)
    config = rank_config(args.max_shuffles)
    epoch = _epoch(args)
    with open_store(args, create=False) as db:
        with steps_progress("ranking SAEs") as on_progress:
            outcome = rank_run(db, args.run, config, on_progress=on_progress, epoch=epoch,
                               report=lambda m: None if sys.stderr.isatty() else say(f"rank: {m}"))
        _say_epoch("rank", outcome)
        say(f"rank: ranked {len(outcome.sae_ids)} SAE(s) of run {args.run} in {outcome.seconds:.0f} s")
        for sae_id in outcome.sae_ids[: 1 if not args.all else None]:
            print(f"SAE {sae_id}: top features")
            print(render_table(top_features(db, sae_id, args.top)))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import polars as pl

    from engine.validation.validate import validate_config
    from engine.validation.validate_run import check_jobs, validate_run
    from engine.validation.validation_summary import figures_frame, outcome_line, verdict_counts
    from store.validations import run_pairings
    from tui.table_text import render_table

    check_jobs(args.jobs)
    config = validate_config(args.max_draws)
    epoch = _epoch(args)
    with open_store(args, create=False) as db:
        outcome = validate_run(db, args.run, config, report=lambda m: say(f"validate: {m}"), n_jobs=args.jobs,
                               epoch=epoch)
        _say_epoch("validate", outcome)
        tested = run_pairings(db, args.run).filter(pl.col("validated_at").is_not_null()).to_dicts()
    # Counted from the stored rows the table shows: each accepted label's latest attempt.
    say(f"validate: {outcome_line(verdict_counts(tested), outcome.n_family)}; {outcome.seconds:.0f} s")
    # The latest attempt of each accepted label, generalising ones first within each SAE.
    print(render_table(figures_frame(tested, {row["label_id"]: row for row in tested})))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from engine.exports import default_export_folder, git_work_tree
    from engine.validation.report import ReportConfig, write_report

    out, why = args.out, ""
    if out is None:  # beside the database, or outside the git work tree that holds it
        database = db_path(args).absolute()
        out = default_export_folder(database) / f"report_run{args.run}.md"
        work_tree = git_work_tree(database.parent)
        if work_tree is not None:
            why = f"; not beside the database, which lies in the git work tree {work_tree} (--out to choose)"
    with open_store(args, read_only=True) as db:
        outcome = write_report(db, args.run, out, ReportConfig(top=args.top, table_format=args.tables),
                               make_folder=args.out is None)
    print(f"wrote {outcome.path} ({outcome.n_labels} labelled features, {outcome.n_validations} validation attempts) "
          f"and {len(outcome.tables)} tables in {outcome.tables[0].parent}/{why}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from engine.errors import printable
    from engine.validation.labels import label_feature
    from store.labels import get_label

    verdict = "reject" if args.reject else "unsure" if args.unsure else None
    with open_store(args, create=False) as db:
        label_id = label_feature(db, args.run, args.feature, sae_id=args.sae, accept=args.accept, name=args.name,
                                 predicate=args.predicate, verdict=verdict, note=args.note)
        stored = get_label(db, label_id)
    # The text is stored as given; echoed, its control characters (terminal escape codes) are escaped.
    shown = printable(stored["predicate"] or stored["name"] or "", limit=200)
    print(f"label {label_id}: feature {args.feature} of SAE {stored['sae_id']}: {stored['verdict']}"
          + (f" — {shown}" if shown else ""))
    return 0


def cmd_blind(args: argparse.Namespace) -> int:
    from engine.validation.freezes import blind_run, when

    with open_store(args, create=False) as db:
        state = blind_run(db, args.run)
    print(f"run {args.run} is blind since {when(state.blind_since)}: validation refuses to read its test split "
          f"until its labels are frozen (`mini freeze --run {args.run}`)")
    return 0


def cmd_freeze(args: argparse.Namespace) -> int:
    from engine.validation.freezes import freeze_labels, state_text

    with open_store(args, create=False) as db:
        state = freeze_labels(db, args.run)
    print(f"run {args.run}: {state_text(state)}; they can no longer change")
    return 0


# -- parser -------------------------------------------------------------------------------------------
class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus an error; mini's errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mini: error: {_with_suggestion(message)} (see `{self.prog} --help`)\n")


def _with_suggestion(message: str) -> str:
    """argparse's "invalid choice: 'trian' (choose from 'tui', …)", with the closest choice suggested."""
    import difflib
    import re

    given = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
    if not given:
        return message
    close = difflib.get_close_matches(given.group(1), re.findall(r"'([^']*)'", given.group(2)), n=1)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _add_epoch_options(sub: argparse.ArgumentParser, use: str, inherits: str | None) -> None:
    default = f"default: {inherits} epoch" if inherits else "default: every bin"
    sub.add_argument("--where", metavar="PREDICATE",
                     help=f"analysis epoch: {use}, e.g. \"phase in ('go', 'move')\" or \"speed > 5\"; one "
                          f"expression over each bin's metadata (its variables, trial, time_s) ({default})")
    sub.add_argument("--around", metavar="EVENT:START,STOP",
                     help="analysis epoch: bins whose centre lies within START..STOP seconds of an onset of EVENT "
                          "(a per-bin event column, or a trial-level event time), e.g. move_onset:-0.25,0.25; "
                          "with --where, both must hold")


def build_parser() -> argparse.ArgumentParser:
    db_help = "database file (default: $MINI_DB or ./mini.duckdb)"
    common = _OneLineParser(add_help=False)
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=db_help)

    parser = _OneLineParser(
        prog="mini", parents=[common],
        description="Find interpretable neural signatures in recordings with sparse autoencoders.",
        epilog="With no command, mini opens the app on the database.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, run: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=run)
        return sub

    add("tui", cmd_tui, "open the app")

    demo = add("demo", cmd_demo, "generate the sample recording, run the pipeline on it, open the app")
    demo.add_argument("--no-tui", action="store_true", help="run the pipeline and exit without opening the app")
    demo.add_argument("--seed", type=int, default=0, help="seed of the sample recording (default 0)")
    demo.add_argument("--epochs", type=int, default=30, help="training epochs of the demo run (default 30)")
    demo.add_argument("--auto-accept", type=int, default=15, metavar="N",
                      help="accept the first suggestion of the top N features automatically and validate them "
                           "(default 15; 0 skips)")
    demo.add_argument("--data", metavar="DIR", help="where to write the sample files (default: demo_data/ "
                                                   "beside the database)")
    demo.add_argument("--max-shuffles", type=int, default=None, metavar="N",
                      help="most shuffles behind one p-value of the ranking (default 25000, as mini rank; fewer "
                           "ranks sooner with coarser p-values)")
    demo.add_argument("--max-draws", type=int, default=None, metavar="N",
                      help="as mini validate's: most random draws of each kind behind the validation's intervals "
                           "and p-values (default 1,000 bootstrap resamples and shifts, 100 random unit subsets and "
                           "ablation nulls)")

    from tui.cli_imports import add_import_commands

    add_import_commands(add)
    _add_pipeline_commands(add)
    _add_label_commands(add)

    from tui.cli_sweep import add_sweep_command

    add_sweep_command(add)

    from tui.cli_queries import add_query_commands

    add_query_commands(add)
    return parser


def _add_pipeline_commands(add: AddCommand) -> None:
    """train, rank, validate, report: a dataset's way to a report."""
    train = add("train", cmd_train, "train sparse autoencoders on a dataset's train split")
    train.add_argument("--dataset", help="dataset name (see `mini info`)")
    train.add_argument("--arch", default="batchtopk", choices=["batchtopk", "topk", "matryoshka", "relu"],
                       help="architecture (default batchtopk)")
    train.add_argument("--d-sae", type=int, help="latents per SAE (default: 2 × units, chosen from the recording)")
    train.add_argument("--k", help="active latents per example; a list such as 4,8,16 sweeps (default: units / 8, "
                                   "1 to 8, chosen from the recording)")
    train.add_argument("--loss", default="mse", choices=["mse", "msle", "poisson"],
                       help="reconstruction loss (default mse)")
    train.add_argument("--output", default="clamped", choices=["clamped", "linear"],
                       help="spike counts, MSE: train with the reconstruction clamped at 0 (default; decoder rows "
                            "match whole ensembles) or linear (lower FVU, mixed rows)")
    train.add_argument("--epochs", type=int, help="passes over the train split (default: early stopping on the val "
                                                  "loss, at most about 8,000 steps)")
    train.add_argument("--patience", type=int, help="stop once the val loss has not improved for this many epochs "
                                                    "(default 10 when --epochs is not given, else off)")
    train.add_argument("--batch-size", type=int, help="examples per step (default: training bins / 16, 32 to 1024)")
    train.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    train.add_argument("--instances", type=int, default=1, help="SAEs per k, with consecutive seeds (default 1)")
    train.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    train.add_argument("--normalize", action="store_true", help="scale each unit by its train std while training")
    train.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"],
                       help="where to train (default auto: cuda, then mps, then cpu)")
    add_unit_options(train)
    train.add_argument("--resume", type=int, metavar="RUN", help="continue a cancelled or interrupted run")
    _add_epoch_options(train, "train on the train bins it selects (val loss on the selected val bins)", None)

    rank = add("rank", cmd_rank, "rank a run's features by interpretability and suggest what each encodes")
    rank.add_argument("--run", type=int, required=True, help="run id (see `mini info`)")
    rank.add_argument("--top", type=int, default=15, help="features to print per SAE (default 15)")
    rank.add_argument("--all", action="store_true", help="print the top features of every SAE, not just the first")
    rank.add_argument("--max-shuffles", type=int, default=None, metavar="N",
                      help="most shuffles behind one p-value (default 25000; p-values cannot go below 1/(N+1))")
    _add_epoch_options(rank, "rank on the train + val bins it selects", "the run's")

    validate = add("validate", cmd_validate, "test every accepted label of a run on the held-out test split")
    validate.add_argument("--run", type=int, required=True, help="run id")
    validate.add_argument("--jobs", type=int, default=-1,
                          help="worker processes (default -1: one per core); results do not depend on it")
    validate.add_argument("--max-draws", type=int, default=None, metavar="N",
                          help="most random draws of each kind behind the intervals and p-values (default: 1,000 "
                               "bootstrap resamples and shifts, 100 random unit subsets and ablation nulls; fewer "
                               "validate sooner, with coarser p-values and intervals)")
    _add_epoch_options(validate, "score on the test bins it selects (tune on its train + val bins)",
                       "the ranking's")

    report = add("report", cmd_report, "write a run's Markdown report with its tables beside it")
    report.add_argument("--run", type=int, required=True, help="run id")
    report.add_argument("--out", help="report file; tables go to <name>_tables/ beside it (default "
                                      "report_runRUN.md beside the database, or in ~/mini-reports/<database name>/ "
                                      "when the database lies in a git work tree)")
    report.add_argument("--tables", default="csv", choices=["csv", "parquet"], help="table format (default csv)")
    report.add_argument("--top", type=int, default=30, help="ranked features listed per SAE (default 30)")



def _add_label_commands(add: AddCommand) -> None:
    """label, blind, freeze: what a person decides about a run's features, and when."""
    label = add("label", cmd_label, "label a feature (one row per action in the append-only labels table)")
    label.add_argument("--run", type=int, required=True, help="run id")
    label.add_argument("--feature", type=int, required=True, help="feature id")
    label.add_argument("--sae", type=int, help="SAE id (default: the run's first SAE)")
    what = label.add_mutually_exclusive_group(required=True)
    what.add_argument("--accept", type=int, metavar="N", help="accept the feature's Nth suggestion (1-9)")
    what.add_argument("--name", help="your own label text")
    what.add_argument("--reject", action="store_true", help="the feature means nothing (to you)")
    what.add_argument("--unsure", action="store_true", help="come back to it")
    label.add_argument("--predicate", help="with --name: what to test it against, e.g. 'speed in [20, 35)'")
    label.add_argument("--note", help="a note kept with the label")

    blind = add("blind", cmd_blind, "hide a run's test results until its labels are frozen: validation refuses "
                                    "to read the test split before `mini freeze`")
    blind.add_argument("--run", type=int, required=True, help="run id (refused once it has validations)")

    freeze = add("freeze", cmd_freeze, "freeze a run's labels (preregistration): they can no longer change, and a "
                                      "blind run's test split can be read")
    freeze.add_argument("--run", type=int, required=True, help="run id")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "db"):
        args.db = None
    handler = getattr(args, "handler", cmd_tui)
    from engine.errors import InputError
    from store.errors import StoreError

    try:
        if handler is cmd_tui:  # the app reads ctrl+c as a key, and stops its own queries
            return handler(args)
        from tui.interrupts import ctrl_c_stops_queries, is_query_interrupt

        with ctrl_c_stops_queries() as ctrl_c:
            try:
                return handler(args)
            except Exception as error:
                # A query stopped by a ctrl+c surfaces as DuckDB's error, or as whatever a caller made of it.
                if ctrl_c.is_set() or is_query_interrupt(error):
                    raise KeyboardInterrupt from error
                raise
    except (InputError, StoreError) as error:
        say(f"mini: error: {error}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("mini: interrupted")
        return 130
    except BrokenPipeError:  # `mini sql ... | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
