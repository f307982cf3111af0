"""The generated bad inputs of tests/test_bad_inputs.py: every command, every input format, every option.

Each case is what a hostile (or tired) person types: a number at or beyond an option's limit (NaN, ±inf,
1e308, 0, −1, 2**32, 2**63, 2**80, text), an empty or duplicate name, a missing, empty, truncated or corrupt
file of each format mini reads (counts, metadata, spike folders, MATLAB, spike tables, behaviour, trials,
events, NWB, PyTorch models, the database itself), a file of the wrong shape or type, values that overflow
what is stored, and SQL that writes without --write. Each must be refused in one line that names the thing,
exit status 2, no traceback, and no file changed.

Arguments may hold `{good}`: the folder of good input files (GoodFiles), written once per test session. A
case's own bad files are written into its working folder by `write`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from importer_cases import make_recording, write_counts, write_meta
from spike_cases import UNIT_NAMES, make_session, write_kilosort, write_mat, write_spike_table

Writer = Callable[[Path], None]

HUGE = str(2**80)
INT64_OVER = str(2**63)
TEXT = "many"


@dataclass(frozen=True)
class BadInput:
    case_id: str
    args: tuple[str, ...]
    """The command line without --db; `{good}` stands for the folder of good files."""
    words: tuple[str, ...]
    """What the one line must hold: the option, file, column, row or statement at fault."""
    write: Writer | None = None
    """Writes the case's own (bad) files into its working folder."""
    db: str | None = None
    """The database the case runs on: None for the session's complete database (a dataset, a ranked and
    validated run); otherwise a file name in the working folder (written by `write`, or absent)."""
    stdin: str | None = None
    fresh: bool = True
    """For an import: also run against a database that does not exist yet (False where the case is bad only
    against the complete database, e.g. a name it already holds)."""

    @property
    def imports(self) -> bool:
        """An import: also run against a database that does not exist yet, where no file may appear."""
        return self.args[0].startswith("import") and self.db is None and self.fresh


# -- good files -----------------------------------------------------------------------------------------
def write_good_files(folder: Path) -> Path:
    """The good inputs every case starts from, in every format: counts and metadata (c.*, m.*), a spike
    session (Kilosort folder ks/, s.mat, s.csv, s.parquet, behaviour b.csv, trials t.csv, events e.csv),
    an NWB file (s.nwb) and a PyTorch model with its input table (model.pt, x.csv)."""
    import torch
    from torch import nn

    from tests.test_import_nwb import write_nwb

    folder.mkdir(parents=True, exist_ok=True)
    rec = make_recording()
    for suffix in (".npy", ".npz", ".parquet", ".csv"):
        write_counts(rec.counts, folder / f"c{suffix}")
    for suffix in (".parquet", ".csv"):
        write_meta(rec.meta, folder / f"m{suffix}")
    session = make_session()
    write_kilosort(folder / "ks", session)
    write_mat(folder / "s.mat", session)
    write_spike_table(folder / "s.csv", session)
    write_spike_table(folder / "s.parquet", session)
    session.behaviour.write_csv(folder / "b.csv")
    session.trials.write_csv(folder / "t.csv")
    pl.DataFrame({"time": session.rewards, "event": ["reward"] * len(session.rewards)}).write_csv(folder / "e.csv")
    write_nwb(folder / "s.nwb", session)
    torch.manual_seed(0)
    torch.save(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), folder / "model.pt")
    x = np.random.default_rng(0).normal(size=(200, 3))
    pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "trial": np.repeat(np.arange(20), 10)}
                 ).write_csv(folder / "x.csv")
    return folder


