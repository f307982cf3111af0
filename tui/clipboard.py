"""Copy to the clipboard of the person's own machine through OSC 52, which works over SSH.

The text travels to the terminal as an escape sequence (Textual's `App.copy_to_clipboard` writes it) and
the terminal puts it on its clipboard, so it lands on the laptop, not on the GPU server. Most terminals
accept it; inside tmux it needs `set -g set-clipboard on`. `app.clipboard` keeps a copy either way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from textual.app import App

_SEPARATORS = re.compile(r"[\t\r\n]+")


def cell_text(value: Any) -> str:
    """A value as it would be pasted into a spreadsheet cell: NULL as empty, times in ISO form."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def row_text(values: Iterable[Any]) -> str:
    """A row as tab-separated values (a paste into a spreadsheet fills one row); tabs and line breaks
    inside values become spaces so that the row stays one row."""
    return "\t".join(_SEPARATORS.sub(" ", cell_text(value)) for value in values)


def copy_to_clipboard(app: App, text: str, what: str) -> None:
    """Copy `text` and say what was copied (`what`: 'cell', 'row 3', …)."""
    app.copy_to_clipboard(text)
    characters = f"{len(text):,} character{'s' if len(text) != 1 else ''}"
    app.notify(f"Copied {what} ({characters}) to the clipboard.", title="Copied", markup=False)
