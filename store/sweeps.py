"""Sweeps: the sweep row, and one row per trial, replaced whole each time its files are ingested.

Workers never open the database; the owning process reads what they left in the sweep folder and writes it
here. Writing a trial row twice with the same content changes nothing, so ingesting is idempotent and a
killed owner only has to ingest again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from store.db import Store
from store.errors import StoreError

if TYPE_CHECKING:
    import polars as pl

TRIAL_COLUMNS = (
    "sweep_id", "trial_id", "pack_id", "config", "config_hash", "architecture", "d_sae", "k", "loss", "seed",
    "status", "attempts", "job_id", "host", "device", "started_at", "finished_at", "seconds", "examples_seen",
    "best_epoch", "train_fvu", "val_fvu", "val_l0", "val_dead_fraction", "stability", "error",
)
"""Every sweep_trials column a sweep writes (run_id is the promotion's, kept across ingestions)."""


def add_sweep(db: Store, dataset_id: int, grid: str, options: dict[str, Any], executor: str,
              n_trials: int, folder_for: Any) -> tuple[int, str]:
    """Commit a new sweep row; `folder_for(sweep_id)` names its folder (a new one per sweep). Returns
    (sweep_id, folder)."""
    with db.transaction():
        sweep_id = next_sweep_id(db)
        folder = str(folder_for(sweep_id))
        db.con.execute(
            "INSERT INTO sweeps (sweep_id, dataset_id, grid, options, executor, folder, n_trials) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [sweep_id, dataset_id, grid, json.dumps(options, sort_keys=True), executor, folder, n_trials])
    return sweep_id, folder


def next_sweep_id(db: Store) -> int:
    """The id the next add_sweep takes (the caller owns the database, so nobody takes it first)."""
    return int(db.scalar("SELECT coalesce(max(sweep_id), 0) + 1 FROM sweeps"))


def get_sweep(db: Store, sweep_id: int) -> dict[str, Any]:
    row = db.row("SELECT s.*, d.name AS dataset FROM sweeps s JOIN datasets d USING (dataset_id) "
                 "WHERE sweep_id = ?", [sweep_id])
    if row is None:
        have = [str(r[0]) for r in db.con.execute("SELECT sweep_id FROM sweeps ORDER BY sweep_id").fetchall()]
        raise StoreError(f"{db.path}: no sweep {sweep_id} (sweeps: {', '.join(have) or 'none yet'})")
    row["options"] = json.loads(row["options"])
    return row


def list_sweeps(db: Store) -> pl.DataFrame:
    """One row per sweep with its trials counted by status and its best val FVU."""
    return db.frame("""
        SELECT s.sweep_id, d.name AS dataset, s.executor, s.grid, s.n_trials,
               count(t.trial_id) FILTER (WHERE t.status = 'finished') AS finished,
               count(t.trial_id) FILTER (WHERE t.status = 'running') AS running,
               count(t.trial_id) FILTER (WHERE t.status IN ('failed', 'lost')) AS failed,
               min(t.val_fvu) AS best_val_fvu, s.created_at, s.folder
        FROM sweeps s JOIN datasets d USING (dataset_id) LEFT JOIN sweep_trials t USING (sweep_id)
        GROUP BY ALL ORDER BY s.sweep_id
    """)


def save_trials(db: Store, trials: pl.DataFrame) -> int:
    """Write the given trials' rows (columns TRIAL_COLUMNS), replacing what each row said before but its run_id
    (a promotion), in one transaction; returns the rows written."""
    if trials.height == 0:
        return 0
    columns = ", ".join(TRIAL_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in TRIAL_COLUMNS if c not in ("sweep_id", "trial_id"))
    with db.transaction(), db.registered("_mini_trials", trials.select(TRIAL_COLUMNS)):
        db.con.execute(f"INSERT INTO sweep_trials ({columns}) SELECT {columns} FROM _mini_trials "
                       f"ON CONFLICT (sweep_id, trial_id) DO UPDATE SET {updates}")
        db.con.execute("UPDATE sweeps SET ingested_at = current_timestamp WHERE sweep_id IN "
                       "(SELECT DISTINCT sweep_id FROM _mini_trials)")
    return trials.height


def sweep_trials(db: Store, sweep_id: int) -> pl.DataFrame:
    return db.frame("SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY trial_id", [sweep_id])


def set_promoted(db: Store, sweep_id: int, trial_ids: list[int], run_id: int) -> None:
    """Record the run a promotion made (called inside the transaction that wrote the run's results)."""
    db.con.execute("UPDATE sweep_trials SET run_id = ? WHERE sweep_id = ? AND trial_id IN "
                   f"({', '.join('?' * len(trial_ids))})", [run_id, sweep_id, *trial_ids])
