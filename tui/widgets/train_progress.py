"""The Train screen's progress panel (tui/screens/train.py): the status line with the Open QC and Rank now
buttons, the progress bar, the rate line and the plots of loss, L0 and dead latents per SAE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ProgressBar, Static

from tui.train_text import progress_line
from tui.widgets.train_plot import CurvePlot

if TYPE_CHECKING:
    from engine.sae.train import TrainProgress

IDLE_TEXT = "Press ctrl+s to start; progress appears here."


class TrainProgressPanel(Vertical):
    """What one training shows as it runs; the screen hands it each progress event and the history."""

    # The rules name the screen, whose width class (-wide) lays the panel out beside the form: they apply as
    # written, not scoped to this widget.
    SCOPED_CSS = False
    DEFAULT_CSS = """
    TrainScreen #progress-panel {
        height: 21;
        padding: 0 1;
    }
    TrainScreen.-wide #progress-panel {
        width: 1fr;
        height: 100%;
    }
    TrainScreen #status-row {
        height: auto;
    }
    TrainScreen #train-status {
        width: 1fr;
    }
    TrainScreen #open-qc {
        display: none;
        margin-left: 1;
    }
    TrainScreen #open-qc.-shown {
        display: block;
    }
    TrainScreen #rank-now {
        display: none;
        margin-left: 1;
    }
    TrainScreen #rank-now.-shown {
        display: block;
    }
    TrainScreen #progress {
        display: none;
    }
    TrainScreen #progress.-started {
        display: block;
    }
    TrainScreen #rate {
        height: auto;
        color: $text-muted;
    }
    TrainScreen #plots {
        layout: grid;
        grid-size: 2;
        grid-rows: 1fr 1fr;
        height: 1fr;
    }
    TrainScreen #loss-panel {
        column-span: 2;
    }
    TrainScreen.-wide #plots {
        grid-size: 1;
        grid-rows: 1fr 1fr 1fr;
    }
    TrainScreen.-wide #loss-panel {
        column-span: 1;
    }
    TrainScreen .panel {
        height: 100%;
        border: round $primary 60%;
        border-title-color: $text;
    }
    """

    def compose(self) -> ComposeResult:
        with Horizontal(id="status-row"):
            yield Static(IDLE_TEXT, id="train-status")
            yield Button("Open QC  o", id="open-qc", compact=True, variant="success")
            yield Button("Rank now  r", id="rank-now", compact=True, variant="primary")
        yield ProgressBar(id="progress", show_eta=True)
        yield Static("", id="rate")
        with Vertical(id="plots"):
            with Vertical(id="loss-panel", classes="panel") as panel:
                panel.border_title = "loss per SAE · • val"
                yield CurvePlot(id="loss-plot", empty_text="loss appears here as training runs")
            with Vertical(id="l0-panel", classes="panel") as panel:
                panel.border_title = "L0"
                yield CurvePlot(id="l0-plot", empty_text="active latents per example")
            with Vertical(id="dead-panel", classes="panel") as panel:
                panel.border_title = "dead %"
                yield CurvePlot(id="dead-plot", empty_text="share of dead latents")

    def reset(self) -> None:
        """A training starts: an empty bar counting, no rate, empty plots."""
        progress = self.query_one("#progress", ProgressBar)
        progress.update(total=None, progress=0)
        progress.add_class("-started")  # hidden until now: an idle bar would pulse for nothing
        progress.query_one("#eta").display = True
        self.query_one("#rate", Static).update("")
        for plot in self.query(CurvePlot):
            plot.show_series([])

    def show_event(self, event: TrainProgress) -> None:
        """The bar and the rate line at the latest progress event."""
        self.query_one("#progress", ProgressBar).update(total=event.total_steps, progress=event.step)
        self.query_one("#rate", Static).update(progress_line(event))

    def draw(self, events: Sequence[TrainProgress]) -> None:
        """The plots over every progress event so far."""
        if not events:
            return
        x = [event.examples_seen for event in events]
        n = len(events[-1].loss)
        epoch_ends = [event for event in events if event.val_loss is not None]
        # The reconstruction loss, as on val: the AuxK term joins the total only once latents count as dead.
        self.query_one("#loss-plot", CurvePlot).show_series(
            [(x, [(event.reconstruction_loss or event.loss)[i] for event in events]) for i in range(n)],
            points=[([e.examples_seen for e in epoch_ends], [e.val_loss[i] for e in epoch_ends])
                    for i in range(n)],
        )
        self.query_one("#l0-plot", CurvePlot).show_series(
            [(x, [event.l0[i] for event in events]) for i in range(n)])
        self.query_one("#dead-plot", CurvePlot).show_series(
            [(x, [100 * event.dead_fraction[i] for event in events]) for i in range(n)])
