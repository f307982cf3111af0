"""Sweeps: the sweeps in the database, one sweep's trials with its Pareto front, and promoting a trial to a run.

The trials come from sweep_trials; every ~2 s a thread worker reads the selected sweep's folder (files only,
engine.sweep.run_sweep.trial_frame), and where the files say more than the table (a trial started, ended,
failed), the screen ingests them into the database, which the app owns: this is how `mini sweep --resume`
in another terminal, which cannot write while the app holds the database, shows up here live. Every figure
shown is from train and val only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from tui.messages import LoadFailed
from tui.widgets.key_footer import KeyFooter
from tui.widgets.quiet_plot import QuietPlot

if TYPE_CHECKING:
    import polars as pl

    from tui.thread_stores import ThreadStores

POLL_S = 2.0
"""How often the selected sweep's folder is read."""
STATUSES = ("pending", "running", "finished", "failed", "lost")
COMPARED = ("status", "attempts", "job_id", "host", "device", "seconds", "train_fvu", "val_fvu", "val_l0",
            "val_dead_fraction", "stability", "error")
"""The columns whose change in the folder makes the screen ingest it."""
NO_SWEEPS_TEXT = ("No sweeps yet. Start one from a terminal (with mini closed: planning writes the database):\n"
                  "  mini sweep --dataset NAME --grid \"d_sae=64,128 k=4,8\" --seeds 3\n"
                  "then `mini sweep --resume SWEEP` trains it while this screen watches its folder.")

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("up, down", "move in the focused table: a sweep shows its trials, a trial its figures and point"),
    ("tab, shift+tab", "switch between the sweeps and the trials"),
    ("p", "promote the selected trial (every seed of its configuration) to a run"),
    ("enter, o", "on a promoted trial: open its run's ranked features"),
    ("r", "read the sweeps and the selected sweep's folder again"),
    ("esc", "back"),
)
TRIAL_COLUMNS = ("trial", "front", "arch", "d_sae", "k", "loss", "seed", "status", "val_fvu", "val_l0", "dead_%",
                 "stability", "seconds", "run_id")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def folder_news(shown: pl.DataFrame, files: pl.DataFrame) -> bool:
    """Whether the folder's rows say something the stored rows do not (a trial's status or figures)."""
    def key(frame: pl.DataFrame) -> list[tuple]:
        return sorted(frame.select("trial_id", *COMPARED).rows())

    return key(shown) != key(files)


def progress_text(sweep: dict[str, Any], trials: pl.DataFrame, folder_error: str | None = None) -> Text:
    """'sweep 1 · 4 trials: 0 pending · 1 running · 3 finished · 0 failed · 0 lost' and where its folder is."""
    styles = {"running": "cyan", "finished": "green", "failed": "red", "lost": "red"}
    text = Text()
    text.append(f"sweep {sweep['sweep_id']} · {trials.height} trials: ", style="bold")
    for i, status in enumerate(STATUSES):
        count = int((trials["status"] == status).sum())
        text.append(" · " if i else "")
        text.append(f"{count} {status}", style=styles.get(status, "") if count else "dim")
    if folder_error:
        text.append(f"\ncannot read the folder: {folder_error}", style="red")
    else:
        text.append(f"\nfolder {sweep['folder']} (read every {POLL_S:g} s)", style="dim")
    return text


def detail_text(trial: dict[str, Any]) -> Text:
    """Every figure of one trial, its try's host, device and job; the error of a failed or lost one."""
    def number(name: str, digits: int = 4) -> str:
        value = trial[name]
        return "—" if value is None else f"{value:.{digits}f}"

    text = Text()
    text.append(f"trial {trial['trial_id']}", style="bold")
    text.append(f" · {trial['architecture']} d_sae {trial['d_sae']} k {trial['k']} {trial['loss']} "
                f"seed {trial['seed']} · {trial['status']} ({trial['attempts']} tr{'y' if trial['attempts'] == 1 else 'ies'})")
    if trial["status"] == "finished":
        dead = "—" if trial["val_dead_fraction"] is None else f"{100 * trial['val_dead_fraction']:.1f}%"
        text.append(f"\nval FVU {number('val_fvu')} · val L0 {number('val_l0', 2)} · dead {dead} · "
                    f"stability {number('stability', 3)} · train FVU {number('train_fvu')} · best epoch "
                    f"{_cell(trial['best_epoch'])} · {_cell(trial['examples_seen'])} examples · "
                    f"{number('seconds', 1)} s")
    text.append(f"\nhost {_cell(trial['host'])} · device {_cell(trial['device'])} · job {_cell(trial['job_id'])} · "
                f"run {_cell(trial['run_id'])}", style="dim")
    if trial["error"]:
        text.append(f"\nerror: {trial['error']}", style="red")
    return text


