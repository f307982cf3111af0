"""QC: how sparse each SAE of a run is and how well it reconstructs the recording, one SAE at a time.

For the SAE shown: its quality flags and its dataset's (each with what to try next), its numbers on every
split (L0, dead fraction, FVU against PCA and NMF with as many components as its mean L0, cosine,
summed-count R², median example R², bad units), and for one split at a time the L0 distribution, the
feature-density histogram (log10), R² of every unit and the units it reconstructs badly; and its training
curve. `[`/`]` step through the run's SAEs, `s` through the splits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Static

from tui.messages import LoadFailed
from tui.widgets.histogram import BarPlot
from tui.widgets.key_footer import KeyFooter
from tui.widgets.train_plot import CurvePlot

if TYPE_CHECKING:
    import polars as pl

    from tui.thread_stores import ThreadStores

SPLITS = ("train", "val", "test")
BAD_UNIT_R2 = 0.1
"""engine.sae.qc.BAD_UNIT_R2, repeated so the screen need not import the engine (and NumPy's stack) to say it."""
BAD_UNITS_SHOWN = 8
R2_FLOOR = -1.0
"""Units with a lower R² are drawn at this value (and counted in the panel's title)."""

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("], [", "next / previous SAE of the run"),
    ("s", "next split (train, val, test) of the split panels"),
    ("pgup, pgdn", "scroll the panels (they stack at 80 columns)"),
    ("esc", "back"),
)


@dataclass
class SAEView:
    """Everything the screen shows about one SAE, read in one go."""

    sae: dict[str, Any]
    qc: pl.DataFrame
    units: pl.DataFrame
    log: pl.DataFrame


# -- what the panels say (pure functions of the stored rows) -----------------------------------------------
def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def sae_title(sae: dict[str, Any], position: int, count: int, run: dict[str, Any]) -> Text:
    """'SAE 1 of 2 · seed 0 · k 4 · batchtopk · d_sae 64 · mse' and the run's status, in one line at 80."""
    text = Text()
    text.append(f"SAE {position + 1} of {count}", style="bold")
    text.append(f" (id {sae['sae_id']}) · seed {sae['seed']} · k {sae['k']} · {sae['architecture']} · "
                f"d_sae {sae['d_sae']} · {sae['loss']}")
    text.append(f" · {run['status']}", style="dim")
    return text


def metrics_table(qc: pl.DataFrame, n_units: int) -> Table:
    """Every split side by side. The SAE's FVU is green where it beats both baselines, yellow where not."""
    rows = {row["split"]: row for row in qc.iter_rows(named=True)}
    splits = [split for split in SPLITS if split in rows]
    table = Table(box=None, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False)
    table.add_column("", no_wrap=True, min_width=11)
    for split in splits:
        table.add_column(split, justify="right", no_wrap=True, min_width=7)
    components = next(iter(rows.values()))["baseline_components"] if rows else None

    def fvu_cell(row: dict[str, Any]) -> Text:
        baselines = [b for b in (row["pca_fvu"], row["nmf_fvu"]) if b is not None] or \
            [b for b in (row.get("ridge_fvu"),) if b is not None]  # a transcoder across spaces: ridge
        beats = row["fvu"] is not None and baselines and row["fvu"] < min(baselines)
        return Text(_number(row["fvu"]), style="green" if beats else "yellow")

    def l0_cell(row: dict[str, Any]) -> str:
        # One decimal while it fits the column; k = 32 gives '31±12', not '31.4±12.2'.
        digits = 1 if (row["l0_mean"] or 0) < 10 and (row["l0_std"] or 0) < 10 else 0
        return f"{_number(row['l0_mean'], digits)}±{_number(row['l0_std'], digits)}"

    lines: list[tuple[str, Any]] = [
        ("examples", lambda r: f"{r['n_examples']:,}"),
        ("L0 mean±sd", l0_cell),
        ("dead", lambda r: "—" if r["dead_fraction"] is None else f"{100 * r['dead_fraction']:.1f}%"),
        ("FVU", fvu_cell),
        (f" PCA ({components})", lambda r: _number(r["pca_fvu"])),
        (f" NMF ({components})", lambda r: _number(r["nmf_fvu"])),
    ]
    if any(row.get("ridge_fvu") is not None for row in rows.values()):  # a transcoder: ridge beside PCA/NMF if any
        pca = [] if all(row["pca_fvu"] is None for row in rows.values()) else lines[4:]
        lines = [*lines[:3], ("FVU targets", fvu_cell), *pca, (" ridge", lambda r: _number(r.get("ridge_fvu")))]
    lines += [
        ("cosine", lambda r: _number(r["cosine_mean"])),
        ("sum R²", lambda r: _number(r["summed_count_r2"])),
        ("ex R² (med)", lambda r: _number(r["example_r2_median"])),
        ("bad units", lambda r: f"{r['n_bad_units']}/{n_units}"),
    ]
    for label, cell in lines:
        table.add_row(label, *(cell(rows[split]) for split in splits))
    return table


