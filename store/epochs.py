"""Analysis epochs in the store: each bin's metadata as one wide table, a person's `--where` evaluated
over it, and the epoch each run, ranking and validation used (`analysis_epochs`).

The predicate is text a person typed, so it is evaluated where it cannot do harm. The bins' metadata
is read from the database into Arrow and handed to a separate in-memory DuckDB that knows nothing
else: no file access, no extensions, configuration locked, inside a read-only transaction. Before
anything runs, DuckDB's own parser must see exactly `SELECT example_id, (<one expression>) AS keep
FROM bins`: no second statement, no subquery, no aggregate, window or volatile function (a predicate is
a property of one bin, the same every time it is evaluated), and every column it names must exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import polars as pl

from store.db import Store
from store.errors import StoreError

BIN_COLUMNS = ("example_id", "trial", "trial_id", "time_s")
"""Columns every bin has besides its natural variables (a variable of the same name takes their place)."""

STEPS = ("train", "rank", "validate")
"""What an `analysis_epochs` row belongs to: the run's training, its ranking, its validation."""

_SANDBOX_CONFIG = {"enable_external_access": False, "autoinstall_known_extensions": False,
                   "autoload_known_extensions": False}
_ALLOWED_FUNCTION_TYPES = ("scalar", "macro")


class PredicateError(StoreError):
    """A --where predicate that cannot be evaluated; the message is one line without the option's name."""


# -- the bins' metadata ---------------------------------------------------------------------------------
def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def bin_metadata(db: Store, dataset_id: int) -> pl.DataFrame:
    """One row per bin, in example order: example_id, trial (the trial's label, as an integer when every
    label is one), trial_id, time_s, and one column per natural variable (NULL where it has no value).

    Numbers stay numbers: continuous, circular and binary variables are DOUBLE, and so are categorical
    ones whose every level is a number (`condition = 3`); other categories are text (`phase = 'go'`).
    """
    variables = db.records(
        "SELECT variable, kind, bool_and(v.value IS NOT NULL) AS numeric FROM natural_variables n"
        " LEFT JOIN natural_values v USING (dataset_id, variable) WHERE n.dataset_id = ?"
        " GROUP BY variable, kind ORDER BY variable", [dataset_id])
    integer_trials = db.scalar("SELECT bool_and(TRY_CAST(label AS BIGINT) IS NOT NULL) FROM trials"
                               " WHERE dataset_id = ?", [dataset_id])
    names = {v["variable"] for v in variables}
    if "example_id" in names:
        raise StoreError(f"dataset {dataset_id}: a natural variable is named example_id, which names the bin")
    builtins = {
        "example_id": "e.example_id",
        "trial": "TRY_CAST(t.label AS BIGINT)" if integer_trials else "t.label",
        "trial_id": "e.trial_id",
        "time_s": "e.time_s",
    }
    select = [f"{sql} AS {name}" for name, sql in builtins.items() if name not in names]
    params: list[Any] = []
    for v in variables:
        column = "category" if v["kind"] == "categorical" and not v["numeric"] else "value"
        select.append(f"any_value(v.{column}) FILTER (WHERE v.variable = ?) AS {_quoted(v['variable'])}")
        params.append(v["variable"])
    return db.frame(
        f"SELECT {', '.join(select)} FROM examples e"
        " JOIN trials t ON t.dataset_id = e.dataset_id AND t.trial_id = e.trial_id"
        " LEFT JOIN natural_values v ON v.dataset_id = e.dataset_id AND v.example_id = e.example_id"
        " WHERE e.dataset_id = ? GROUP BY ALL ORDER BY e.example_id",
        [*params, dataset_id])


