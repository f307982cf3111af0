"""Applying the schema migrations of store/migrations.py to a database file, each all-or-nothing.

A file records every version it has in `schema_version`; opening it read-write applies the ones it
lacks, in order, and a read-only open names them (store.db).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from store.errors import StoreError
from store.migrations import MIGRATIONS, Migration

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version      INTEGER PRIMARY KEY,
    description  VARCHAR NOT NULL,
    applied_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
)
"""


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration; 0 for a new file (or one that has no mini schema)."""
    # fetchall, not fetchone: DuckDB 2 refuses new work on a connection with an unfinished result.
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()
    if exists[0][0] == 0:
        return 0
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0])


def applied_versions(con: duckdb.DuckDBPyConnection) -> set[int]:
    """Every migration the file has (empty for a new file)."""
    if not schema_version(con):
        return set()
    return {int(row[0]) for row in con.execute("SELECT version FROM schema_version").fetchall()}


def missing_versions(con: duckdb.DuckDBPyConnection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Migrations of this mini that the file lacks, older ones included: a file made by a development build
    can hold a later version without an earlier one (9 without 8)."""
    have = applied_versions(con)
    return [m.version for m in migrations if m.version not in have]


def apply_migrations(
    con: duckdb.DuckDBPyConnection, path: Path, migrations: tuple[Migration, ...] = MIGRATIONS
) -> list[int]:
    """Apply every migration the file lacks, in order; each one is all-or-nothing."""
    current = schema_version(con)
    have = applied_versions(con)
    if current == 0:
        has_tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()[0][0]
        if has_tables:
            raise StoreError(f"{path}: a DuckDB file with tables that are not mini's; use another --db path")
    applied = []
    for migration in migrations:
        if migration.version in have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(_VERSION_TABLE)
            for statement in filter(str.strip, migration.sql.split(";")):
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                [migration.version, migration.description],
            )
        except duckdb.Error as error:
            con.execute("ROLLBACK")
            raise StoreError(
                f"{path}: migration to schema version {migration.version} failed and was rolled back "
                f"({str(error).splitlines()[0]})"
            ) from None
        con.execute("COMMIT")
        applied.append(migration.version)
    return applied
