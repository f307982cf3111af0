"""Validations: each accepted label tested on the test split, with the feature's neural signature.

A validation run replaces the run's previous validations in one transaction.
"""

from __future__ import annotations

import polars as pl

from store.db import Store


def accepted_labels(db: Store, run_id: int) -> pl.DataFrame:
    """The current label of every feature of the run whose verdict is accept."""
    return db.frame(
        "SELECT c.* FROM current_labels c JOIN saes s USING (sae_id) WHERE s.run_id = ? AND c.verdict = 'accept'"
        " ORDER BY c.sae_id, c.feature_id", [run_id])


def feature_activation(db: Store, sae_id: int, feature_id: int) -> pl.DataFrame:
    return db.frame("SELECT example_id, value FROM activations WHERE sae_id = ? AND feature_id = ?",
                    [sae_id, feature_id])


def decoder_row(db: Store, sae_id: int, feature_id: int) -> pl.DataFrame:
    return db.frame("SELECT unit_id, weight FROM decoder WHERE sae_id = ? AND feature_id = ? ORDER BY unit_id",
                    [sae_id, feature_id])


def save_validations(db: Store, run_id: int, validations: pl.DataFrame, signatures: pl.DataFrame) -> None:
    with db.transaction():
        for table in ("validations", "signatures"):
            db.con.execute(f"DELETE FROM {table} WHERE sae_id IN (SELECT sae_id FROM saes WHERE run_id = ?)",
                           [run_id])
        if validations.height:
            db.insert_frame("validations", validations)
        if signatures.height:
            db.insert_frame("signatures", signatures)


def validation_summary(db: Store, run_id: int) -> pl.DataFrame:
    return db.frame(
        "SELECT v.sae_id, v.feature_id, v.predicate, round(v.mcc, 3) AS mcc, round(v.mcc_ci_low, 3) AS mcc_low,"
        " v.q_value, v.decode_metric, round(v.decode_signature, 3) AS signature, round(v.decode_all, 3) AS all_units,"
        " round(v.decode_random_p95, 3) AS random_p95, v.validated, v.reason FROM validations v"
        " JOIN saes s USING (sae_id) WHERE s.run_id = ? ORDER BY v.validated DESC, v.mcc DESC", [run_id])
