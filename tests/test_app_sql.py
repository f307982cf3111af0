"""The SQL screen (and its store functions), driven through Textual's Pilot on copies of the real app
database. Queries are typed and run with the real keys; results are compared with direct queries."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from store.db import Store
from store.errors import StoreError
from store.sql import WritesOffError, export_query_result, run_app_query
from tests.pilot import notifications, run_app
from tests.pilot import settle as settle_rounds
from tui.app import MiniApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.home import HomeScreen
from tui.screens.save_as import SaveAsScreen
from tui.screens.sql import SQLScreen
from tui.widgets.query_box import QueryBox
from tui.widgets.results_table import ResultsTable

RANKED = ("SELECT sae_id, rank, feature_id, round(score, 4) AS score, suggestion FROM rankings"
          " ORDER BY sae_id, rank LIMIT 20")
NEW_LABEL = "INSERT INTO labels (sae_id, feature_id, verdict, source) VALUES (1, 0, 'reject', 'person')"


async def settle(app: MiniApp, pilot: Pilot) -> None:
    await settle_rounds(app, pilot, 3)


def drive(path: Path, script: Callable[[MiniApp, Pilot], Coroutine[Any, Any, None]], *, max_rows: int | None = None,
          size: tuple[int, int] = (80, 24)) -> MiniApp:
    """The real app at `size` with the SQL screen open over Home and `script` at the keys."""
    async def before(app: MiniApp, pilot: Pilot) -> None:
        await settle(app, pilot)
        if max_rows is None:
            app.action_open("sql")
        else:
            app.push_screen(SQLScreen(app.stores, max_rows=max_rows))
        await settle(app, pilot)

    return run_app(MiniApp(Store.open(path), run_id=1), script, size=size, before=before)


async def run(app: MiniApp, pilot: Pilot, sql: str, key: str = "f5", *, typed: bool = False,
              wait: bool = True) -> None:
    """Put `sql` in the box (typed key by key when `typed`; each key costs a frame) and run it with `key`;
    then, when `wait`, let it finish."""
    box = app.screen.query_one(QueryBox)
    box.focus()
    if typed:
        box.clear()
        await pilot.press(*sql)
    else:
        box.load_text(sql)
    await pilot.press(key)
    if wait:
        await settle(app, pilot)


def replace_name(default: Path, path: Path) -> list[str]:
    """Keys that turn the save box's path into `path` (same folder): to the end (the box opens with its
    text selected, so a key would replace all of it), erase the name, type the new one."""
    assert default.parent == path.parent
    return ["end", *["backspace"] * len(default.name), *path.name]


def message(app: MiniApp) -> str:
    return str(app.screen.query_one("#message", Static).render())


def shown_rows(app: MiniApp) -> list[tuple]:
    table = app.screen.query_one(ResultsTable)
    return [tuple(table.get_row_at(i)) for i in range(table.row_count)]


def direct(path: Path, sql: str) -> list[tuple]:
    with Store.open(path, read_only=True) as db:
        return db.con.execute(sql).fetchall()


# -- the store's read-only guard ---------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    NEW_LABEL, "UPDATE labels SET note = 'x'", "DELETE FROM labels", "DROP TABLE labels", "CREATE TABLE t (a INT)",
    "COPY labels TO '{dir}/labels.csv'", "ATTACH ':memory:' AS m", "SET threads = 1", "PRAGMA enable_profiling",
    "COMMIT", "CHECKPOINT; DELETE FROM labels", "EXPORT DATABASE '{dir}/out'",
    "EXPLAIN ANALYZE COPY labels TO '{dir}/labels.csv'", "INSTALL httpfs", "CALL force_checkpoint()",
    "CALL enable_logging(storage = 'file', storage_path = '{dir}/out')",
])
def test_writes_off_refuses_statements_that_change_anything(app_db: Path, sql: str) -> None:
    sql = sql.replace("{dir}", str(app_db.parent))
    with Store.open(app_db) as db:
        labels = db.scalar("SELECT count(*) FROM labels")
        with pytest.raises(WritesOffError, match="writes are off"):
            run_app_query(db, sql, writes=False, max_rows=10)
        assert db.scalar("SELECT count(*) FROM labels") == labels
        assert db.scalar("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'm'") == 0
    assert not (app_db.parent / "labels.csv").exists() and not (app_db.parent / "out").exists()


def test_writes_off_catches_a_write_hidden_inside_a_reading_statement(app_db: Path) -> None:
    with Store.open(app_db) as db:
        db.con.execute("CREATE SEQUENCE counter")
        with pytest.raises(WritesOffError, match="tried to write"):
            run_app_query(db, "SELECT nextval('counter')", writes=False, max_rows=10)
        # EXPLAIN ANALYZE runs what it explains, so the statement inside is checked before anything runs
        with pytest.raises(WritesOffError, match="DELETE statements can change files or the database"):
            run_app_query(db, "EXPLAIN ANALYZE DELETE FROM labels", writes=False, max_rows=10)
        assert db.scalar("SELECT nextval('counter')") == 1  # the refused call did not advance it
        assert db.scalar("SELECT count(*) FROM labels") == 6


def test_reads_run_and_a_big_result_is_cut_at_max_rows(app_db: Path) -> None:
    with Store.open(app_db) as db:
        for sql in ("SHOW TABLES", "DESCRIBE labels", "CALL duckdb_tables()", "EXPLAIN SELECT 1",
                    "PRAGMA table_info('labels')", "EXPLAIN ANALYZE SELECT count(*) FROM labels",
                    "PIVOT examples ON split USING count(*) GROUP BY dataset_id", "SELECT 1; SELECT 2 AS b"):
            assert run_app_query(db, sql, writes=False, max_rows=10).table is not None
        result = run_app_query(db, "SELECT * FROM range(250000) t(i)", writes=False, max_rows=1000)
        assert result.truncated and result.table.num_rows == 1000 and result.rerun_sql is not None
        with pytest.raises(StoreError, match="empty"):
            run_app_query(db, "  -- nothing\n", writes=False, max_rows=10)


# -- the screen ----------------------------------------------------------------------------------------------


def test_select_shows_the_rows_a_direct_query_returns(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["screen"] = app.screen
        seen["focus"] = app.focused
        await run(app, pilot, RANKED, typed=True)
        seen["rows"] = shown_rows(app)
        seen["columns"] = app.screen.query_one(ResultsTable).arrow.column_names
        seen["message"] = message(app)

    drive(app_db, script)
    assert isinstance(seen["screen"], SQLScreen) and isinstance(seen["focus"], QueryBox)
    assert seen["rows"] == direct(app_db, RANKED)
    assert seen["columns"] == ["sae_id", "rank", "feature_id", "score", "suggestion"]
    assert seen["message"] == "20 rows × 5 columns."


@pytest.mark.parametrize("key", ["f5", "ctrl+r", "ctrl+enter"])
def test_every_run_key_runs_the_query(app_db: Path, key: str) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT count(*) AS n FROM labels", key=key)
        seen["rows"] = shown_rows(app)

    drive(app_db, script)
    assert seen["rows"] == [(6,)]


def test_a_write_is_refused_while_read_only_and_runs_after_confirming(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, NEW_LABEL)
        seen["refused"] = message(app)
        seen["refused_is_error"] = app.screen.query_one("#message").has_class("error")
        await pilot.press("ctrl+t")
        seen["asked"] = app.screen
        await pilot.press("n")
        seen["after_no"] = app.screen.writes
        await run(app, pilot, NEW_LABEL)
        seen["still_refused"] = message(app)
        await pilot.press("ctrl+t")
        await pilot.press("y")
        seen["mode"] = str(app.screen.query_one("#mode", Static).render())
        await run(app, pilot, NEW_LABEL)
        seen["written"] = message(app)
        await pilot.press("ctrl+t")  # off again, no question asked
        seen["mode_after"] = str(app.screen.query_one("#mode", Static).render())
        await run(app, pilot, NEW_LABEL)
        seen["refused_again"] = message(app)

    drive(app_db, script)
    assert seen["refused"] == ("Refused: INSERT statements can change files or the database, and writes are off "
                               "(ctrl+t turns writes on).")
    assert seen["refused_is_error"]
    assert isinstance(seen["asked"], ConfirmScreen) and "no undo" in seen["asked"].question
    assert seen["after_no"] is False and seen["still_refused"].startswith("Refused")
    assert seen["mode"] == "WRITES ON" and seen["written"] == "INSERT changed 1 row; committed."
    assert seen["mode_after"] == "read-only" and seen["refused_again"].startswith("Refused")
    assert direct(app_db, "SELECT count(*) FROM labels WHERE feature_id = 0 AND verdict = 'reject'") == [(1,)]


def test_the_empty_box_suggests_a_query_that_runs_and_the_hint_lists_every_table(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["suggested"] = str(app.screen.query_one(QueryBox).placeholder)
        seen["hint"] = str(app.screen.query_one("#placeholder", Static).render())
        app.screen.query_one(QueryBox).clear()
        await pilot.press("f5")
        await settle(app, pilot)
        seen["empty"] = message(app)
        await run(app, pilot, seen["suggested"].split("   ")[0])
        seen["rows"] = shown_rows(app)

    drive(app_db, script)
    with Store.open(app_db, read_only=True) as db:
        names = [name for (name,) in db.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            " ORDER BY table_name").fetchall()]
        expected = db.frame("SELECT * FROM rankings LIMIT 50").rows()
    assert seen["suggested"] == "SELECT * FROM rankings LIMIT 50   (f5 or ctrl+r runs it)"
    assert seen["empty"] == "Type a query first, e.g. SELECT * FROM rankings LIMIT 50."
    assert "rankings" in names and "current_labels" in names
    assert f"Tables and views: {', '.join(names)}." in seen["hint"].replace("\n", " ")
    assert len(seen["rows"]) == len(expected) == 50


def test_errors_show_inline_in_one_line(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELEC 1")
        seen["syntax"] = message(app)
        await run(app, pilot, "SELECT * FROM no_such_table")
        seen["missing"] = message(app)
        seen["screen"] = app.screen

    drive(app_db, script)
    assert seen["syntax"].startswith("Query failed: Parser Error: syntax error") and "\n" not in seen["syntax"]
    assert seen["missing"].startswith("Query failed: Catalog Error: Table with name no_such_table does not exist")
    assert isinstance(seen["screen"], SQLScreen)


def test_export_writes_csv_and_parquet_that_read_back_equal(app_db: Path) -> None:
    csv_path, parquet_path = app_db.parent / "ranked.csv", app_db.parent / "ranked.parquet"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await pilot.press("ctrl+s")
        seen["nothing_yet"] = notifications(app)
        await run(app, pilot, RANKED)
        for path in (csv_path, parquet_path):
            await pilot.press("ctrl+s")
            default = Path(app.screen.query_one("#path", Input).value)
            seen.setdefault("default", str(default))
            await pilot.press(*replace_name(default, path.with_suffix(".txt")), "enter")
            seen.setdefault("bad_suffix", str(app.screen.query_one("#error", Static).render()))
            await pilot.press(*replace_name(path.with_suffix(".txt"), path), "enter")
            await settle(app, pilot)
        seen["message"] = message(app)

    drive(app_db, script)
    assert "Run a query first: there is nothing to export." in seen["nothing_yet"]
    assert seen["default"] == str(app_db.parent / "results.csv")
    assert seen["bad_suffix"] == "path: end the file name in .csv or .parquet"
    assert not csv_path.with_suffix(".txt").exists()
    expected = pl.DataFrame(direct(app_db, RANKED), orient="row",
                            schema=["sae_id", "rank", "feature_id", "score", "suggestion"])
    assert pl.read_parquet(parquet_path).cast(expected.schema).equals(expected)
    assert pl.read_csv(csv_path).cast(expected.schema).equals(expected)
    assert seen["message"] == f"Exported 20 rows to {parquet_path}."


def test_a_result_cut_at_max_rows_says_so_and_exports_every_row(app_db: Path) -> None:
    sql = "SELECT sae_id, example_id, feature_id, value FROM activations ORDER BY sae_id, example_id, feature_id"
    path = app_db.parent / "activations.parquet"
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, sql)
        seen["message"] = message(app)
        seen["shown"] = shown_rows(app)
        await pilot.press("ctrl+s", *replace_name(app_db.parent / "results.csv", path), "enter")
        await settle(app, pilot)

    drive(app_db, script, max_rows=500)
    every = direct(app_db, sql)
    assert seen["message"] == "First 500 rows shown × 4 columns; there are more (ctrl+s exports every row)."
    assert seen["shown"] == every[:500]
    assert pl.read_parquet(path).rows() == every


def test_a_150k_row_result_shows_its_first_100k_rows(app_db: Path) -> None:
    """How quickly it appears is bench/sql.py's to measure (a timing here would fail on a busy machine)."""
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT i, i * 0.5 AS half, 'row ' || i AS label FROM range(150000) t(i)")
        seen["message"] = message(app)
        table = app.screen.query_one(ResultsTable)
        table.focus()
        await pilot.press("ctrl+end")
        seen["last"] = table.get_row_at(table.cursor_row)

    drive(app_db, script)
    assert seen["message"].startswith("First 100,000 rows shown × 3 columns")
    assert seen["last"] == [99999, 49999.5, "row 99999"]