# -- writers of bad files -------------------------------------------------------------------------------
def _bytes(name: str, data: bytes) -> Writer:
    def write(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return write


def _truncated_copy(name: str, source: str, keep: float = 0.5) -> Writer:
    """The first `keep` share of a good file's bytes (a copy that stopped half-way)."""
    def write(folder: Path) -> None:
        good = _good_folder(folder) / source
        data = good.read_bytes()
        (folder / name).write_bytes(data[: max(1, int(len(data) * keep))])
    return write


def _cut_after_comma(name: str, source: str, keep: float) -> Writer:
    """A CSV copy that stopped just after a separator, `keep` of the way in: its last row lacks a value."""
    def write(folder: Path) -> None:
        data = (_good_folder(folder) / source).read_bytes()
        cut = data.rindex(b",", 0, int(len(data) * keep)) + 1
        (folder / name).write_bytes(data[:cut])
    return write


def _good_folder(folder: Path) -> Path:
    # The working folder of a case holds a `good` link to the session's good files (see the test module).
    return folder / "good"


def _counts(name: str, values: np.ndarray, unit_names: list[str] | None = None) -> Writer:
    def write(folder: Path) -> None:
        if name.endswith((".npy", ".npz")):
            path = folder / name
            np.save(path, values) if name.endswith(".npy") else np.savez(path, counts=values)
        else:
            names = unit_names or [f"u{i}" for i in range(values.shape[1])]
            frame = pl.DataFrame({n: values[:, i] for i, n in enumerate(names)}) if values.ndim == 2 else \
                pl.DataFrame({"u0": values})
            frame.write_parquet(folder / name) if name.endswith(".parquet") else frame.write_csv(folder / name)
    return write


def _text(name: str, text: str) -> Writer:
    return _bytes(name, text.encode())


def _frame(name: str, frame: pl.DataFrame) -> Writer:
    def write(folder: Path) -> None:
        frame.write_parquet(folder / name) if name.endswith(".parquet") else frame.write_csv(folder / name)
    return write


def _both(*writers: Writer) -> Writer:
    def write(folder: Path) -> None:
        for one in writers:
            one(folder)
    return write


RANDOM_BYTES = np.random.default_rng(16).integers(0, 256, 4096, dtype=np.uint8).tobytes()


# -- the cases ------------------------------------------------------------------------------------------
def all_cases() -> list[BadInput]:
    cases = [*_global_cases(), *_database_cases(), *_id_cases(), *_label_cases(), *_train_cases(), *_sweep_cases(),
             *_rank_validate_report_cases(), *_sql_cases(), *_export_cases(), *_demo_cases(), *_import_option_cases(),
             *_counts_file_cases(), *_meta_file_cases(), *_spike_cases(), *_nwb_cases(), *_activation_cases()]
    ids = [case.case_id for case in cases]
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert not duplicated, f"case ids must be unique: {sorted(duplicated)}"
    return cases


def _global_cases() -> Iterator[BadInput]:
    yield BadInput("global/typo", ("trian",), ("trian", "did you mean 'train'"))
    yield BadInput("global/unknown_option", ("info", "--bogus"), ("--bogus",))
    yield BadInput("global/rank_without_run", ("rank",), ("--run",))
    yield BadInput("global/label_two_verdicts", ("label", "--run", "1", "--feature", "0", "--reject", "--unsure"),
                   ("--unsure",))
    yield BadInput("global/db_empty_name", ("info",), ("--db",), db="")
    yield BadInput("global/db_blank_name", ("info",), ("--db",), db="  ")


MINI_COMMANDS: dict[str, tuple[str, ...]] = {
    "info": ("info",),
    "tui": ("tui",),
    "rank": ("rank", "--run", "1"),
    "validate": ("validate", "--run", "1", "--jobs", "1"),
    "report": ("report", "--run", "1", "--out", "r.md"),
    "label": ("label", "--run", "1", "--feature", "0", "--reject"),
    "blind": ("blind", "--run", "1"),
    "freeze": ("freeze", "--run", "1"),
    "sql": ("sql", "SELECT 1"),
    "export": ("export", "labels", "--out", "l.csv"),
    "train": ("train", "--dataset", "sample", "--epochs", "1"),
    "sweep": ("sweep", "--dataset", "sample", "--grid", "d_sae=8 k=2", "--epochs", "1"),
    "import": ("import", "{good}/c.npy", "--meta", "{good}/m.csv", "--name", "again"),
}


def _foreign_duckdb(folder: Path) -> None:
    import duckdb

    with duckdb.connect(str(folder / "x.duckdb")) as con:
        con.execute("CREATE TABLE accounts (id INTEGER, owner VARCHAR); INSERT INTO accounts VALUES (1, 'me')")


def _future_duckdb(folder: Path) -> None:
    import duckdb

    with duckdb.connect(str(folder / "x.duckdb")) as con:
        con.execute("CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (999)")


DATABASES: dict[str, Writer | None] = {
    "missing": None,
    "empty": _bytes("x.duckdb", b""),
    "random_bytes": _bytes("x.duckdb", RANDOM_BYTES),
    "text": _text("x.duckdb", "this is not a database\n"),
    "truncated": _truncated_copy("x.duckdb", "../base.duckdb", 0.02),
    "directory": lambda folder: (folder / "x.duckdb").mkdir(),
    "foreign_tables": _foreign_duckdb,
    "newer_schema": _future_duckdb,
}


def _database_cases() -> Iterator[BadInput]:
    for kind, write in DATABASES.items():
        for command, args in MINI_COMMANDS.items():
            if kind == "missing" and command == "import":
                continue  # import makes a new database: that is its job
            yield BadInput(f"db/{kind}/{command}", args, ("x.duckdb",), write, db="x.duckdb")


def _id_cases() -> Iterator[BadInput]:
    for command, args in MINI_COMMANDS.items():
        if "--run" not in args:
            continue
        at = args.index("--run") + 1
        for value in ("0", "-1", "99", INT64_OVER, HUGE, TEXT, "1.5", ""):
            words = (f"run {value}",) if value.lstrip("-").isdigit() else ("--run",)
            yield BadInput(f"id/{command}/run={value}", (*args[:at], value, *args[at + 1:]), words)
    label = ("label", "--run", "1")
    for value in ("-1", "64", "9999", INT64_OVER, HUGE, TEXT):
        yield BadInput(f"id/label/feature={value}", (*label, "--feature", value, "--reject"), ("--feature",))
    for value in ("0", "99", "-1", HUGE, TEXT):
        yield BadInput(f"id/label/sae={value}", (*label, "--feature", "0", "--sae", value, "--reject"), ("--sae",))
    for value in ("0", "10", "-1", HUGE, TEXT):
        words = (f"suggestion {value}",) if value.lstrip("-").isdigit() else ("--accept",)
        yield BadInput(f"id/label/accept={value}", (*label, "--feature", "0", "--accept", value), words)
    yield BadInput("id/blind/validated_run", ("blind", "--run", "1"), ("run 1", "seen already"))


def _label_cases() -> Iterator[BadInput]:
    label = ("label", "--run", "1", "--feature", "0")
    for case, name in {"empty": "", "blank": "   ", "newline_only": "\n", "huge": "x" * 20_000}.items():
        yield BadInput(f"label/name_{case}", (*label, "--name", name), ("--name",))
    predicates = {
        "unfinished": "speed >", "unknown_variable": "nope > 1", "nan_bound": "speed > nan",
        "inf_interval": "speed in [inf, 1)", "reversed_interval": "speed in [5, 1)",
        "unknown_level": "phase = 'nope'", "text_on_number": "speed = 'fast'", "empty": "",
        "sql_injection": "speed > 1; DROP TABLE labels", "huge_number": "speed > 1e400",
    }
    for case, predicate in predicates.items():
        yield BadInput(f"label/predicate_{case}", (*label, "--name", "x", "--predicate", predicate), ("predicate",))
    yield BadInput("label/predicate_with_reject", (*label, "--reject", "--predicate", "speed > 1"), ("--predicate",))
    yield BadInput("label/predicate_with_accept", (*label, "--accept", "1", "--predicate", "speed > 1"),
                   ("--predicate",))


def _int_values(low: int) -> dict[str, str]:
    """Integers just below an option's lower limit, beyond every integer type, and not integers at all."""
    values = {"below": str(low - 1), "negative": "-1", "int64": INT64_OVER, "huge": HUGE, "text": TEXT,
              "fraction": "1.5", "empty": "", "nan": "nan"}
    return {k: v for k, v in values.items() if not (k == "negative" and low - 1 == -1)}


FLOAT_VALUES = {"nan": "nan", "inf": "inf", "minus_inf": "-inf", "negative": "-1", "text": TEXT, "empty": ""}


def _options(prefix: str, args: tuple[str, ...], option: str, values: dict[str, str],
             words: tuple[str, ...] = ()) -> Iterator[BadInput]:
    for case, value in values.items():
        yield BadInput(f"{prefix}/{option.lstrip('-')}={case}", (*args, option, value), (option, *words),
                       fresh=case != "existing")


def _train_cases() -> Iterator[BadInput]:
    train = ("train", "--dataset", "sample", "--device", "cpu")
    yield from _options("train", train, "--epochs", _int_values(1))
    yield from _options("train", train, "--batch-size", _int_values(1))
    yield from _options("train", train, "--d-sae", {**_int_values(1), "4e9": "4000000000"})
    yield from _options("train", train, "--instances", {**_int_values(1), "1e9": "1000000000"})
    yield from _options("train", train, "--patience", _int_values(1))
    yield from _options("train", train, "--seed", {**_int_values(0), "2**32": str(2**32)})
    yield from _options("train", train, "--lr", {**FLOAT_VALUES, "zero": "0", "1e308": "1e308"})
    yield from _options("train", train, "--k", {"zero": "0", "negative": "-1", "empty": "", "double_comma": "4,,8",
                                                 "text": TEXT, "huge": HUGE, "above_d_sae": "100",
                                                 "fraction": "2.5"})
    yield BadInput("train/k_above_given_d_sae", (*train, "--d-sae", "8", "--k", "9"), ("--k",))
    yield BadInput("train/dataset_missing", ("train", "--dataset", "nope"), ("nope",))
    yield BadInput("train/dataset_empty", ("train", "--dataset", ""), ("--dataset",))
    yield BadInput("train/resume_finished", ("train", "--resume", "1"), ("run 1",))
    yield BadInput("train/resume_missing", ("train", "--resume", "99"), ("99",))
    yield BadInput("train/resume_negative", ("train", "--resume", "-1"), ("run -1",))
    yield BadInput("train/arch", (*train, "--arch", "transformer"), ("--arch",))
    yield BadInput("train/device", (*train, "--device", "tpu"), ("--device",))
    yield BadInput("train/loss", (*train, "--loss", "l7"), ("--loss",))
    yield from _epoch_cases("train", train)


def _sweep_cases() -> Iterator[BadInput]:
    """`mini sweep`: every option checked before the database is read or a sweep folder made."""
    sweep = ("sweep", "--dataset", "sample", "--grid", "d_sae=8 k=2")
    yield from _options("sweep", sweep, "--seeds", {**_int_values(1), "1e4": "10000"})
    yield from _options("sweep", sweep, "--max-parallel", _int_values(1))
    yield from _options("sweep", sweep, "--seed", {"negative": "-1", "2**32": str(2**32), "text": TEXT})
    on_slurm = (*sweep, "--executor", "slurm")
    yield from _options("sweep", on_slurm, "--slurm-time-min", {"zero": "0", "huge": HUGE, "text": TEXT})
    yield from _options("sweep", on_slurm, "--slurm-cpus-per-task", {"zero": "0", "negative": "-1"})
    yield from _options("sweep", on_slurm, "--slurm-gpus-per-task", {"negative": "-1", "huge": "1000"})
    yield from _options("sweep", (*sweep, "--executor", "ray"), "--ray-gpus-per-task", FLOAT_VALUES)
    grids = {"empty": ("", "--grid"), "unknown_key": ("width=8", "width"), "no_value": ("d_sae=", "d_sae"),
             "nan_lr": ("lr=nan", "lr=nan"), "huge_lr": ("lr=1e308", "lr=1e308"), "zero_k": ("k=0", "k=0"),
             "k_above_d_sae": ("d_sae=8 k=9", "k=9"), "text_d_sae": (f"d_sae={TEXT}", "d_sae"),
             "huge_d_sae": (f"d_sae={HUGE} k=2", "--d-sae"), "repeated": ("k=2,2", "listed twice")}
    for case, (grid, word) in grids.items():
        yield BadInput(f"sweep/grid_{case}", ("sweep", "--dataset", "sample", "--grid", grid), (word,))
    yield BadInput("sweep/dataset_missing", ("sweep", "--dataset", "nope", "--grid", "k=2"), ("nope",))
    yield BadInput("sweep/resume_missing", ("sweep", "--resume", "99"), ("no sweep 99",))
    yield BadInput("sweep/resume_not_a_folder", ("sweep", "--resume", "{good}"), ("not a sweep folder",))
    yield BadInput("sweep/show_text", ("sweep", "show", TEXT), ("SWEEP",))
    yield BadInput("sweep/promote_missing", ("sweep", "promote", "99", "1"), ("no sweep 99",))


def _epoch_cases(prefix: str, args: tuple[str, ...]) -> Iterator[BadInput]:
    wheres = {"unfinished": "speed >", "unknown": "nope > 1", "empty": "", "none_selected": "speed > 1e9",
              "nan": "speed > nan", "subquery": "speed > (SELECT 1)"}
    for case, where in wheres.items():
        yield BadInput(f"{prefix}/where_{case}", (*args, "--where", where), ("--where",))
    arounds = {"no_colon": "reward", "reversed": "reward:1,0", "nan": "reward:nan,1",
               "unknown": "nope:-1,1", "huge": "reward:-1e308,1e308", "one_number": "reward:1"}
    for case, around in arounds.items():
        yield BadInput(f"{prefix}/around_{case}", (*args, "--around", around), ("--around",))


def _no_variable_database(folder: Path) -> None:
    """x.duckdb: a recording imported with no behaviour (metadata of trial and time only), trained."""
    from engine.ingest.importer import ImportOptions, import_files
    from engine.pipeline import RunSpec, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from store import Store

    rec = make_recording()
    write_counts(rec.counts, folder / "c.npy")
    write_meta(rec.meta.select("trial", "time_s"), folder / "m.csv")
    with Store.open(folder / "x.duckdb") as db:
        import_files(db, folder / "c.npy", folder / "m.csv", ImportOptions(name="quiet"))
        train_run(db, RunSpec(dataset="quiet", sae=SAEConfig(d_sae=8), ks=(2,),
                              train=TrainConfig(epochs=1, batch_size=64, device="cpu")))


def _rank_validate_report_cases() -> Iterator[BadInput]:
    yield BadInput("rank/no_variables", ("rank", "--run", "1"), ("run 1", "no variable"), _no_variable_database,
                   db="x.duckdb")
    rank = ("rank", "--run", "1")
    yield from _options("rank", rank, "--top", _int_values(1))
    yield from _options("rank", rank, "--max-shuffles", {**_int_values(1), "over_limit": str(10**9)})
    yield from _epoch_cases("rank", rank)
    validate = ("validate", "--run", "1")
    yield from _options("validate", validate, "--jobs", {"zero": "0", "minus_two": "-2", "huge": HUGE,
                                                         "million": "1000000", "text": TEXT})
    yield from _options("validate", validate, "--max-draws", {"below": "19", "over": "1001", "text": TEXT})
    yield from _epoch_cases("validate", (*validate, "--jobs", "1"))
    report = ("report", "--run", "1")
    yield from _options("report", (*report, "--out", "r.md"), "--top", _int_values(1))
    yield BadInput("report/out_directory", (*report, "--out", "folder"), ("folder",),
                   lambda folder: (folder / "folder").mkdir())
    yield BadInput("report/out_missing_folder", (*report, "--out", "nope/r.md"), ("nope",))
    yield BadInput("report/out_empty", (*report, "--out", ""), ("--out",))
    yield BadInput("report/tables_folder_is_a_file", (*report, "--out", "r.md"), ("r_tables",),
                   _text("r_tables", "in the way\n"))
    yield BadInput("report/tables_format", (*report, "--tables", "xlsx"), ("--tables",))


SQL_WRITES = {
    "insert": "INSERT INTO labels SELECT * FROM labels",
    "update": "UPDATE datasets SET name = 'x'",
    "delete": "DELETE FROM labels",
    "drop": "DROP TABLE labels",
    "create": "CREATE TABLE t (x INTEGER)",
    "create_view": "CREATE VIEW v AS SELECT 1",
    "alter": "ALTER TABLE labels ADD COLUMN x INTEGER",
    "copy_to": "COPY labels TO 'out.csv'",
    "export": "EXPORT DATABASE 'dump'",
    "install": "INSTALL spatial",
    "load": "LOAD spatial",
    "attach": "ATTACH 'other.duckdb' AS other",
    "set": "SET threads = 1",
    "checkpoint": "CHECKPOINT",
    "vacuum": "VACUUM",
    "second_statement": "SELECT 1; DELETE FROM labels",
    "truncate": "TRUNCATE labels",
    "create_secret": "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
}


def _sql_cases() -> Iterator[BadInput]:
    for case, query in SQL_WRITES.items():
        yield BadInput(f"sql/{case}", ("sql", query), ("--write",))
    bad = {"syntax": ("SELEC 1", "SELEC"), "empty": ("", "query is empty"), "blank": ("   ", "query is empty"),
           "unknown_table": ("SELECT * FROM nope", "nope"),
           "missing_file": ("SELECT * FROM read_csv('nope.csv')", "nope.csv"),
           "division_by_zero": ("SELECT 1 // 0 + 'a'", "query failed")}
    for case, (query, word) in bad.items():
        yield BadInput(f"sql/{case}", ("sql", query), (word,))
    yield BadInput("sql/stdin_empty", ("sql", "-"), ("query is empty",), stdin="")
    yield BadInput("sql/stdin_write", ("sql", "-"), ("--write",), stdin="DELETE FROM labels")
    yield BadInput("sql/format", ("sql", "SELECT 1", "--format", "xml"), ("--format",))


def _export_cases() -> Iterator[BadInput]:
    for case, query in SQL_WRITES.items():
        yield BadInput(f"export/query_{case}", ("export", "--query", query, "--out", "q.csv"), ("--query",))
    bad = {"syntax": ("SELEC 1", "SELEC"), "empty": ("", "query is empty"), "blank": ("   ", "query is empty"),
           "comment_only": ("-- nothing", "only comments"), "unknown_table": ("SELECT * FROM nope", "nope"),
           "missing_file": ("SELECT * FROM read_csv('nope.csv')", "nope.csv"),
           "explain": ("EXPLAIN SELECT 1", "EXPLAIN"), "pragma": ("PRAGMA show_tables", "PRAGMA"),
           "pivot_without_in": ("PIVOT rankings ON sae_id USING count(*)", "PIVOT"),
           # Fails after COPY has begun writing: the hidden temporary file goes too (the folder is compared).
           "fails_midway": ("SELECT CASE WHEN i < 50000 THEN i ELSE error('stop at ' || i) END AS i"
                            " FROM range(100000) t(i)", "stop at"),
           "nextval": ("SELECT nextval('nope')", "nope")}
    for case, (query, word) in bad.items():
        yield BadInput(f"export/query_{case}", ("export", "--query", query, "--out", "q.csv"), ("--query", word))
    yield BadInput("export/query_stdin_empty", ("export", "--query", "-", "--out", "q.csv"), ("query is empty",),
                   stdin="")
    yield BadInput("export/query_stdin_write", ("export", "--query", "-", "--out", "q.csv"), ("--query", "DELETE"),
                   stdin="DELETE FROM labels")
    yield BadInput("export/unknown_table", ("export", "rankingz"), ("rankingz", "rankings"))
    yield BadInput("export/unknown_table_far", ("export", "zzzz"), ("zzzz", "labels"))
    yield BadInput("export/table_control_characters", ("export", "lab\x1b[2Jels"), ("lab\\x1b[2Jels",))
    yield BadInput("export/neither", ("export",), ("TABLE", "--query"))
    yield BadInput("export/both", ("export", "labels", "--query", "SELECT 1"), ("TABLE", "--query", "not both"))
    yield BadInput("export/format", ("export", "labels", "--format", "xlsx"), ("--format",))
    yield BadInput("export/format_empty", ("export", "labels", "--format", ""), ("--format",))
    yield BadInput("export/suffix_disagrees", ("export", "labels", "--out", "l.csv", "--format", "parquet"),
                   ("--out", "l.csv", "parquet"))
    yield BadInput("export/out_empty", ("export", "labels", "--out", ""), ("--out",))
    yield BadInput("export/out_missing_folder", ("export", "labels", "--out", "nope/l.csv"), ("--out", "nope"))
    yield BadInput("export/out_directory", ("export", "labels", "--out", "folder"), ("--out", "folder"),
                   lambda folder: (folder / "folder").mkdir())
    yield BadInput("export/out_exists", ("export", "labels", "--out", "l.csv"), ("l.csv", "--force"),
                   _text("l.csv", "keep me\n"))


def _demo_cases() -> Iterator[BadInput]:
    demo = ("demo", "--no-tui")
    for option, values in {"--seed": {"negative": "-1", "huge": HUGE, "2**32": str(2**32)},
                           "--epochs": {"zero": "0", "negative": "-1", "huge": HUGE},
                           "--auto-accept": {"negative": "-1", "huge": HUGE},
                           "--max-shuffles": {"below_the_first": "199", "huge": HUGE},
                           "--max-draws": {"below": "19", "over": "1001"}}.items():
        for case, value in values.items():
            yield BadInput(f"demo/{option.lstrip('-')}={case}", (*demo, option, value), (option,), db="new.duckdb")
    yield BadInput("demo/data_is_a_file", (*demo, "--data", "file"), ("file",), _text("file", "x"), db="new.duckdb")


IMPORT = ("import", "{good}/c.npy", "--meta", "{good}/m.csv", "--name", "again")
SPIKES = ("import-spikes", "{good}/s.csv", "--behaviour", "{good}/b.csv", "--name", "spikes")


def _import_option_cases() -> Iterator[BadInput]:
    for prefix, args in (("import", IMPORT), ("import-spikes", SPIKES)):
        yield from _options(prefix, args, "--seed", {"negative": "-5", "huge": HUGE, "2**32": str(2**32),
                                                    "text": TEXT})
        yield from _options(prefix, args, "--blocks", {"zero": "0", "one": "1", "negative": "-1", "huge": HUGE})
        splits = {"nan": "nan,0.5,0.5", "inf": "inf,0.5,0.5", "two": "0.5,0.5", "four": "0.7,0.1,0.1,0.1",
                  "negative": "-0.1,0.6,0.5", "no_val": "1,0,0", "text": "a,b,c", "huge": "1e308,1,1"}
        yield from _options(prefix, args, "--split", splits)
        yield from _options(prefix, args, "--smooth", {"nan": "nan", "negative": "-1", "inf": "inf",
                                                      "huge": "1e308"})
        yield from _options(prefix, args, "--var-kind", {"no_equals": "speed", "bad_kind": "speed=bogus",
                                                        "unknown": "nope=continuous", "no_name": "=continuous"})
        yield from _options(prefix, args[:-2], "--name", {"empty": "", "blank": "  ", "existing": "sample",
                                                         "newline": "a\nb"})
        yield from _options(prefix, args, "--normalize", {"choice": "l2"})
    yield from _options("import", IMPORT, "--bin-size", {**FLOAT_VALUES, "zero": "0", "tiny": "1e-300",
                                                         "huge": "1e308", "below_step": "1e-6"})
    yield from _options("import", IMPORT, "--kind", {"choice": "rates"})
    yield BadInput("import/trial_col_missing", (*IMPORT, "--trial-col", "nope"), ("nope",))
    yield BadInput("import/time_col_missing", (*IMPORT, "--time-col", "nope"), ("nope",))
    yield BadInput("import/trial_col_empty", (*IMPORT, "--trial-col", ""), ("--trial-col",))


def _counts_file_cases() -> Iterator[BadInput]:
    rec = make_recording()
    good = rec.counts
    n, m = good.shape

    def cell(value, dtype=np.float64) -> np.ndarray:
        out = good.astype(dtype)
        out[7, 2] = value
        return out

    matrices: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {
        "nan": (cell(np.nan), ("row 7",)),
        "inf": (cell(np.inf), ("row 7",)),
        "negative": (cell(-1.0), ("row 7",)),
        "1e308": (cell(1e308), ("row 7",)),
        "2**62": (cell(2**62, np.int64), ("row 7",)),
        "uint64_max": (cell(np.iinfo(np.uint64).max, np.uint64), ("row 7",)),
        "zero_rows": (good[:0], ("no rows",)),
        "zero_units": (good[:, :0], ("0",)),
        "fewer_rows": (good[:-3], (f"{n - 3}",)),
        "extra_rows": (np.vstack([good, good[:2]]), (f"{n + 2}",)),
    }
    for suffix in (".npy", ".npz", ".parquet", ".csv"):
        name = f"c{suffix}"
        meta = ("--meta", "{good}/m.csv", "--name", "bad")
        for case, (values, words) in matrices.items():
            if case == "zero_units" and suffix in (".parquet", ".csv"):
                continue  # a table with no columns cannot be written
            if case == "zero_rows" and suffix in (".npy", ".npz"):
                words = ("empty matrix", "(0, 6)")
            yield BadInput(f"counts{suffix}/{case}", ("import", name, *meta), (name, *words), _counts(name, values))
        yield BadInput(f"counts{suffix}/empty_file", ("import", name, *meta), (name,), _bytes(name, b""))
        yield BadInput(f"counts{suffix}/random_bytes", ("import", name, *meta), (name,), _bytes(name, RANDOM_BYTES))
        yield BadInput(f"counts{suffix}/truncated", ("import", name, *meta), (name,),
                       _truncated_copy(name, f"c{suffix}", 0.6))
        yield BadInput(f"counts{suffix}/missing", ("import", name, *meta), (name,))
        yield BadInput(f"counts{suffix}/directory", ("import", name, *meta), (name,),
                       lambda folder, name=name: (folder / name).mkdir())
        if suffix in (".npy", ".npz"):
            yield BadInput(f"counts{suffix}/one_dimensional", ("import", name, *meta), (name,),
                           _counts(name, good[:, 0]))
            yield BadInput(f"counts{suffix}/three_dimensional", ("import", name, *meta), (name,),
                           _counts(name, good[:, :, None]))
            yield BadInput(f"counts{suffix}/complex", ("import", name, *meta), (name,),
                           _counts(name, good.astype(np.complex128)))
            yield BadInput(f"counts{suffix}/strings", ("import", name, *meta), (name,),
                           _counts(name, good.astype(str)))
        else:
            texts = pl.DataFrame({f"u{i}": good[:, i].astype(str) for i in range(m)}).with_columns(
                pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("many")).otherwise(pl.col("u1")).alias("u1"))
            yield BadInput(f"counts{suffix}/text_cell", ("import", name, *meta), (name, "String"), _frame(name, texts))
        if suffix == ".csv":
            header = ",".join(["a", "a", *(f"u{i}" for i in range(2, m))])
            body = "\n".join(",".join(str(v) for v in row) for row in good)
            yield BadInput("counts.csv/duplicate_names", ("import", name, *meta), (name, "a"),
                           _text(name, f"{header}\n{body}\n"))
            header = ",".join(["", *(f"u{i}" for i in range(1, m))])
            yield BadInput("counts.csv/empty_name", ("import", name, *meta), (name,),
                           _text(name, f"{header}\n{body}\n"))
            yield BadInput("counts.csv/ragged_row", ("import", name, *meta), (name,),
                           _text(name, "u0,u1\n1,2\n3\n4,5,6\n"))
        if suffix == ".npz":
            yield BadInput("counts.npz/no_counts_key", ("import", name, *meta), (name, "counts"),
                           lambda folder: np.savez(folder / "c.npz", spikes=good))
            yield BadInput("counts.npz/unit_names_short", ("import", name, *meta), (name, "unit_names"),
                           lambda folder: np.savez(folder / "c.npz", counts=good, unit_names=np.array(["a"])))
            yield BadInput("counts.npz/unit_names_duplicate", ("import", name, *meta), (name, "'a'"),
                           lambda folder: np.savez(folder / "c.npz", counts=good,
                                                   unit_names=np.array(["a"] * m)))
            yield BadInput("counts.npz/pickled_object", ("import", name, *meta), (name,),
                           lambda folder: np.savez(folder / "c.npz", counts=np.array([{"a": 1}], dtype=object)))
            yield BadInput("counts.npz/zip_of_text", ("import", name, *meta), (name,), _zip_of_text(name))
        if suffix == ".npy":
            yield BadInput("counts.npy/huge_header", ("import", name, *meta), (name,), _huge_npy(name))
    yield BadInput("counts/unknown_format", ("import", "c.xlsx", "--meta", "{good}/m.csv"), ("c.xlsx",),
                   _bytes("c.xlsx", b"PK"))