METRICS_NOTE = (
    "FVU: variance the SAE leaves unexplained, green where it is below both PCA's and NMF's with as many "
    "components as its mean train L0 (in brackets); NMF only for spike counts. dead: features never active "
    "on the split. sum R²: of each example's total count. ex R² (med): median over examples of each "
    "example's R². bad units: R² ≤ 0.1. A transcoder's FVU is of its targets, beside a ridge regression from "
    "its inputs (fitted on train, penalty chosen on val)."
)


def flags_text(sae_flags: list[dict[str, Any]], dataset_flags: list[dict[str, Any]]) -> Text:
    """The SAE's quality flags, then its dataset's from import: each what is wrong — try: what to do."""
    text = Text()
    if not sae_flags and not dataset_flags:
        text.append("no flags: this SAE and its dataset pass every check (docs/schema.md, quality_flags)",
                    style="dim")
        return text
    lines = [("", flag) for flag in sae_flags] + [("at import: ", flag) for flag in dataset_flags]
    for i, (where, flag) in enumerate(lines):
        text.append("\n" if i else "")
        text.append("⚑ ", style="yellow")
        text.append(where, style="dim")
        text.append(flag["message"])
        text.append(" — try: ", style="bold")
        text.append(flag["suggestion"])
    return text


def flags_title(n_sae: int, n_dataset: int) -> str:
    return f"Flags · {n_sae} for this SAE · {n_dataset} at import" if n_sae or n_dataset else "Flags"


def l0_bars(qc_row: dict[str, Any]) -> tuple[list[float], list[float]]:
    pairs = json.loads(qc_row["l0_histogram"] or "[]")
    return [float(l0) for l0, _ in pairs], [float(n) for _, n in pairs]


