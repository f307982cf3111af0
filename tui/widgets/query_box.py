"""The SQL screen's query box: a text area that also walks through the queries run before.

`up` on the box's first line shows the previous query and `down` on its last line the next one, as in a
shell; past the newest, the text being written before the walk began comes back.
"""

from __future__ import annotations

from textual.widgets import TextArea


class QueryBox(TextArea):
    """A TextArea with a query history (a list owned by the caller; newest last)."""

    def __init__(self, text: str = "", *, queries_run: list[str], **kwargs):
        super().__init__(text, soft_wrap=True, tab_behavior="focus", show_line_numbers=False, **kwargs)
        self.queries_run = queries_run
        self._position = len(queries_run)
        """Index in queries_run of the query shown; len(queries_run) is the text being written (`_draft`)."""
        self._draft = text

    def forget_position(self) -> None:
        """Back to the newest end of the history (after a query runs and is appended)."""
        self._position = len(self.queries_run)

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.navigator.is_first_wrapped_line(self.cursor_location) and self._position > 0:
            if self._position == len(self.queries_run):
                self._draft = self.text
            self._show(self._position - 1)
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if (not select and self.navigator.is_last_wrapped_line(self.cursor_location)
                and self._position < len(self.queries_run)):
            self._show(self._position + 1)
            return
        super().action_cursor_down(select)

    def _show(self, position: int) -> None:
        self._position = position
        self.load_text(self.queries_run[position] if position < len(self.queries_run) else self._draft)
        self.move_cursor(self.document.end)
