"""Quality flags as stored: a dataset's (found at import) and a run's (found after training).

Home reads these on the way to its first frame, so this module imports neither polars nor pyarrow
(`report_flags` makes a frame through `Store.frame`, which imports polars when called).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from store.db import Store

if TYPE_CHECKING:
    import polars as pl

_COLUMNS = "dataset_id, run_id, sae_id, split, unit_id, flag, value, threshold, message, suggestion"


def run_flags(db: Store, run_id: int) -> list[dict[str, Any]]:
    """The flags of a run's SAEs, in SAE order."""
    return db.records(f"SELECT {_COLUMNS} FROM quality_flags WHERE run_id = ? ORDER BY sae_id, flag, split",
                      [run_id])


def dataset_flags(db: Store, dataset_id: int) -> list[dict[str, Any]]:
    """The flags found when the dataset was imported."""
    return db.records(f"SELECT {_COLUMNS} FROM quality_flags WHERE dataset_id = ? AND run_id IS NULL ORDER BY flag",
                      [dataset_id])


def all_flags(db: Store) -> list[dict[str, Any]]:
    """Every flag in the database (a handful per run): each dataset's import flags, then each run's."""
    return db.records(f"SELECT {_COLUMNS} FROM quality_flags"
                      " ORDER BY dataset_id, run_id NULLS FIRST, sae_id, flag, split")


def report_flags(db: Store, run_id: int) -> pl.DataFrame:
    """The flags a run's report lists: its dataset's import flags (sae_id NULL) first, then its SAEs'."""
    return db.frame(
        f"SELECT {_COLUMNS} FROM quality_flags"
        " WHERE run_id = ? OR (run_id IS NULL AND dataset_id = (SELECT dataset_id FROM runs WHERE run_id = ?))"
        " ORDER BY run_id NULLS FIRST, sae_id, flag, split", [run_id, run_id])


def flag_line(row: dict[str, Any], *, with_sae: bool = True) -> str:
    """A stored flag as the one line every view prints: `SAE 3: what is wrong — try: what to do`."""
    where = f"SAE {row['sae_id']}: " if with_sae and row["sae_id"] is not None else ""
    return f"{where}{row['message']} — try: {row['suggestion']}"