def _zip_of_text(name: str) -> Writer:
    def write(folder: Path) -> None:
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("counts.npy", "not an array")
    return write


def _huge_npy(name: str) -> Writer:
    """A .npy whose header declares 10^12 × 10^3 float64s: a few bytes on disk, 7 EiB if believed."""
    def write(folder: Path) -> None:
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000), }"
        header = header + " " * (63 - (len(header) + 10) % 64) + "\n"
        data = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\x00" * 64
        (folder / name).write_bytes(data)
    return write


def _meta_file_cases() -> Iterator[BadInput]:
    rec = make_recording()
    meta = rec.meta
    n = meta.height
    frames: dict[str, tuple[pl.DataFrame, tuple[str, ...]]] = {
        "zero_rows": (meta.head(0), ("no rows",)),
        "fewer_rows": (meta.head(n - 1), (f"{n - 1}",)),
        "trial_null": (meta.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("trial"))
                                         .alias("trial")), ("trial",)),
        "time_nan": (meta.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(float("nan"))
                                       .otherwise(pl.col("time_s")).alias("time_s")), ("time_s",)),
        "time_backwards": (meta.with_columns(pl.col("time_s").reverse()), ("time_s",)),
        "time_inf": (meta.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(float("inf"))
                                       .otherwise(pl.col("time_s")).alias("time_s")), ("time_s",)),
        "variable_inf": (meta.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(float("inf"))
                                           .otherwise(pl.col("speed")).alias("speed")), ("speed",)),
        "variable_1e308": (meta.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(1e308)
                                             .otherwise(pl.col("speed")).alias("speed")), ("speed",)),
    }
    for suffix in (".parquet", ".csv"):
        name = f"m{suffix}"
        args = ("import", "{good}/c.npy", "--meta", name, "--name", "bad")
        for case, (frame, words) in frames.items():
            yield BadInput(f"meta{suffix}/{case}", args, (name, *words), _frame(name, frame))
        yield BadInput(f"meta{suffix}/empty_file", args, (name,), _bytes(name, b""))
        yield BadInput(f"meta{suffix}/random_bytes", args, (name,), _bytes(name, RANDOM_BYTES))
        yield BadInput(f"meta{suffix}/truncated", args, (name,), _truncated_copy(name, f"m{suffix}", 0.5))
        yield BadInput(f"meta{suffix}/missing", args, (name,))
    csv = ("import", "{good}/c.npy", "--meta", "m.csv", "--name", "bad")
    header = ",".join(meta.columns)
    body = "\n".join(",".join("" if v is None else str(v) for v in row) for row in meta.iter_rows())
    yield BadInput("meta.csv/duplicate_names", csv, ("m.csv", "speed"),
                   _text("m.csv", header.replace("reward", "speed") + "\n" + body + "\n"))
    yield BadInput("meta.csv/empty_name", csv, ("m.csv",), _text("m.csv", header.replace("reward", "") + "\n" + body
                                                                 + "\n"))
    yield BadInput("meta.csv/header_only", csv, ("m.csv",), _text("m.csv", header + "\n"))
    yield BadInput("meta.csv/ragged", csv, ("m.csv",), _text("m.csv", header + "\n1,2\n"))


