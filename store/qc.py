"""What the QC screen reads about a run's SAEs: their settings, QC per split, R² per unit, training log.

Each function reads one small thing (a run's SAEs are few; units are hundreds, logged steps thousands),
so the screen can fetch one SAE's view in a few milliseconds when the person switches instance.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from store.db import Store
from store.errors import StoreError

SPLIT_ORDER = "CASE split WHEN 'train' THEN 0 WHEN 'val' THEN 1 WHEN 'test' THEN 2 ELSE 3 END"


def run_header(db: Store, run_id: int) -> dict[str, Any]:
    """run_id, status, message, device, dataset_id, dataset (name), dataset_kind, n_units of one run."""
    row = db.row("SELECT r.run_id, r.status, r.message, r.device, r.dataset_id, d.name AS dataset,"
                 " d.kind AS dataset_kind, d.n_units FROM runs r JOIN datasets d USING (dataset_id)"
                 " WHERE r.run_id = ?", [run_id])
    if row is None:
        raise StoreError(f"{db.path}: no run {run_id}")
    return row


def run_saes(db: Store, run_id: int) -> pl.DataFrame:
    """The run's SAEs in stack order, with how many of their features never fired on train."""
    return db.frame(
        """
        SELECT s.sae_id, s.instance, s.architecture, s.d_in, s.d_sae, s.k, s.seed, s.loss, s.best_epoch,
               s.val_loss, count(f.feature_id) FILTER (WHERE f.dead) AS n_dead_train
        FROM saes s LEFT JOIN features f USING (sae_id)
        WHERE s.run_id = ?
        GROUP BY ALL ORDER BY s.instance
        """,
        [run_id],
    )


def sae_qc(db: Store, sae_id: int) -> pl.DataFrame:
    """One qc row per split (train, val, test), histograms still as their JSON text."""
    return db.frame(f"SELECT * EXCLUDE (sae_id) FROM qc WHERE sae_id = ? ORDER BY {SPLIT_ORDER}", [sae_id])


def sae_unit_qc(db: Store, sae_id: int) -> pl.DataFrame:
    """split, unit_id, unit name, r2, cosine, bad for every unit on every split (r2 NULL: constant unit)."""
    return db.frame(
        f"""
        SELECT q.split, q.unit_id, u.name, q.r2, q.cosine, q.bad
        FROM unit_qc q
        JOIN saes s USING (sae_id) JOIN runs r USING (run_id)
        LEFT JOIN units u ON u.dataset_id = r.dataset_id AND u.unit_id = q.unit_id
        WHERE q.sae_id = ?
        ORDER BY {SPLIT_ORDER.replace("split", "q.split")}, q.unit_id
        """,
        [sae_id],
    )


def sae_train_log(db: Store, sae_id: int) -> pl.DataFrame:
    """The SAE's logged steps in order: step, epoch, examples_seen, loss, reconstruction_loss (the loss itself
    for runs trained before it was logged apart), l0, dead_fraction, val_loss."""
    return db.frame(
        "SELECT step, epoch, examples_seen, loss, coalesce(reconstruction_loss, loss) AS reconstruction_loss, l0,"
        " dead_fraction, val_loss FROM train_log"
        " WHERE sae_id = ? ORDER BY step, val_loss NULLS FIRST",
        [sae_id],
    )


def run_qc_headline(db: Store, run_id: int) -> dict[str, Any]:
    """Mean over the run's SAEs, on the validation split: fvu, pca_fvu, nmf_fvu, ridge_fvu (transcoders),
    dead_fraction, l0_mean."""
    row = db.row(
        "SELECT count(*) AS n_saes, avg(q.fvu) AS fvu, avg(q.pca_fvu) AS pca_fvu, avg(q.nmf_fvu) AS nmf_fvu,"
        " avg(q.ridge_fvu) AS ridge_fvu,"
        " avg(q.dead_fraction) AS dead_fraction, avg(q.l0_mean) AS l0_mean"
        " FROM saes s JOIN qc q ON q.sae_id = s.sae_id AND q.split = 'val' WHERE s.run_id = ?", [run_id])
    assert row is not None  # an aggregate has its one row
    return row