def density_bars(qc_row: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Bin centres in log10 density and feature counts (features that never fired are not in it)."""
    bins = json.loads(qc_row["density_histogram"] or "[]")
    return [(low + high) / 2 for low, high, _ in bins], [float(n) for _, _, n in bins]


DENSITY_TICKS = ([-6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0],
                 ["1e-6", "1e-5", "1e-4", "1e-3", ".01", ".1", "1"])


def bad_units_text(units: pl.DataFrame, split: str) -> Text:
    """The units this split reconstructs worst, worst first; constant units said apart (no R²)."""
    mine = [row for row in units.iter_rows(named=True) if row["split"] == split]
    bad = sorted((row for row in mine if row["bad"] and row["r2"] is not None), key=lambda row: row["r2"])
    constant = sum(row["r2"] is None for row in mine)
    text = Text()
    text.append(f"{len(bad)} of {len(mine)} units have R² ≤ {BAD_UNIT_R2} on {split}", style="bold")
    if constant:
        text.append(f"; {constant} constant (no R²)", style="dim")
    text.append("\n")
    if not bad:
        text.append("none: every unit is reconstructed above the threshold", style="dim")
        return text
    width = max(len(str(row["name"])) for row in bad[:BAD_UNITS_SHOWN])
    text.append(f"{'unit':<{width}}  {'R²':>6}  {'cosine':>6}\n", style="dim")
    for row in bad[:BAD_UNITS_SHOWN]:
        text.append(f"{row['name']!s:<{width}}  {_number(row['r2']):>6}  {_number(row['cosine']):>6}\n")
    if len(bad) > BAD_UNITS_SHOWN:
        text.append(f"… and {len(bad) - BAD_UNITS_SHOWN} more (SQL: unit_qc WHERE bad)", style="dim")
    text.rstrip()
    return text


class QCScreen(Screen):
    """One SAE's quality at a time; reads run in thread workers and arrive as messages."""

    FOOTER_KEYS: ClassVar[tuple[str, ...]] = ("step_sae(1)", "next_split", "back", "step_sae(-1)")
    """The footer's keys in the order they matter: at 80 columns the last ones give way (tui.widgets.key_footer)."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "step_sae(1)", "Next SAE"),
        Binding("left_square_bracket", "step_sae(-1)", "Prev SAE"),
        Binding("s", "next_split", "Split"),
        Binding("escape", "back", "Back"),
    ]

    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (120, "-wide")]

    DEFAULT_CSS = """
    QCScreen #sae-bar {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    QCScreen #panels {
        scrollbar-size-vertical: 1;
        height: 1fr;
    }
    QCScreen #grid {
        grid-size: 2;
        grid-columns: 1fr 1fr;
        grid-rows: 13;
        height: auto;
    }
    QCScreen.-wide #grid {
        grid-size: 3;
        grid-columns: 1fr 1fr 1fr;
        grid-rows: 1fr;
        height: 1fr;
        min-height: 34;
    }
    QCScreen #flags-panel {
        height: auto;
    }
    QCScreen #flags-panel.-flagged {
        border: round $warning 70%;
    }
    QCScreen .panel {
        height: 100%;
        border: round $primary 60%;
        border-title-color: $text;
        padding: 0 1;
    }
    QCScreen #metrics-panel {
        padding: 0 0 0 1;
    }
    QCScreen .panel > Static {
        height: auto;
    }
    QCScreen #metrics-note {
        color: $text-muted;
        margin-top: 1;
    }
    QCScreen.-narrow #metrics-note {
        display: none;
    }
    """

    @dataclass
    class RunLoaded(Message):
        """The run, its SAEs and the quality flags of both the run and its dataset were read."""

        run: dict[str, Any]
        saes: list[dict[str, Any]]
        flags: list[dict[str, Any]]
        dataset_flags: list[dict[str, Any]]

    @dataclass
    class SAELoaded(Message):
        """One SAE's QC, unit QC and training log were read."""

        sae_id: int
        view: SAEView

    def __init__(self, stores: ThreadStores, run_id: int, sae_id: int | None = None):
        super().__init__()
        self._stores = stores
        self.run_id = run_id
        self._wanted_sae_id = sae_id
        self._run: dict[str, Any] | None = None
        self._saes: list[dict[str, Any]] = []
        self._position = 0
        """Index into _saes of the SAE shown."""
        self.split = "val"
        """The split of the per-split panels: val by default, as on Home (held out from training)."""
        self._views: dict[int, SAEView] = {}
        """SAEs read so far, by sae_id: switching back to one is instant."""
        self._flags: list[dict[str, Any]] = []
        """The run's quality flags (every SAE's)."""
        self._dataset_flags: list[dict[str, Any]] = []
        """The flags found when the run's dataset was imported."""

    @property
    def sae_id(self) -> int | None:
        return self._saes[self._position]["sae_id"] if self._saes else None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Reading QC…", id="sae-bar")
        with VerticalScroll(id="panels"):
            with Vertical(id="flags-panel", classes="panel") as panel:
                panel.border_title = "Flags"
                yield Static(id="flags")
            with Grid(id="grid"):
                with Vertical(id="metrics-panel", classes="panel") as panel:
                    panel.border_title = "Reconstruction and sparsity"
                    yield Static(id="metrics")
                    yield Static(id="metrics-note")
                with Vertical(id="l0-panel", classes="panel") as panel:
                    panel.border_title = "L0 per example"
                    yield BarPlot(id="l0-plot", empty_text="no L0 histogram stored")
                with Vertical(id="density-panel", classes="panel") as panel:
                    panel.border_title = "Density"
                    yield BarPlot(id="density-plot", empty_text="no feature fired on this split")
                with Vertical(id="unit-r2-panel", classes="panel") as panel:
                    panel.border_title = "R² per unit"
                    yield CurvePlot(id="unit-r2-plot", empty_text="no unit has an R² on this split")
                with Vertical(id="bad-units-panel", classes="panel") as panel:
                    panel.border_title = "Badly reconstructed units"
                    yield Static(id="bad-units")
                with Vertical(id="training-panel", classes="panel") as panel:
                    panel.border_title = "Training"
                    yield CurvePlot(id="training-plot", empty_text="no training log stored")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = f"QC · run {self.run_id}"
        self.query_one("#panels").focus()
        self.load_run()

    # -- keys ----------------------------------------------------------------------------------------
    def action_step_sae(self, step: int) -> None:
        if len(self._saes) < 2:
            self.notify("This run has one SAE.", title="QC")
            return
        self._position = (self._position + step) % len(self._saes)
        self._show_selected()

    def action_next_split(self) -> None:
        self.split = SPLITS[(SPLITS.index(self.split) + 1) % len(SPLITS)]
        if self.sae_id in self._views:
            self._show_view(self._views[self.sae_id])

    def action_back(self) -> None:
        self.app.pop_screen()

    # -- reading -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="qc-run")
    def load_run(self) -> None:
        from store.qc import run_header, run_saes
        from store.quality import dataset_flags, run_flags

        try:
            with self._stores.cursor() as db:
                run = run_header(db, self.run_id)
                saes = run_saes(db, self.run_id).to_dicts()
                flags, at_import = run_flags(db, self.run_id), dataset_flags(db, run["dataset_id"])
        except Exception as error:  # shown on screen: a failed read must not take the app down
            self.post_message(LoadFailed(f"Could not read run {self.run_id}: {error}"))
            return
        self.post_message(self.RunLoaded(run, saes, flags, at_import))

    @work(thread=True, exclusive=True, group="qc-sae")
    def load_sae(self, sae: dict[str, Any]) -> None:
        from store.qc import sae_qc, sae_train_log, sae_unit_qc

        sae_id = sae["sae_id"]
        self._stores.read_and_post(
            self, lambda db: [self.SAELoaded(sae_id, SAEView(sae, sae_qc(db, sae_id), sae_unit_qc(db, sae_id),
                                                             sae_train_log(db, sae_id)))],
            lambda error: LoadFailed(f"Could not read SAE {sae_id}: {error}"))

    @on(RunLoaded)
    def run_loaded(self, message: RunLoaded) -> None:
        self._run, self._saes = message.run, message.saes
        self._flags, self._dataset_flags = message.flags, message.dataset_flags
        self.sub_title = f"QC · run {self.run_id} on {message.run['dataset']}"
        if not self._saes:
            reason = f": {message.run['message']}" if message.run.get("message") else ""
            self.query_one("#sae-bar", Static).update(
                f"Run {self.run_id} on {message.run['dataset']} has no SAEs stored "
                f"(status {message.run['status']}{reason})."
            )
            return
        ids = [sae["sae_id"] for sae in self._saes]
        self._position = ids.index(self._wanted_sae_id) if self._wanted_sae_id in ids else 0
        self._show_selected()

    @on(SAELoaded)
    def sae_loaded(self, message: SAELoaded) -> None:
        self._views[message.sae_id] = message.view
        if message.sae_id == self.sae_id:  # the person may have moved on while it was read
            self._show_view(message.view)

    @on(LoadFailed)
    def load_failed(self, message: LoadFailed) -> None:
        self.notify(message.reason, title="QC", severity="error")
        self.query_one("#sae-bar", Static).update(message.reason)

    # -- showing -------------------------------------------------------------------------------------
    def _show_selected(self) -> None:
        sae = self._saes[self._position]
        assert self._run is not None
        self.query_one("#sae-bar", Static).update(sae_title(sae, self._position, len(self._saes), self._run))
        mine = [flag for flag in self._flags if flag["sae_id"] == sae["sae_id"]]
        panel = self.query_one("#flags-panel")
        panel.border_title = flags_title(len(mine), len(self._dataset_flags))
        panel.set_class(bool(mine or self._dataset_flags), "-flagged")
        self.query_one("#flags", Static).update(flags_text(mine, self._dataset_flags))
        if sae["sae_id"] in self._views:
            self._show_view(self._views[sae["sae_id"]])
        else:
            self.load_sae(sae)

    def _show_view(self, view: SAEView) -> None:
        assert self._run is not None
        split = self.split
        n_units = self._run["n_units"]
        self.query_one("#metrics", Static).update(metrics_table(view.qc, n_units))
        self.query_one("#metrics-note", Static).update(METRICS_NOTE)
        rows = {row["split"]: row for row in view.qc.iter_rows(named=True)}
        row = rows.get(split)

        l0_panel = self.query_one("#l0-panel")
        l0_plot = self.query_one("#l0-plot", BarPlot)
        if row is None:
            l0_plot.show_bars([], [], empty_text=f"no QC stored for {split}")
            l0_panel.border_title = f"L0 per example · {split}"
        else:
            l0_panel.border_title = f"L0 per example · {split} · mean {_number(row['l0_mean'], 2)}"
            l0_plot.show_bars(*l0_bars(row), xlabel="active features")

        density_panel = self.query_one("#density-panel")
        density_plot = self.query_one("#density-plot", BarPlot)
        d_sae = view.sae["d_sae"]
        if row is None:
            density_plot.show_bars([], [], empty_text=f"no QC stored for {split}")
            density_panel.border_title = f"Density · {split}"
        else:
            dead = round((row["dead_fraction"] or 0) * d_sae)
            density_panel.border_title = f"Density · {split} · {dead}/{d_sae} dead"
            x, heights = density_bars(row)
            density_plot.show_bars(x, heights, width=0.45, xticks=DENSITY_TICKS[0], xlabels=DENSITY_TICKS[1],
                                   xlabel="share of examples active (log)")

        units = view.units.filter(view.units["split"] == split)
        with_r2 = units.filter(units["r2"].is_not_null())
        r2_panel = self.query_one("#unit-r2-panel")
        # R² is unbounded below: one unit at −40 would flatten every other point onto one row.
        r2 = with_r2["r2"].to_list()
        below = sum(value < R2_FLOOR for value in r2)
        r2_panel.border_title = f"R² per unit · {split} · rule at {BAD_UNIT_R2}" + (
            f" · {below} drawn at {R2_FLOOR:g}" if below else "")
        self.query_one("#unit-r2-plot", CurvePlot).show_series(
            [], points=[(with_r2["unit_id"].to_list(), [max(value, R2_FLOOR) for value in r2])],
            hline=BAD_UNIT_R2, xlabel="unit",
        )
        bad_panel = self.query_one("#bad-units-panel")
        bad_panel.border_title = f"Badly reconstructed units · {split}"
        self.query_one("#bad-units", Static).update(bad_units_text(view.units, split))

        log = view.log
        self.query_one("#training-panel").border_title = (
            f"Reconstruction loss, • val · best epoch {view.sae['best_epoch']}")
        epoch_ends = log.filter(log["val_loss"].is_not_null())
        self.query_one("#training-plot", CurvePlot).show_series(
            # The AuxK term joins the total only once latents count as dead: as a curve it reads as a jump.
            [(log["examples_seen"].to_list(), log["reconstruction_loss"].to_list())],
            points=[(epoch_ends["examples_seen"].to_list(), epoch_ends["val_loss"].to_list())],
            xlabel="examples seen",
        )
