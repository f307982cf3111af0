"""What the Validation screen's workers tell it: past-tense messages, one per finished piece of work (a failed
read is tui.messages.LoadFailed, shared with other screens)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from textual.message import Message

if TYPE_CHECKING:
    from engine.validation.validate_run import ValidateOutcome
    from engine.validation.validation_summary import VerdictCounts
    from store.freezes import FreezeState


@dataclass
class PairingsLoaded(Message):
    """The run's pairings, their signature units and the run's SAEs were read."""

    dataset: str
    saes: list[int]
    pairings: pl.DataFrame
    units: pl.DataFrame
    epoch: str | None = None
    """The analysis epoch of the stored validations, with its test bins; None for every bin."""


@dataclass
class ValidationProgressed(Message):
    """validate_run reported a step (`text`, e.g. '3/7 labels: condition = 2')."""

    text: str


@dataclass
class ValidationFinished(Message):
    outcome: ValidateOutcome
    counts: VerdictCounts
    """Both verdicts counted over the stored latest attempts of the run's accepted labels."""


@dataclass
class ValidationFailed(Message):
    """Validation failed or (`cancelled`) was stopped by the person; `reason` says which, in a sentence."""

    reason: str
    cancelled: bool = False


@dataclass
class ReportWritten(Message):
    path: Path
    tables: Path
    n_validations: int


@dataclass
class ReportFailed(Message):
    reason: str


@dataclass
class FreezeRead(Message):
    """The run's freeze state was read (`frozen_now`: just frozen by `F`)."""

    state: FreezeState
    frozen_now: bool = False


@dataclass
class FreezeFailed(Message):
    reason: str
