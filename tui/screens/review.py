"""Review: one feature at a time, labelled from the keyboard.

The screen reads what the SAE's features share once (engine.analysis.review.load_context), then each feature's
panels in a worker, and keeps the panels of the features around the one shown (prefetched) so that
j / k and every labelling key show the next feature at once. A labelling key writes one row through
engine.validation.labels.label_feature (the function `mini label` uses), waits for its commit, then moves on;
keys pressed while a write is in flight are replayed after it, in order (tui/review_labelling.py, the
screen's base class: the labelling and validating keys).
"""

from __future__ import annotations

import gc
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Header, Static

from tui.messages import LoadFailed
from tui.review_labelling import READ_AHEAD, ReviewLabelling
from tui.review_messages import ContextLoaded, FeatureLoaded, FeatureOrdered, ReadsLeft
from tui.widgets.activation_trace import ActivationTrace
from tui.widgets.key_footer import KeyFooter
from tui.widgets.text_panel import TextPanel
from tui.widgets.tuning_panel import TuningPanel

if TYPE_CHECKING:
    from textual.timer import Timer

    from engine.analysis.review import FeaturePanel, ReviewContext
    from engine.validation.validate import ValidateConfig
    from tui.thread_stores import ThreadStores

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("j, k", "next / previous feature in rank order"),
    ("g, G", "first / last feature in rank order"),
    ("1-9", "accept suggestion N as the label, then show the next feature"),
    ("l", "type a label (→ completes names and predicates); enter saves, esc cancels"),
    ("x", "reject: no interpretable label, then the next feature"),
    ("?", "unsure, then the next feature"),
    ("u", "undo the last label made here (the feature shows what it had before)"),
    ("n", "write a note on the feature's label"),
    ("v", "validate this feature's accepted label on the test split now"),
    ("t", "show top examples or signature units (narrow terminals)"),
    ("s", "tuning panel: tuning → split by a second variable → peri-event histogram"),
    ("b", "split the tuning by the next categorical variable"),
    ("e", "peri-event histogram around the next event"),
    ("], [", "page the tuning panel down / up (the title says which bins are in view)"),
    ("tab", "focus the next panel; up/down then scroll it"),
    ("esc", "back"),
)

CACHE_SIZE = 32
PREFETCH = (1, -1, 2)
"""Positions around the shown feature whose panels are read ahead, nearest first."""
READ_AHEAD_AFTER_S = 0.05
"""Reads ahead start this long after a feature shows. Started at once (even after Textual's refresh: its
after-refresh callbacks can run before the panels' updates reach the screen), they shared the two cores
with drawing the feature, which then took up to 90 ms instead of 10; a person reads a feature for far longer."""


