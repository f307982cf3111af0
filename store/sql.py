"""SQL typed by a person (`mini sql`, the app's SQL screen): run it, return a frame or a clear error."""

from __future__ import annotations

import duckdb
import polars as pl

from store.db import Store
from store.errors import StoreError


def run_user_query(db: Store, sql: str) -> pl.DataFrame | None:
    """Run one or more statements; return the last one's result (None if it returns no rows).

    The connection decides what may be written: a read-only Store refuses writes.
    """
    if not sql.strip():
        raise StoreError("the query is empty")
    try:
        result = db.con.sql(sql)
    except duckdb.Error as error:
        text = str(error).strip().splitlines()
        raise StoreError(f"query failed: {text[0] if text else type(error).__name__}") from None
    if result is None:
        return None
    try:
        return pl.from_arrow(result.to_arrow_table())  # type: ignore[return-value]
    except duckdb.Error as error:
        raise StoreError(f"query failed: {str(error).strip().splitlines()[0]}") from None
