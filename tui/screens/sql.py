"""SQL: a query box and a results table over the open database, read-only unless writes are turned on.

Queries run in a thread worker on their own cursor (the screen stays live; `esc` stops a slow one) and
come back as Arrow, shown by an Arrow-backed table; only the first `max_rows` rows are fetched, and an
export writes them all. Writes stay off until the person turns them on and confirms (store/sql.py says
how they are kept off while the app holds the file read-write).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Static
from textual.worker import get_current_worker

from tui.widgets.key_footer import KeyFooter
from tui.widgets.query_box import QueryBox

if TYPE_CHECKING:
    from store.db import Store
    from store.sql import AppQueryResult
    from tui.thread_stores import ThreadStores

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("f5, ctrl+r", "run the query (also ctrl+enter, if it arrives)"),
    ("up, down", "on the first / last line: the earlier / later query"),
    ("ctrl+l", "clear the query box (it stays in the history)"),
    ("tab, shift+tab", "move between the query box and the results"),
    ("arrows", "in the results: move; pgup, pgdn, home, end too"),
    ("c, ctrl+c", "in the results: copy the cell (OSC 52: over SSH too)"),
    ("C", "in the results: copy the row (tab-separated)"),
    ("e, ctrl+s", "export all rows to .csv or .parquet; asks where (e in the results, ctrl+s anywhere)"),
    ("ctrl+t", "turn writes on (asks to confirm) or off again"),
    ("esc", "stop the running query; otherwise back"),
)

MAX_ROWS = 100_000
"""Rows fetched and shown per query; an export runs the query again for the rest."""

WRITE_TYPES_WITH_COUNTS = frozenset({"INSERT", "UPDATE", "DELETE"})


def rows_text(n: int) -> str:
    return f"{n:,} row{'s' if n != 1 else ''}"

_HISTORY: dict[str, list[str]] = {}
"""Queries run, per database file, for as long as mini runs (the box's up/down), newest last."""
HISTORY_LENGTH = 500
_DRAFTS: dict[str, str] = {}
"""What the box held when the screen was left, per database file."""


class SQLScreen(Screen):
    """Query the open database. Every statement runs in a thread worker; results arrive as messages."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("run_query", "export", "stop_or_back", "toggle_writes")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f5", "run_query", "Run"),
        Binding("ctrl+r", "run_query", "Run", show=False),
        Binding("ctrl+enter", "run_query", "Run", show=False),
        Binding("ctrl+l", "clear_query", "Clear", show=False),
        Binding("ctrl+s", "export", "Export"),
        Binding("e", "export", "Export", show=False),  # in the results; in the query box e is a letter
        Binding("ctrl+t", "toggle_writes", "Writes"),
        Binding("escape", "stop_or_back", "Back"),
    ]

    DEFAULT_CSS = """
    SQLScreen #query {
        height: 7;
        border: round $primary;
    }
    SQLScreen #query:focus {
        border: round $accent;
    }
    SQLScreen #status-bar {
        height: auto;
    }
    SQLScreen #mode {
        width: auto;
        padding: 0 1;
        background: $success 30%;
    }
    SQLScreen #mode.writes {
        background: $error;
        color: $text;
        text-style: bold;
    }
    SQLScreen #message {
        width: 1fr;
        height: auto;
        max-height: 2;
        padding: 0 1;
    }
    SQLScreen #message.error {
        color: $error;
    }
    SQLScreen #results {
        height: 1fr;
    }
    SQLScreen #results > Static {
        padding: 1 1;
        color: $text-muted;
    }
    SQLScreen ResultsTable {
        height: 1fr;
    }
    """

    @dataclass
    class TablesListed(Message):
        names: list[str]

    @dataclass
    class QueryFinished(Message):
        sql: str
        result: AppQueryResult
        writes: bool

    @dataclass
    class QueryFailed(Message):
        """The query failed or was refused; `reason` is one line for the person."""

        sql: str
        reason: str

    @dataclass
    class ExportWritten(Message):
        path: Path
        rows: int

    @dataclass
    class ExportFailed(Message):
        reason: str

    def __init__(self, stores: ThreadStores, *, max_rows: int = MAX_ROWS):
        super().__init__()
        self._stores = stores
        self.max_rows = max_rows
        self.writes = False
        """Whether statements that change the database may run (off until the person confirms)."""
        self.result: AppQueryResult | None = None
        """The last query's result: what the table shows and what ctrl+s exports."""
        self._query_cursor: Store | None = None
        """The cursor of the query in flight (to interrupt it), else None."""

    @property
    def _db_key(self) -> str:
        return str(self.app.db.path)  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        from store.sql import EXAMPLE_QUERY

        yield Header()
        yield QueryBox(_DRAFTS.get(self._db_key, ""), queries_run=_HISTORY.setdefault(self._db_key, []),
                       id="query", placeholder=f"{EXAMPLE_QUERY}   (f5 or ctrl+r runs it)")
        with Horizontal(id="status-bar"):
            yield Static("read-only", id="mode")
            yield Static("", id="message", markup=False)
        with Vertical(id="results"):
            yield Static("Results appear here.", id="placeholder", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = "SQL"
        self.query_one("#query").border_title = "query"
        self.query_one(QueryBox).focus()
        self.list_tables()

    def on_unmount(self) -> None:
        self._interrupt()  # a query left running would keep a core busy for nothing

    @on(QueryBox.Changed, "#query")
    def keep_draft(self, event: QueryBox.Changed) -> None:
        _DRAFTS[self._db_key] = event.text_area.text

    # -- the tables, for the placeholder --------------------------------------------------------------
    @work(thread=True, exclusive=True, group="sql-tables")
    def list_tables(self) -> None:
        from store.exports import tables_and_views

        try:
            with self._stores.cursor() as db:
                names = tables_and_views(db)
        except Exception:  # only a hint on screen; the box works without it
            return
        self.post_message(self.TablesListed(names))

    @on(TablesListed)
    def show_tables(self, message: TablesListed) -> None:
        placeholder = self.query("#placeholder")
        if placeholder:
            placeholder.first(Static).update(
                "Results appear here. Tables and views: " + ", ".join(message.names)
                + ".\nColumns: DESCRIBE <table>; meanings: docs/schema.md. Writes are off (ctrl+t).")

    # -- running -------------------------------------------------------------------------------------
    def action_clear_query(self) -> None:
        box = self.query_one(QueryBox)
        box.clear()
        box.forget_position()
        box.focus()

    def action_run_query(self) -> None:
        sql = self.query_one(QueryBox).text
        if not sql.strip():
            from store.sql import EXAMPLE_QUERY

            self._say(f"Type a query first, e.g. {EXAMPLE_QUERY}.", error=True)
            return
        self._interrupt()  # a new query replaces one still running
        self._say("running…")
        self.run_statements(sql, self.writes)

    @work(thread=True, exclusive=True, group="sql-query")
    def run_statements(self, sql: str, writes: bool) -> None:
        from store.errors import StoreError
        from store.sql import WritesOffError, run_app_query

        worker = get_current_worker()
        try:
            with self._stores.cursor() as db:
                self._query_cursor = db
                try:
                    result = run_app_query(db, sql, writes=writes, max_rows=self.max_rows)
                finally:
                    self._query_cursor = None
        except WritesOffError as error:
            message: Message = self.QueryFailed(sql, f"Refused: {error} (ctrl+t turns writes on).")
        except StoreError as error:
            text = str(error)
            message = self.QueryFailed(sql, "Stopped." if "nterrupt" in text else text[:1].upper() + text[1:])
        except Exception as error:  # e.g. the app closing under the query: one line, never a traceback
            message = self.QueryFailed(sql, f"Query failed: {error}")
        else:
            message = self.QueryFinished(sql, result, writes)
        if not worker.is_cancelled:
            self.post_message(message)

    def _remember(self, sql: str) -> None:
        box = self.query_one(QueryBox)
        if not box.queries_run or box.queries_run[-1] != sql:
            box.queries_run.append(sql)
            del box.queries_run[:-HISTORY_LENGTH]
        box.forget_position()

    @on(QueryFinished)
    async def show_result(self, message: QueryFinished) -> None:
        from tui.widgets.results_table import ResultsTable

        self._remember(message.sql)
        self.result = result = message.result
        results = self.query_one("#results", Vertical)
        await results.remove_children()
        if result.table is None or not result.table.num_columns:
            self._say(f"{result.statement_type} ran" + (" and was committed." if message.writes else "."))
            await results.mount(Static("(no rows)", id="placeholder"))
            return
        await results.mount(ResultsTable(result.table, id="table"))
        self._say(self._describe(message))

    def _describe(self, message: QueryFinished) -> str:
        result = message.result
        table = result.table
        assert table is not None
        kind = result.statement_type
        if message.writes and kind != "SELECT" and table.column_names == ["Count"]:
            # What DuckDB returns for a statement that changed something: the rows it changed.
            if kind in WRITE_TYPES_WITH_COUNTS:
                changed = table.column(0)[0].as_py() if table.num_rows else 0
                return f"{kind} changed {rows_text(changed)}; committed."
            return f"{kind} ran; committed."
        columns = f"{table.num_columns} column{'s' if table.num_columns != 1 else ''}"
        if result.truncated:
            return (f"First {table.num_rows:,} rows shown × {columns}; there are more "
                    "(ctrl+s exports every row).")
        return f"{rows_text(table.num_rows)} × {columns}."

    @on(QueryFailed)
    async def show_failure(self, message: QueryFailed) -> None:
        self._remember(message.sql)
        self._say(message.reason, error=True)
        # The previous query's rows under this error would read as this query's result (and be exported).
        self.result = None
        results = self.query_one("#results", Vertical)
        await results.remove_children()
        await results.mount(Static("No results: the query above failed.", id="placeholder", markup=False))

    def _say(self, text: str, *, error: bool = False) -> None:
        line = self.query_one("#message", Static)
        line.update(text)
        line.set_class(error, "error")

    def _interrupt(self) -> bool:
        """Stop the query in flight, if any; True when there was one."""
        from store.sql import interrupt_query

        running = self._query_cursor
        if running is None:
            return False
        interrupt_query(running)
        return True

    def action_stop_or_back(self) -> None:
        if self._interrupt():
            self._say("Stopping the query…")
            return
        self.dismiss()

    # -- writes --------------------------------------------------------------------------------------
    def action_toggle_writes(self) -> None:
        if self.writes:
            self._set_writes(False)
            self.notify("Writes are off: statements that change the database are refused.", title="SQL")
            return
        from tui.screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._set_writes(True)
                self.notify("Writes are on: statements run and are committed.", title="SQL", severity="warning")

        question = (f"Turn writes on? Statements will then change {self.app.db.path} "  # type: ignore[attr-defined]
                    "for good: each is committed as it runs and there is no undo. Labels, runs and "
                    "validations you delete are gone.")
        self.app.push_screen(ConfirmScreen(question, title="Turn writes on?"), answered)

    def _set_writes(self, on: bool) -> None:
        self.writes = on
        mode = self.query_one("#mode", Static)
        mode.update("WRITES ON" if on else "read-only")
        mode.set_class(on, "writes")

    # -- export --------------------------------------------------------------------------------------
    def action_export(self) -> None:
        from engine.exports import default_export_folder
        from store.sql import export_format
        from tui.screens.save_as import SaveAsScreen

        result = self.result
        if result is None or result.table is None:
            self.notify("Run a query first: there is nothing to export.", title="Export", severity="warning")
            return
        rows = "every row" if result.truncated else f"the {rows_text(result.table.num_rows)}"
        folder = default_export_folder(self.app.db.path)  # type: ignore[attr-defined]
        default = folder / "results.csv"

        def check(path: Path) -> str | None:
            return None if export_format(path) else "end the file name in .csv or .parquet"

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._say(f"Writing {path}…")
                self.export(result, path, make_folder=path.parent == folder)

        self.app.push_screen(SaveAsScreen("Export results", f"Write {rows} to (.csv or .parquet):", default,
                                          check), chosen)

    @work(thread=True, exclusive=True, group="sql-export")
    def export(self, result: AppQueryResult, path: Path, make_folder: bool = False) -> None:
        from store.sql import export_query_result

        try:
            if make_folder:  # the default export folder is made when something is written to it
                path.parent.mkdir(parents=True, exist_ok=True)
            with self._stores.cursor() as db:
                rows = export_query_result(db, result, path)
        except Exception as error:  # a full disk, a vanished table: one line, app stays up
            self.post_message(self.ExportFailed(f"Could not export to {path}: {error}"))
            return
        self.post_message(self.ExportWritten(path, rows))

    @on(ExportWritten)
    def export_written(self, message: ExportWritten) -> None:
        self._say(f"Exported {rows_text(message.rows)} to {message.path}.")
        self.notify(f"{rows_text(message.rows)} written to {message.path}.", title="Export", markup=False)

    @on(ExportFailed)
    def export_failed(self, message: ExportFailed) -> None:
        self._say(message.reason, error=True)
        self.notify(message.reason, title="Export", severity="error", markup=False)

