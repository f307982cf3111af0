"""The Features list's export (`e`): the ranked rows as shown, to a .csv or .parquet the person chooses.

SaveAsScreen asks where (default: `features_run<R>_sae<S>.csv` in engine.exports.default_export_folder, so
never inside a git work tree), then a thread worker writes the rows with store.exports.export_arrow (a
temporary file renamed into place) and the screen notifies what it wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from textual.screen import Screen

    from tui.thread_stores import ThreadStores

EXACT = {"score_shown": "score", "association_shown": "association", "mis_shown": "mis",
         "stability_shown": "stability"}
"""Columns the table rounds for the eye; the file keeps the exact numbers under the same headers."""


def features_table(view: pl.DataFrame, columns: tuple[tuple[str, str], ...], sae_id: int | None) -> pl.DataFrame:
    """The rows the Features table shows, in its order, with its headers (and the SAE they belong to, first):
    numbers exact, density in percent as shown."""
    exact = [
        (pl.col("density") * 100 if column == "density_pct" else pl.col(EXACT.get(column, column))).alias(header)
        for column, header in columns
    ]
    return view.select(pl.lit(sae_id, dtype=pl.Int64).alias("sae"), *exact)


def export_features(screen: Screen, stores: ThreadStores, view: pl.DataFrame,
                    columns: tuple[tuple[str, str], ...], run_id: int, sae_id: int | None) -> None:
    """Ask where, then write the shown rows of the Features list in a worker."""
    from engine.exports import default_export_folder
    from store.sql import export_format
    from tui.screens.save_as import SaveAsScreen

    if view.is_empty():
        screen.notify("No features shown: nothing to export.", title="Export", severity="warning")
        return
    table = features_table(view, columns, sae_id)
    folder = default_export_folder(screen.app.db.path)  # type: ignore[attr-defined]
    default = folder / f"features_run{run_id}_sae{sae_id}.csv"

    def check(path: Path) -> str | None:
        return None if export_format(path) else "end the file name in .csv or .parquet"

    def chosen(path: Path | None) -> None:
        if path is not None:
            screen.run_worker(lambda: _write(screen, stores, table, path, path.parent == folder), thread=True,
                              group="features-export", exclusive=True, name="export features")

    rows = f"{table.height:,} feature{'s' if table.height != 1 else ''}"
    screen.app.push_screen(SaveAsScreen("Export features", f"Write the {rows} shown (SAE {sae_id}, in this order) "
                                        "to (.csv or .parquet):", default, check), chosen)


def _write(screen: Screen, stores: ThreadStores, table: pl.DataFrame, path: Path, make_folder: bool) -> None:
    from store.exports import export_arrow
    from store.sql import export_format

    try:
        if make_folder:  # the default export folder is made when something is written to it
            path.parent.mkdir(parents=True, exist_ok=True)
        with stores.cursor() as db:
            done = export_arrow(db, table.to_arrow(), path, export_format(path) or "csv")
    except Exception as error:  # a full disk, a folder gone meanwhile: one line, the app stays up
        screen.app.call_from_thread(screen.notify, f"Could not export to {path}: {error}", title="Export",
                                    severity="error", markup=False)
        return
    written = f"{done.rows:,} feature{'s' if done.rows != 1 else ''}"
    screen.app.call_from_thread(screen.notify, f"{written} written to {done.path}.", title="Export", markup=False)
