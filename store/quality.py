"""Quality flags as stored: a dataset's (found at import) and a run's (found after training)."""

from __future__ import annotations

from typing import Any

from store.db import Store

_COLUMNS = "dataset_id, run_id, sae_id, split, unit_id, flag, value, threshold, message, suggestion"


def run_flags(db: Store, run_id: int) -> list[dict[str, Any]]:
    """The flags of a run's SAEs, in SAE order."""
    return db.records(f"SELECT {_COLUMNS} FROM quality_flags WHERE run_id = ? ORDER BY sae_id, flag, split",
                      [run_id])


def dataset_flags(db: Store, dataset_id: int) -> list[dict[str, Any]]:
    """The flags found when the dataset was imported."""
    return db.records(f"SELECT {_COLUMNS} FROM quality_flags WHERE dataset_id = ? AND run_id IS NULL ORDER BY flag",
                      [dataset_id])


def flag_counts(db: Store) -> dict[int, int]:
    """run_id → number of flags, for runs that have any."""
    return {int(r["run_id"]): int(r["n"]) for r in db.records(
        "SELECT run_id, count(*) AS n FROM quality_flags WHERE run_id IS NOT NULL GROUP BY run_id")}
