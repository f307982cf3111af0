"""Home: the datasets and runs in this database; open a run, train a new one, delete one.

Under the tables, the quality flags of the row under the cursor in the focused table (a dataset's from
its import, a run's from its training), each as one line with what to try next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from store.quality import flag_line
from tui.widgets.key_footer import KeyFooter
from tui.widgets.scroll_hint import ScrollHint

if TYPE_CHECKING:
    from tui.thread_stores import ThreadStores

EMPTY_TEXT = "No datasets yet — run `mini import COUNTS --meta META` or `mini demo`."
NO_RUNS_TEXT = "No runs yet — select a dataset and press t to train one."
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


# (run summary column, header, right-aligned)
RUN_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("run_id", "run", True),
    ("dataset", "dataset", False),
    ("status", "status", False),
    ("architecture", "arch", False),
    ("n_saes", "SAEs", True),
    ("d_sae", "d_sae", True),
    ("k", "k", True),
    ("val_fvu", "val FVU", True),
    ("val_dead_fraction", "dead", True),
    ("flags", "flags", True),
    ("labelled", "labelled", True),
    ("generalises", "gen", True),
    ("validated", "valid", True),
    ("epoch", "epoch", False),
)

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("up, down", "move in the focused table; the quality flags of the row under the cursor show below"),
    ("tab, shift+tab", "switch between the datasets and the runs"),
    ("enter", "on a dataset: its details; on a run: open its ranked features"),
    ("t", "train a new run on the selected dataset"),
    ("s", "open the sweeps (their trials, Pareto front, promoting a trial to a run)"),
    ("d", "delete the selected run (asks first)"),
    ("r", "read the datasets and runs again"),
)


FLAGS_SHOWN = 4
"""Flag lines shown for one dataset or run; the QC screen and `mini info` list every one."""


def _run_cell(column: str, value: Any) -> str:
    if value is None:
        return "—"
    if column == "val_fvu":
        return f"{value:.3f}"
    if column == "val_dead_fraction":
        return f"{100 * value:.1f}%"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _run_row(row: dict[str, Any]) -> list[str | Text]:
    """The cells of one run; numbers right-aligned, a flag count above 0 in yellow so it stands out."""
    cells: list[str | Text] = []
    for column, _, right in RUN_COLUMNS:
        cell = _run_cell(column, row[column])
        flagged = column == "flags" and bool(row[column])
        cells.append(Text(cell, justify="right", style="yellow" if flagged else "") if right else cell)
    return cells


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
    rates = " (rates: not whole counts)" if summary.get("value_type") == "rates" else ""
    text.append(f"  {summary['kind']}{rates}, dataset {summary['dataset_id']}\n", style="dim")
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


def flags_text(title: str, flags: list[dict[str, Any]]) -> Text:
    """A title line, then one line per flag (what is wrong — try: what to do), at most FLAGS_SHOWN."""
    text = Text()
    text.append(title, style="bold")
    for flag in flags[:FLAGS_SHOWN]:
        text.append("\n⚑ ", style="yellow")
        text.append(flag_line(flag))
    if len(flags) > FLAGS_SHOWN:
        text.append(f"\n… and {len(flags) - FLAGS_SHOWN} more: the QC screen and `mini info` list them all",
                    style="dim")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def delete_question(run_id: Any, run: dict[str, Any]) -> str:
    """What `d` asks before deleting a run (its dataset, SAE and labelled-feature counts from the runs table)."""
    return (f"Delete run {run_id} on '{run['dataset']}' with its {_count(run['n_saes'] or 0, 'SAE')}, ranking, "
            f"{_count(run['labelled'] or 0, 'labelled feature')} and validations? This cannot be undone.")


class DatasetTable(DataTable):
    """The datasets table; `enter` opens details and says so in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Details")]