def test_c_copies_the_cell_and_shift_c_the_row(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, RANKED)
        await pilot.press("tab")
        seen["focus"] = app.focused
        await pilot.press("down", "down", "right", "right", "right", "right", "c")
        seen["cell"] = app.clipboard
        await pilot.press("C")
        seen["row"] = app.clipboard
        await pilot.press("up", "ctrl+c")
        seen["ctrl_c"] = app.clipboard
        seen["notes"] = notifications(app)
        await pilot.press("shift+tab")
        seen["back"] = app.focused

    drive(app_db, script)
    rows = direct(app_db, RANKED)
    assert isinstance(seen["focus"], ResultsTable) and isinstance(seen["back"], QueryBox)
    assert seen["cell"] == rows[2][4]
    assert seen["row"] == "\t".join(str(value) for value in rows[2])
    assert seen["ctrl_c"] == rows[1][4]
    assert f"Copied row 3, suggestion ({len(rows[2][4])} characters) to the clipboard." in seen["notes"]


def test_up_and_down_walk_through_the_queries_run(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT 1 AS a")
        await run(app, pilot, "SELECT 2 AS b")
        box = app.screen.query_one(QueryBox)
        box.clear()
        await pilot.press(*"SELECT 3")
        await pilot.press("up")
        seen["one_back"] = box.text
        await pilot.press("up")
        seen["two_back"] = box.text
        await pilot.press("up")
        seen["oldest"] = box.text
        await pilot.press("down", "down")
        seen["draft"] = box.text
        await pilot.press("ctrl+l")
        seen["cleared"] = box.text
        await pilot.press("up")
        seen["after_clear"] = box.text

    drive(app_db, script)
    assert (seen["one_back"], seen["two_back"], seen["oldest"]) == ("SELECT 2 AS b", "SELECT 1 AS a", "SELECT 1 AS a")
    assert seen["draft"] == "SELECT 3"
    assert seen["cleared"] == "" and seen["after_clear"] == "SELECT 2 AS b"


def test_escape_stops_a_running_query_then_goes_back(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT sum(hash(range)) FROM range(20000000000)", wait=False)
        for _ in range(50):  # until the worker's cursor holds the query
            await pilot.pause(0.02)
            if app.screen._query_cursor is not None:
                break
        await pilot.press("escape")
        seen["stopping"] = message(app)
        await settle(app, pilot)
        seen["stopped"] = message(app)
        seen["screen"] = app.screen
        await pilot.press("escape")
        await pilot.pause()
        seen["after"] = app.screen

    drive(app_db, script)
    assert seen["stopping"] in ("Stopping the query…", "Stopped.")  # the interrupt may land at once
    assert seen["stopped"] == "Stopped."
    assert isinstance(seen["screen"], SQLScreen) and isinstance(seen["after"], HomeScreen)


def test_confirm_enter_means_no_and_escape_means_no(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await pilot.press("ctrl+t", "enter")
        seen["enter"] = app.screen.writes
        await pilot.press("ctrl+t", "escape")
        seen["escape"] = app.screen.writes
        await pilot.press("ctrl+t", "left", "right", "enter")  # left moves to Yes, right back to No
        seen["left_right_enter"] = app.screen.writes
        await pilot.press("ctrl+t", "left", "enter")
        seen["left_enter"] = app.screen.writes

    drive(app_db, script)
    assert seen == {"enter": False, "escape": False, "left_right_enter": False, "left_enter": True}


def test_a_result_without_rows_shows_its_columns_and_a_create_says_it_ran(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT label_id, note FROM labels WHERE false")
        table = app.screen.query_one(ResultsTable)
        seen["empty"] = (message(app), table.row_count, table.arrow.column_names)
        await pilot.press("ctrl+t", "y")
        await run(app, pilot, "CREATE TABLE my_notes AS SELECT label_id, 'checked' AS note FROM labels")
        seen["created"] = message(app)

    drive(app_db, script)
    assert seen["empty"] == ("0 rows × 2 columns.", 0, ["label_id", "note"])
    assert seen["created"] == "CREATE ran; committed."
    assert direct(app_db, "SELECT count(*) FROM my_notes") == [(6,)]


def test_export_to_an_existing_file_asks_first(app_db: Path) -> None:
    path = app_db.parent / "results.csv"
    path.write_text("keep", encoding="utf-8")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT 42 AS answer")
        await pilot.press("ctrl+s", "enter")
        seen["asked"] = app.screen
        await pilot.press("n", "escape")
        await settle(app, pilot)
        seen["kept"] = path.read_text(encoding="utf-8")
        await pilot.press("ctrl+s", "enter", "y")
        await settle(app, pilot)

    drive(app_db, script)
    assert isinstance(seen["asked"], ConfirmScreen) and seen["kept"] == "keep"
    assert path.read_text(encoding="utf-8") == "answer\n42\n"


def test_save_as_cancel_writes_nothing(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await run(app, pilot, "SELECT 42 AS answer")
        await pilot.press("ctrl+s")
        seen["asked"] = app.screen
        await pilot.press("escape")
        await settle(app, pilot)
        seen["after"] = app.screen

    drive(app_db, script)
    assert isinstance(seen["asked"], SaveAsScreen) and isinstance(seen["after"], SQLScreen)
    assert not (app_db.parent / "results.csv").exists()


def test_export_of_a_truncated_result_counts_what_it_wrote(app_db: Path) -> None:
    with Store.open(app_db) as db:
        result = run_app_query(db, "SELECT * FROM range(5000) t(i)", writes=False, max_rows=100)
        assert export_query_result(db, result, app_db.parent / "all.csv") == 5000
        with pytest.raises(StoreError, match=r"\.csv or \.parquet"):
            export_query_result(db, result, app_db.parent / "all.xlsx")
    assert pl.read_csv(app_db.parent / "all.csv")["i"].to_list() == list(range(5000))


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.
