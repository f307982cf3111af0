"""`e` exports in the app: the SQL screen's result (as ctrl+s does) and the Features list as shown, through
SaveAsScreen with the default folder rule (engine.exports), driven by Pilot on copies of the app database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from engine.exports import EXPORT_HOME
from tests.app_data import copy_database
from tests.pilot import notifications, until
from tests.test_app_features import drive as drive_features
from tests.test_app_features import open_features, prompt, ranking, shown_column
from tests.test_app_sql import direct, replace_name
from tests.test_app_sql import drive as drive_sql
from tests.test_app_sql import run as run_sql
from tests.test_export_folder import git_repository
from tui.app import MiniApp
from tui.screens.features import COLUMNS, FeaturesScreen
from tui.screens.save_as import SaveAsScreen
from tui.screens.sql import SQLScreen
from tui.widgets.query_box import QueryBox
from tui.widgets.results_table import ResultsTable

RANKED = "SELECT sae_id, rank, feature_id, score, suggestion FROM rankings ORDER BY sae_id, rank"


async def written(pilot: Pilot, path: Path) -> None:
    """Wait for the export worker to put the file in place (and say so)."""
    await until(pilot, lambda: path.exists() and any(str(path) in n for n in notifications(pilot.app)))


def test_e_in_the_sql_results_exports_and_in_the_query_box_is_a_letter(app_db: Path) -> None:
    target = app_db.parent / "ranked.parquet"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run_sql(app, pilot, RANKED)
        box = app.screen.query_one(QueryBox)
        box.focus()
        box.move_cursor(box.document.end)
        await pilot.press("e")  # typing: the box keeps the letter, nothing is asked
        seen["box"], seen["after_letter"] = box.text, app.screen
        await pilot.press("backspace")
        app.screen.query_one(ResultsTable).focus()
        await pilot.pause()
        await pilot.press("e")
        seen["asked"] = app.screen
        default = Path(app.screen.query_one("#path", Input).value)
        seen["default"] = default
        await pilot.press(*replace_name(default, target), "enter")
        await until(pilot, target.exists)
        await pilot.pause()
        seen["back"] = app.screen

    drive_sql(app_db, script)
    assert seen["box"] == RANKED + "e" and isinstance(seen["after_letter"], SQLScreen)
    assert isinstance(seen["asked"], SaveAsScreen) and seen["default"] == app_db.parent / "results.csv"
    expected = pl.DataFrame(direct(app_db, RANKED), orient="row",
                            schema=["sae_id", "rank", "feature_id", "score", "suggestion"])
    assert pl.read_parquet(target).cast(expected.schema).equals(expected)
    assert isinstance(seen["back"], SQLScreen)


def test_e_in_features_writes_the_rows_as_shown(app_db: Path) -> None:
    csv_path, parquet_path = app_db.parent / "shown.csv", app_db.parent / "shown.parquet"
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await prompt(pilot, "slash", "score>0.48")
        await pilot.press("s")  # by score, highest first
        seen["shown"] = shown_column(screen, "feature")
        seen["headers"] = [header for _, header in COLUMNS]
        for path in (csv_path, parquet_path):
            await pilot.press("e")
            assert isinstance(app.screen, SaveAsScreen)
            default = Path(app.screen.query_one("#path", Input).value)
            seen.setdefault("default", default)
            await pilot.press(*replace_name(default, path), "enter")
            await written(pilot, path)
        seen["screen"] = app.screen

    drive_features(app_db, script)
    assert seen["default"] == app_db.parent / "features_run1_sae1.csv"
    assert isinstance(seen["screen"], FeaturesScreen)
    want = expected.filter(pl.col("score") > 0.48).sort("score", descending=True, maintain_order=True)
    assert seen["shown"] == want["feature_id"].to_list() and 0 < want.height < expected.height
    for frame in (pl.read_csv(csv_path), pl.read_parquet(parquet_path)):
        assert frame.columns == ["sae", *seen["headers"]]
        assert frame["feature"].to_list() == seen["shown"]
        assert set(frame["sae"].to_list()) == {1}
        # The exact numbers, not the three places the table shows.
        assert frame["score"].to_list() == pytest.approx(want["score"].to_list(), rel=1e-12)
        assert frame["MIS"].to_list() == pytest.approx(want["mis"].to_list(), rel=1e-12, nan_ok=True)
        assert frame["density %"].to_list() == pytest.approx((want["density"] * 100).to_list(), rel=1e-12)
        assert frame["first suggestion"].to_list() == want["suggestion"].to_list()


def test_e_in_features_defaults_outside_the_git_work_tree(app_db_template: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    repo = git_repository(tmp_path / "repo")
    db = copy_database(app_db_template, repo, "lab.duckdb")
    target = home / EXPORT_HOME / "lab" / "features_run1_sae1.csv"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await pilot.press("slash", "e")  # in the filter box e is a letter
        seen["typed"] = screen.query_one("#prompt", Input).value
        seen["after_letter"] = app.screen
        await pilot.press("escape", "e")
        seen["default"] = app.screen.query_one("#path", Input).value
        await pilot.press("enter")  # the folder does not exist yet: made when written
        await written(pilot, target)

    drive_features(db, script)
    assert seen["typed"] == "e" and isinstance(seen["after_letter"], FeaturesScreen)
    assert seen["default"] == str(target)
    assert pl.read_csv(target)["feature"].to_list() == ranking(db)["feature_id"].to_list()
    assert sorted(p.name for p in repo.iterdir()) == [".git", "lab.duckdb"]
