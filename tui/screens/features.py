"""Features: an SAE's ranked features in one table, for thousands of features.

The whole ranking of an SAE is read once (a few thousand rows) in a worker; sorting, filtering, finding
and jumping then work on that frame in memory and hand the table a new Arrow table, so every key answers
at once. The table widget is textual-fastdatatable on an Arrow backend (tui.widgets.arrow_table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import polars as pl
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Input, Static
from textual_fastdatatable import DataTable

from tui.features_text import (
    COLUMNS,
    PROMPTS,
    SORT_NAMES,
    SORTED_COLUMN,
    SORTS,
    TEXT_WIDTH,
    detail_text,
    display_frame,
    fit_label,
    text_width,
)
from tui.messages import LoadFailed
from tui.widgets.arrow_table import ArrowTable
from tui.widgets.key_footer import KeyFooter
from tui.widgets.scroll_hint import ScrollHint

if TYPE_CHECKING:
    from tui.thread_stores import ThreadStores

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("up, down", "move; pageup, pagedown, home, end move further"),
    ("enter", "review the feature under the cursor"),
    ("s, S", "sort by the next column / reverse the order"),
    ("/", "filter: text, score>0.5, density<1%, label:none, valid:yes, valid:gen … (empty: all)"),
    ("f", "find text in suggestions and labels (moves the cursor, hides nothing)"),
    ("n, N", "the next / previous match of the last find"),
    (":", "jump to a rank"),
    ("#", "jump to a feature id"),
    ("[, ]", "previous / next SAE of the run"),
    ("e", "export the rows shown (this SAE, filtered and sorted) to .csv or .parquet; asks where"),
    ("R", "rank (or re-rank) the run in the background, with --where / --around if you like"),
    ("c", "cancel the running ranking (nothing of it is stored)"),
    ("esc", "close the prompt, else back"),
)

class FeaturesScreen(Screen):
    """The ranked features of one SAE of a run."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("sort", "prompt('filter')", "rank", "cancel_ranking", "back", "prompt('find')", "switch_sae(1)", "export")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("/", "prompt('filter')", "Filter"),
        Binding("f", "prompt('find')", "Find"),
        Binding("n", "find_next(1)", "Next match", show=False),
        Binding("N", "find_next(-1)", "Previous match", show=False),
        Binding(":", "prompt('rank')", "Rank"),
        Binding("#", "prompt('feature')", "Feature"),
        Binding("[", "switch_sae(-1)", "Previous SAE", show=False),
        Binding("]", "switch_sae(1)", "Next SAE"),
        Binding("e", "export", "Export", show=False),  # in f1; the 80-column footer keeps the essentials
        Binding("R", "rank", "Rank run"),
        Binding("c", "cancel_ranking", "Cancel ranking"),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = """
    FeaturesScreen #summary { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    FeaturesScreen #detail { height: auto; max-height: 3; padding: 0 1; border-top: solid $primary-darken-2; }
    FeaturesScreen #rank-status { height: 1; padding: 0 1; color: $accent; display: none; }
    FeaturesScreen ArrowTable { height: 1fr; }
    FeaturesScreen #empty { height: 1fr; content-align: center middle; color: $text-muted; }
    FeaturesScreen #prompt-bar { height: auto; display: none; }
    FeaturesScreen #prompt-bar.-open { display: block; }
    FeaturesScreen #prompt-label { width: auto; padding: 0 1; content-align: left middle; height: 3; }
    FeaturesScreen #prompt { width: 1fr; }
    FeaturesScreen #prompt-error { height: auto; padding: 0 1; color: $error; display: none; }
    FeaturesScreen #prompt-error.-shown { display: block; }
    """

    @dataclass
    class FeaturesLoaded(Message):
        saes: pl.DataFrame
        sae_id: int | None
        features: pl.DataFrame
        epoch: str | None = None
        """The analysis epoch the ranking read (`speed > 5`), None for every bin."""

    def __init__(self, stores: ThreadStores, run_id: int, sae_id: int | None = None):
        super().__init__()
        self._stores = stores
        self.run_id = run_id
        self.sae_id = sae_id
        self.saes: list[int] = []
        self.features = pl.DataFrame()
        """Every ranked feature of the SAE (display_frame), in rank order."""
        self.view = pl.DataFrame()
        """What the table shows: features filtered and sorted."""
        self.sort_index = 0
        self.descending = SORTS[0][1]
        self.filter_text = ""
        self.find_text = ""
        self.epoch: str | None = None
        """The analysis epoch the ranking read, shown in the summary line; None: every bin."""
        self._prompt_mode: str | None = None
        self._reviewed = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Reading the ranking…", id="summary")
        yield Static("", id="rank-status", markup=False)  # the app's ranking of this run, while it runs
        table = ArrowTable(self._arrow(pl.DataFrame()), id="features", zebra_stripes=True,
                           max_column_content_width=TEXT_WIDTH)
        table.display = False
        yield table
        yield ScrollHint(table, id="columns-hint")
        yield Static("", id="empty")
        yield Static("", id="detail", markup=False)  # the row under the cursor, its predicates whole
        with Horizontal(id="prompt-bar"):
            yield Static("", id="prompt-label")
            yield Input(id="prompt")
        yield Static("", id="prompt-error")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"Features · run {self.run_id}"
        self._load(self.sae_id)
        ranking = getattr(self.app, "ranking", None)
        if ranking is not None and ranking.running:
            self.ranking_changed(ranking)

    def on_resize(self) -> None:
        table = self.query_one(ArrowTable)
        width = text_width(self.size.width)
        if width != table.max_column_content_width:
            table.max_column_content_width = width
            if self.view.height:
                table.replace_data(self._arrow(self.view), cursor_row=table.cursor_row)

    def on_screen_resume(self) -> None:
        # Back from Review (or any screen that labels or validates): read the labels again.
        if self._reviewed:
            self._reviewed = False
            self._load(self.sae_id)

    # -- reading ---------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="features")
    def _load(self, sae_id: int | None) -> None:
        from engine.epochs import Epoch
        from store.epochs import run_epochs
        from store.review import ranked_features, run_saes

        try:
            with self._stores.cursor() as db:
                saes = run_saes(db, self.run_id)
                if sae_id is None and saes.height:
                    sae_id = int(saes["sae_id"][0])
                features = ranked_features(db, sae_id) if sae_id is not None else pl.DataFrame()
                ranked_on = run_epochs(db, self.run_id).get("rank")
        except Exception as error:  # shown on screen
            self.post_message(LoadFailed(f"Could not read the features of run {self.run_id}: {error}"))
            return
        epoch = Epoch(ranked_on["where_sql"], ranked_on["around"]).describe() if ranked_on else None
        self.post_message(self.FeaturesLoaded(saes, sae_id, features, epoch))
        if sae_id is not None:
            self._order_activations(sae_id)

    @work(thread=True, exclusive=True, group="order")
    def _order_activations(self, sae_id: int) -> None:
        """Prepare Review's fast path while the person looks at the table (see store.review)."""
        from store.review import ensure_activations_by_feature

        try:
            with self._stores.cursor() as db:
                ensure_activations_by_feature(db, sae_id)
        except Exception:  # Review reads the slower way and tries again
            return

    @on(FeaturesLoaded)
    def _loaded(self, message: FeaturesLoaded) -> None:
        # The same feature number in another SAE is another feature: a switched SAE opens at its top rank.
        cursor_feature = self._cursor_feature() if message.sae_id == self.sae_id else None
        self.saes = message.saes["sae_id"].to_list()
        self.sae_id = message.sae_id
        self.epoch = message.epoch
        self.features = display_frame(message.features) if message.features.height else message.features
        self._refresh_view(keep_feature=cursor_feature)

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        self.notify(message.reason, title="Features", severity="error")
        self.query_one("#summary", Static).update(message.reason)

    # -- the table -------------------------------------------------------------------------------------
    def _arrow(self, frame: pl.DataFrame):
        from tui.predicate_text import fit

        if frame.is_empty():
            return pl.DataFrame({header: [] for _, header in COLUMNS}).to_arrow()
        # Cut between terms and never inside a range (tui.predicate_text); the detail line shows it all.
        width = text_width(self.size.width or 80)
        cells = frame.with_columns(
            pl.col("suggestion").map_elements(lambda text: fit(text, width), return_dtype=pl.String),
            pl.struct("label_prefix", "label_name").map_elements(lambda parts: fit_label(parts, width),
                                                                  return_dtype=pl.String).alias("label_text"))
        return cells.select(pl.col(column).alias(header) for column, header in COLUMNS).to_arrow()

    def _refresh_view(self, *, keep_feature: int | None = None) -> None:
        from tui.feature_filter import parse_filter

        table = self.query_one(ArrowTable)
        empty = self.query_one("#empty", Static)
        if self.features.is_empty():
            table.display = False
            empty.display = True
            self._show_detail(-1)
            empty.update("No SAEs in this run yet." if self.sae_id is None else
                         f"SAE {self.sae_id} has no ranking yet: press R to rank run {self.run_id} "
                         f"(or `mini rank --run {self.run_id}` after quitting).")
            self._summarise()
            return
        view = self.features
        expression = parse_filter(self.filter_text)
        if expression is not None:
            view = view.filter(expression)
        column, _ = SORTS[self.sort_index]
        view = view.sort(column, descending=self.descending, nulls_last=True, maintain_order=True)
        self.view = view
        row = 0
        if keep_feature is not None and view.height:
            matches = (view["feature_id"] == keep_feature).arg_true()
            row = int(matches[0]) if len(matches) else 0
        table.replace_data(self._arrow(view), cursor_row=row)
        table.display = view.height > 0
        empty.display = view.height == 0
        empty.update(f"No feature matches the filter '{self.filter_text}' (/ then enter on an empty box clears it).")
        if table.display:
            table.focus()
        self._summarise()
        self._show_detail(row)

    @on(ArrowTable.RowHighlighted)
    def _highlighted(self, event: ArrowTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    def _show_detail(self, row: int) -> None:
        detail = self.query_one("#detail", Static)
        shown = not self.view.is_empty() and 0 <= row < self.view.height
        detail.display = shown
        if shown:
            detail.update(detail_text(self.view.row(row, named=True)))

    def _summarise(self) -> None:
        column, _ = SORTS[self.sort_index]
        direction = "↓" if self.descending else "↑"
        sae = (f"SAE {self.sae_id} ({self.saes.index(self.sae_id) + 1} of {len(self.saes)})"
               if self.sae_id in self.saes else "no SAE")
        parts = [f"run {self.run_id}", sae, f"{self.view.height:,} of {self.features.height:,} features",
                 f"sort {SORT_NAMES.get(column, column)} {direction}"]
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        if self.epoch:
            parts.append(f"ranked on epoch: {self.epoch}")
        self.query_one("#summary", Static).update(" · ".join(parts))

    def _cursor_feature(self) -> int | None:
        table = self.query_one(ArrowTable)
        if self.view.is_empty() or not table.display:
            return None
        return int(self.view["feature_id"][min(table.cursor_row, self.view.height - 1)])

    def _move_to(self, row: int) -> None:
        self.query_one(ArrowTable).move_cursor(row=row, column=0)

    # -- keys ------------------------------------------------------------------------------------------
    def action_sort(self) -> None:
        keep = self._cursor_feature()
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.descending = SORTS[self.sort_index][1]
        self._refresh_view(keep_feature=keep)
        self.call_after_refresh(self._show_sorted_column)

    def _show_sorted_column(self) -> None:
        """Scroll the table sideways so that the column sorted on is in view (at 80 columns the parts of
        the score and the density are off to the right)."""
        table = self.query_one(ArrowTable)
        column = SORTED_COLUMN.get(SORTS[self.sort_index][0], SORTS[self.sort_index][0])
        index = next((i for i, (name, _) in enumerate(COLUMNS) if name == column), None)
        if index is None or not table.display:
            return
        region = table._get_column_region(index)
        view = table.scrollable_content_region.width
        if region.right > table.scroll_x + view:
            table.scroll_to(x=region.right - view, animate=False)
        elif region.x < table.scroll_x:
            table.scroll_to(x=region.x, animate=False)

    def action_reverse(self) -> None:
        keep = self._cursor_feature()
        self.descending = not self.descending
        self._refresh_view(keep_feature=keep)

    def action_switch_sae(self, step: int) -> None:
        if len(self.saes) < 2 or self.sae_id not in self.saes:
            self.notify("This run has one SAE.", timeout=2)
            return
        self._load(self.saes[(self.saes.index(self.sae_id) + step) % len(self.saes)])

    # -- ranking (the app runs it: tui/ranking.py) ---------------------------------------------------------
    def action_rank(self) -> None:
        self.app.action_rank(self.run_id)

    def action_cancel_ranking(self) -> None:  # enabled only while this run is ranked (check_action)
        self.app.cancel_ranking()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_ranking":
            ranking = getattr(self.app, "ranking", None)
            return ranking is not None and ranking.running and ranking.run_id == self.run_id
        return True

    def ranking_changed(self, state) -> None:
        """The app's ranking moved on (tui.ranking.RankState): show it when it is this run's; read the new
        ranking once it is stored."""
        if state.run_id != self.run_id:
            return
        line = self.query_one("#rank-status", Static)
        line.display = state.running
        line.update(state.line())
        self.refresh_bindings()
        if state.status == "ranked":
            self._load(self.sae_id)

    def action_prompt(self, mode: str) -> None:
        self._prompt_mode = mode
        self.query_one("#prompt-bar").add_class("-open")
        self.query_one("#prompt-label", Static).update(PROMPTS[mode])
        box = self.query_one("#prompt", Input)
        box.value = self.filter_text if mode == "filter" else (self.find_text if mode == "find" else "")
        box.placeholder = {"filter": "text, score>0.5, density<1%, label:none, valid:yes (all must hold)",
                           "find": "text in suggestions and labels", "rank": "a rank, e.g. 12",
                           "feature": "a feature id, e.g. 17"}[mode]
        box.focus()

    def _close_prompt(self) -> None:
        self._prompt_mode = None
        self.query_one("#prompt-bar").remove_class("-open")
        self.query_one("#prompt-error").remove_class("-shown")
        table = self.query_one(ArrowTable)
        if table.display:
            table.focus()

    def _prompt_error(self, text: str) -> None:
        error = self.query_one("#prompt-error", Static)
        error.update(text)
        error.add_class("-shown")

    @on(Input.Changed, "#prompt")
    def _typing(self) -> None:
        self.query_one("#prompt-error").remove_class("-shown")

    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        from tui.feature_filter import FilterError, parse_filter

        text, mode = event.value.strip(), self._prompt_mode
        if mode == "filter":
            try:
                parse_filter(text)
            except FilterError as error:
                self._prompt_error(f"filter: {error}")
                return
            keep = self._cursor_feature()
            self.filter_text = text
            self._close_prompt()
            self._refresh_view(keep_feature=keep)
        elif mode == "find":
            self.find_text = text
            self._close_prompt()
            if text:
                self.action_find_next(1, include_current=True)
        elif mode in ("rank", "feature"):
            self._jump(mode, text)

    def _jump(self, mode: str, text: str) -> None:
        column = "rank" if mode == "rank" else "feature_id"
        try:
            wanted = int(text.lstrip(":#"))
        except ValueError:
            self._prompt_error(f"{mode}: '{text}' is not a whole number")
            return
        if wanted not in set(self.features[column].to_list() if self.features.height else []):
            largest = self.features[column].max() if self.features.height else 0
            self._prompt_error(f"{mode}: no {mode} {wanted} in SAE {self.sae_id} ({mode}s go up to {largest})")
            return
        rows = (self.view[column] == wanted).arg_true() if self.view.height else pl.Series([])
        if not len(rows):
            self._prompt_error(f"{mode}: {mode} {wanted} is hidden by the filter '{self.filter_text}'")
            return
        self._close_prompt()
        self._move_to(int(rows[0]))

    def action_find_next(self, step: int, include_current: bool = False) -> None:
        if not self.find_text:
            self.notify("Nothing to find yet: press f and type some text.", timeout=2)
            return
        if self.view.is_empty():
            return
        from tui.feature_filter import _text_term

        matches = self.view.with_row_index("row").filter(_text_term(self.find_text))["row"].to_list()
        if not matches:
            self.notify(f"'{self.find_text}' is in no shown suggestion or label.", timeout=3)
            return
        current = self.query_one(ArrowTable).cursor_row
        if step > 0:
            later = [r for r in matches if r > current or (include_current and r == current)]
            target = later[0] if later else matches[0]
        else:
            earlier = [r for r in matches if r < current]
            target = earlier[-1] if earlier else matches[-1]
        self._move_to(target)

    def action_export(self) -> None:
        from tui.table_export import export_features

        export_features(self, self._stores, self.view, COLUMNS, self.run_id, self.sae_id)

    def action_back(self) -> None:
        if self._prompt_mode is not None:
            self._close_prompt()
        else:
            self.app.pop_screen()

    @on(DataTable.RowSelected)
    def _open_review(self, event: DataTable.RowSelected) -> None:
        if self.view.is_empty():
            return
        feature_id = int(self.view["feature_id"][event.cursor_row])
        self._reviewed = True
        self.app.action_open("review", run_id=self.run_id, sae_id=self.sae_id, feature_id=feature_id)
