"""Validation: every accepted label of the open run and how it fared on the held-out test split.

The list shows one row per pairing (feature × label: its latest attempt) with both verdicts, generalises
and signature-specific; the panel beside or below it shows the selected pairing's verdicts with their
reason, confusion matrix, metrics with their intervals and test trials, decoding bars and signature units. `r` runs
validation (in a thread worker; the screen stays live; `c` cancels it), `e` writes the run's Markdown report
and `F` freezes the run's labels (engine.validation.freezes: a blind run's test split is read only after that).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import polars as pl
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.worker import get_current_worker

from tui.messages import LoadFailed
from tui.validation_messages import (
    FreezeFailed,
    FreezeRead,
    PairingsLoaded,
    ReportFailed,
    ReportWritten,
    ValidationFailed,
    ValidationFinished,
    ValidationProgressed,
)
from tui.validation_text import LOADING_TEXT, outcome_text, sentence, summary_text
from tui.widgets.key_footer import KeyFooter
from tui.widgets.validation_detail import LABEL_WIDTH, PAIRING_COLUMNS, pairing_cells, pairing_detail

if TYPE_CHECKING:
    from engine.validation.validate import ValidateConfig
    from store.db import Store
    from store.freezes import FreezeState
    from tui.thread_stores import ThreadStores

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("up, down", "move between pairings; the panel follows"),
    ("tab", "to the detail panel and back (then arrows scroll)"),
    ("r", "validate the run's accepted labels on the test split"),
    ("c", "cancel the running validation (nothing of it is stored)"),
    ("e", "export the run's report (Markdown); asks where"),
    ("F", "freeze the run's labels (asks first): they can no longer change; a blind run can then be validated"),
    ("esc", "back"),
)

class ValidationScreen(Screen):
    """The open run's validations. Reads, validation and the report run in thread workers."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("validate", "cancel_validation", "export_report", "freeze_labels", "back")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "validate", "Validate"),
        Binding("c", "cancel_validation", "Cancel"),
        Binding("e", "export_report", "Report"),
        Binding("F", "freeze_labels", "Freeze"),
        Binding("escape", "back", "Back"),
    ]

    # Side by side once both the list (80 columns) and the detail (80) fit; stacked below that.
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (160, "-wide")]

    DEFAULT_CSS = """
    ValidationScreen #summary {
        height: auto;
        padding: 0 1;
    }
    ValidationScreen #freeze {
        height: auto;
        padding: 0 1;
        color: $warning;
    }
    ValidationScreen #body {
        layout: vertical;
        height: 1fr;
    }
    ValidationScreen.-wide #body {
        layout: horizontal;
    }
    ValidationScreen #pairings {
        height: auto;
        max-height: 40%;
    }
    ValidationScreen.-wide #pairings {
        width: 1fr;
        height: 1fr;
        max-height: 100%;
    }
    ValidationScreen #detail-box {
        height: 1fr;
        padding: 0 1;
        border-top: solid $primary;
    }
    ValidationScreen.-wide #detail-box {
        width: 80;
        border-top: none;
        border-left: solid $primary;
    }
    ValidationScreen #empty {
        height: 1fr;
        content-align: center middle;
        color: $text-muted;
    }
    ValidationScreen #status {
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, stores: ThreadStores, run_id: int, *, validate_config: ValidateConfig | None = None,
                 validate_jobs: int = -1):
        super().__init__()
        self._stores = stores
        self.run_id = run_id
        self._validate_config = validate_config
        """Settings for `r` (None: ValidateConfig's defaults, as `mini validate`); tests pass quicker ones."""
        self._validate_jobs = validate_jobs
        self._pairings: dict[str, dict[str, Any]] = {}
        """Pairing rows keyed like the table's rows (str(label_id))."""
        self._by_label: dict[int, dict[str, Any]] = {}
        """The same rows by label_id: the stronger label a duplicate repeats is named from them."""
        self._units: dict[int, list[dict]] = {}
        self._filled_width = 0
        self.validating = False
        self._cancel = threading.Event()
        """Set by `c`: the running validation stops after the predicate group in hand."""
        self.loaded = False
        self.freeze: FreezeState | None = None
        """The run's freeze state as last read (None until read)."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(LOADING_TEXT, id="summary", markup=False)
        yield Static("", id="freeze", markup=False)
        with Horizontal(id="body"):
            table = DataTable(id="pairings", cursor_type="row", zebra_stripes=True)
            for column in PAIRING_COLUMNS:
                table.add_column(column, key=column)
            yield table
            with VerticalScroll(id="detail-box"):
                yield Static("", id="detail")
        yield Static("", id="empty", markup=False)
        yield Static("", id="status", markup=False)  # progress text holds predicates like [0.2, 0.4)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"Validation · run {self.run_id}"
        self.query_one("#empty").display = False
        self.query_one("#status").display = False
        self.query_one("#freeze").display = False
        self.load_pairings()
        self.load_freeze()

    def on_screen_resume(self) -> None:
        # Back from a screen opened over this one (Review may have labelled since): read again.
        if self.loaded:
            self.load_pairings()
            self.load_freeze()

    # -- reading -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="validation-read")
    def load_pairings(self) -> None:
        from engine.epochs import Epoch
        from store.epochs import run_epochs
        from store.runs import get_run, load_saes
        from store.validations import run_pairings, run_signature_units

        def read(db: Store) -> list[Message]:
            run = get_run(db, self.run_id)
            saes = load_saes(db, self.run_id)["sae_id"].to_list()
            pairings = run_pairings(db, self.run_id)
            units = run_signature_units(db, self.run_id)
            validated_on = run_epochs(db, self.run_id).get("validate")
            epoch = (f"{Epoch(validated_on['where_sql'], validated_on['around']).describe()} "
                     f"({validated_on['n_test']:,} test bins)" if validated_on else None)
            return [PairingsLoaded(run["config"]["dataset"], saes, pairings, units, epoch)]

        self._stores.read_and_post(
            self, read, lambda error: LoadFailed(f"Could not read run {self.run_id}'s validations: {error}"))

    @on(PairingsLoaded)
    def show_pairings(self, message: PairingsLoaded) -> None:
        table = self.query_one("#pairings", DataTable)
        selected = self._selected_key()
        self._pairings = {str(row["label_id"]): row for row in message.pairings.iter_rows(named=True)}
        self._by_label = {row["label_id"]: row for row in self._pairings.values()}
        self._units = {label_id: part.to_dicts() for (label_id,), part in
                       message.units.group_by("label_id", maintain_order=True)}
        self.query_one("#summary", Static).update(
            summary_text(self.run_id, message.dataset, message.saes, message.pairings, message.epoch))
        self._fill_table()
        has_rows = bool(self._pairings)
        self.query_one("#body").display = has_rows
        empty = self.query_one("#empty", Static)
        empty.display = not has_rows
        empty.update(f"No accepted labels in run {self.run_id} yet. Label features in Review (or with "
                     "`mini label`), then press r here to validate them on the test split.")
        self.loaded = True
        if not has_rows:
            return
        if selected in self._pairings:
            table.move_cursor(row=table.get_row_index(selected))
        self._show_detail(self._selected_key())
        table.focus()

    def _label_width(self) -> int:
        """Characters of each label in the list: what fits 80 columns, more where there is room."""
        return LABEL_WIDTH if self.size.width < 100 or self.has_class("-wide") else 36

    def _fill_table(self) -> None:
        table = self.query_one("#pairings", DataTable)
        cursor_row = table.cursor_row
        table.clear()
        width = self._label_width()
        for key, row in self._pairings.items():
            table.add_row(*pairing_cells(row, width, self._by_label), key=key)
        self._filled_width = width
        if table.row_count:
            table.move_cursor(row=min(cursor_row, table.row_count - 1))

    def on_resize(self) -> None:
        if self._pairings and self._label_width() != self._filled_width:
            self._fill_table()

    @on(LoadFailed)
    def show_load_failure(self, message: LoadFailed) -> None:
        self.notify(message.reason, title="Validation", severity="error", markup=False)
        self.query_one("#summary", Static).update(message.reason)

    # -- the detail panel ----------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#pairings")
    def follow_cursor(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.row_key.value)

    def _selected_key(self) -> str | None:
        table = self.query_one("#pairings", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def _show_detail(self, key: str | None) -> None:
        if key not in self._pairings:
            return
        row = self._pairings[key]
        self.query_one("#detail", Static).update(
            pairing_detail(row, self._units.get(row["label_id"], []), self._by_label))
        self.query_one("#detail-box", VerticalScroll).scroll_home(animate=False)

    # -- validating ----------------------------------------------------------------------------------
    def action_validate(self) -> None:
        if self.validating:
            self.notify("Validation is already running; its result will appear here.", title="Validation")
            return
        if self.freeze is not None and self.freeze.blind:  # validate_run refuses too; say it without a worker
            from engine.validation.freezes import blind_refusal

            self.notify(sentence(blind_refusal(self.run_id)), title="Validation", severity="warning", markup=False)
            return
        if self.loaded and not self._pairings:
            self.notify("Nothing to validate: accept labels in Review first.", title="Validation",
                        severity="warning")
            return
        self.validating = True
        self.refresh_bindings()
        self._cancel = threading.Event()
        self._set_status(f"Validating run {self.run_id} on the test split… (c cancels)")
        self.validate(self._cancel)

    def action_cancel_validation(self) -> None:  # enabled only while validating (check_action)
        self._cancel.set()
        self._set_status(f"Cancelling the validation of run {self.run_id} after the predicate in hand…")

    def cancel_for_quit(self) -> None:
        """mini is quitting: a running validation stops at its next check and stores nothing (the app does not
        wait for it)."""
        self._cancel.set()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_validation":
            return self.validating  # the footer shows c only while there is something to cancel
        return True

    @work(thread=True, exclusive=True, group="validation-run")
    def validate(self, cancel: threading.Event) -> None:
        from engine.errors import Cancelled
        from engine.validation.validate_run import validate_run
        from engine.validation.validation_summary import verdict_counts
        from store.validations import run_pairings

        worker = get_current_worker()
        app = self.app  # the screen may be closed before validation ends; the app still says so

        def progressed(text: str) -> None:
            if not worker.is_cancelled:
                self.post_message(ValidationProgressed(text))

        try:
            if self._validate_jobs != 1:
                from tui.process_pool import ready_for_process_pools

                ready_for_process_pools()
            with self._stores.cursor() as db:
                outcome = validate_run(db, self.run_id, self._validate_config, report=progressed,
                                       n_jobs=self._validate_jobs, cancel=cancel)
                counts = verdict_counts(run_pairings(db, self.run_id).filter(
                    pl.col("validated_at").is_not_null()).iter_rows(named=True))
        except Cancelled as error:
            message = ValidationFailed(f"{str(error)[:1].upper()}{str(error)[1:]}.", cancelled=True)
        except Exception as error:  # an InputError (no labels) or a failure: one sentence, app stays up
            message = ValidationFailed(f"Validation of run {self.run_id} failed: {error}")
        else:
            message = ValidationFinished(outcome, counts)
        if worker.is_cancelled:  # the screen was closed: say it in a notification instead
            failed = isinstance(message, ValidationFailed) and not message.cancelled
            severity = "error" if failed else "information"
            app.call_from_thread(app.notify, outcome_text(message), title="Validation", severity=severity,
                                 markup=False)
        else:
            self.post_message(message)

    @on(ValidationProgressed)
    def show_progress(self, message: ValidationProgressed) -> None:
        self._set_status(f"Validating run {self.run_id}: {message.text}")

    @on(ValidationFinished)
    def validation_finished(self, message: ValidationFinished) -> None:
        self.validating = False
        self.refresh_bindings()
        self._set_status(None)
        self.notify(outcome_text(message), title="Validation", markup=False)
        self.load_pairings()

    @on(ValidationFailed)
    def validation_failed(self, message: ValidationFailed) -> None:
        self.validating = False
        self.refresh_bindings()
        self._set_status(None)
        self.notify(message.reason, title="Validation", severity="information" if message.cancelled else "error",
                    markup=False)

    def _set_status(self, text: str | None) -> None:
        status = self.query_one("#status", Static)
        status.display = text is not None
        status.update(text or "")

    # -- the report ----------------------------------------------------------------------------------
    def action_export_report(self) -> None:
        from engine.exports import default_export_folder
        from tui.screens.save_as import SaveAsScreen

        folder = default_export_folder(self.app.db.path)  # type: ignore[attr-defined]
        default = folder / f"report_run{self.run_id}.md"

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._set_status(f"Writing the report of run {self.run_id} to {path}…")
                self.write_report(path, make_folder=path.parent == folder)

        self.app.push_screen(SaveAsScreen(
            "Export report", f"Write run {self.run_id}'s report (Markdown; its tables go in a folder beside it) to:",
            default), chosen)

    @work(thread=True, exclusive=True, group="validation-report")
    def write_report(self, path: Path, make_folder: bool = False) -> None:
        from engine.validation.report import write_report

        try:
            with self._stores.cursor() as db:
                outcome = write_report(db, self.run_id, path, make_folder=make_folder)
        except Exception as error:  # a bad folder or a failed read: say so, keep going
            self.post_message(ReportFailed(f"Could not write the report to {path}: {error}"))
            return
        folder = outcome.tables[0].parent if outcome.tables else path.parent
        self.post_message(ReportWritten(outcome.path, folder, outcome.n_validations))

    @on(ReportWritten)
    def report_written(self, message: ReportWritten) -> None:
        self._set_status(None)
        self.notify(f"Report written to {message.path} ({message.n_validations} validation attempts); tables in "
                    f"{message.tables}.", title="Report", markup=False)

    @on(ReportFailed)
    def report_failed(self, message: ReportFailed) -> None:
        self._set_status(None)
        self.notify(message.reason, title="Report", severity="error", markup=False)

    # -- freezing the labels --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="validation-freeze-read")
    def load_freeze(self) -> None:
        from store.freezes import freeze_state

        try:
            with self._stores.cursor() as db:
                state = freeze_state(db, self.run_id)
        except Exception as error:  # shown on screen: a failed read must not take the app down
            self.post_message(FreezeFailed(f"Could not read whether run {self.run_id} is frozen: {error}"))
            return
        self.post_message(FreezeRead(state))

    @on(FreezeRead)
    def show_freeze(self, message: FreezeRead) -> None:
        from engine.validation.freezes import state_text, when

        if self.freeze is not None and self.freeze.frozen and not message.state.frozen:
            return  # a freeze is final: this read began before it committed
        self.freeze = state = message.state
        line = self.query_one("#freeze", Static)
        if state.blind:
            line.update(f"blind since {when(state.blind_since)}: test results hidden until the labels are frozen "
                        "(F freezes)")
        else:
            line.update(state_text(state) or "")
        line.display = state.blind or state.frozen
        if message.frozen_now:
            self.notify(sentence(f"run {self.run_id}: {state_text(state)}; they can no longer change."),
                        title="Labels frozen", markup=False)

    @on(FreezeFailed)
    def freeze_failed(self, message: FreezeFailed) -> None:
        self.notify(message.reason, title="Freeze", severity="error", markup=False)

    def action_freeze_labels(self) -> None:
        if self.freeze is not None and self.freeze.frozen:
            from engine.validation.freezes import frozen_refusal

            self.notify(sentence(frozen_refusal(self.run_id, self.freeze)) + ".", title="Freeze", markup=False)
            return
        from tui.screens.confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.freeze_labels()

        self.app.push_screen(ConfirmScreen(
            f"Freeze the labels of run {self.run_id}? From then on no label of its features can change (accept, "
            "reject, name, note or undo), and its report says whether they were fixed before any test result "
            "was seen.", title="Freeze labels", yes="Freeze", no="Cancel"), answered)

    @work(thread=True, group="validation-freeze")  # apart from the reads: a read started later must not cancel it
    def freeze_labels(self) -> None:
        from engine.validation.freezes import freeze_labels

        try:
            with self._stores.cursor() as db:
                state = freeze_labels(db, self.run_id)
        except Exception as error:  # a refusal (no accepted labels) or a failure: one sentence
            self.post_message(FreezeFailed(sentence(str(error))))
            return
        self.post_message(FreezeRead(state, frozen_now=True))

    def action_back(self) -> None:
        self.dismiss()
