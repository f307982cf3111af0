"""A fast table for thousands of rows: textual-fastdatatable on an Arrow table, whose data can be
replaced in place (a new sort or filter) without unmounting the widget."""

from __future__ import annotations

import pyarrow as pa
from textual_fastdatatable import ArrowBackend, DataTable


class ArrowTable(DataTable):
    """A row-cursor table over an Arrow table. Cells are shown as text (no markup is interpreted), so a
    label holding `[bold]` or emoji is shown as typed."""

    def __init__(self, data: pa.Table, **kwargs) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("show_row_labels", False)
        super().__init__(backend=ArrowBackend(data), render_markup=False, **kwargs)

    def replace_data(self, data: pa.Table, *, cursor_row: int = 0) -> None:
        """Show `data` instead (same columns or not) and put the cursor on `cursor_row` (clamped).

        fastdatatable has no public way to swap data; this resets exactly the caches its own mutations
        reset (backend, column measurements, rendered rows and lines) and asks for new dimensions.
        """
        backend = ArrowBackend(data)
        backend.render_markup = False
        self.backend = backend
        self._ordered_columns = None
        self._clear_caches()
        self._require_update_dimensions = True
        self._update_count += 1
        self.move_cursor(row=max(0, min(cursor_row, data.num_rows - 1)), column=0)
        self.check_idle()
        self.refresh(layout=True)