class RunTable(DataTable):
    """The runs table; `enter` opens the run's ranked features."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "select_cursor", "Open")]


class HomeScreen(Screen):
    """The list of datasets. Reads run in a thread worker; results arrive as messages."""

    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("select_cursor", "train", "delete_run", "refresh")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "train", "Train"),
        Binding("s", "sweeps", "Sweeps", show=False),
        Binding("d", "delete_run", "Delete run"),
        Binding("r", "refresh", "Refresh"),
    ]

    DEFAULT_CSS = """
    HomeScreen #datasets {
        height: auto;
        max-height: 40%;
    }
    HomeScreen #runs {
        height: 1fr;
        border-top: solid $primary;
    }
    HomeScreen #no-runs {
        height: 1fr;
        color: $text-muted;
        padding: 0 1;
        border-top: solid $primary;
    }
    HomeScreen #empty {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    HomeScreen #flags {
        height: auto;
        max-height: 30%;
        padding: 0 1;
        border-top: solid $warning 50%;
    }
    HomeScreen.-narrow #flags {
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    HomeScreen #details {
        height: auto;
        max-height: 7;
        padding: 0 1;
        border-top: solid $primary;
    }
    """

    @dataclass
    class DatasetsLoaded(Message):
        """The dataset summaries were read (one row per dataset, maybe none)."""

        summaries: list[dict[str, Any]]

    @dataclass
    class RunsLoaded(Message):
        """The run summaries were read (one row per run, maybe none)."""

        runs: list[dict[str, Any]]

    @dataclass
    class FlagsLoaded(Message):
        """Every quality flag was read (datasets' and runs', maybe none)."""

        flags: list[dict[str, Any]]

    @dataclass
    class RunDeleted(Message):
        """A run and everything derived from it were deleted; `rows` is what went, per table."""

        run_id: int
        rows: dict[str, int]

    @dataclass
    class DatasetsLoadFailed(Message):
        """Reading the dataset summaries failed; `reason` is a sentence for the person."""

        reason: str

    def __init__(self, stores: ThreadStores):
        super().__init__()
        self._stores = stores
        self._summaries: dict[str, dict[str, Any]] = {}
        """Latest summary row per dataset, keyed like the table's rows (str(dataset_id))."""
        self._details_key: str | None = None
        self._runs: dict[str, dict[str, Any]] = {}
        self._flags: list[dict[str, Any]] = []

    def compose(self) -> ComposeResult:
        yield Header()
        table = DatasetTable(id="datasets", cursor_type="row", zebra_stripes=True)
        for _, header, right in COLUMNS:
            table.add_column(Text(header, justify="right") if right else header, key=header)
        table.display = False
        yield table
        yield ScrollHint(table, id="datasets-hint")
        yield Static(LOADING_TEXT, id="empty")
        runs = RunTable(id="runs", cursor_type="row", zebra_stripes=True)
        for _, header, right in RUN_COLUMNS:
            runs.add_column(Text(header, justify="right") if right else header, key=header)
        runs.display = False
        yield runs
        yield ScrollHint(runs, id="runs-hint")
        no_runs = Static(NO_RUNS_TEXT, id="no-runs")
        no_runs.display = False
        yield no_runs
        flags = Static(id="flags")
        flags.display = False
        yield flags
        details = Static(id="details")
        details.display = False
        yield details
        yield KeyFooter()

    def on_mount(self) -> None:
        self.load_datasets()

    def action_refresh(self) -> None:
        self.load_datasets()

    # -- reading -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="datasets")
    def load_datasets(self) -> None:
        from store.quality import all_flags
        from store.summaries import dataset_summaries, run_summaries

        self._stores.read_and_post(
            self, lambda db: [self.DatasetsLoaded(dataset_summaries(db)), self.RunsLoaded(run_summaries(db)),
                              self.FlagsLoaded(all_flags(db))],
            lambda error: self.DatasetsLoadFailed(f"Could not read datasets: {error}"))

    @on(DatasetsLoaded)
    def show_datasets(self, message: DatasetsLoaded) -> None:
        table = self.query_one(DatasetTable)
        empty = self.query_one("#empty", Static)
        # Keep the cursor on the same dataset across a refresh.
        cursor_key = self._row_key_at(table.cursor_row) if table.row_count else None

        self._summaries = {str(row["dataset_id"]): {**row, "variable_names": _variable_names(row["variables"])}
                           for row in message.summaries}
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

    @on(RunsLoaded)
    def show_runs(self, message: RunsLoaded) -> None:
        table = self.query_one(RunTable)
        cursor_key = self._selected_run_key()
        self._runs = {str(row["run_id"]): row for row in message.runs}
        table.clear()
        for key, row in self._runs.items():
            table.add_row(*_run_row(row), key=key)
        table.display = bool(self._runs)
        self.query_one("#no-runs", Static).display = not self._runs and bool(self._summaries)
        # The open run wins over the old cursor: a run trained meanwhile has become the open run.
        target = str(self.app.run_id) if self.app.run_id is not None else cursor_key
        if target in self._runs:
            table.move_cursor(row=table.get_row_index(target))

    @on(DataTable.RowHighlighted, "#datasets")
    def remember_dataset(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value in self._summaries:
            self.app.dataset = self._summaries[event.row_key.value]["name"]
        self._show_flags()

    @on(DataTable.RowHighlighted, "#runs")
    def remember_run(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value in self._runs:
            self.app.run_id = int(event.row_key.value)
        self._show_flags()

    @on(DataTable.RowSelected, "#runs")
    def open_run(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value in self._runs:
            self.app.run_id = int(event.row_key.value)
            self.app.action_open("features", run_id=self.app.run_id)

    def action_train(self) -> None:
        self.app.action_open("train")

    def action_sweeps(self) -> None:
        self.app.action_open("sweep")

    def action_delete_run(self) -> None:
        from tui.screens.confirm import ConfirmScreen

        key = self._selected_run_key()
        if key is None:
            self.notify("No run selected: tab to the runs and pick one.", title="Delete run", severity="warning")
            return
        run = self._runs[key]
        if run["status"] == "running":
            self.notify(f"Run {key} is training; cancel it first.", title="Delete run", severity="warning")
            return
        question = delete_question(key, run)

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_run(int(key))

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="delete")
    def delete_run(self, run_id: int) -> None:
        from store.runs import delete_run

        try:
            with self._stores.cursor() as db:
                rows = delete_run(db, run_id)
        except Exception as error:  # a failed delete rolled back; say so and keep going
            self.post_message(self.DatasetsLoadFailed(f"Could not delete run {run_id}: {error}"))
            return
        self.post_message(self.RunDeleted(run_id, rows))

    @on(RunDeleted)
    def run_deleted(self, message: RunDeleted) -> None:
        if self.app.run_id == message.run_id:
            self.app.run_id = None
        self.notify(f"Deleted run {message.run_id} ({sum(message.rows.values()):,} rows).", title="Delete run")
        self.load_datasets()

    def _selected_run_key(self) -> str | None:
        table = self.query_one(RunTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0))
        return row_key.value

    @on(DatasetsLoadFailed)
    def show_load_failure(self, message: DatasetsLoadFailed) -> None:
        self.notify(message.reason, title="Datasets", severity="error")
        if not self._summaries:
            self.query_one("#empty", Static).update(message.reason)

    # -- flags ---------------------------------------------------------------------------------------
    @on(FlagsLoaded)
    def flags_loaded(self, message: FlagsLoaded) -> None:
        self._flags = message.flags
        self._show_flags()

    def on_descendant_focus(self) -> None:
        self._show_flags()

    def _show_flags(self) -> None:
        """The flags of the run under the cursor when the runs have focus, else of the dataset under it."""
        panel = self.query_one("#flags", Static)
        run_key = self._selected_run_key() if isinstance(self.focused, RunTable) else None
        if run_key in self._runs:
            mine = [f for f in self._flags if f["run_id"] == int(run_key)]
            title = f"run {run_key} · {_count(len(mine), 'flag')}"
        else:
            table = self.query_one(DatasetTable)
            key = self._row_key_at(table.cursor_row) if table.row_count else None
            if key not in self._summaries:
                panel.display = False
                return
            mine = [f for f in self._flags if f["run_id"] is None and f["dataset_id"] == int(key)]
            title = f"{self._summaries[key]['name']} · {_count(len(mine), 'flag')} at import"
        panel.display = bool(mine)
        if mine:
            panel.update(flags_text(title, mine))

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
