"""SQL typed by a person (`mini sql`, the app's SQL screen): run it, return a frame or a clear error.

`mini sql` opens the file read-only unless `--write`, so DuckDB itself refuses writes. The app holds the
file read-write for as long as it runs, so its SQL screen cannot lean on the connection; `run_app_query`
keeps writes off in two layers instead:

1. every statement's type is read with DuckDB's own parser before anything runs, and only statement
   types that read (SELECT, EXPLAIN, CALL and PIVOT-like MULTI) are let through: this refuses what a
   transaction cannot undo (COPY … TO a file, ATTACH, SET, LOAD, EXPORT, and COMMIT/ROLLBACK that would
   end the read-only transaction);
2. the statements run inside `BEGIN TRANSACTION READ ONLY`, so whatever still tries to write (a
   `nextval()` in a SELECT, `EXPLAIN ANALYZE INSERT …`) fails in DuckDB, and the transaction is rolled back.
"""

from __future__ import annotations

import os
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
"""Statement types (duckdb.StatementType names) that run while writes are off. MULTI is how DuckDB
parses PIVOT; CALL runs table functions such as `CALL duckdb_tables()`."""

EXPORT_FORMATS = ("csv", "parquet")


class WritesOffError(StoreError):
    """A statement that may change the database was refused because writes are off."""

    def __init__(self, statement_type: str, message: str | None = None):
        self.statement_type = statement_type
        super().__init__(message or f"{statement_type} statements can change the database, and writes are off")


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


def run_user_query(db: Store, sql: str) -> pl.DataFrame | None:
    """Run one or more statements; return the last one's result (None if it returns no rows).

    The connection decides what may be written: a read-only Store refuses writes.
    """
    if not sql.strip():
        raise StoreError("the query is empty")
    try:
        result = db.con.sql(sql)
    except duckdb.Error as error:
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
        for statement in statements:
            if statement_type(statement) not in READ_STATEMENTS:
                raise WritesOffError(statement_type(statement))
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
    con.execute("BEGIN TRANSACTION READ ONLY")
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