def _spike_cases() -> Iterator[BadInput]:
    session = make_session()
    behaviour = ("--behaviour", "{good}/b.csv", "--name", "bad")
    # -- Kilosort / Phy folders
    ks = ("import-spikes", "ks", *behaviour)

    def kilosort(change: Callable[[Path], None]) -> Writer:
        def write(folder: Path) -> None:
            write_kilosort(folder / "ks", session)
            change(folder / "ks")
        return write

    folders: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
        "no_spike_times": (lambda d: (d / "spike_times.npy").unlink(), ("spike_times.npy",)),
        "no_clusters": (lambda d: (d / "spike_clusters.npy").unlink(), ("spike_clusters",)),
        "truncated_times": (lambda d: (d / "spike_times.npy").write_bytes((d / "spike_times.npy").read_bytes()[:100]),
                            ("spike_times.npy",)),
        "length_mismatch": (lambda d: np.save(d / "spike_clusters.npy", np.load(d / "spike_clusters.npy")[:-5]),
                            ("spike_clusters.npy",)),
        "garbage_groups": (lambda d: (d / "cluster_group.tsv").write_bytes(b"\x00\xff\x1b[2J" + RANDOM_BYTES[:300]),
                           ("cluster_group.tsv",)),
        "no_sample_rate": (lambda d: (d / "params.py").write_text("dat_path = 'raw.bin'\n"), ("sample_rate",)),
        "garbage_params": (lambda d: (d / "params.py").write_text("sample_rate = import os\n"), ("params.py",)),
        "zero_sample_rate": (lambda d: (d / "params.py").write_text("sample_rate = 0\n"), ("sample_rate",)),
        "nan_sample_rate": (lambda d: (d / "params.py").write_text("sample_rate = float('nan')\n"), ("params.py",)),
        "negative_times": (lambda d: np.save(d / "spike_times.npy", -np.load(d / "spike_times.npy").astype(np.int64)),
                           ("ks", "cluster_0", "spike times must be >= 0")),
        "times_1e12_s": (lambda d: np.save(d / "spike_times.npy", np.r_[np.load(d / "spike_times.npy").ravel()[:-1],
                                                                         np.uint64(3 * 10**16)]), ("--bin-size",)),
        "float_nan_times": (lambda d: np.save(d / "spike_times.npy",
                                              np.r_[np.load(d / "spike_times.npy").ravel()[:-1].astype(float), np.nan]),
                            ("ks", "nan")),
        "two_dimensional_clusters": (lambda d: np.save(d / "spike_clusters.npy",
                                                       np.load(d / "spike_clusters.npy").reshape(-1, 1).repeat(2, 1)),
                                     ("spike_clusters.npy",)),
    }
    for case, (change, words) in folders.items():
        yield BadInput(f"kilosort/{case}", ks, words, kilosort(change))
    yield BadInput("kilosort/empty_folder", ks, ("ks",), lambda folder: (folder / "ks").mkdir())
    yield BadInput("kilosort/no_such_group", (*ks, "--groups", "nope"), ("cluster_group.tsv", "nope"),
                   kilosort(lambda d: None))
    # -- MATLAB
    mat = ("import-spikes", "s.mat", *behaviour)
    yield BadInput("mat/empty", mat, ("s.mat",), _bytes("s.mat", b""))
    yield BadInput("mat/random_bytes", mat, ("s.mat",), _bytes("s.mat", RANDOM_BYTES))
    yield BadInput("mat/truncated", mat, ("s.mat",), _truncated_copy("s.mat", "s.mat", 0.5))
    yield BadInput("mat/no_such_var", (*mat, "--mat-var", "nope"), ("nope",), _truncated_copy("s.mat", "s.mat", 1.0))
    yield BadInput("mat/no_such_field", (*mat, "--mat-field", "nope"), ("nope",),
                   _truncated_copy("s.mat", "s.mat", 1.0))
    yield BadInput("mat/nan_time", mat, ("s.mat",), _mat_with(session, np.nan))
    yield BadInput("mat/huge_time", mat, ("--bin-size",), _mat_with(session, 1e12))
    # -- spike tables
    for suffix in (".csv", ".parquet"):
        name = f"s{suffix}"
        table = ("import-spikes", name, *behaviour)
        frames = {
            "nan_time": _spike_frame(session, time=np.nan),
            "inf_time": _spike_frame(session, time=np.inf),
            "1e308_time": _spike_frame(session, time=1e308, row=-1),
            "negative_time": _spike_frame(session, time=-1.0),
            "null_unit": _spike_frame(session, unit=None),
            "empty_unit": _spike_frame(session, unit=""),
            "no_rows": _spike_frame(session).head(0),
            "no_unit_column": _spike_frame(session).rename({"unit": "who"}),
            "text_times": _spike_frame(session).with_columns(pl.col("time").cast(pl.String) + "s"),
        }
        for case, frame in frames.items():
            words = ("--bin-size", "1e+308 s") if case == "1e308_time" else (name,)
            yield BadInput(f"spikes{suffix}/{case}", table, words, _frame(name, frame))
        yield BadInput(f"spikes{suffix}/empty_file", table, (name,), _bytes(name, b""))
        yield BadInput(f"spikes{suffix}/random_bytes", table, (name,), _bytes(name, RANDOM_BYTES))
        yield BadInput(f"spikes{suffix}/truncated", table, (name,), _truncated_copy(name, f"s{suffix}", 0.4)
                       if suffix == ".parquet" else _cut_after_comma(name, f"s{suffix}", 0.4))
        yield BadInput(f"spikes{suffix}/unit_col", (*table, "--unit-col", "nope"), ("nope",),
                       _frame(name, _spike_frame(session)))
        yield BadInput(f"spikes{suffix}/time_col", (*table, "--spike-time-col", "nope"), ("nope",),
                       _frame(name, _spike_frame(session)))
    yield BadInput("spikes/missing_source", ("import-spikes", "nope.csv", *behaviour), ("nope.csv",))
    yield BadInput("spikes/format_mismatch", (*SPIKES, "--format", "mat"), ("s.csv", "MATLAB"))
    # -- behaviour, trials, events
    spikes = ("import-spikes", "{good}/s.csv", "--name", "bad")
    b = session.behaviour
    behaviours = {
        "nan_time": b.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(float("nan")).otherwise(pl.col("time_s"))
                                   .alias("time_s")),
        "backwards": b.with_columns(pl.col("time_s").reverse()),
        "no_time": b.drop("time_s"),
        "repeated_time": b.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(pl.col("time_s").shift(1))
                                        .otherwise(pl.col("time_s")).alias("time_s")),
        "1e308_time": b.with_columns(pl.when(pl.int_range(pl.len()) == b.height - 1).then(1e308)
                                     .otherwise(pl.col("time_s")).alias("time_s")),
        "no_rows": b.head(0),
        "only_time": b.select("time_s"),
    }
    for case, frame in behaviours.items():
        yield BadInput(f"behaviour/{case}", (*spikes, "--behaviour", "bb.csv"), ("bb.csv",), _frame("bb.csv", frame))
    yield BadInput("behaviour/empty_file", (*spikes, "--behaviour", "bb.csv"), ("bb.csv",), _bytes("bb.csv", b""))
    yield BadInput("behaviour/random_bytes", (*spikes, "--behaviour", "bb.parquet"), ("bb.parquet",),
                   _bytes("bb.parquet", RANDOM_BYTES))
    yield BadInput("behaviour/missing", (*spikes, "--behaviour", "nope.csv"), ("nope.csv",))
    yield BadInput("behaviour/duplicate_columns", (*spikes, "--behaviour", "bb.csv"), ("bb.csv",),
                   _text("bb.csv", "time_s,speed,speed\n1,2,3\n2,3,4\n"))
    trials = session.trials
    bad_trials = {
        "reversed": trials.with_columns(pl.col("start").alias("stop"), pl.col("stop").alias("start")),
        "nan_start": trials.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("nan"))
                                         .otherwise(pl.col("start")).alias("start")),
        "no_stop": trials.drop("stop"),
        "no_rows": trials.head(0),
    }
    for case, frame in bad_trials.items():
        yield BadInput(f"trials/{case}", (*SPIKES, "--trials", "tt.csv"), ("tt.csv",), _frame("tt.csv", frame))
    yield BadInput("trials/random_bytes", (*SPIKES, "--trials", "tt.csv"), ("tt.csv",), _bytes("tt.csv", RANDOM_BYTES))
    yield BadInput("trials/missing", (*SPIKES, "--trials", "nope.csv"), ("nope.csv",))
    events = {"nan_time": pl.DataFrame({"time": [20.0, float("nan")], "event": ["a", "a"]}),
              "no_time": pl.DataFrame({"when": [20.0], "event": ["a"]}),
              "text_time": pl.DataFrame({"time": ["soon"], "event": ["a"]})}
    for case, frame in events.items():
        yield BadInput(f"events/{case}", (*SPIKES, "--events", "ee.csv"), ("ee.csv",), _frame("ee.csv", frame))
    yield BadInput("events/empty_file", (*SPIKES, "--events", "ee.csv"), ("ee.csv",), _bytes("ee.csv", b""))
    # -- numbers
    yield from _options("import-spikes", SPIKES, "--bin-size", {**FLOAT_VALUES, "zero": "0", "tiny": "1e-300",
                                                                "huge": "1e308", "nano": "1e-9"})
    yield from _options("import-spikes", SPIKES, "--time-range", {"one": "5", "reversed": "60,20", "nan": "nan,60",
                                                                  "inf": "20,inf", "text": "a,b",
                                                                  "outside": "1000,2000"})
    yield from _options("import-spikes", SPIKES, "--max-gap", {"nan": "nan", "negative": "-1", "zero": "0"})
    yield from _options("import-spikes", SPIKES, "--frozen-s", {"nan": "nan", "negative": "-1"})
    yield from _options("import-spikes", SPIKES, "--min-rate", {"nan": "nan", "negative": "-1", "inf": "inf"})
    yield from _options("import-spikes", SPIKES, "--max-isi-violations", {"nan": "nan", "negative": "-0.1",
                                                                          "above_one": "1.5"})
    yield from _options("import-spikes", SPIKES, "--refractory-ms", {"zero": "0", "negative": "-1", "nan": "nan",
                                                                     "inf": "inf"})
    yield from _options("import-spikes", SPIKES, "--time-scale", {"zero": "0", "negative": "-1", "nan": "nan",
                                                                  "inf": "inf", "huge": "1e308"})