class ParetoPlot(QuietPlot):
    """Val L0 (x) against val FVU (y) of the finished trials: the front joined by a line, the selected one
    marked. `drawn` keeps each series' points (tests read it)."""

    DEFAULT_CSS = "ParetoPlot { min-height: 8; }"
    EMPTY_TEXT = "no finished trial yet"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.drawn: dict[str, list[tuple[float, float]]] = {}

    def show_trials(self, marked: pl.DataFrame, selected: int | None) -> None:
        """`marked`: sweep_trials rows with `pareto` (engine.sweep.summary.with_front)."""
        plt = self._start_figure(None)
        done = [row for row in marked.iter_rows(named=True)
                if row["status"] == "finished" and row["val_l0"] is not None and row["val_fvu"] is not None]
        points = {
            "trials": [(r["val_l0"], r["val_fvu"]) for r in done if not r["pareto"]],
            "front": sorted((r["val_l0"], r["val_fvu"]) for r in done if r["pareto"]),
            "selected": [(r["val_l0"], r["val_fvu"]) for r in done if r["trial_id"] == selected],
        }
        self.drawn = points
        self.has_data = bool(done)
        if self.has_data:
            if points["trials"]:
                plt.scatter(*zip(*points["trials"], strict=True), marker="dot", label="trial")
            plt.plot(*zip(*points["front"], strict=True), marker="*", color="yellow", label="front (★)")
            if points["selected"]:
                plt.scatter(*zip(*points["selected"], strict=True), marker="O", color="cyan", label="selected")
            plt.xlabel("val L0")
            plt.ylabel("val FVU")
        self.refresh()


