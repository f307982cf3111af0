"""What the Train screen's workers tell it: past-tense messages, one per finished piece of work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from engine.sae.train import TrainProgress


@dataclass
class DatasetLoaded(Message):
    """The dataset's summary was read; None when there is no dataset of that name."""

    summary: dict[str, Any] | None
    reason: str | None = None


@dataclass
class TrainStage(Message):
    """What the training is doing before its first step (reading the dataset, building the stack)."""

    text: str


class StartCancelled(Message):
    """Cancelled before the run row was written: nothing is stored."""


@dataclass
class TrainProgressed(Message):
    """Training moved on (the latest event; the history holds every one)."""

    event: TrainProgress


@dataclass
class RunEnded(Message):
    """A run stopped and its results are stored: `status` says whether it finished or was cancelled."""

    run_id: int
    status: str
    n_saes: int
    examples_seen: int
    seconds: float
    headline: dict[str, Any]


class RunFinished(RunEnded):
    """Every epoch ran; the run is stored as finished."""


class RunCancelled(RunEnded):
    """The person cancelled; the weights so far are stored as a cancelled, resumable run."""


@dataclass
class RunFailed(Message):
    """Training did not start (a setting the engine refused) or failed; `field`: the setting at fault."""

    reason: str
    field: str | None
