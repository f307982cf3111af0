"""Train: a run's settings (the same, with the same defaults, as `mini train`), then live progress.

Training runs `engine.pipeline.train_run` in a thread worker on its own cursor, so the app answers keys
while it trains. Progress events arrive on the worker's thread; they are kept whole for the plots and
posted to the screen at most a few times a second, so a fast trainer cannot flood the event loop.
`c` sets the trainer's cancel event: it stops at the next step and stores the weights so far as a
cancelled (resumable) run. Quitting sets a second event as well: the run stops at its next step (or drops the
results it is computing or storing) and is marked cancelled at its last epoch checkpoint without encoding or
storing anything more, so mini exits within a second and `mini train --resume` continues the run. Before the
run row is written (PyTorch loading, the dataset being read, the stack being built) there is nothing to mark:
mini exits at once and the worker, a thread quitting does not wait for, finds the database closed.

What happens before the first step (importing PyTorch, reading the dataset, building the stack) is said on
the status line as it happens, and PyTorch is imported in the background as soon as the screen opens, while
the person reads the form.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Header, Input, ProgressBar, Select, Static

from tui.train_engine import ENGINE_READY, import_training
from tui.train_messages import (
    DatasetLoaded,
    RunCancelled,
    RunEnded,
    RunFailed,
    RunFinished,
    StartCancelled,
    TrainProgressed,
    TrainStage,
)
from tui.train_text import ProgressHistory, plan_text, quality_line, sae_count
from tui.widgets.key_footer import KeyFooter
from tui.widgets.train_form import FIELDS, TrainForm, TrainSettings, check_settings, field_for_engine_error
from tui.widgets.train_progress import TrainProgressPanel

if TYPE_CHECKING:
    from engine.sae.train import TrainProgress
    from tui.thread_stores import ThreadStores

PROGRESS_INTERVAL_S = 0.25
"""At most one progress message per this many seconds reaches the event loop (the plots keep every event)."""

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("tab, shift+tab", "move between settings; enter opens a choice"),
    ("ctrl+s", "start training (not while a setting is red)"),
    ("c", "cancel training; the weights so far are stored"),
    ("o", "open QC of the run just trained"),
    ("r", "rank the run just trained (offered when it finishes; runs in the background)"),
    ("esc", "back (while training: cancel it first)"),
    ("q", "quit; while training: cancel it (resumable from its last epoch), then quit"),
)


class TrainScreen(Screen):
    """The settings form and, once started, the progress of one training at a time."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("start", "cancel_training", "open_qc", "rank_run", "back")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start"),
        Binding("c", "cancel_training", "Cancel training"),
        Binding("o", "open_qc", "Open QC"),
        Binding("r", "rank_run", "Rank run"),
        Binding("escape", "back", "Back"),
        Binding("q", "quit", "Quit"),
    ]

    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    DEFAULT_CSS = """
    TrainScreen #dataset-bar {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    TrainScreen #body {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    TrainScreen.-wide #body {
        layout: horizontal;
    }
    TrainScreen.-wide #form {
        width: 78;
        height: 100%;
        border-right: solid $primary 60%;
    }
    """

    def __init__(self, stores: ThreadStores, dataset: str):
        super().__init__()
        self._stores = stores
        self.dataset = dataset
        self._dataset_kind: str | None = None
        self._value_type: str | None = None
        self._n_train: int | None = None
        self._dataset_missing = False
        self._cancel: threading.Event | None = None
        """Set while a training runs; setting the event cancels it."""
        self._quitting = threading.Event()
        """Set (with the cancel event) when mini quits: the run stops without storing its results."""
        self._run_written = threading.Event()
        """Set by the worker once the training's run row is written: from then on quitting waits for it to be
        marked cancelled."""
        self._settings: TrainSettings | None = None
        self.history = ProgressHistory()
        self._progress_shown = False
        """A progress message of this training has been handled: later stage messages are stale."""
        self._last_post = 0.0
        self.last_run_id: int | None = None
        """The run this screen trained last (finished or cancelled): what `o` opens."""
        self._last_finished = False
        """Whether that run finished (then `r` offers to rank it)."""
        self._quit_when_stored = False
        self._left_while_training = False
        self._mounted_in: tuple[Any, asyncio.AbstractEventLoop] | None = None
        """(app, its event loop), kept at mount for the worker's word after the screen has closed."""

    @property
    def training(self) -> bool:
        return self._cancel is not None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Reading dataset '{self.dataset}'…", id="dataset-bar")
        with VerticalScroll(id="body"):
            yield TrainForm(id="form")
            yield TrainProgressPanel(id="progress-panel")
        yield KeyFooter()

    def on_mount(self) -> None:
        # The worker tells the app (not this screen) how a run ended if the screen has gone by then;
        # a detached screen no longer knows its app, so keep both now.
        self._mounted_in = (self.app, asyncio.get_running_loop())
        self.sub_title = f"Train on {self.dataset}"
        self._check_form()
        self.query_one(f"#{FIELDS[0].name}").focus()
        self.load_dataset()
        if not ENGINE_READY.is_set():
            # A daemon thread, not a worker: quitting never waits for an import nobody needs any more.
            threading.Thread(target=import_training, name="mini-import-torch", daemon=True).start()

    def on_unmount(self) -> None:
        # Leaving (the palette's Home, or a hard quit) must not leave a trainer running with nobody to
        # show it to: it stops at its next step and stores what it learned as a cancelled run.
        if self._cancel is not None:
            self._left_while_training = True
            self._cancel.set()

    # -- the form ------------------------------------------------------------------------------------
    def _check_form(self) -> tuple[TrainSettings | None, dict[str, str]]:
        form = self.query_one(TrainForm)
        settings, errors = check_settings(form.values(), dataset_kind=self._dataset_kind,
                                          value_type=self._value_type)
        form.show_problems(errors)
        form.show_plan(plan_text(settings, errors, self._n_train), error=bool(errors))
        return settings, errors

    @on(Input.Changed)
    @on(Select.Changed)
    def settings_changed(self) -> None:
        if self.is_mounted:
            self._check_form()

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    @on(Button.Pressed, "#open-qc")
    def open_qc_pressed(self) -> None:
        self.action_open_qc()

    @on(Button.Pressed, "#rank-now")
    def rank_pressed(self) -> None:
        self.action_rank_run()

    # -- keys ----------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "start":
            return not self.training
        if action == "cancel_training":
            return self.training
        if action == "open_qc":
            return self.last_run_id is not None and not self.training
        if action == "rank_run":
            return self.last_run_id is not None and self._last_finished and not self.training
        return True

    def action_start(self) -> None:
        if self.training:
            return
        if any(isinstance(screen, TrainScreen) and screen.training for screen in self.app.screen_stack):
            self.notify("Another Train screen below this one is training: one run at a time.",
                        title="Train", severity="warning")
            return
        settings, errors = self._check_form()
        if self._dataset_missing:
            self.notify(f"There is no dataset '{self.dataset}' to train on.", title="Train", severity="error")
            return
        if settings is None:
            first = next(field for field in FIELDS if field.name in errors)
            self.notify(errors[first.name], title="Not started: fix the settings in red", severity="error")
            self.query_one(f"#{first.name}").focus()
            return
        self._settings = settings
        self._cancel = threading.Event()
        self._quitting = threading.Event()
        self._run_written = threading.Event()
        self.history = ProgressHistory()
        self._progress_shown = False
        self._last_post = 0.0
        self.query_one(TrainForm).disabled = True
        self.query_one("#open-qc").remove_class("-shown")
        self.query_one("#rank-now").remove_class("-shown")
        self._last_finished = False
        self.query_one(TrainProgressPanel).reset()
        self._status(f"Starting {sae_count(settings.n_saes)} on {self.dataset}…")
        self.query_one("#progress-panel").scroll_visible(top=True, animate=False)
        self.refresh_bindings()
        self.train(settings, self._cancel)

    def action_cancel_training(self) -> None:
        if self._cancel is None:
            return
        self._cancel.set()
        self._status("Cancelling: stopping at the next step, then storing the weights so far…")

    def action_open_qc(self) -> None:
        if self.last_run_id is None or self.training:
            return
        self.app.run_id = self.last_run_id
        self.app.action_open("qc", run_id=self.last_run_id)

    def action_rank_run(self) -> None:
        """The offer after a run finishes: the Rank dialog for it (the ranking shows in its Features)."""
        if self.last_run_id is None or not self._last_finished or self.training:
            return
        self.app.action_rank(self.last_run_id)

    def action_back(self) -> None:
        if self.training:
            self.notify("Training is running: press c to cancel it first.", title="Train", severity="warning")
            return
        self.app.pop_screen()

    def action_quit(self) -> None:
        if self._cancel is None:
            self.app.exit()
            return
        self._quitting.set()
        self._cancel.set()
        if not self._run_written.is_set():
            # Nothing is written yet, and the worker checks the events before it writes the run row.
            self.app.exit()
            return
        self._quit_when_stored = True
        self._status("Quitting: stopping the training at its next step…")

    # -- work ----------------------------------------------------------------------------------------
    @work(thread=True, group="train-dataset")
    def load_dataset(self) -> None:
        from store.summaries import dataset_summaries

        try:
            with self._stores.cursor() as db:
                summaries = dataset_summaries(db)
        except Exception as error:  # shown on screen: a failed read must not take the app down
            self.post_message(DatasetLoaded(None, f"Could not read datasets: {error}"))
            return
        rows = [row for row in summaries if row["name"] == self.dataset]
        self.post_message(DatasetLoaded(rows[0] if rows else None))

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def train(self, settings: TrainSettings, cancel: threading.Event) -> None:
        from engine.errors import InputError  # light; the heavy imports fail inside the try, said on screen

        quitting, run_written = self._quitting, self._run_written
        try:
            if not ENGINE_READY.is_set():  # still importing (begun when the screen opened)
                self.post_message(TrainStage("loading PyTorch…"))
            from engine.pipeline import TrainingCancelled, train_run

            ENGINE_READY.set()
            from store.qc import run_qc_headline

            spec = settings.to_spec(self.dataset)
            with self._stores.cursor() as db:
                outcome = train_run(db, spec, on_progress=self._on_progress, cancel=cancel,
                                    on_stage=lambda text: self.post_message(TrainStage(text)),
                                    quitting=quitting, on_run=lambda _: run_written.set())
                headline = {} if quitting.is_set() else run_qc_headline(db, outcome.run_id)
        except TrainingCancelled:
            self.post_message(StartCancelled())
            return
        except InputError as error:  # refused before any run row: a setting the form could not judge
            self.post_message(RunFailed(str(error), field_for_engine_error(str(error))))
            return
        except Exception as error:  # train_run has marked its run failed; say why on screen
            self.post_message(RunFailed(f"{type(error).__name__}: {error}", None))
            return
        ended = RunFinished if outcome.status == "finished" else RunCancelled
        self.post_message(ended(outcome.run_id, outcome.status, len(outcome.sae_ids),
                                outcome.outcome.examples_seen, outcome.seconds, headline))
        if self._left_while_training:
            self._tell_app(f"Run {outcome.run_id} was cancelled when Train closed; what it learned so far is "
                           f"stored (mini train --resume {outcome.run_id}).")

    def _tell_app(self, text: str) -> None:
        """Notify from the worker thread without blocking: the app may be quitting (then nobody is told)."""
        assert self._mounted_in is not None
        app, loop = self._mounted_in
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the app is gone
            loop.call_soon_threadsafe(lambda: app.notify(text, title="Train"))

    def _on_progress(self, event: TrainProgress) -> None:
        """Called on the training thread after every logged step and every epoch."""
        self.history.add(event)
        now = time.monotonic()
        if now - self._last_post >= PROGRESS_INTERVAL_S or event.step >= event.total_steps:
            self._last_post = now
            self.post_message(TrainProgressed(event))

    # -- results -------------------------------------------------------------------------------------
    @on(TrainStage)
    def show_stage(self, message: TrainStage) -> None:
        # Messages are handled in the order they were posted, so a stage posted before the first progress
        # is shown even when a busy event loop handles both after the training thread has gone on.
        if self.training and not self._cancel_requested() and not self._progress_shown:
            self._status(f"Starting: {message.text}")

    @on(StartCancelled)
    def start_cancelled(self) -> None:
        self._training_stopped()
        self._status("Cancelled before training started; nothing was stored.")
        if self._quit_when_stored:
            self.app.exit()

    @on(DatasetLoaded)
    def dataset_loaded(self, message: DatasetLoaded) -> None:
        bar = self.query_one("#dataset-bar", Static)
        summary = message.summary
        if summary is None:
            self._dataset_missing = True
            bar.update(Text(message.reason or f"No dataset named '{self.dataset}': pick one on Home.",
                            style="bold red"))
            return
        self._dataset_kind, self._n_train = summary["kind"], summary["n_train"]
        self._value_type = summary.get("value_type")
        bar.update(f"{summary['kind']} · {summary['n_units']:,} units · train {summary['n_train']:,}"
                   f" · val {summary['n_val']:,} (best epoch) · test unused")
        self._check_form()

    @on(TrainProgressed)
    def show_progress(self, message: TrainProgressed) -> None:
        event = message.event
        if not self.training:
            return  # a late event of a training that has already ended
        assert self._settings is not None
        self._progress_shown = True
        self.query_one(TrainProgressPanel).show_event(event)
        if event.step >= event.total_steps and not self._cancel_requested():
            self._status("Every epoch ran: encoding all examples, QC against PCA and NMF, storing…")
        elif not self._cancel_requested():
            self._status(f"Training {sae_count(self._settings.n_saes)} on {self.dataset}… (c cancels)")
        self._draw_curves()

    def _cancel_requested(self) -> bool:
        return self._cancel is not None and self._cancel.is_set()

    def _draw_curves(self) -> None:
        self.query_one(TrainProgressPanel).draw(self.history.snapshot())

    @on(RunEnded)
    def run_ended(self, message: RunEnded) -> None:
        if self._quit_when_stored:  # nobody waits to look: say what became of the run, then go
            self._training_stopped()
            if isinstance(message, RunFinished):  # q came while its results were being stored
                self._status(f"Run {message.run_id} finished and is stored")
            else:
                self._status(f"Run {message.run_id} cancelled for quitting; mini train --resume {message.run_id} "
                             "continues it")
            self.app.exit()
            return
        self._training_stopped()
        self._draw_curves()
        self.last_run_id = message.run_id
        self.app.run_id = message.run_id
        quality = quality_line(message.headline)
        self._last_finished = isinstance(message, RunFinished)
        if self._last_finished:
            self._status(f"Run {message.run_id} finished: {sae_count(message.n_saes)}, "
                         f"{message.examples_seen:,} examples each. Rank run {message.run_id} now? Press r.")
            self.notify(f"Run {message.run_id} finished. Press r to rank it now, o to open its QC.", title="Train")
            self.query_one("#rank-now").add_class("-shown")
            self.refresh_bindings()
        else:
            self._status(f"Run {message.run_id} cancelled after {message.examples_seen:,} examples; "
                         f"its weights so far are stored")
            resume = f"resume: mini train --resume {message.run_id}"
            quality = " · ".join(part for part in (quality, resume) if part)
            self.notify(f"Run {message.run_id} cancelled; what it learned so far is stored.", title="Train")
        self.query_one("#rate", Static).update(quality)
        open_qc = self.query_one("#open-qc", Button)
        open_qc.add_class("-shown")
        open_qc.focus()
        self._refresh_home()
        if self._quit_when_stored:
            self.app.exit()

    @on(RunFailed)
    def run_failed(self, message: RunFailed) -> None:
        self._training_stopped()
        self._status(Text(message.reason, style="bold red"))
        self.notify(message.reason, title="Training failed", severity="error")
        if message.field is not None:
            field = message.field
            form = self.query_one(TrainForm)
            form.show_problems({field: message.reason})
            self.query_one(f"#{field}").focus()
        self._refresh_home()
        if self._quit_when_stored:
            self.app.exit()

    def _training_stopped(self) -> None:
        self._cancel = None
        self.query_one("#progress", ProgressBar).query_one("#eta").display = False  # nothing left to wait for
        self.query_one(TrainForm).disabled = False
        self.refresh_bindings()

    def _status(self, text: str | Text) -> None:
        self.query_one("#train-status", Static).update(text)

    def _refresh_home(self) -> None:
        """Home lists runs: have it read them again, so the new run is there on the way back."""
        home = self.app.screen_stack[0]
        refresh = getattr(home, "action_refresh", None)
        if home is not self and callable(refresh):
            refresh()