class SweepScreen(Screen):
    """The sweeps and one sweep's trials; reads, folder polls and writes run in thread workers."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("promote", "open_run", "refresh", "back")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "promote", "Promote"),
        Binding("o", "open_run", "Open run"),
        Binding("r", "refresh", "Refresh"),
        Binding("escape", "back", "Back"),
    ]
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    DEFAULT_CSS = """
    SweepScreen #sweeps { height: auto; max-height: 25%; }
    SweepScreen #empty { height: 1fr; color: $text-muted; padding: 1 2; }
    SweepScreen #progress, SweepScreen #detail { height: auto; padding: 0 1; background: $boost; }
    SweepScreen #body { height: 1fr; }
    SweepScreen #trials { width: 3fr; height: 1fr; }
    SweepScreen #pareto { width: 2fr; height: 1fr; border: round $primary 60%; }
    SweepScreen.-narrow #body { layout: vertical; }
    SweepScreen.-narrow #trials { width: 100%; min-height: 4; }
    SweepScreen.-narrow #pareto { width: 100%; min-height: 6; border: none; }
    """

    @dataclass
    class SweepsLoaded(Message):
        sweeps: list[dict[str, Any]]

    @dataclass
    class TrialsLoaded(Message):
        """The sweep's row (folder included) and its stored trials were read."""

        sweep: dict[str, Any]
        trials: pl.DataFrame

    @dataclass
    class FolderChanged(Message):
        """The sweep's folder says more than its stored trials: it is to be ingested."""

        sweep_id: int

    @dataclass
    class FolderRead(Message):
        """The sweep's folder was read; `error` says why it could not be (None: it was)."""

        sweep_id: int
        error: str | None

    @dataclass
    class Written(Message):
        """A write (an ingestion, a promotion) committed; `note` is for a notification ('' for none)."""

        sweep_id: int
        note: str
        run_id: int | None = None

    @dataclass
    class WriteRefused(Message):
        reason: str

    def __init__(self, stores: ThreadStores):
        super().__init__()
        self._stores = stores
        self._sweeps: dict[str, dict[str, Any]] = {}
        self.sweep: dict[str, Any] | None = None
        """The selected sweep's row (get_sweep)."""
        self.trials: pl.DataFrame | None = None
        """Its stored trials with `pareto`, as shown."""
        self._write_lock = threading.Lock()
        """One write at a time: DuckDB would refuse a second transaction on the same rows."""
        self.folder_error: str | None = None
        """Why the selected sweep's folder could not be read at the last poll (None: it was)."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="sweeps", cursor_type="row", zebra_stripes=True)
        yield Static("Reading sweeps…", id="empty")
        yield Static(id="progress")
        with Horizontal(id="body"):
            yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
            yield ParetoPlot(id="pareto")
        yield Static(id="detail")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = "Sweeps"
        self.query_one("#pareto").border_title = "val L0 → · val FVU ↑ · ★ front"
        self.query_one("#sweeps", DataTable).add_columns("sweep", "dataset", "executor", "grid", "trials",
                                                         "finished", "running", "failed", "best val FVU")
        self.query_one("#trials", DataTable).add_columns(*TRIAL_COLUMNS)
        self._show_body(False)
        self.load_sweeps()
        self.set_interval(POLL_S, self.poll_folder)

    def _show_body(self, shown: bool) -> None:
        for selector in ("#sweeps", "#progress", "#body", "#detail"):
            self.query_one(selector).display = shown
        self.query_one("#empty").display = not shown

    @property
    def selected_trial(self) -> dict[str, Any] | None:
        table = self.query_one("#trials", DataTable)
        if self.trials is None or not table.row_count:
            return None
        trial_id = int(table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value)
        return self.trials.filter(self.trials["trial_id"] == trial_id).row(0, named=True)

    # -- keys ----------------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_refresh(self) -> None:
        self.load_sweeps()

    def action_promote(self) -> None:
        trial = self.selected_trial
        if trial is None or self.sweep is None:
            self.notify("No trial selected.", title="Promote", severity="warning")
            return
        self.promote(self.sweep["sweep_id"], trial["trial_id"])

    def action_open_run(self) -> None:
        trial = self.selected_trial
        if trial is None:
            return
        if trial["run_id"] is None:
            self.notify(f"Trial {trial['trial_id']} is not a run yet: p promotes it.", title="Open run")
            return
        self.app.run_id = int(trial["run_id"])
        self.app.action_open("features", run_id=int(trial["run_id"]))

    @on(DataTable.RowSelected, "#trials")
    def trial_chosen(self, _: DataTable.RowSelected) -> None:
        self.action_open_run()

    # -- reading -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="sweep-list")
    def load_sweeps(self) -> None:
        from store.sweeps import list_sweeps

        self._stores.read_and_post(self, lambda db: [self.SweepsLoaded(list_sweeps(db).to_dicts())],
                                   lambda error: LoadFailed(f"Could not read the sweeps: {error}"))

    @work(thread=True, exclusive=True, group="sweep-trials")
    def load_trials(self, sweep_id: int) -> None:
        from engine.sweep.summary import with_front
        from store.sweeps import get_sweep, sweep_trials

        self._stores.read_and_post(
            self, lambda db: [self.TrialsLoaded(get_sweep(db, sweep_id), with_front(sweep_trials(db, sweep_id)))],
            lambda error: LoadFailed(f"Could not read sweep {sweep_id}: {error}"))

    def poll_folder(self) -> None:
        if self.sweep is not None and self.trials is not None and not self._write_lock.locked():
            self.read_folder(self.sweep["sweep_id"], self.sweep["folder"], self.trials)

    @work(thread=True, exclusive=True, group="sweep-poll")
    def read_folder(self, sweep_id: int, folder: str, shown: pl.DataFrame) -> None:
        from engine.sweep.folder import SweepFolder
        from engine.sweep.run_sweep import trial_frame

        try:
            files = trial_frame(sweep_id, SweepFolder(folder))
        except Exception as error:  # a folder moved or half-copied: say so, keep showing the stored rows
            self.post_message(self.FolderRead(sweep_id, str(error)))
            return
        self.post_message(self.FolderRead(sweep_id, None))
        if folder_news(shown, files):
            self.post_message(self.FolderChanged(sweep_id))

    @on(FolderRead)
    def folder_read(self, message: FolderRead) -> None:
        if self.sweep is not None and self.trials is not None and message.sweep_id == self.sweep["sweep_id"] \
                and message.error != self.folder_error:
            self.folder_error = message.error
            self.query_one("#progress", Static).update(progress_text(self.sweep, self.trials, self.folder_error))

    # -- writing -------------------------------------------------------------------------------------
    @on(FolderChanged)
    def folder_changed(self, message: FolderChanged) -> None:
        self.write(message.sweep_id, "ingest", None)

    def promote(self, sweep_id: int, trial_id: int) -> None:
        self.write(sweep_id, "promote", trial_id)

    @work(thread=True, group="sweep-write")
    def write(self, sweep_id: int, what: str, trial_id: int | None) -> None:
        """Ingest the sweep's folder, or promote a trial; each is one transaction (a quit rolls it back,
        and both can simply be done again)."""
        from engine.errors import InputError
        from engine.sweep.promote import promote_trial
        from engine.sweep.run_sweep import ingest

        with self._write_lock:
            try:
                with self._stores.cursor() as db:
                    if what == "ingest":
                        ingest(db, sweep_id)
                        self.post_message(self.Written(sweep_id, ""))
                        return
                    assert trial_id is not None
                    done = promote_trial(db, sweep_id, trial_id)
            except InputError as error:
                self.post_message(self.WriteRefused(str(error)))
                return
            except Exception as error:  # a failed write rolled back; say so and keep going
                self.post_message(self.WriteRefused(f"sweep {sweep_id}: could not {what}: {error}"))
                return
        others = [t for t in done.trial_ids if t != trial_id]
        seeds = f", with trial(s) {', '.join(map(str, others))} (its other seeds)" if others else ""
        self.post_message(self.Written(sweep_id, f"sweep {sweep_id} trial {trial_id}: promoted to run "
                                       f"{done.run_id} ({len(done.sae_ids)} SAE(s){seeds}); enter opens it",
                                       done.run_id))

    @on(Written)
    def written(self, message: Written) -> None:
        if message.note:
            self.notify(message.note, title="Promote", markup=False)
        if message.run_id is not None:
            self.app.run_id = message.run_id
            home = self.app.screen_stack[0]
            if hasattr(home, "action_refresh"):  # Home lists the new run when it is back
                home.action_refresh()
        self.load_sweeps()

    @on(WriteRefused)
    def write_refused(self, message: WriteRefused) -> None:
        self.notify(message.reason, title="Promote", severity="warning", markup=False)

    # -- showing -------------------------------------------------------------------------------------
    @on(SweepsLoaded)
    def sweeps_loaded(self, message: SweepsLoaded) -> None:
        table = self.query_one("#sweeps", DataTable)
        kept = self.sweep["sweep_id"] if self.sweep else None
        self._sweeps = {str(row["sweep_id"]): row for row in message.sweeps}
        table.clear()
        for key, row in self._sweeps.items():
            table.add_row(key, row["dataset"], row["executor"], row["grid"], row["n_trials"], row["finished"],
                          row["running"], row["failed"], "—" if row["best_val_fvu"] is None else f"{row['best_val_fvu']:.4f}", key=key)
        self._show_body(bool(self._sweeps))
        if not self._sweeps:
            self.query_one("#empty", Static).update(NO_SWEEPS_TEXT)
            return
        self.sub_title = f"Sweeps · {len(self._sweeps)}"
        target = str(kept) if str(kept) in self._sweeps else list(self._sweeps)[-1]  # the newest: likely live
        table.move_cursor(row=table.get_row_index(target))
        self.load_trials(int(target))

    @on(DataTable.RowHighlighted, "#sweeps")
    def sweep_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value in self._sweeps and (self.sweep is None or
                                                    str(self.sweep["sweep_id"]) != event.row_key.value):
            self.load_trials(int(event.row_key.value))

    @on(TrialsLoaded)
    def trials_loaded(self, message: TrialsLoaded) -> None:
        from engine.sweep.summary import trial_table

        table = self.query_one("#trials", DataTable)
        selected = self.selected_trial if self.sweep and self.sweep["sweep_id"] == message.sweep["sweep_id"] else None
        if self.sweep is None or self.sweep["sweep_id"] != message.sweep["sweep_id"]:
            self.folder_error = None
        self.sweep, self.trials = message.sweep, message.trials
        table.clear()
        for row in trial_table(message.trials).iter_rows(named=True):
            cells = [_cell(row[c]) for c in TRIAL_COLUMNS]
            cells[1] = Text("★", style="bold yellow") if row["front"] else ""
            cells[7] = Text(row["status"], style={"finished": "green", "running": "cyan", "failed": "red",
                                                  "lost": "red"}.get(row["status"], "dim"))
            table.add_row(*cells, key=str(row["trial"]))
        if selected is not None and table.row_count:
            table.move_cursor(row=table.get_row_index(str(selected["trial_id"])))
        self.query_one("#progress", Static).update(progress_text(self.sweep, self.trials, self.folder_error))
        self._show_trial()

    @on(DataTable.RowHighlighted, "#trials")
    def trial_highlighted(self, _: DataTable.RowHighlighted) -> None:
        self._show_trial()

    def _show_trial(self) -> None:
        trial = self.selected_trial
        assert self.trials is not None
        self.query_one("#detail", Static).update(detail_text(trial) if trial else "no trials")
        self.query_one("#pareto", ParetoPlot).show_trials(self.trials, trial["trial_id"] if trial else None)

    @on(LoadFailed)
    def load_failed(self, message: LoadFailed) -> None:
        self.notify(message.reason, title="Sweeps", severity="error", markup=False)
