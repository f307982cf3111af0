"""The SQL screen's results: an Arrow-backed table (textual-fastdatatable) that copies what it shows.

The fast table keeps the Arrow data and renders only the rows on screen, so 100,000 rows appear as
quickly as 10. `c` (or ctrl+c) copies the cell under the cursor and `C` its row through OSC 52
(tui.clipboard), and `tab` leaves the table for the query box instead of moving the cursor (the table's own meaning).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from textual import on
from textual.binding import Binding, BindingType
from textual_fastdatatable import ArrowBackend, DataTable

from tui.clipboard import cell_text, copy_to_clipboard, row_text

FLOAT_SAMPLE = 2_000
"""Values of a float column measured for its width (spread over the column, plus its extremes)."""


def float_column_widths(table: pa.Table) -> list[int | None]:
    """Widths for the float columns (None: let the table measure).

    The table measures a number column by its largest and smallest values only, which suits integers but
    cuts floats: 0.4765 is wider than 0.5 and 0.1. The table shows floats as `{:n}` (6 significant digits),
    so a spread sample formatted that way gives the width."""
    widths: list[int | None] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        present = column.drop_null()
        if not pa.types.is_floating(column.type) or not len(present):
            widths.append(None)
            continue
        step = max(1, len(present) // FLOAT_SAMPLE)
        sample = present.take(np.arange(0, len(present), step)).to_pylist()
        extremes = pc.min_max(present).values()
        values = [*sample, *(value.as_py() for value in extremes)]
        widths.append(max(len(name), *(len(f"{value:n}") for value in values)))
    return widths


class ResultsTable(DataTable):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy_cell", "Copy"),
        Binding("C", "copy_row", "Copy row"),
        Binding("tab", "app.focus_next", "Next", show=False),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False),
    ]

    def __init__(self, table: pa.Table, **kwargs):
        # Values are data, never markup: a '[red]' in a text column stays '[red]'.
        super().__init__(backend=ArrowBackend(table), column_widths=float_column_widths(table),
                         null_rep="[dim]NULL[/]", render_markup=False, max_column_content_width=60,
                         zebra_stripes=True, **kwargs)
        self.arrow = table

    def action_copy_cell(self) -> None:
        if not self.row_count:
            return
        coordinate = self.cursor_coordinate
        column = self.arrow.column_names[coordinate.column]
        copy_to_clipboard(self.app, cell_text(self.get_cell_at(coordinate)),
                          f"row {coordinate.row + 1}, {column}")

    def action_copy_row(self) -> None:
        if not self.row_count:
            return
        row = self.cursor_coordinate.row
        copy_to_clipboard(self.app, row_text(self.get_row_at(row)), f"row {row + 1}")

    @on(DataTable.SelectionCopied)
    def copy_selection(self, event: DataTable.SelectionCopied) -> None:
        """ctrl+c: the table gathers the cell (or selection) under the cursor; copy it."""
        event.stop()
        single = len(event.values) == 1 and len(event.values[0]) == 1
        copy_to_clipboard(self.app, "\n".join(row_text(values) for values in event.values),
                          "the cell" if single else f"{len(event.values)} rows")
