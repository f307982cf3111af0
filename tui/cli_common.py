"""What every `mini` command shares: messages on stderr, the database path and the open store, and the
parsing and summary of an import. tui.cli and the command groups beside it (tui.cli_imports,
tui.cli_queries) import it, so none of them imports another's private helpers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def db_path(args: argparse.Namespace) -> Path:
    from store import default_db_path

    if args.db is not None and not args.db.strip():
        from engine.errors import InputError

        raise InputError("--db '': an empty path; give the database file, e.g. --db mini.duckdb")
    return Path(args.db) if args.db else default_db_path()


def open_store(args: argparse.Namespace, *, read_only: bool = False, create: bool = True):
    from store import Store

    return Store.open(db_path(args), read_only=read_only, create=create)


def add_unit_options(parser: argparse.ArgumentParser) -> None:
    """--inputs, --targets and --history, as `mini train` and `mini sweep` both take them (checked in the engine,
    engine.pipeline.check_unit_options)."""
    parser.add_argument("--inputs", metavar="UNITS",
                        help="train a transcoder: its code is computed from these units (indices and ranges 0-59,20; "
                             "names u3,u7 or name:3 for a name that looks like an index; key=value terms stored at "
                             "import, all of which must match: area=CA1,shank=2|3); needs --targets")
    parser.add_argument("--targets", metavar="UNITS", help="the units a transcoder reconstructs (as --inputs)")
    parser.add_argument("--history", type=int, default=1, metavar="L",
                        help="temporal context: the input of a bin is the last L bins of its trial (the bin "
                             "included; 1 to 64, default 1: none); the first L-1 bins of each trial are not "
                             "trained on")


def parse_var_kinds(pairs: list[str]) -> dict[str, str]:
    from engine.errors import InputError

    kinds = {}
    for pair in pairs:
        name, sep, kind = pair.partition("=")
        if not sep or not name or not kind:
            raise InputError(f"--var-kind {pair}: expected NAME=KIND, e.g. heading=circular")
        kinds[name] = kind
    return kinds


def parse_fractions(text: str) -> tuple[float, float, float]:
    from engine.errors import InputError

    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise InputError(f"--split {text}: expected three numbers TRAIN,VAL,TEST such as 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


def print_imported(result) -> None:
    for note in result.notes:
        say(f"note: {note}")
    for flag in result.flags:
        say(f"flag: {flag}")
    sizes = ", ".join(f"{k} {v:,}" for k, v in result.split_sizes.items())
    print(f"imported '{result.name}' (dataset {result.dataset_id}): {result.n_examples:,} examples × "
          f"{result.n_units} units, {result.n_trials} trials; {sizes}")
