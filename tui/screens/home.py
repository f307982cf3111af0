"""Home: the datasets in this database, one row each, with details for the selected one."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import get_current_worker

if TYPE_CHECKING:
    from tui.app import ThreadStores

EMPTY_TEXT = "No datasets yet — run `mini import COUNTS --meta META` or `mini demo`."
LOADING_TEXT = "Reading datasets…"

# (summary column, header, right-aligned); numbers right-aligned so magnitudes line up.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("name", "name", False),
    ("kind", "kind", False),
    ("n_examples", "examples", True),
    ("n_units", "units", True),
    ("n_trials", "trials", True),
    ("n_train", "train", True),
    ("n_val", "val", True),
    ("n_test", "test", True),
    ("variable_names", "variables", False),
)


def _format_bin_size(bin_size_s: float | None) -> str:
    if bin_size_s is None:
        return "—"
    return f"{bin_size_s * 1000:g} ms" if bin_size_s < 1 else f"{bin_size_s:g} s"


def _format_created(created_at: Any) -> str:
    return created_at.strftime("%Y-%m-%d %H:%M") if isinstance(created_at, datetime) else str(created_at)


def _variable_names(variables: str) -> str:
    """'condition:categorical, speed:continuous' → 'condition, speed' (kinds go in the details)."""
    return ", ".join(item.split(":", 1)[0] for item in variables.split(", ") if item)


def details_text(summary: dict[str, Any]) -> Text:
    """What the details panel says about one dataset."""
    text = Text()
    text.append(f"{summary['name']}", style="bold")
    text.append(f"  {summary['kind']}, dataset {summary['dataset_id']}\n", style="dim")
    rows = [
        ("source", str(summary["source"])),
        ("bin size", _format_bin_size(summary["bin_size_s"])),
        ("variables", summary["variables"] or "none"),
        ("created", _format_created(summary["created_at"])),
    ]
    for label, value in rows:
        text.append(f"{label:<10}", style="bold")
        text.append(f"{value}\n")
    text.rstrip()
    return text


class DatasetTable(DataTable):
    """The datasets table; `enter` opens details and says so in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Details")]


class HomeScreen(Screen):
    """The list of datasets. Reads run in a thread worker; results arrive as messages."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh", "Refresh")]

    DEFAULT_CSS = """
    HomeScreen #datasets {
        height: 1fr;
    }
    HomeScreen #empty {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    HomeScreen #details {
        height: auto;
        max-height: 7;
        padding: 0 1;
        border-top: solid $primary;
    }
    """

    class DatasetsLoaded(Message):
        """The dataset summaries were read (one row per dataset, maybe none)."""

        def __init__(self, summaries: pl.DataFrame):
            super().__init__()
            self.summaries = summaries

    class DatasetsLoadFailed(Message):
        """Reading the dataset summaries failed; `reason` is a sentence for the person."""

        def __init__(self, reason: str):
            super().__init__()
            self.reason = reason

    def __init__(self, stores: ThreadStores):
        super().__init__()
        self._stores = stores
        self._summaries: dict[str, dict[str, Any]] = {}
        """Latest summary row per dataset, keyed like the table's rows (str(dataset_id))."""
        self._details_key: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        table = DatasetTable(id="datasets", cursor_type="row", zebra_stripes=True)
        for _, header, right in COLUMNS:
            table.add_column(Text(header, justify="right") if right else header, key=header)
        table.display = False
        yield table
        yield Static(LOADING_TEXT, id="empty")
        details = Static(id="details")
        details.display = False
        yield details
        yield Footer()

    def on_mount(self) -> None:
        self.load_datasets()

    def action_refresh(self) -> None:
        self.load_datasets()

    # -- reading -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="datasets")
    def load_datasets(self) -> None:
        from store.datasets import dataset_summaries

        worker = get_current_worker()
        try:
            with self._stores.cursor() as db:
                summaries = dataset_summaries(db)
        except Exception as error:  # shown on screen: a failed read must not take the app down
            if not worker.is_cancelled:
                self.post_message(self.DatasetsLoadFailed(f"Could not read datasets: {error}"))
            return
        # A newer refresh replaced this one; its result will be the one shown.
        if not worker.is_cancelled:
            self.post_message(self.DatasetsLoaded(summaries))

    @on(DatasetsLoaded)
    def show_datasets(self, message: DatasetsLoaded) -> None:
        table = self.query_one(DatasetTable)
        empty = self.query_one("#empty", Static)
        # Keep the cursor on the same dataset across a refresh.
        cursor_key = self._row_key_at(table.cursor_row) if table.row_count else None

        summaries = message.summaries.with_columns(
            pl.col("variables").map_elements(_variable_names, return_dtype=pl.String).alias("variable_names")
        )
        self._summaries = {str(row["dataset_id"]): row for row in summaries.iter_rows(named=True)}
        table.clear()
        for key, row in self._summaries.items():
            cells = [
                Text(f"{row[column]:,}", justify="right") if right else str(row[column])
                for column, _, right in COLUMNS
            ]
            table.add_row(*cells, key=key)

        has_rows = bool(self._summaries)
        table.display = has_rows
        empty.display = not has_rows
        empty.update(EMPTY_TEXT)
        if not has_rows:
            self._hide_details()
            return
        if cursor_key in self._summaries:
            table.move_cursor(row=table.get_row_index(cursor_key))
        table.focus()
        if self._details_key is not None:
            if self._details_key in self._summaries:
                self._show_details(self._details_key)
            else:
                self._hide_details()

    @on(DatasetsLoadFailed)
    def show_load_failure(self, message: DatasetsLoadFailed) -> None:
        self.notify(message.reason, title="Datasets", severity="error")
        if not self._summaries:
            self.query_one("#empty", Static).update(message.reason)

    # -- details -------------------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#datasets")
    def open_details(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._show_details(event.row_key.value)

    def _show_details(self, key: str) -> None:
        details = self.query_one("#details", Static)
        details.update(details_text(self._summaries[key]))
        details.display = True
        self._details_key = key

    def _hide_details(self) -> None:
        self.query_one("#details", Static).display = False
        self._details_key = None

    def _row_key_at(self, row_index: int) -> str | None:
        table = self.query_one(DatasetTable)
        row_key, _ = table.coordinate_to_cell_key(Coordinate(row_index, 0))
        return row_key.value
