"""Messages more than one screen's workers post (past tense, one per finished piece of work); a screen's
own messages are defined on the screen, Review's in tui/review_messages.py."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class LoadFailed(Message):
    """A worker's read failed; `reason` is a sentence for the person."""

    reason: str
