"""What Review's workers tell the screen: past-tense messages, one per finished piece of work (a failed read
is tui.messages.LoadFailed, shared with other screens)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from engine.analysis.review import FeaturePanel, ReviewContext


@dataclass
class ContextLoaded(Message):
    context: ReviewContext


@dataclass
class FeatureLoaded(Message):
    panel: FeaturePanel
    version: int


@dataclass
class ReadsLeft(Message):
    """Panel reads that ended without a panel; `keys` are their (feature, version). `failed`: the read failed
    (LoadFailed says why); else reads ahead that gave way to a label being written."""

    keys: list[tuple[int, int]]
    failed: bool = field(default=False, kw_only=True)


@dataclass
class FeatureOrdered(Message):
    """The SAE's activations were copied in feature order (rows written; None: already were)."""

    rows: int | None
    seconds: float


@dataclass
class LabelSaved(Message):
    """A labelling action committed: `label_id` on `feature_id`; `kind` says which action."""

    kind: str
    feature_id: int
    label_id: int
    name: str | None
    summary: str
    committed_at: float
    """time.perf_counter() when the commit returned (bench/app.py times key press to commit)."""


@dataclass
class LabelFailed(Message):
    kind: str
    feature_id: int
    reason: str


@dataclass
class LabelValidated(Message):
    """Validating one label ended: its validations row, or None and the `reason` it failed."""

    feature_id: int
    row: dict | None
    reason: str = ""
