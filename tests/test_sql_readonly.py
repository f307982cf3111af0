"""`mini sql` without --write changes neither the database nor any file and reaches no network: the real CLI
in a subprocess on a copy of the real app database, the file hashed before and after."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from store.db import Store


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# (what is typed, the name the refusal gives it); {dir} is the test's folder.
REFUSED = [
    ("COPY labels TO '{dir}/labels.csv'", "COPY statements"),
    ("COPY (SELECT 1 AS a) TO '{dir}/one.parquet' (FORMAT parquet)", "COPY statements"),
    ("COPY labels FROM '{dir}/labels.csv'", "COPY statements"),
    ("EXPORT DATABASE '{dir}/out'", "EXPORT statements"),
    ("IMPORT DATABASE '{dir}/out'", "IMPORT statements"),
    ("INSTALL httpfs", "INSTALL statements"),
    ("LOAD httpfs", "LOAD statements"),
    ("ATTACH '{dir}/other.duckdb' AS other", "ATTACH statements"),
    ("DETACH other", "DETACH statements"),
    ("SET threads = 1", "SET statements"),
    ("RESET threads", "RESET statements"),
    ("SET VARIABLE x = 1", "SET statements"),
    ("CREATE TABLE t (a INT)", "CREATE statements"),
    ("DELETE FROM labels", "DELETE statements"),
    ("SELECT 1; DELETE FROM labels", "DELETE statements"),
    ("CHECKPOINT", "CHECKPOINT statements"),
    ("PRAGMA enable_profiling", "PRAGMA statements"),
    ("PRAGMA profiling_output = '{dir}/profile.json'", "PRAGMA statements"),
    ("-- a comment first\nEXPLAIN ANALYZE COPY labels TO '{dir}/labels.csv'", "COPY statements"),
    # table functions that write a file or the database, wherever they are called from
    ("CALL enable_logging(storage = 'file', storage_path = '{dir}/logs')", "the table function enable_logging()"),
    ("SELECT * FROM enable_logging(storage = 'file', storage_path = '{dir}/logs')",
     "the table function enable_logging()"),
    ("WITH x AS (SELECT * FROM force_checkpoint()) SELECT 1", "the table function force_checkpoint()"),
    ("PIVOT (FROM checkpoint()) ON database USING count(*)", "the table function checkpoint()"),
    ("SELECT * FROM query('SELECT 1')", "the table function query()"),
]


@pytest.mark.parametrize(("sql", "name"), REFUSED, ids=[sql.split("'")[0][:40] for sql, _ in REFUSED])
def test_read_only_sql_refuses_what_writes_and_changes_nothing(app_db: Path, cli, sql: str, name: str) -> None:
    folder = app_db.parent
    (folder / "labels.csv").unlink(missing_ok=True)
    before, files = digest(app_db), files_in(folder)
    result = cli("sql", "--db", str(app_db), sql.replace("{dir}", str(folder)))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [f"mini: error: {name} can change files or the database, and writes are off; "
                     "add --write to run it"], result.stderr
    assert digest(app_db) == before
    assert files_in(folder) == files  # no file written (nor a .wal left behind)


@pytest.mark.parametrize("sql", [
    "SELECT count(*) AS n FROM labels", "SHOW TABLES", "DESCRIBE labels", "SUMMARIZE labels",
    "PRAGMA table_info('labels')", "CALL pragma_table_info('labels')", "CALL duckdb_tables()",
    "EXPLAIN SELECT 1", "EXPLAIN ANALYZE SELECT count(*) FROM labels",
    "PIVOT examples ON split USING count(*) GROUP BY dataset_id",
    "SELECT * FROM range(3) t(i), (SELECT count(*) FROM generate_series(1, 4))",
])
def test_read_only_sql_runs_what_only_reads(app_db: Path, cli, sql: str) -> None:
    before = digest(app_db)
    result = cli("sql", "--db", str(app_db), "--format", "csv", sql)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and result.stderr == ""
    assert digest(app_db) == before


def test_read_only_sql_reads_files_the_user_can_read(app_db: Path, cli) -> None:
    """Reading a file through SQL is allowed (README says so): it gives no access the user lacks."""
    data = app_db.parent / "points.csv"
    data.write_text("x,y\n1,2\n3,4\n")
    before = digest(app_db)
    for sql in (f"SELECT sum(y) AS total FROM '{data}'", f"SELECT sum(y) AS total FROM read_csv('{data}')"):
        result = cli("sql", "--db", str(app_db), "--format", "csv", sql)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["total", "6"]
    assert digest(app_db) == before


def test_write_runs_copy_to_a_file(app_db: Path, cli) -> None:
    out = app_db.parent / "labels.csv"
    result = cli("sql", "--db", str(app_db), "--write", f"COPY (SELECT feature_id FROM labels ORDER BY 1) TO '{out}'")
    assert result.returncode == 0, result.stderr
    with Store.open(app_db, read_only=True) as db:
        expected = [row[0] for row in db.con.execute("SELECT feature_id FROM labels ORDER BY 1").fetchall()]
    assert out.read_text().split() == ["feature_id", *map(str, expected)]


def test_no_connection_installs_or_loads_an_extension_by_itself(app_db: Path, cli) -> None:
    for read_only in (True, False):
        with Store.open(app_db, read_only=read_only) as db:
            settings = db.con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                                      "current_setting('autoload_known_extensions')").fetchall()
            assert settings == [(False, False)]
    # A remote file needs httpfs, which is neither fetched nor loaded: one line, nothing downloaded.
    result = cli("sql", "--db", str(app_db), "SELECT * FROM read_csv('https://example.invalid/data.csv')")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "httpfs" in result.stderr
