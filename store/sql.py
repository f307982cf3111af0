"""SQL typed by a person (`mini sql`, the app's SQL screen): run it, return a frame or a clear error.

Writes off (`mini sql` without `--write`, the app's SQL screen until ctrl+t) means the query changes
neither the database nor any file and reaches no network. One rule, `check_reads_only`, decides it for
both, with DuckDB's own parser, before anything runs:

1. only statement types that read run (READ_STATEMENTS); PRAGMA only for the pragmas in READ_PRAGMAS.
   This refuses what a read-only transaction cannot undo: COPY (both ways), EXPORT/IMPORT DATABASE,
   INSTALL/LOAD, ATTACH/DETACH, SET/RESET, and COMMIT/ROLLBACK that would end a read-only transaction;
2. every table function a query calls (in FROM, a subquery, a CTE, CALL, EXPLAIN) must be one that
   only reads (`is_read_table_function`): `checkpoint()`, `enable_logging()` (which writes log files),
   `query()` (which runs SQL text that could not be checked) and any unknown one are refused.

Reading files stays allowed (`FROM 'data.csv'`, read_parquet, glob): it gives no privilege the user lacks.
Network reads need the httpfs extension, and no connection mini opens installs or loads one by itself
(store.db turns auto-install and auto-load off); INSTALL and LOAD are refused.

Behind the rule, `mini sql` opens the file read-only, and the app runs reads inside
`BEGIN TRANSACTION READ ONLY`, so whatever still tries to write (a `nextval()` in a SELECT,
`EXPLAIN ANALYZE INSERT …`) fails in DuckDB, and the transaction is rolled back.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from store.db import Store
from store.errors import StoreError

READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "CALL", "MULTI"})
"""Statement types (duckdb.StatementType names) that run while writes are off. SELECT includes SHOW,
DESCRIBE and SUMMARIZE; MULTI is how DuckDB parses PIVOT; CALL runs table functions such as
`CALL duckdb_tables()` (each checked by `is_read_table_function`)."""

READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "show_databases", "database_list",
    "database_size", "storage_info", "metadata_info", "version", "platform", "user_agent", "collations",
    "functions",
})
"""PRAGMAs that only report (DuckDB parses `PRAGMA enable_profiling` and `IMPORT DATABASE` as PRAGMA too)."""

READ_TABLE_FUNCTION_PREFIXES = ("duckdb_", "pragma_", "read_", "parquet_")
"""Table function families that only read: catalog views, reporting pragmas, file readers, parquet metadata."""

READ_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row", "glob", "sniff_csv", "json_each",
    "json_tree", "summary", "icu_calendar_names", "pg_timezone_names", "which_secret", "test_all_types",
    "test_vector_types",
})
"""Other table functions that only read. Anything else (checkpoint, enable_logging, query, a table macro)
is refused while writes are off: an allow-list, so a function a newer DuckDB adds is refused until checked."""

EXPORT_FORMATS = ("csv", "parquet")

EXAMPLE_QUERY = "SELECT * FROM rankings LIMIT 50"
"""The query the SQL screen suggests in its empty box and when asked to run nothing."""

# Comments and blanks DuckDB keeps at the start of a statement's text.
_LEADING = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)*"
_FIRST_WORD = re.compile(_LEADING + r"([A-Za-z_]+)", re.DOTALL)
_CALL = re.compile(_LEADING + r"CALL\b", re.DOTALL | re.IGNORECASE)
_EXPLAIN = re.compile(_LEADING + r"EXPLAIN(?:\s+ANALYZE)?\b", re.DOTALL | re.IGNORECASE)
_PRAGMA_NAME = re.compile(_LEADING + r"PRAGMA\s+([A-Za-z_]+)\s*(\(|$|;)", re.DOTALL | re.IGNORECASE)


class WritesOffError(StoreError):
    """A statement that may change the database or a file was refused because writes are off."""

    def __init__(self, statement_type: str, message: str | None = None):
        self.statement_type = statement_type
        super().__init__(
            message or f"{statement_type} statements can change files or the database, and writes are off"
        )


def is_read_table_function(name: str) -> bool:
    """Whether the table function `name` only reads (see READ_TABLE_FUNCTIONS)."""
    name = name.lower()
    return name in READ_TABLE_FUNCTIONS or name.startswith(READ_TABLE_FUNCTION_PREFIXES)


def statement_name(statement: duckdb.Statement) -> str:
    """What the person typed it as: INSTALL, RESET, IMPORT (DuckDB's types say LOAD, SET, PRAGMA)."""
    match = _FIRST_WORD.match(statement.query)
    return match[1].upper() if match else statement_type(statement)


def check_reads_only(con: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement]) -> None:
    """Raise WritesOffError for the first statement that may write a file or the database, or reach the
    network; return when every one only reads. Nothing runs."""
    for statement in statements:
        _check_statement(con, statement)


