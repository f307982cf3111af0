"""What Review's workers tell the screen: past-tense messages, one per finished piece of work (a failed read
is tui.messages.LoadFailed, shared with other screens)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from engine.analysis.review import FeaturePanel, ReviewContext


class ContextLoaded(Message):
    def __init__(self, context: ReviewContext):
        super().__init__()
        self.context = context


class FeatureLoaded(Message):
    def __init__(self, panel: FeaturePanel, version: int):
        super().__init__()
        self.panel = panel
        self.version = version


class ReadsLeft(Message):
    """Panel reads that ended without a panel; `keys` are their (feature, version). `failed`: the read failed
    (LoadFailed says why); else reads ahead that gave way to a label being written."""

    def __init__(self, keys: list[tuple[int, int]], *, failed: bool = False):
        super().__init__()
        self.keys = keys
        self.failed = failed


class FeatureOrdered(Message):
    """The SAE's activations were copied in feature order (rows written; None: already were)."""

    def __init__(self, rows: int | None, seconds: float):
        super().__init__()
        self.rows = rows
        self.seconds = seconds


class LabelSaved(Message):
    """A labelling action committed: `label_id` on `feature_id`; `kind` says which action."""

    def __init__(self, kind: str, feature_id: int, label_id: int, name: str | None, summary: str,
                 committed_at: float):
        super().__init__()
        self.kind = kind
        self.feature_id = feature_id
        self.label_id = label_id
        self.name = name
        self.summary = summary
        self.committed_at = committed_at
        """time.perf_counter() when the commit returned (bench/app.py times key press to commit)."""


class LabelFailed(Message):
    def __init__(self, kind: str, feature_id: int, reason: str):
        super().__init__()
        self.kind = kind
        self.feature_id = feature_id
        self.reason = reason


class LabelValidated(Message):
    """Validating one label ended: its validations row, or None and the `reason` it failed."""

    def __init__(self, feature_id: int, row: dict | None, reason: str = ""):
        super().__init__()
        self.feature_id = feature_id
        self.row = row
        self.reason = reason
