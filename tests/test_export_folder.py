"""Where exports go by default: beside the database, or outside the git work tree that holds it.

One rule (engine.exports.default_export_folder) for the app's report and SQL export and for `mini report`
without --out; the app is driven through Pilot and the CLI run as a subprocess, HOME pointed into tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from engine.exports import EXPORT_HOME, default_export_folder, git_work_tree
from tests.app_data import copy_database
from tests.conftest import run_cli
from tests.test_app_sql import drive as drive_sql
from tests.test_app_sql import run as run_sql
from tests.test_app_validation import drive as drive_validation
from tests.test_app_validation import export_report
from tui.app import MiniApp
from tui.screens.save_as import SaveAsScreen


def git_repository(folder: Path) -> Path:
    """A real git work tree (git init), or a bare `.git` folder where git is not installed."""
    folder.mkdir(parents=True)
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(folder)], check=True)
    else:
        (folder / ".git").mkdir()
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_outside_a_work_tree_the_default_is_the_database_folder(tmp_path: Path, home: Path) -> None:
    db = tmp_path / "plain" / "session.duckdb"
    db.parent.mkdir()
    assert git_work_tree(db.parent) is None
    assert default_export_folder(db) == db.parent


def test_inside_a_work_tree_the_default_is_outside_it(tmp_path: Path, home: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    db = repo / "data" / "deep" / "session.duckdb"
    db.parent.mkdir(parents=True)
    assert git_work_tree(db.parent) == repo
    assert default_export_folder(db) == home / EXPORT_HOME / "session"
    assert not (home / EXPORT_HOME).exists()  # named, not made: the writer makes it


def test_a_worktree_git_file_counts_as_a_work_tree(tmp_path: Path, home: Path) -> None:
    tree = tmp_path / "wt"
    tree.mkdir()
    (tree / ".git").write_text("gitdir: /elsewhere/.git/worktrees/wt\n")  # what `git worktree add` leaves
    assert default_export_folder(tree / "x.duckdb") == home / EXPORT_HOME / "x"


def test_cli_report_without_out_goes_outside_the_work_tree(app_db_template: Path, tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    before = sorted(p.name for p in repo.iterdir())
    result = run_cli("report", "--run", "1", "--db", str(db), cwd=repo, env=env)
    assert result.returncode == 0, result.stderr
    report = home / EXPORT_HOME / "lab" / "report_run1.md"
    assert report.read_text(encoding="utf-8").startswith("# mini report: run 1")
    assert (report.parent / "report_run1_tables" / "validations.csv").exists()
    assert f"wrote {report} " in result.stdout and f"git work tree {repo}" in result.stdout
    assert sorted(p.name for p in repo.iterdir()) == before  # nothing new in the work tree


def test_cli_report_without_out_goes_beside_a_database_outside_git(app_db: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    result = run_cli("report", "--run", "1", "--db", str(app_db), cwd=elsewhere, env=env)
    assert result.returncode == 0, result.stderr
    assert f"wrote {app_db.parent / 'report_run1.md'} " in result.stdout and "git work tree" not in result.stdout
    assert not list(elsewhere.iterdir()) and not (tmp_path / "home").exists()


def test_cli_report_with_out_is_unchanged_inside_a_work_tree(app_db_template: Path, tmp_path: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    result = run_cli("report", "--run", "1", "--out", "mine.md", "--db", str(db), cwd=repo,
                     env={**os.environ, "HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert (repo / "mine.md").exists() and not (tmp_path / "home").exists()


def test_app_report_export_defaults_outside_the_work_tree(app_db_template: Path, tmp_path: Path,
                                                          home: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    report = home / EXPORT_HOME / "lab" / "report_run1.md"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        # The folder does not exist yet: the offered path is accepted, the folder made when written.
        seen["prompt"], seen["default"] = await export_report(app, pilot)

    drive_validation(db, script)
    assert isinstance(seen["prompt"], SaveAsScreen)
    assert seen["default"] == str(report)
    assert report.read_text(encoding="utf-8").startswith("# mini report: run 1 on 'sample'")
    assert not (repo / "report_run1.md").exists()


async def sql_export_prompt(app: MiniApp, pilot: Pilot, query: str) -> str:
    """Run `query` on the SQL screen and press ctrl+s; returns the path the save prompt offers."""
    await run_sql(app, pilot, query)
    await pilot.press("ctrl+s")
    await pilot.pause()
    return app.screen.query_one("#path", Input).value


def test_app_sql_export_defaults_outside_the_work_tree(app_db_template: Path, tmp_path: Path, home: Path) -> None:
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    target = home / EXPORT_HOME / "lab" / "results.csv"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["default"] = await sql_export_prompt(app, pilot, "SELECT 42 AS answer")
        await pilot.press("enter")
        for _ in range(50):  # the export runs on a worker thread
            await pilot.pause(0.05)
            if target.exists():
                break

    drive_sql(db, script)
    assert seen["default"] == str(target)
    assert target.read_text(encoding="utf-8") == "answer\n42\n"
    assert not (repo / "results.csv").exists()


def test_app_sql_export_beside_a_database_outside_git(app_db: Path, home: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["default"] = await sql_export_prompt(app, pilot, "SELECT 1 AS one")
        await pilot.press("escape")

    drive_sql(app_db, script)
    assert seen["default"] == str(app_db.parent / "results.csv")
    assert not (home / EXPORT_HOME).exists()
