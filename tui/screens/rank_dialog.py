"""Rank run N: the epoch to rank on (as `mini rank --where/--around`), and a word before a ranking is replaced.

Opened by Features' `R`, the palette's `Rank run N` and Train's offer after a run finishes. It reads the
run first (status, SAEs, whether it is ranked and on which epoch), so a run that cannot be ranked is said
before anything starts and re-ranking says what it replaces. The options are checked as the CLI checks
them (engine.epochs.epoch_from_options); whether a `--where` names real columns is checked by rank_run
before its slow part, and said in the app's ranking line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui.widgets.modal_box import box_css

if TYPE_CHECKING:
    from engine.epochs import Epoch
    from tui.thread_stores import ThreadStores

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("tab, shift+tab", "move between --where, --around and the buttons"),
    ("enter", "rank (or re-rank) with these options; empty options rank on the run's epoch"),
    ("esc", "close without ranking"),
)


class RankRequest(NamedTuple):
    """What the person asked for: rank `run_id` on `epoch` (None: the run's own epoch, as `mini rank`)."""

    run_id: int
    epoch: Epoch | None


class RankDialog(ModalScreen["RankRequest | None"]):
    """Ask for the epoch options of a ranking of `run_id`; dismisses with a RankRequest, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
    ]

    DEFAULT_CSS = box_css("RankDialog", "rank-box") + """
    RankDialog #about { height: auto; margin-bottom: 1; }
    RankDialog .option { height: auto; }
    RankDialog .option Static { width: 10; height: 3; content-align: left middle; }
    RankDialog .option Input { width: 1fr; }
    RankDialog #rank-error { height: auto; color: $error; display: none; }
    RankDialog #rank-error.-shown { display: block; }
    RankDialog #buttons { height: auto; align: center middle; margin-top: 1; }
    RankDialog Button { margin: 0 2; min-width: 10; }
    """

    @dataclass
    class RunRead(Message):
        facts: dict[str, Any] | None
        reason: str | None = None

    def __init__(self, stores: ThreadStores, run_id: int):
        super().__init__()
        self._stores = stores
        self.run_id = run_id
        self.facts: dict[str, Any] | None = None
        """status, n_saes, ranked (bool) and epoch (what the ranking or the run read), once read."""

    def compose(self) -> ComposeResult:
        with Vertical(id="rank-box") as box:
            box.border_title = f"Rank run {self.run_id}"
            box.border_subtitle = "enter rank · esc close"
            yield Static(f"Reading run {self.run_id}…", id="about", markup=False)
            with Horizontal(classes="option"):
                yield Static("--where")
                yield Input(id="where", placeholder="every bin of the run's epoch, or e.g. speed > 5")
            with Horizontal(classes="option"):
                yield Static("--around")
                yield Input(id="around", placeholder="EVENT:START,STOP, e.g. move_onset:-0.25,0.25")
            yield Static("", id="rank-error", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Rank", id="rank", variant="primary", disabled=True)
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#where", Input).focus()
        self._read_run()

    @work(thread=True, exclusive=True, group="rank-dialog")
    def _read_run(self) -> None:
        from engine.epochs import Epoch
        from store.epochs import run_epochs
        from store.rankings import ranking_exists
        from store.runs import get_run, load_saes

        try:
            with self._stores.cursor() as db:
                run = get_run(db, self.run_id)
                n_saes = load_saes(db, self.run_id).height
                ranked = ranking_exists(db, self.run_id)
                epochs = run_epochs(db, self.run_id)
        except Exception as error:  # said in the dialog: a failed read must not take the app down
            self.post_message(self.RunRead(None, f"Could not read run {self.run_id}: {error}"))
            return
        row = epochs.get("rank" if ranked else "train")
        epoch = Epoch(row["where_sql"], row["around"]).describe() if row else "all bins"
        self.post_message(self.RunRead({"status": run["status"], "n_saes": n_saes, "ranked": ranked,
                                        "epoch": epoch, "dataset": run["config"].get("dataset")}))

    @on(RunRead)
    def _run_read(self, message: RunRead) -> None:
        about = self.query_one("#about", Static)
        if message.facts is None:
            about.update(message.reason or "")
            return
        facts = self.facts = message.facts
        n = facts["n_saes"]
        if n == 0:
            about.update(f"Run {self.run_id} ({facts['status']}) has no trained SAEs yet: train or resume it first.")
            return
        saes = f"{n} SAE{'s' if n != 1 else ''}"
        if facts["ranked"]:
            about.update(f"Run {self.run_id} is ranked already (on {facts['epoch']}). Ranking again replaces its "
                         f"ranking and suggestions for its {saes}; labels and validations stay. Options left "
                         "empty rank on the run's epoch again.")
            self.query_one("#rank", Button).label = "Re-rank"
        else:
            about.update(f"Rank the {saes} of run {self.run_id} on dataset '{facts['dataset']}'. Options left "
                         f"empty rank on the run's epoch ({facts['epoch']}).")
        self.query_one("#rank", Button).disabled = False

    @on(Input.Changed)
    def _typing(self) -> None:
        self.query_one("#rank-error").remove_class("-shown")

    @on(Input.Submitted)
    @on(Button.Pressed, "#rank")
    def _rank(self) -> None:
        from engine.epochs import epoch_from_options
        from engine.errors import InputError

        if self.facts is None or not self.facts["n_saes"]:
            return  # the reason is on screen (still reading, or nothing to rank)
        where = self.query_one("#where", Input).value
        around = self.query_one("#around", Input).value
        try:
            epoch = epoch_from_options(where if where.strip() else None, around if around.strip() else None)
        except InputError as error:
            shown = self.query_one("#rank-error", Static)
            shown.update(str(error))
            shown.add_class("-shown")
            return
        self.dismiss(RankRequest(self.run_id, epoch if epoch.is_set else None))

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