def _check_statement(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> None:
    kind, text = statement_type(statement), statement.query
    if kind == "PRAGMA":
        match = _PRAGMA_NAME.match(text)
        if match and match[1].lower() in READ_PRAGMAS:
            return
        raise WritesOffError(statement_name(statement))
    if kind not in READ_STATEMENTS:
        raise WritesOffError(statement_name(statement))
    if kind == "EXPLAIN":  # EXPLAIN ANALYZE runs the statement it explains: check that one
        explained = _EXPLAIN.match(text)
        inner = con.extract_statements(text[explained.end():]) if explained else []
        if len(inner) != 1:
            raise WritesOffError("EXPLAIN")
        _check_statement(con, inner[0])
        return
    if kind == "CALL":
        call = _CALL.match(text)
        if call is None:
            raise WritesOffError(statement_name(statement))
        text = "SELECT * FROM " + text[call.end():]
    for name in _table_functions(con, text):
        if not is_read_table_function(name):
            raise WritesOffError(
                f"{name}()", f"the table function {name}() can change files or the database, and writes are off"
            )


def _table_functions(con: duckdb.DuckDBPyConnection, select: str) -> list[str]:
    """Names of the table functions a SELECT calls anywhere (subqueries, CTEs, set operations), from
    DuckDB's own syntax tree. A PIVOT cannot be serialised: its text is searched for calls instead."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [select]).fetchall()[0][0])
    if tree.get("error"):
        called = {m.lower() for m in re.findall(r'"?([A-Za-z_][A-Za-z0-9_]*)"?\s*\(', select)}
        known = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions()"
            " WHERE function_type IN ('table', 'table_macro')"
        ).fetchall()
        return sorted(called & {row[0] for row in known})
    names: list[str] = []
    stack: list[object] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
                names.append(str(node["function"].get("function_name", "")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


@dataclass
class AppQueryResult:
    """What the last statement of a query returned."""

    table: pa.Table | None
    """Its rows, at most `max_rows`; None when it returns no result at all."""
    truncated: bool
    """It had more rows than `max_rows`; `export_query_result` re-runs `rerun_sql` to write them all."""
    statement_type: str
    """The last statement's type: SELECT, INSERT, CREATE, …"""
    rerun_sql: str | None
    """The last statement's text when it is a SELECT that can safely run again (for a full export)."""


def _query_error(error: duckdb.Error) -> StoreError:
    text = str(error).strip().splitlines()
    return StoreError(f"query failed: {text[0] if text else type(error).__name__}")


def run_user_query(db: Store, sql: str, *, writes: bool) -> pl.DataFrame | None:
    """Run one or more statements; return the last one's result (None if it returns no rows).

    writes=False refuses (WritesOffError, before anything runs) any statement that `check_reads_only`
    does not pass; the connection, opened read-only for it, refuses whatever still tries to write.
    """
    statements = parse_statements(db, sql)
    if not writes:
        check_reads_only(db.con, statements)
    try:
        result = db.con.sql(sql)
    except duckdb.Error as error:
        if not writes and "read-only" in str(error):
            raise WritesOffError("query", "this query tried to write, and writes are off") from None
        raise _query_error(error) from None
    if result is None:
        return None
    try:
        return pl.from_arrow(result.to_arrow_table())  # type: ignore[return-value]
    except duckdb.Error as error:
        raise _query_error(error) from None


def parse_statements(db: Store, sql: str) -> list[duckdb.Statement]:
    """The statements of `sql` as DuckDB parses them; a StoreError for empty or unparsable text."""
    if not sql.strip():
        raise StoreError("the query is empty")
    try:
        statements = db.con.extract_statements(sql)
    except duckdb.Error as error:
        raise _query_error(error) from None
    if not statements:
        raise StoreError("the query is empty (only comments)")
    return statements


def statement_type(statement: duckdb.Statement) -> str:
    return statement.type.name


def run_app_query(db: Store, sql: str, *, writes: bool, max_rows: int) -> AppQueryResult:
    """Run the statements of `sql` in order on this thread's cursor and return the last one's rows.

    writes=False refuses any statement outside READ_STATEMENTS (WritesOffError, before anything runs) and
    runs the rest in a read-only transaction that is rolled back. writes=True runs everything, each
    statement committed as it completes (a BEGIN … COMMIT in the text groups them).
    """
    statements = parse_statements(db, sql)
    if not writes:
        check_reads_only(db.con, statements)
    con = db.con
    last = statements[-1]
    kind = statement_type(last)
    try:
        with nullcontext() if writes else _read_only_transaction(con):
            for statement in statements[:-1]:
                con.execute(statement.query).fetchall()  # fetched to the end: DuckDB 2 wants no loose results
            relation = con.sql(last.query)
            if relation is None:
                return AppQueryResult(None, False, kind, None)
            # A SELECT is lazy: the limit is pushed into it, so a billion-row result costs max_rows rows.
            # Anything else has already run; its (small) result is all there is.
            table = (relation.limit(max_rows + 1) if kind == "SELECT" else relation).to_arrow_table()
    except duckdb.TransactionException as error:
        if not writes and "read-only" in str(error):
            raise WritesOffError(kind, f"this {kind} statement tried to write, and writes are off") from None
        raise _query_error(error) from None
    except duckdb.Error as error:
        raise _query_error(error) from None
    truncated = table.num_rows > max_rows
    # A SELECT can run again (read-only) so that an export writes every row, not only those on screen.
    rerun = last.query if kind == "SELECT" else None
    return AppQueryResult(table.slice(0, max_rows) if truncated else table, truncated, kind, rerun)


def interrupt_query(db: Store) -> None:
    """Stop the statement running on `db`'s cursor (from another thread); it fails with DuckDB's
    interrupt error, which run_app_query reports as a StoreError."""
    db.con.interrupt()


def export_format(path: Path) -> str | None:
    """csv or parquet from the file name's suffix; None for anything else."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix if suffix in EXPORT_FORMATS else None


def export_query_result(db: Store, result: AppQueryResult, path: str | Path) -> int:
    """Write the result to `path` (.csv or .parquet) and return how many rows were written.

    A truncated result is written whole by running its SELECT again (read-only, streamed by DuckDB);
    otherwise the rows already fetched are written. DuckDB's writers handle every column type (lists,
    structs, decimals) the same way in both cases. The file appears whole or not at all (temporary name,
    then rename).
    """
    path = Path(path)
    fmt = export_format(path)
    if fmt is None:
        raise StoreError(f"{path}: end the file name in .csv or .parquet")
    if result.table is None:
        raise StoreError("the last query returned no rows to export")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if result.truncated and result.rerun_sql is not None:
            with _read_only_transaction(db.con):
                _write(db.con.sql(result.rerun_sql), tmp, fmt)
            # Counted from the file: the database may have changed since the rows on screen were read.
            reader = "read_parquet(?)" if fmt == "parquet" else "read_csv(?, all_varchar = true)"
            rows = int(db.con.execute(f"SELECT count(*) FROM {reader}", [str(tmp)]).fetchall()[0][0])
        else:
            _write(db.con.from_arrow(result.table), tmp, fmt)
            rows = result.table.num_rows
        os.replace(tmp, path)
    except duckdb.Error as error:
        tmp.unlink(missing_ok=True)
        raise _query_error(error) from None
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write ({error.strerror or error})") from None
    return rows


@contextmanager
def _read_only_transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Everything inside runs in a transaction that cannot write and is always rolled back."""
    try:
        con.execute("BEGIN TRANSACTION READ ONLY")
    except BaseException:
        with suppress(duckdb.Error):  # an interrupted BEGIN can leave the transaction begun
            con.execute("ROLLBACK")
        raise
    try:
        yield
    finally:
        with suppress(duckdb.Error):  # the failure that ended the transaction is the one to report
            con.execute("ROLLBACK")


def _write(relation: duckdb.DuckDBPyRelation, tmp: Path, fmt: str) -> None:
    if fmt == "csv":
        relation.write_csv(str(tmp), header=True)
    else:
        relation.write_parquet(str(tmp))
