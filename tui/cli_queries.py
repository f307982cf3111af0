"""`mini info`, `sql` and `export`: the commands that read the database and print or write what they read.

Shared helpers (one-line errors, the store, the database path) live in tui.cli_common.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tui.cli_common import db_path, open_store


def cmd_info(args: argparse.Namespace) -> int:
    import polars as pl

    from store.freezes import all_freezes
    from store.quality import all_flags, flag_line
    from store.summaries import context_summaries, dataset_summaries, epoch_summaries, run_summaries
    from tui.table_text import render_table

    with open_store(args, read_only=True) as db:
        datasets, runs, flags = dataset_summaries(db), run_summaries(db), all_flags(db)
        epochs, freezes, contexts = epoch_summaries(db), all_freezes(db), context_summaries(db)
    print(f"database: {db_path(args)}")
    if not datasets:
        print("no datasets yet: `mini import COUNTS --meta META` or `mini demo`")
        return 0
    print(render_table(pl.DataFrame(datasets, infer_schema_length=None).select(
        "dataset_id", "name", "kind", "value_type", "n_examples", "n_units", "n_trials", "n_train", "n_val", "n_test",
        "bin_size_s")))
    for row in datasets:
        print(f"{row['name']}: {row['variables']}")
        for flag in flags:
            if flag["run_id"] is None and flag["dataset_id"] == row["dataset_id"]:
                print(f"{row['name']}: flag: {flag_line(flag)}")
    print()
    if not runs:
        print("no runs yet: `mini train --dataset NAME`")
    else:
        # We could open the file, so no process holds it: a run still marked 'running' was left by a
        # process that died (the next read-write open records that).
        runs = [{**run, "status": "interrupted" if run["status"] == "running" else run["status"]}
                for run in runs]
        print(render_table(pl.DataFrame(runs, infer_schema_length=None).drop("started_at")))
        for line in _context_lines(contexts):
            print(line)
        for line in _epoch_lines(epochs):
            print(line)
        for line in _freeze_lines(freezes):
            print(line)
        # The flags under the table, one line each, by run (sorted is stable: SAE order within a run).
        run_flags = sorted((flag for flag in flags if flag["run_id"] is not None), key=lambda f: f["run_id"])
        if run_flags:
            print()
        for flag in run_flags:
            print(f"run {flag['run_id']}: flag: {flag_line(flag)}")
    return 0


def _context_lines(contexts: list[dict]) -> list[str]:
    """'run 2: transcoder: inputs 12 units (0-11), targets 12 units (12-23)' and 'run 2: history: 4 bins' for
    runs trained with --inputs/--targets or --history L > 1 (the validation report's wording)."""
    from engine.sae.unit_selection import roles_text

    lines = []
    for row in contexts:
        if row["inputs"] is not None:
            lines.append(f"run {row['run_id']}: transcoder: "
                         f"{roles_text(row['n_inputs'], row['inputs'], row['n_targets'], row['targets'])}")
        if row["history"] > 1:
            lines.append(f"run {row['run_id']}: history: {row['history']} bins")
    return lines


def _epoch_lines(epochs: list[dict]) -> list[str]:
    """'run 2: trained on speed > 5 (train 1,234 · val 300 bins); ranked on …' for runs with an epoch."""
    from engine.epochs import STEP_VERBS, read_splits

    by_run: dict[int, list[str]] = {}
    for row in epochs:
        step = row["step"]
        sizes = " · ".join(f"{s} {row['n_' + s]:,}" for s in read_splits(step))
        by_run.setdefault(row["run_id"], []).append(f"{STEP_VERBS[step]} {row['epoch']} ({sizes} bins)")
    return [f"run {run_id}: " + "; ".join(parts) for run_id, parts in by_run.items()]


def _freeze_lines(freezes: list[dict]) -> list[str]:
    """'run 2: blind since …' or 'run 2: labels frozen at …' for runs blinded or frozen (engine.validation.freezes)."""
    from engine.validation.freezes import state_text
    from store.freezes import FreezeState

    lines = []
    for row in freezes:
        text = state_text(FreezeState(row["blind_since"], row["frozen_at"], row["n_attempts_seen"]))
        if text:
            lines.append(f"run {row['run_id']}: {text}")
    return lines


def cmd_sql(args: argparse.Namespace) -> int:
    from store.sql import WritesOffError, run_user_query
    from tui.table_text import RENDERERS

    query = sys.stdin.read() if args.query == "-" else args.query
    with open_store(args, read_only=not args.write, create=args.write) as db:
        try:
            frame = run_user_query(db, query, writes=args.write)
        except WritesOffError as error:
            raise WritesOffError(error.statement_type, f"{error}; add --write to run it") from None
    if frame is not None and frame.width:
        print(RENDERERS[args.format](frame))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import difflib

    from engine.errors import InputError, printable
    from engine.exports import export_target

    if (args.table is None) == (args.query is None):
        raise InputError("give a TABLE (or view) to export, or --query SQL, not both" if args.table is not None
                         else "give a TABLE (or view) to export, or --query SQL; `mini sql \"SHOW TABLES\"` "
                              "lists them")
    query = sys.stdin.read() if args.query == "-" else args.query
    target = export_target(args.out, args.format, args.table or "query", db_path(args), force=args.force)
    from store.errors import StoreError
    from store.exports import export_query, export_table, tables_and_views
    from store.sql import WritesOffError

    # Read-only: the database file is never changed; the statement that writes the file is mini's own.
    with open_store(args, read_only=True) as db:
        if args.table is not None:
            names = tables_and_views(db)
            exact = {name.lower(): name for name in names}  # SQL names do not depend on case
            table = exact.get(args.table.lower())
            if table is None:
                close = difflib.get_close_matches(args.table.lower(), list(exact), n=3, cutoff=0.5)
                hint = (f"; did you mean {', '.join(exact[c] for c in close)}?" if close
                        else f"; it has {', '.join(names)}")
                raise InputError(f"{printable(args.table)}: no table or view of that name in {db.path}{hint}")
        made = _make_export_folder(target.path.parent) if target.make_folder else []
        try:
            if args.table is not None:
                done = export_table(db, table, target.path, target.fmt)
            else:
                done = export_query(db, query, target.path, target.fmt)
        except BaseException as error:
            for folder in made:  # a refused query leaves no empty default folder behind
                folder.rmdir()
            if isinstance(error, WritesOffError):
                raise WritesOffError(error.statement_type, f"--query: {error}; export runs only queries that "
                                                           "read") from None
            if isinstance(error, StoreError) and args.query is not None:
                raise StoreError(f"--query: {error}") from None
            raise
    print(f"wrote {done.rows:,} row{'s' if done.rows != 1 else ''} to {done.path}{target.note}")
    return 0


def _make_export_folder(folder: Path) -> list[Path]:
    """Create the default export folder; return the folders made, innermost first."""
    from engine.errors import InputError

    made = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{folder}: cannot make the export folder ({error.strerror or error}); "
                         "give --out FILE") from None
    return made


def add_query_commands(add: Callable[..., argparse.ArgumentParser]) -> None:
    add("info", cmd_info, "list the datasets and runs in the database")

    sql = add("sql", cmd_sql, "run SQL on the database (read-only unless --write)")
    sql.add_argument("query", help="SQL text, or - to read it from standard input")
    sql.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")
    sql.add_argument("--write", action="store_true", help="allow statements that change the database")

    export = add("export", cmd_export, "write a table, a view or a query's rows to a Parquet or CSV file")
    export.add_argument("table", nargs="?", metavar="TABLE", help="table or view to export (`mini sql \"SHOW "
                                                                  "TABLES\"` lists them)")
    export.add_argument("--query", metavar="SQL", help="export this query's rows instead: one SELECT, read-only "
                                                      "as in `mini sql`; - reads it from standard input")
    export.add_argument("--format", choices=["parquet", "csv"],
                        help="file format (default: from --out's suffix, else parquet)")
    export.add_argument("--out", metavar="FILE", help="file to write (default: TABLE.FORMAT, or query.FORMAT, beside "
                                                     "the database, or in ~/mini-reports/<database name>/ when the "
                                                     "database lies in a git work tree)")
    export.add_argument("--force", action="store_true", help="replace the file if it exists")
