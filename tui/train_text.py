"""The Train screen's words: what a training plan, its progress and its finished run read as, and the
history of progress events the plots draw from (kept apart from the screen so they test on their own)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tui.widgets.train_form import FIELDS, TrainSettings

if TYPE_CHECKING:
    from engine.sae.train import TrainProgress


class ProgressHistory:
    """Every progress event of one training, appended by the worker thread, read by the screen."""

    def __init__(self) -> None:
        self._events: list[TrainProgress] = []
        self._lock = threading.Lock()

    def add(self, event: TrainProgress) -> None:
        with self._lock:
            self._events.append(event)

    def snapshot(self) -> list[TrainProgress]:
        with self._lock:
            return list(self._events)


def sae_count(n: int) -> str:
    return f"{n} SAE" if n == 1 else f"{n} SAEs"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def progress_line(event: TrainProgress) -> str:
    """Where training is and how it goes, averaged over the SAEs of the stack. The loss shown is the
    reconstruction loss, with the AuxK (or L1) term beside it: that term starts only once latents count as
    dead, and inside a total it reads as a sudden jump."""
    epochs = event.epochs
    recon, aux = event.mean_losses()
    return (f"epoch {min(event.epoch + 1, epochs)}/{epochs}{' max' if event.patience else ''} · "
            f"{event.examples_per_s:,.0f} examples/s · loss {recon:.4f}" + (f" + aux {aux:.4f}" if aux > 0 else "")
            + f" · L0 {_mean(event.l0):.1f} · dead {100 * _mean(event.dead_fraction):.1f}%")


def quality_line(headline: dict[str, Any]) -> str:
    """The run's QC headline on the validation split, averaged over its SAEs (empty if it has none)."""
    if headline.get("fvu") is None:
        return ""
    if headline.get("ridge_fvu") is not None:  # a transcoder: its baseline is a ridge from inputs to targets
        baselines = f"ridge {headline['ridge_fvu']:.3f}"
    elif headline.get("pca_fvu") is None:
        baselines = "no baseline"
    else:
        baselines = f"PCA {headline['pca_fvu']:.3f}"
    if headline.get("nmf_fvu") is not None:
        baselines += f", NMF {headline['nmf_fvu']:.3f}"
    return (f"val: FVU {headline['fvu']:.3f} ({baselines}) · L0 {headline['l0_mean']:.1f} · "
            f"dead {100 * headline['dead_fraction']:.1f}%")


def plan_text(settings: TrainSettings | None, errors: dict[str, str], n_train: int | None) -> str:
    """What ctrl+s would train, or what stops it."""
    if errors:
        names = ", ".join(field.label for field in FIELDS if field.name in errors)
        return f"fix {names} first"
    assert settings is not None
    saes = sae_count(settings.n_saes)
    chosen = f" · {', '.join(settings.auto)} chosen from the recording" if settings.auto else ""
    if settings.where is not None or settings.around is not None:
        return saes + " · on the epoch's train bins" + chosen
    if n_train is None or settings.batch_size is None or settings.epochs is None:
        return saes + chosen
    steps = max(1, n_train // min(settings.batch_size, n_train)) if n_train else 0
    return f"{saes} · {steps:,} steps per epoch × {settings.epochs}{chosen}"