def _spike_frame(session, *, time: float | None = None, unit: str | None = "keep", row: int = 11) -> pl.DataFrame:
    frame = pl.concat([pl.DataFrame({"unit": [n] * len(t), "time": t}) for n, t in session.trains.items()])
    frame = frame.sort("time")
    row = pl.int_range(pl.len()) == (row % frame.height)
    if time is not None:
        frame = frame.with_columns(pl.when(row).then(time).otherwise(pl.col("time")).alias("time"))
    if unit != "keep":
        frame = frame.with_columns(pl.when(row).then(pl.lit(unit, pl.String)).otherwise(pl.col("unit")).alias("unit"))
    return frame


def _mat_with(session, value: float) -> Writer:
    def write(folder: Path) -> None:
        trains = dict(session.trains)
        trains[UNIT_NAMES[0]] = np.r_[trains[UNIT_NAMES[0]], value]
        write_mat(folder / "s.mat", session, trains)
    return write


def _nwb_cases() -> Iterator[BadInput]:
    nwb = ("import-nwb", "s.nwb", "--name", "bad")
    yield BadInput("nwb/empty", nwb, ("s.nwb",), _bytes("s.nwb", b""))
    yield BadInput("nwb/random_bytes", nwb, ("s.nwb",), _bytes("s.nwb", RANDOM_BYTES))
    yield BadInput("nwb/hdf5_signature_then_garbage", nwb, ("s.nwb",),
                   _bytes("s.nwb", b"\x89HDF\r\n\x1a\n" + RANDOM_BYTES))
    yield BadInput("nwb/truncated", nwb, ("s.nwb",), _truncated_copy("s.nwb", "s.nwb", 0.3))
    yield BadInput("nwb/missing", nwb, ("s.nwb",))
    good = ("import-nwb", "{good}/s.nwb", "--name", "bad")
    yield BadInput("nwb/trials_table", (*good, "--trials-table", "nope"), ("nope",))
    yield BadInput("nwb/events_table", (*good, "--events-table", "nope"), ("nope",))
    yield from _options("import-nwb", good, "--bin-size", {"nan": "nan", "zero": "0", "negative": "-1",
                                                           "tiny": "1e-300"})
    yield BadInput("nwb/trials_file", (*good, "--trials", "tt.csv"), ("tt.csv",), _bytes("tt.csv", RANDOM_BYTES))