# -- evaluating --where safely --------------------------------------------------------------------------
def _sandbox(bins: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that holds only `bins` and can reach nothing else."""
    con = duckdb.connect(":memory:", config=_SANDBOX_CONFIG)
    con.execute("SET lock_configuration = true")
    con.register("bins", bins.to_arrow())
    return con


def _nodes(tree: Any) -> Iterator[dict]:
    """Every expression node (a dict with a 'class') in a serialised parse tree, depth first."""
    if isinstance(tree, dict):
        if "class" in tree:
            yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)


def _column_list(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("SELECT column_name, column_type FROM (DESCRIBE bins)").fetchall()
    return ", ".join(f"{name} {_type_word(kind)}" for name, kind in rows)


def _type_word(kind: str) -> str:
    return {"VARCHAR": "text", "DOUBLE": "number", "BIGINT": "integer", "INTEGER": "integer"}.get(kind, kind.lower())


def _check_shape(con: duckdb.DuckDBPyConnection, query: str) -> dict:
    """The one expression of `query` as DuckDB parses it, or a PredicateError saying what else is there."""
    parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0])
    if parsed.get("error"):
        message = parsed.get("error_message", "cannot be parsed")
        raise PredicateError(f"syntax error: {message}")
    statements = parsed["statements"]
    node = statements[0]["node"] if len(statements) == 1 else {}
    simple = (node.get("type") == "SELECT_NODE" and len(node.get("select_list", ())) == 2
              and node.get("from_table", {}).get("table_name") == "bins"
              and not any(node.get(key) for key in ("where_clause", "group_expressions", "group_sets", "having",
                                                    "qualify", "sample", "modifiers"))
              and not node.get("cte_map", {}).get("map"))
    if not simple:
        raise PredicateError("must be one expression about a bin, such as speed > 5 or phase in ('go', 'move')")
    return node["select_list"][1]


def _check_expression(con: duckdb.DuckDBPyConnection, expression: dict) -> None:
    """Refuse what is not a property of one bin, and names that are not columns."""
    columns = {row[0].lower() for row in con.execute("SELECT column_name FROM (DESCRIBE bins)").fetchall()}
    lambda_names = {name.lower() for node in _nodes(expression) if node["class"] == "LAMBDA"
                    for ref in _nodes(node.get("lhs")) for name in ref.get("column_names", [])[-1:]}
    kinds: dict[str, set[str]] = {}
    for name, function_type, stability in con.execute(
            "SELECT function_name, function_type, stability FROM duckdb_functions()").fetchall():
        kinds.setdefault(name.lower(), set()).update(k for k in (function_type, stability) if k)
    for node in _nodes(expression):
        kind = node["class"]
        if kind == "SUBQUERY":
            raise PredicateError("a subquery is not allowed: the predicate is about one bin at a time "
                                 "(write the number out, e.g. speed > 5)")
        if kind == "WINDOW":
            raise PredicateError(f"{node.get('function_name', 'a window function')}() OVER is not allowed: the "
                                 "predicate is about one bin at a time")
        if kind == "STAR":
            raise PredicateError("* is not allowed: name the columns")
        if kind == "COLUMN_REF":
            name = node["column_names"][-1]
            if name.lower() not in columns and name.lower() not in lambda_names:
                raise PredicateError(f"unknown column '{name}' (columns: {_column_list(con)})")
        if kind == "FUNCTION":
            name = node["function_name"]
            found = kinds.get(name.lower(), set())
            if "VOLATILE" in found:
                raise PredicateError(f"{name}() is not allowed: it gives another answer each time, so the "
                                     "same epoch would select other bins")
            if found and not found & set(_ALLOWED_FUNCTION_TYPES):
                what = "an aggregate" if "aggregate" in found else f"a {' or '.join(sorted(found))} function"
                raise PredicateError(f"{name}() is {what}; the predicate is about one bin at a time")


def select_examples(bins: pl.DataFrame, where: str) -> pl.Series:
    """The example ids (sorted) of the bins (`bin_metadata`) where `where` is true; NULL counts as false, so
    a comparison on a variable a bin has no value for does not select it. PredicateError (one line) when
    the text is not one true/false expression over the bins' columns."""
    text = where.strip()
    if not text:
        raise PredicateError("is empty; write a condition such as speed > 5")
    if ";" in text:
        raise PredicateError("must be one expression, without ';'")
    con = _sandbox(bins)
    try:
        # On lines of its own, so that a trailing `-- comment` ends with the predicate's line.
        query = f"SELECT example_id, (\n{text}\n) AS keep FROM bins"
        _check_expression(con, _check_shape(con, query))
        con.execute("BEGIN TRANSACTION READ ONLY")
        try:
            relation = con.sql(query)
            kind = relation.types[1]
            if str(kind) != "BOOLEAN":
                raise PredicateError(f"is {_type_word(str(kind))}, not true or false; compare it with a value, "
                                     f"e.g. speed > 5 or phase = 'go' (columns: {_column_list(con)})")
            kept = relation.filter("keep").project("example_id").to_arrow_table()
        finally:
            con.execute("ROLLBACK")
    except duckdb.Error as error:
        raise PredicateError(_duckdb_message(error, con)) from None
    finally:
        con.close()
    return pl.Series("example_id", kept.column(0).to_numpy() if kept.num_rows else [], dtype=pl.Int64).sort()


def _duckdb_message(error: duckdb.Error, con: duckdb.DuckDBPyConnection) -> str:
    """DuckDB's first line without its 'Binder Error:' prefix, named for what a person can change."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = line.split(": ", 1)[1] if line.split(": ", 1)[0].endswith("Error") and ": " in line else line
    typed = ("compare", "convert", "cast", "type", "no function matches")
    if isinstance(error, duckdb.ConversionException) or (
            isinstance(error, duckdb.BinderException) and any(word in line.lower() for word in typed)):
        return f"wrong type: {line} (columns: {_column_list(con)})"
    return line


# -- what each step used --------------------------------------------------------------------------------
def epoch_row(where: str | None, around: str | None, counts: dict[str, int]) -> dict[str, Any]:
    """An analysis_epochs row (without run_id and step) for `write_epoch`."""
    return {"where_sql": where, "around": around, "n_train": counts.get("train", 0),
            "n_val": counts.get("val", 0), "n_test": counts.get("test", 0)}


def write_epoch(db: Store, run_id: int, step: str, row: dict[str, Any] | None) -> None:
    """Replace what `step` of the run used (None: every bin, no row). Call inside the step's own
    transaction, so the epoch is stored with what it produced or not at all."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    db.con.execute("DELETE FROM analysis_epochs WHERE run_id = ? AND step = ?", [run_id, step])
    if row is not None:
        db.con.execute(
            "INSERT INTO analysis_epochs (run_id, step, where_sql, around, n_train, n_val, n_test)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, step, row["where_sql"], row["around"], row["n_train"], row["n_val"], row["n_test"]])


def has_results(db: Store, run_id: int, step: str) -> bool:
    """Whether the run has been ranked (step 'rank') or has stored validations (step 'validate')."""
    table = {"rank": "rankings", "validate": "validations"}[step]
    return bool(db.scalar(f"SELECT count(*) FROM {table} JOIN saes USING (sae_id) WHERE run_id = ?", [run_id]))


def run_epochs(db: Store, run_id: int) -> dict[str, dict[str, Any]]:
    """{step: its analysis_epochs row} for the steps of the run that used an epoch."""
    rows = db.records("SELECT * FROM analysis_epochs WHERE run_id = ? ORDER BY step", [run_id])
    return {row["step"]: row for row in rows}
