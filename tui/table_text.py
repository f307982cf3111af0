"""Plain-text, CSV and JSON renderings of a result frame: the stable output of `mini sql` and `mini info`.

Scripts read this output, so its shape is a contract: a header line, a rule, one line per row,
numbers right-aligned, NULL for missing values, and a final "(N rows)" line.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from typing import Any

import polars as pl


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else format(value, ".6g")
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value).replace("\n", "\\n")


def render_table(frame: pl.DataFrame) -> str:
    """Fixed-width text table with a row count."""
    headers = frame.columns
    cells = [[_cell(v) for v in row] for row in frame.iter_rows()]
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    rows = [line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in cells]
    rows.append(f"({frame.height} row{'s' if frame.height != 1 else ''})")
    return "\n".join(rows)


def render_csv(frame: pl.DataFrame) -> str:
    buffer = io.StringIO()
    # CSV has no nested values: lists and structs go out as JSON text.
    nested = [pl.Series(c, [json.dumps(v, default=str) for v in frame[c].to_list()], pl.String)
              for c in frame.columns if frame[c].dtype.is_nested()]
    frame.with_columns(nested).write_csv(buffer)
    return buffer.getvalue().rstrip("\n")


def render_json(frame: pl.DataFrame) -> str:
    """A JSON array of row objects; non-finite floats become null (JSON has no NaN)."""
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    rows = [{k: clean(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return json.dumps(rows, default=str, ensure_ascii=False)


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json}