class ReviewScreen(ReviewLabelling):
    """Label one SAE's features in rank order."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("step(1)", "accept(1)", "type_label", "verdict('reject')", "validate", "back", "undo", "step(-1)", "verdict('unsure')", "note")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "step(1)", "Next"),
        Binding("k", "step(-1)", "Prev"),
        Binding("1", "accept(1)", "Accept", key_display="1-9"),
        *(Binding(str(n), f"accept({n})", f"Accept {n}", show=False) for n in range(2, 10)),
        Binding("l", "type_label", "Label"),
        Binding("x", "verdict('reject')", "Reject"),
        Binding("?", "verdict('unsure')", "Unsure"),
        Binding("u", "undo", "Undo"),
        Binding("n", "note", "Note"),
        Binding("v", "validate", "Validate"),
        Binding("g", "jump('first')", "First", show=False),
        Binding("G", "jump('last')", "Last", show=False),
        Binding("t", "toggle_side", "Examples/units", show=False),
        Binding("s", "tuning_view", "Split/PETH", show=False),
        Binding("b", "next_split", "Split by", show=False),
        Binding("e", "next_event", "Event", show=False),
        Binding("right_square_bracket", "page_tuning(1)", "Bins ↓", show=False),
        Binding("left_square_bracket", "page_tuning(-1)", "Bins ↑", show=False),
        Binding("escape", "back", "Back"),
    ]

    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    DEFAULT_CSS = """
    ReviewScreen #info { height: 3; padding: 0 1; }
    ReviewScreen #top { height: 11; }
    ReviewScreen #bottom { height: 1fr; }
    ReviewScreen .panel {
        border-top: solid $primary-darken-2;
        border-title-color: $text-muted;
        padding: 0 1;
        height: 1fr;
    }
    ReviewScreen .panel:focus { border-top: solid $accent; }
    ReviewScreen #suggestions { width: 1fr; }
    ReviewScreen #trace { width: 1fr; }
    ReviewScreen #tuning { width: 1fr; }
    ReviewScreen #examples { width: 1fr; }
    ReviewScreen #units { width: 1fr; display: none; }
    ReviewScreen.-loading #top, ReviewScreen.-loading #bottom { text-opacity: 40%; }
    ReviewScreen.-narrow.-units #examples { display: none; }
    ReviewScreen.-narrow.-units #units { display: block; }
    ReviewScreen.-wide #top { height: 14; }
    ReviewScreen.-wide #suggestions { width: 64; }
    ReviewScreen.-wide #tuning { width: 38; }
    ReviewScreen.-wide #units { display: block; width: 34; }
    """

    def __init__(self, stores: ThreadStores, run_id: int, sae_id: int | None = None, feature_id: int | None = None,
                 *, validate_config: ValidateConfig | None = None):
        super().__init__(stores)
        self._stores = stores
        self.run_id = run_id
        self.sae_id = sae_id
        self._start_feature = feature_id
        self._validate_config = validate_config
        self.context: ReviewContext | None = None
        self.index = 0
        """Position of the shown feature in rank order."""
        self.shown: FeaturePanel | None = None
        """The panel on screen, once every part of it is filled."""
        self._cache: OrderedDict[int, FeaturePanel] = OrderedDict()
        self._versions: dict[int, int] = {}
        """Per feature, bumped by every write to it: a panel read before a write is not cached."""
        self._loading: set[tuple[int, int]] = set()
        self._prefetch_timer: Timer | None = None

    # -- layout ----------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Reading the run's features…", id="info")
        with Horizontal(id="top"):
            suggestions = TextPanel(id="suggestions", classes="panel")
            suggestions.border_title = "Suggestions"
            yield suggestions
            trace = ActivationTrace(id="trace", classes="panel")
            trace.border_title = "Activation"
            yield trace
        with Horizontal(id="bottom"):
            yield TuningPanel(id="tuning", classes="panel")
            for id_, title in (("examples", "Top examples (train + val)"), ("units", "Units")):
                panel = TextPanel(id=id_, classes="panel")
                panel.border_title = title
                yield panel
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"Review · run {self.run_id}"
        self._load_context()

    @property
    def wide(self) -> bool:
        return self.has_class("-wide")

    def on_resize(self) -> None:
        self.refresh_bindings()  # `t` only does something on narrow terminals
        if self.shown is not None:
            self._show_panel(self.shown)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "toggle_side" and self.wide)

    # -- reading ---------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="context")
    def _load_context(self) -> None:
        from engine.analysis.review import load_context
        from store.review import run_saes

        try:
            with self._stores.cursor() as db:
                sae_id = self.sae_id
                if sae_id is None:
                    saes = run_saes(db, self.run_id)
                    if saes.is_empty():
                        raise ValueError(f"run {self.run_id} has no SAEs yet")
                    sae_id = int(saes["sae_id"][0])
                context = load_context(db, self.run_id, sae_id)
        except Exception as error:  # shown on screen
            self.post_message(LoadFailed(f"Could not read run {self.run_id}: {error}"))
            return
        self.post_message(ContextLoaded(context))

    @on(ContextLoaded)
    def _context_ready(self, message: ContextLoaded) -> None:
        context = self.context = message.context
        self.sae_id = context.sae_id
        # What is alive now (the app, its screens, this context) lives as long as Review does: out of the
        # cyclic collector's reach, its full passes take 5-10 ms instead of 50-80 ms, which had landed in
        # the middle of a key's reply (gc.freeze; objects freed by reference counting still are). The
        # garbage of earlier screens is collected first, so as not to be kept.
        gc.collect()
        gc.freeze()
        self.sub_title = f"Review · run {self.run_id} · SAE {context.sae_id}"
        if not context.order:
            self.query_one("#info", Static).update(
                f"SAE {context.sae_id} has no ranking yet: press R in Features (or `Rank run {self.run_id}` in "
                f"the palette), or `mini rank --run {self.run_id}` after quitting.")
            return
        start = context.position(self._start_feature) if self._start_feature is not None else None
        if start is None:
            start = next((i for i, f in enumerate(context.order) if f not in context.labelled), 0)
            if self._start_feature is not None:
                self.notify(f"Feature {self._start_feature} is not ranked; starting at rank {start + 1}.",
                            severity="warning")
        self._go(start)
        if not context.by_feature:
            self._order_activations(context.sae_id)
        self._replay()

    @work(thread=True, exclusive=True, group="order")
    def _order_activations(self, sae_id: int) -> None:
        from store.review import ensure_activations_by_feature

        started = time.perf_counter()
        try:
            with self._stores.cursor() as db:
                rows = ensure_activations_by_feature(db, sae_id)
        except Exception as error:  # reading stays on the slower path
            self.post_message(LoadFailed(f"Could not order activations by feature: {error}"))
            return
        self.post_message(FeatureOrdered(rows, time.perf_counter() - started))

    @on(FeatureOrdered)
    def _ordered(self, message: FeatureOrdered) -> None:
        if self.context is not None:
            self.context.by_feature = True
        if message.rows and message.seconds > 1:
            self.notify(f"Ordered {message.rows:,} activations by feature in {message.seconds:.0f} s: from now on"
                        " a feature reads in milliseconds.", title="Review")

    def _read(self, feature_id: int) -> None:
        key = (feature_id, self._versions.get(feature_id, 0))
        if key in self._loading or self.context is None:
            return
        self._loading.add(key)
        self._read_feature(feature_id, key[1])

    # Only small arguments: Textual describes a worker by the repr of its arguments, and the repr of a
    # ReviewContext (arrays of a million examples) took 80 ms.
    @work(thread=True, group="features")
    def _read_feature(self, feature_id: int, version: int) -> None:
        self._read_panels([(feature_id, version)], ahead=False)

    @work(thread=True, group="features")
    def _read_ahead(self, keys: list[tuple[int, int]]) -> None:
        """Read the (feature, version) panels one after another, nearest first."""
        self._read_panels(keys, ahead=True)

    def _read_panels(self, keys: list[tuple[int, int]], *, ahead: bool) -> None:
        """On a worker thread: read each (feature, version) panel and post it, or say why it failed.

        Reads ahead give way to a label being written (the person waits for the one, not the other): a
        write begun interrupts the read in flight and the rest are left, to be asked for again (ReadsLeft)."""
        from engine.analysis.review import load_feature

        context = self.context
        for position, (feature_id, version) in enumerate(keys):
            interrupts = self._write_interrupts
            if ahead and (interrupts % 2 or self._writer.busy):
                self.post_message(ReadsLeft(keys[position:]))
                return
            try:
                with self._stores.cursor(READ_AHEAD if ahead else None) as db:
                    panel = load_feature(db, context, feature_id)
            except Exception as error:  # shown on screen
                if ahead and self._write_interrupts != interrupts:  # interrupted by the write
                    self.post_message(ReadsLeft(keys[position:]))
                    return
                self.post_message(LoadFailed(f"Could not read feature {feature_id}: {error}"))
                self.post_message(ReadsLeft([(feature_id, version)], failed=True))  # a later visit tries again
                continue
            self.post_message(FeatureLoaded(panel, version))

    @on(ReadsLeft)
    def _reads_left(self, message: ReadsLeft) -> None:
        self._loading.difference_update(message.keys)
        if message.failed:
            return
        current = self._current()
        if self.shown is None and any(feature_id == current for feature_id, _ in message.keys):
            self._read(current)  # moved on to it meanwhile: it waits for this read
        elif not self._writer.busy:  # else the write's end moves on, and reads ahead again
            self._prefetch_soon()

    @on(FeatureLoaded)
    def _feature_read(self, message: FeatureLoaded) -> None:
        panel = message.panel
        self._loading.discard((panel.feature_id, message.version))
        if message.version != self._versions.get(panel.feature_id, 0):
            if self._current() == panel.feature_id:
                self._read(panel.feature_id)  # written to since this read began
            return
        self._cache[panel.feature_id] = panel
        self._cache.move_to_end(panel.feature_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        if self._current() == panel.feature_id and self.shown is not panel:
            self._show_panel(panel)
            self._prefetch_soon()
            self._replay()

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.notify(message.reason, title="Review", severity="error")
        if self.context is None:
            self.query_one("#info", Static).update(message.reason)

    # -- showing ---------------------------------------------------------------------------------------
    def _current(self) -> int | None:
        return self.context.order[self.index] if self.context and self.context.order else None

    def _go(self, index: int) -> None:
        assert self.context is not None
        self.index = max(0, min(index, len(self.context.order) - 1))
        feature_id = self.context.order[self.index]
        panel = self._cache.get(feature_id)
        if panel is not None:
            self._show_panel(panel)
            self._prefetch_soon()
        else:
            self.shown = None
            self.add_class("-loading")  # the panels below still show the previous feature: dim them
            self.query_one("#info", Static).update(f"#{feature_id}  reading…", layout=False)
            # Its neighbours are read once it shows: read beside it, they would slow it down.
            self._read(feature_id)

    def _prefetch_soon(self) -> None:
        """Read ahead READ_AHEAD_AFTER_S from now, around whichever feature shows then."""
        if self._prefetch_timer is not None:
            self._prefetch_timer.stop()
        self._prefetch_timer = self.set_timer(READ_AHEAD_AFTER_S, self._prefetch)

    def _prefetch(self) -> None:
        """Read the panels of the shown feature's neighbours ahead (PREFETCH), on one worker: read at once
        they took the cores from each other, from the screen and from a label being written."""
        if self.context is None or not self.context.order:
            return
        keys = []
        for step in PREFETCH:
            neighbour = self.index + step
            if 0 <= neighbour < len(self.context.order) and self.context.order[neighbour] not in self._cache:
                feature_id = self.context.order[neighbour]
                key = (feature_id, self._versions.get(feature_id, 0))
                if key not in self._loading:
                    self._loading.add(key)
                    keys.append(key)
        if keys:
            self._read_ahead(keys)

    def _show_panel(self, panel: FeaturePanel) -> None:
        from rich.console import Group

        from tui.widgets.feature_panels import (
            context_title,
            examples_text,
            feature_line,
            label_line,
            suggestions_text,
            units_text,
            units_title,
            validation_text,
        )

        wide = self.wide
        third = validation_text(panel, wide=wide)
        if self._status:
            third.append(("  ·  " if third.plain else "") + self._status, style="dim")
        label = label_line(panel, wide=wide)
        info = self.query_one("#info", Static)
        # A label or verdict too long for one line takes two rather than lose the range it tests or the
        # verdict's end. The info's height changes only then, so moving between features needs no layout.
        width = max(1, info.content_region.width or self.size.width - 2)
        height = 1 + sum(min(2, -(-line.cell_len // width)) or 1 for line in (label, third))
        third.overflow = "ellipsis"  # past two lines
        if info.styles.height is None or info.styles.height.value != height:
            info.styles.height = height
        info.update(Group(feature_line(panel, wide=wide), label, third), layout=False)
        self.query_one("#suggestions", TextPanel).show(lambda width: suggestions_text(panel, width, wide=wide))
        trace = panel.trace
        widget = self.query_one(ActivationTrace)
        widget.border_title = ("Activation (train + val)" if trace is None or trace.context is None
                               else f"Activation · beneath: {context_title(trace.context, widget.size.width)}")
        widget.show(trace, "never active on train or val")
        self.query_one(TuningPanel).show_feature(panel)
        self.query_one("#examples", TextPanel).show(lambda width: examples_text(panel, width, wide=wide))
        units = self.query_one("#units", TextPanel)
        units.border_title = units_title(panel)
        units.show(lambda width: units_text(panel, width))
        self.remove_class("-loading")
        self.shown = panel

    def _show_status(self, status: str) -> None:
        self._status = status
        if self.shown is not None:
            self._show_panel(self.shown)

    # -- moving ----------------------------------------------------------------------------------------
    def action_step(self, step: int) -> None:
        if self._held(self.action_step, step) or not self.context.order:
            return
        target = self.index + step
        if not 0 <= target < len(self.context.order):
            self.notify("This is the last feature." if step > 0 else "This is the first feature.", timeout=2)
            return
        self._go(target)

    def action_jump(self, where: str) -> None:
        if self._held(self.action_jump, where) or not self.context.order:
            return
        self._go(0 if where == "first" else len(self.context.order) - 1)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_side(self) -> None:
        self.toggle_class("-units")

    def action_tuning_view(self) -> None:
        self.query_one(TuningPanel).cycle_view()

    def action_next_split(self) -> None:
        self.query_one(TuningPanel).next_split()

    def action_next_event(self) -> None:
        self.query_one(TuningPanel).next_event()

    def action_page_tuning(self, direction: int) -> None:
        self.query_one(TuningPanel).page(direction)

    def on_screen_resume(self) -> None:
        # Back from another screen (Validation, SQL), labels or validations may have changed: read again.
        # Back from our own label or note box nothing has (the write reports itself).
        if self._in_dialog:
            self._in_dialog = False
            return
        if self.context is not None and self.context.order and self.shown is not None:
            for feature_id in list(self._cache):
                self._versions[feature_id] = self._versions.get(feature_id, 0) + 1
            self._cache.clear()
            self._go(self.index)
