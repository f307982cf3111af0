"""Small defects of issue 17, each driven through Textual's Pilot on the real app database (tests/app_data.py):
a failed SQL query clears the results above it, a switched SAE opens at its first rank, counts agree with
their nouns, and every screen's header reads the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Header, Static

from store.db import Store
from tests.pilot import notifications, plain, run_app, screen_after, until
from tests.test_app_features import cursor_feature, open_features, ranking
from tests.test_app_features import drive as drive_features
from tests.test_app_sql import RANKED, run, shown_rows
from tests.test_app_sql import drive as drive_sql
from tui.app import MiniApp
from tui.screen_registry import SCREENS
from tui.screens.confirm import ConfirmScreen
from tui.screens.home import delete_question
from tui.widgets.arrow_table import ArrowTable
from tui.widgets.results_table import ResultsTable


def test_a_failed_query_clears_the_previous_results(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, RANKED)
        seen["before"] = len(shown_rows(app))
        await run(app, pilot, "SELECT * FROM no_such_table")
        screen = app.screen
        seen["tables"] = len(screen.query(ResultsTable))
        seen["placeholder"] = plain(screen.query_one("#placeholder", Static).content).strip()
        await pilot.press("ctrl+s")  # nothing to export: the failed query has no result
        await pilot.pause()
        seen["export"] = notifications(app)[-1]

    drive_sql(app_db, script)
    assert seen["before"] == 20
    assert seen["tables"] == 0
    assert seen["placeholder"] == "No results: the query above failed."
    assert seen["export"] == "Run a query first: there is nothing to export."


def test_switching_sae_opens_the_other_sae_at_its_first_rank(app_db: Path) -> None:
    first, second = ranking(app_db, 1), ranking(app_db, 2)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        table = screen.query_one(ArrowTable)
        table.move_cursor(row=5)
        await pilot.pause()
        seen["kept"] = cursor_feature(screen)
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: screen.sae_id == 2 and screen.features.height)
        await pilot.pause()
        seen["second"] = (table.cursor_row, cursor_feature(screen))
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.sae_id == 1)
        await pilot.pause()
        seen["back"] = (table.cursor_row, cursor_feature(screen))
        # Sorting within one SAE still keeps the feature under the cursor.
        table.move_cursor(row=3)
        await pilot.pause()
        seen["before_sort"] = cursor_feature(screen)
        await pilot.press("s")
        await pilot.pause()
        seen["after_sort"] = cursor_feature(screen)

    drive_features(app_db, script)
    assert seen["kept"] == first["feature_id"][5]
    assert seen["second"] == (0, second["feature_id"][0])
    assert seen["back"] == (0, first["feature_id"][0])
    assert seen["after_sort"] == seen["before_sort"]


def test_the_delete_question_counts_in_the_singular_and_the_plural() -> None:
    one = {"dataset": "reach", "n_saes": 1, "labelled": 1}
    assert delete_question(3, one) == ("Delete run 3 on 'reach' with its 1 SAE, ranking, 1 labelled feature and "
                                       "validations? This cannot be undone.")
    none = {"dataset": "reach", "n_saes": 0, "labelled": None}
    assert "with its 0 SAEs, ranking, 0 labelled features and" in delete_question(4, none)


def test_d_on_home_asks_with_the_run_s_counts(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["screen"] = await screen_after(pilot, "tab", "d")
        seen["question"] = plain(app.screen.query_one("#question", Static).content, width=400).strip()
        await pilot.press("n")

    async def before(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        await pilot.pause()

    run_app(MiniApp(Store.open(app_db)), script, before=before)
    with Store.open(app_db, read_only=True) as db:
        labelled = db.scalar("SELECT count(*) FROM current_labels JOIN saes USING (sae_id) WHERE run_id = 1")
    assert isinstance(seen["screen"], ConfirmScreen)
    assert f"with its 2 SAEs, ranking, {labelled} labelled features and validations?" in seen["question"]


def test_every_screen_s_header_reads_mini_then_the_screen_and_what_it_shows(app_db: Path) -> None:
    headers: dict[str, str] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        headers["home"] = app.screen.query_one(Header).format_title().plain
        for name in SCREENS:
            app.action_open(name)
            await until(pilot, lambda name=name: type(app.screen).__name__ == SCREENS[name].cls)
            await app.workers.wait_for_complete()
            await pilot.pause()
            headers[name] = app.screen.query_one(Header).format_title().plain
            app.action_home()
            await pilot.pause()

    async def before(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        await pilot.pause()

    run_app(MiniApp(Store.open(app_db), run_id=1, dataset="sample"), script, size=(120, 40), before=before)
    assert headers["home"] == f"mini — {app_db}"
    assert headers["train"] == "mini — Train on sample"
    assert headers["qc"] == "mini — QC · run 1 on sample"
    assert headers["features"] == "mini — Features · run 1"
    assert headers["review"].startswith("mini — Review · run 1 · SAE ")
    assert headers["validation"] == "mini — Validation · run 1"
    assert headers["sql"] == "mini — SQL"
