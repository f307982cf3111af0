"""The mini app: one Textual app that owns the open database for as long as it runs.

The CLI opens the Store (so a locked or broken file is reported in one sentence before any
screen appears) and hands it to `MiniApp`, which closes it on the way out. Screens never touch
`app.db` from the event loop: they read in thread workers, each on its own cursor lent by
`ThreadStores`, so a slow query never freezes a key press.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen

from store.db import Store
from tui.process_pool import stop_process_pools
from tui.ranking import RankChanged, RankState, rank_in_thread
from tui.screen_registry import SCREENS
from tui.screens.home import HomeScreen
from tui.thread_stores import ThreadStores
from tui.worker_threads import WorkerThreads

if TYPE_CHECKING:
    from engine.analysis.rank import RankConfig
    from engine.epochs import Epoch


GIL_SWITCH_INTERVAL_S = 0.001
"""How long a thread running Python may keep others waiting for the GIL (Python's default is 5 ms). A key,
a label's commit or a panel read waits for it after every query while other threads compute (reading
panels ahead, ranking): with the default, a label's few statements waited up to 5 ms each."""


class MiniCommands(Provider):
    """The command palette's entries for mini: one per screen and per app-wide action."""

    def _commands(self) -> list[tuple[str, str, str]]:
        # (title, help, action on the app); the palette runs the action by name.
        return [
            ("Home", "Go to the list of datasets and runs", "home"),
            *((entry.title, entry.help, f"open('{name}')") for name, entry in SCREENS.items()),
            *self._rank_commands(),
            ("Help", "Show the keys", "help"),
            ("Refresh datasets", "Read the list of datasets again", "refresh_datasets"),
            ("Quit", "Close the database and leave mini", "quit"),
        ]

    def _rank_commands(self) -> list[tuple[str, str, str]]:
        """`Rank run N` for the open run and for every run Home lists."""
        app = self.app
        runs = [app.run_id] if isinstance(app, MiniApp) and app.run_id is not None else []
        home = app.screen_stack[0] if app.screen_stack else None
        runs += [int(run_id) for run_id in getattr(home, "_runs", {}) if int(run_id) not in runs]
        return [(f"Rank run {run_id}", f"Rank (or re-rank) run {run_id}'s features in the background",
                 f"rank({run_id})") for run_id in runs]

    def _runner(self, action: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await self.app.run_action(action)

        return run

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, self._runner(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        commands = self._commands()
        typed = re.fullmatch(r"\s*rank\s+run\s+(\d{1,9})\s*", query, re.IGNORECASE)
        if typed and f"rank({int(typed[1])})" not in {action for _, _, action in commands}:
            # A run Home has not listed (yet): the dialog says so if there is no such run.
            run_id = int(typed[1])
            commands.append((f"Rank run {run_id}", f"Rank (or re-rank) run {run_id}'s features in the background",
                             f"rank({run_id})"))
        for title, help_text, action in commands:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(action), help=help_text)


class MiniApp(App[None]):
    """The mini terminal app. Owns `db` from start to exit and closes it on the way out."""

    TITLE = "mini"

    CSS = """
    Screen {
        background: $surface;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    COMMANDS = App.COMMANDS | {MiniCommands}

    def __init__(self, db: Store, *, run_id: int | None = None, dataset: str | None = None):
        super().__init__()
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.db = db
        self.stores = ThreadStores(db)
        self.sub_title = str(db.path)
        self.run_id = run_id
        """The open run: the one the run screens show (Home sets it; the palette uses it)."""
        self.dataset = dataset
        """The selected dataset: where Train trains."""
        self.ranking: RankState | None = None
        """The latest word of the app's ranking (tui.ranking), running or ended; None before the first."""
        self.rank_config: RankConfig | None = None
        """Settings rankings started in the app use (None: RankConfig's defaults, as `mini rank`)."""
        self._rank_cancel: threading.Event | None = None
        """Set while a ranking runs; setting it cancels the ranking."""

    def on_load(self) -> None:
        # Before the first worker starts: thread workers run on threads that quitting does not wait for.
        asyncio.get_running_loop().set_default_executor(WorkerThreads())

    def get_default_screen(self) -> Screen:
        # Home is the bottom of the stack, so "Home" means popping everything above it.
        return HomeScreen(self.stores)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # MiniCommands has our own Quit and Help; Textual's Quit and Keys would only repeat them.
        for command in super().get_system_commands(screen):
            if command.title not in {"Quit", "Keys"}:
                yield command

    # -- actions -------------------------------------------------------------------------------------
    def action_help(self) -> None:
        from tui.screens.help import HelpScreen, section_of  # only built when someone asks

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(section_of(self.screen)))

    async def action_quit(self) -> None:
        """Quit (q, ctrl+q, the palette) within a second: a ranking or a validation is cancelled (they store
        nothing), a training is cancelled and its run marked resumable; see tui/worker_threads.py."""
        self.cancel_ranking()
        for screen in self.screen_stack:
            cancel = getattr(screen, "cancel_for_quit", None)
            if callable(cancel):
                cancel()
        for screen in self.screen_stack:
            if getattr(screen, "training", False):
                screen.action_quit()  # cancels; once a run row is written, waits for it to be marked, then exits
                return
        self.exit()

    def action_open(self, name: str, **kwargs: Any) -> None:
        """Open screen `name` of SCREENS for the open run or selected dataset (kwargs override them)."""
        entry = SCREENS[name]
        if entry.needs == "run":
            kwargs.setdefault("run_id", self.run_id)
            if kwargs["run_id"] is None:
                self.notify("Open a run first: select it on Home and press enter.", title=entry.title,
                            severity="warning")
                return
        elif entry.needs == "dataset":
            kwargs.setdefault("dataset", self.dataset)
            if kwargs["dataset"] is None:
                self.notify("Select a dataset on Home first.", title=entry.title, severity="warning")
                return
        screen_class = getattr(importlib.import_module(entry.module), entry.cls)
        self.push_screen(screen_class(self.stores, **kwargs))

    def action_home(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_refresh_datasets(self) -> None:
        self.action_home()
        home = self.screen_stack[0]
        if isinstance(home, HomeScreen):
            home.action_refresh()

    # -- ranking (tui/ranking.py) ----------------------------------------------------------------------
    @property
    def ranking_running(self) -> bool:
        return self._rank_cancel is not None

    def action_rank(self, run_id: int | None = None) -> None:
        """Open the Rank dialog for `run_id` (default: the open run); ranking starts when it is confirmed."""
        from tui.screens.rank_dialog import RankDialog

        run_id = self.run_id if run_id is None else run_id
        if run_id is None:
            self.notify("Open a run first: select it on Home and press enter.", title="Rank", severity="warning")
            return
        if self.ranking_running:
            assert self.ranking is not None
            self.notify(f"Run {self.ranking.run_id} is being ranked; one ranking at a time (c in its Features "
                        "cancels it).", title="Rank", severity="warning")
            return
        self.push_screen(RankDialog(self.stores, run_id), self._rank_confirmed)

    def _rank_confirmed(self, request) -> None:
        if request is None:
            return
        self.run_id = request.run_id
        if not self.start_ranking(request.run_id, request.epoch):
            return
        # The progress line and then the ranking itself are shown by the run's Features.
        screen = self.screen
        if not (getattr(screen, "run_id", None) == request.run_id and hasattr(screen, "ranking_changed")):
            self.action_open("features", run_id=request.run_id)

    def start_ranking(self, run_id: int, epoch: Epoch | None = None) -> bool:
        """Rank `run_id` in a thread worker (one at a time); False, said in a notification, when one runs."""
        if self.ranking_running:
            return False
        cancel = self._rank_cancel = threading.Event()
        self.ranking = RankState(run_id, "running")
        self.run_worker(lambda: rank_in_thread(self.stores, run_id, epoch, self.rank_config, cancel,
                                               lambda state: self.post_message(RankChanged(state))),
                        thread=True, group="rank", name=f"rank run {run_id}", exit_on_error=False)
        self._tell_screens(self.ranking)
        return True

    def cancel_ranking(self) -> None:
        """Ask the running ranking to stop (between SAEs or blocks of shuffles); it stores nothing."""
        if self._rank_cancel is None or self._rank_cancel.is_set():
            return
        self._rank_cancel.set()
        if self.ranking is not None and self.ranking.running:
            self.ranking = self.ranking._replace(cancelling=True)
            self._tell_screens(self.ranking)

    def on_rank_changed(self, message: RankChanged) -> None:
        state = message.state
        if self._rank_cancel is not None and self._rank_cancel.is_set() and state.running:
            state = state._replace(cancelling=True)
        self.ranking = state
        if not state.running:
            self._rank_cancel = None
            severity = {"ranked": "information", "cancelled": "information"}.get(state.status, "error")
            self.notify(state.message, title="Rank", severity=severity, markup=False)
        self._tell_screens(state)

    def _tell_screens(self, state: RankState) -> None:
        for screen in self.screen_stack:
            changed = getattr(screen, "ranking_changed", None)
            if callable(changed):
                changed(state)

    def on_unmount(self) -> None:
        # Screens and their workers are gone by now; only threads still inside a query remain. A ranking
        # stops at its next check once cancelled, letting go of its cursor.
        if self._rank_cancel is not None:
            self._rank_cancel.set()
        self.stores.close()
        stop_process_pools()  # a validation's worker processes: their results have nobody to go to


def run_app(db: Store) -> None:
    """Run the app on an open Store until the person quits; the store is closed afterwards.

    Exits with the app's return code when it ended with an error (an unhandled exception has
    already been printed by Textual).
    """
    app = MiniApp(db)
    try:
        app.run()
    finally:
        app.stores.close()
        # The process ends next. With PyTorch loaded, the collector's sweeps over its millions of objects
        # while the interpreter shuts down took over a second after q; frozen objects are not swept
        # (atexit handlers still run).
        gc.freeze()
    if any(thread.is_alive() for thread in threading.enumerate() if thread is not threading.main_thread()):
        # Workers left behind at quit (tui/worker_threads.py), or PyTorch still being imported: the interpreter
        # would tear its modules down under daemon threads still running C code, or freeze one holding a lock
        # the teardown needs (stderr's, an import's), and it spent tenths of a second on PyTorch's objects.
        # The database is closed and nothing else of ours waits to be written, so end the process here.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(app.return_code or 0)
    if app.return_code:
        raise SystemExit(app.return_code)
