"""Write a table, a view, a checked query or an in-memory frame to a Parquet or CSV file with DuckDB's COPY.

These are the only statements mini runs that write a file: `mini export` and the app's exports. Each is built
here, never typed by the person: the person's query is first refused unless it is one statement that only
reads (`store.sql.check_reads_only`, the rule of `mini sql`), then wrapped in `COPY (…) TO`. The file
appears whole or not at all: COPY writes a hidden temporary file beside it, which is renamed over the target
once complete (a failure removes it; a kill leaves only that hidden file, which the next export replaces).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import duckdb
import pyarrow as pa

from store.db import Store
from store.errors import StoreError
from store.sql import (
    EXPORT_FORMATS,
    WritesOffError,
    _query_error,
    check_reads_only,
    parse_statements,
    statement_name,
)

COPY_OPTIONS = {"csv": "FORMAT csv, HEADER true", "parquet": "FORMAT parquet"}
"""The COPY options of each export format (Parquet keeps every column type; CSV has a header row)."""


class Exported(NamedTuple):
    path: Path
    """The file written."""
    rows: int
    """Rows written (COPY's own count)."""


def tables_and_views(db: Store) -> list[str]:
    """The names of the database's tables and views (schema main), sorted."""
    rows = db.con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                          " ORDER BY table_name").fetchall()
    return [name for (name,) in rows]


def export_table(db: Store, name: str, path: Path, fmt: str) -> Exported:
    """Write every row of the table or view `name` (an exact name from `tables_and_views`) to `path`."""
    if name not in tables_and_views(db):
        raise StoreError(f"no table or view named {name!r}")
    return _copy(db, "SELECT * FROM main." + _identifier(name), path, fmt)


def export_query(db: Store, sql: str, path: Path, fmt: str) -> Exported:
    """Write the rows of the person's query to `path`: one statement that only reads (else WritesOffError,
    before anything runs), a SELECT (FROM …, SHOW, DESCRIBE, SUMMARIZE, VALUES and PIVOT included)."""
    statements = parse_statements(db, sql)
    if len(statements) != 1:
        raise StoreError(f"the query has {len(statements)} statements; export one SELECT")
    check_reads_only(db.con, statements)
    statement = statements[0]
    if statement.type.name == "MULTI":  # how DuckDB parses a PIVOT whose columns come from the data
        raise StoreError("a PIVOT without an IN list cannot be exported; name its columns (PIVOT t ON c IN "
                         "('a', 'b') …)")
    if statement.type.name != "SELECT":
        raise StoreError(f"{statement_name(statement)} cannot be exported; export one SELECT")
    return _copy(db, _without_trailing_semicolons(statement.query), path, fmt)


def export_arrow(db: Store, table: pa.Table, path: Path, fmt: str) -> Exported:
    """Write an in-memory table (what an app screen shows) to `path`."""
    with db.registered("mini_export_rows", table):
        return _copy(db, "SELECT * FROM mini_export_rows", path, fmt)


def temporary_path(path: Path) -> Path:
    """Where the file is written before it is renamed to `path`: hidden, in the same folder (a rename within
    one file system is atomic)."""
    return path.with_name(f".{path.name}.tmp")


def _copy(db: Store, select: str, path: Path, fmt: str) -> Exported:
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"{fmt!r} is not an export format ({' or '.join(EXPORT_FORMATS)})")
    tmp = temporary_path(path)
    # The newlines keep a trailing `-- comment` of the person's query from swallowing the closing bracket.
    copy = f"COPY (\n{select}\n) TO {_literal(str(tmp))} ({COPY_OPTIONS[fmt]})"
    parsed = db.con.extract_statements(copy)
    if len(parsed) != 1 or parsed[0].type.name != "COPY":  # the query must stay inside the brackets
        raise StoreError("the query cannot be wrapped for export; export one SELECT")
    try:
        rows = int(db.con.execute(copy).fetchall()[0][0])
        os.replace(tmp, path)
    except duckdb.Error as error:
        tmp.unlink(missing_ok=True)
        if "read-only" in str(error):
            raise WritesOffError("query", "this query tried to write, and exports only read") from None
        raise _query_error(error) from None
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write ({error.strerror or error})") from None
    except BaseException:  # Ctrl+C: no half file
        tmp.unlink(missing_ok=True)
        raise
    return Exported(path, rows)


def _without_trailing_semicolons(text: str) -> str:
    """The statement's text without the semicolons and comments DuckDB leaves at its end (`SELECT 1; -- x`),
    found with DuckDB's own tokenizer (a ';' inside a string or comment is not an end)."""
    end = len(text)
    for position, kind in reversed(duckdb.tokenize(text)):
        if kind == duckdb.token_type.comment or (kind == duckdb.token_type.operator and text[position] == ";"):
            end = position
        else:
            break
    return text[:end].rstrip()


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