def _activation_cases() -> Iterator[BadInput]:
    args = ("--inputs", "a,b,c", "--layer", "1", "--name", "bad")
    acts = ("import-activations", "model.pt", "{good}/x.csv", *args)
    yield BadInput("activations/model_empty", acts, ("model.pt",), _bytes("model.pt", b""))
    yield BadInput("activations/model_random", acts, ("model.pt",), _bytes("model.pt", RANDOM_BYTES))
    yield BadInput("activations/model_truncated", acts, ("model.pt",), _truncated_copy("model.pt", "model.pt", 0.5))
    yield BadInput("activations/model_missing", acts, ("model.pt",))
    yield BadInput("activations/model_is_a_dict", acts, ("model.pt",), _torch_dict("model.pt"))
    good = ("import-activations", "{good}/model.pt")
    yield BadInput("activations/data_empty", (*good, "x.csv", *args), ("x.csv",), _bytes("x.csv", b""))
    yield BadInput("activations/data_random", (*good, "x.parquet", *args), ("x.parquet",),
                   _bytes("x.parquet", RANDOM_BYTES))
    yield BadInput("activations/data_nan", (*good, "x.csv", *args), ("x.csv",),
                   _text("x.csv", "a,b,c\n1,2,3\nnan,1,1\n"))
    data = (*good, "{good}/x.csv")
    yield BadInput("activations/inputs_missing", (*data, "--inputs", "a,b,z", "--layer", "1"), ("z",))
    yield BadInput("activations/inputs_empty", (*data, "--inputs", "", "--layer", "1"), ("--inputs",))
    yield BadInput("activations/inputs_duplicate", (*data, "--inputs", "a,a,b", "--layer", "1"), ("--inputs",))
    yield BadInput("activations/layer_missing", (*data, "--inputs", "a,b,c", "--layer", "9"), ("--layer",))
    yield from _options("import-activations", (*data, "--inputs", "a,b,c", "--layer", "1"), "--batch-size",
                        {"zero": "0", "negative": "-1", "huge": HUGE, "text": TEXT})


def _torch_dict(name: str) -> Writer:
    def write(folder: Path) -> None:
        import torch

        torch.save({"weights": [1, 2, 3]}, folder / name)
    return write
