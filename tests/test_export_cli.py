"""`mini export`, the real CLI in a subprocess on copies of the app database: tables, views and queries written
as Parquet and CSV and read back with polars, the refusals, the default location (never inside a git work
tree), and the database left byte-identical."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from engine.exports import EXPORT_HOME
from store import Store
from tests.app_data import copy_database
from tests.conftest import run_cli
from tests.test_export_folder import git_repository


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def direct(db: Path, sql: str) -> pl.DataFrame:
    with Store.open(db, read_only=True) as store:
        return store.frame(sql)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """HOME in tmp (the default folder of databases in git work trees lies under it); no MINI_DB."""
    (tmp_path / "home").mkdir()
    return {**{k: v for k, v in os.environ.items() if k != "MINI_DB"}, "HOME": str(tmp_path / "home")}


def export(db: Path, *args: str, env: dict[str, str], stdin: str | None = None):
    return run_cli("export", *args, "--db", str(db), cwd=db.parent, env=env, stdin=stdin)


def test_a_table_as_parquet_and_csv_reads_back_equal(app_db: Path, env: dict[str, str]) -> None:
    before = digest(app_db)
    expected = direct(app_db, "SELECT * FROM rankings")
    parquet = export(app_db, "rankings", env=env)
    csv = export(app_db, "RANKINGS", "--out", "r.csv", env=env)  # SQL names do not depend on case
    assert parquet.returncode == 0 and csv.returncode == 0, (parquet.stderr, csv.stderr)
    assert parquet.stdout == f"wrote {expected.height} rows to {app_db.parent / 'rankings.parquet'}\n"
    assert csv.stdout == f"wrote {expected.height} rows to {app_db.parent / 'r.csv'}\n"
    assert pl.read_parquet(app_db.parent / "rankings.parquet").equals(expected)
    assert pl.read_csv(app_db.parent / "r.csv", schema=expected.schema).equals(expected)
    assert digest(app_db) == before and not app_db.with_name(app_db.name + ".wal").exists()
    assert not list(app_db.parent.glob(".*.tmp"))


def test_a_view_keeps_its_column_types(app_db: Path, env: dict[str, str]) -> None:
    expected = direct(app_db, "SELECT * FROM current_validations")
    done = export(app_db, "current_validations", "--format", "parquet", "--out", "v.data", env=env)
    assert done.returncode == 0, done.stderr
    written = pl.read_parquet(app_db.parent / "v.data")  # the format as asked, whatever the suffix
    assert written.schema == expected.schema and written.equals(expected) and expected.height > 0


def test_a_query_from_the_option_or_stdin(app_db: Path, env: dict[str, str]) -> None:
    sql = ("SELECT sae_id, rank, feature_id, suggestion FROM rankings WHERE rank <= 5 ORDER BY sae_id, rank;"
           " -- the top five of each SAE")
    expected = direct(app_db, sql.split(";")[0])
    done = export(app_db, "--query", sql, "--format", "csv", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote 10 rows to {app_db.parent / 'query.csv'}\n"
    assert pl.read_csv(app_db.parent / "query.csv", schema=expected.schema).equals(expected)
    piped = export(app_db, "--query", "-", "--out", "piped.parquet", env=env, stdin=sql)
    assert piped.returncode == 0, piped.stderr
    assert pl.read_parquet(app_db.parent / "piped.parquet").equals(expected)


def test_refusals_name_the_problem_and_write_nothing(app_db: Path, env: dict[str, str]) -> None:
    (app_db.parent / "kept.csv").write_text("keep me\n", encoding="utf-8")
    before, files = digest(app_db), sorted(p.name for p in app_db.parent.iterdir())
    cases = {
        ("rankingz",): "rankingz: no table or view of that name in",
        ("--query", "DELETE FROM labels", "--out", "d.csv"): "--query: DELETE statements can change files",
        ("--query", "COPY labels TO 'x.csv'", "--out", "d.csv"): "--query: COPY statements",
        ("labels", "--format", "xlsx"): "argument --format: invalid choice: 'xlsx'",
        ("labels", "--out", "kept.csv"): "--out kept.csv: the file exists; add --force",
        ("labels", "--out", "nope/l.csv"): f"--out nope/l.csv: there is no folder {app_db.parent / 'nope'}",
        ("labels", "--out", "l.csv", "--format", "parquet"): "the name ends in .csv but --format is parquet",
        ("--query", "SELECT CASE WHEN i < 50000 THEN i ELSE error('stop at ' || i) END FROM range(100000) t(i)",
         "--out", "half.csv"): "stop at 50000",
    }
    for args, words in cases.items():
        done = export(app_db, *args, env=env)
        assert done.returncode == 2 and done.stdout == "", (args, done.stderr)
        assert done.stderr.startswith("mini: error: ") and done.stderr.count("\n") == 1, done.stderr
        assert words in done.stderr, (words, done.stderr)
    assert "did you mean rankings" in export(app_db, "rankingz", env=env).stderr
    assert digest(app_db) == before
    assert sorted(p.name for p in app_db.parent.iterdir()) == files  # no half file, no hidden temporary one
    assert (app_db.parent / "kept.csv").read_text(encoding="utf-8") == "keep me\n"
    assert not (Path(env["HOME"]) / EXPORT_HOME).exists()


def test_force_replaces_an_existing_file(app_db: Path, env: dict[str, str]) -> None:
    (app_db.parent / "labels.csv").write_text("old\n", encoding="utf-8")
    refused = export(app_db, "labels", "--format", "csv", env=env)
    assert refused.returncode == 2 and f"{app_db.parent / 'labels.csv'}: the file exists" in refused.stderr
    done = export(app_db, "labels", "--format", "csv", "--force", env=env)
    assert done.returncode == 0, done.stderr
    expected = direct(app_db, "SELECT * FROM labels")
    written = pl.read_csv(app_db.parent / "labels.csv", try_parse_dates=True)
    assert written.height == expected.height > 0
    assert written["feature_id"].to_list() == expected["feature_id"].to_list()


def test_the_default_location_lies_outside_a_git_work_tree(app_db_template: Path, tmp_path: Path,
                                                           env: dict[str, str]) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    before, files = digest(db), sorted(p.name for p in repo.iterdir())
    done = run_cli("export", "labels", "--db", str(db), cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    target = Path(env["HOME"]) / EXPORT_HOME / "lab" / "labels.parquet"
    assert done.stdout.startswith(f"wrote {direct(db, 'SELECT * FROM labels').height} rows to {target} ")
    assert f"git work tree {repo}" in done.stdout
    assert pl.read_parquet(target).equals(direct(db, "SELECT * FROM labels"))
    assert sorted(p.name for p in repo.iterdir()) == files and digest(db) == before
    refused = run_cli("export", "--query", "DROP TABLE labels", "--db", str(db), cwd=repo, env=env)
    assert refused.returncode == 2 and not (target.parent / "query.parquet").exists()


def test_a_refused_query_leaves_no_empty_default_folder(app_db_template: Path, tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    done = run_cli("export", "--query", "SELECT error('no')", "--db", str(db), cwd=repo, env=env)
    assert done.returncode == 2 and "--query: query failed" in done.stderr
    assert not (Path(env["HOME"]) / EXPORT_HOME).exists()
