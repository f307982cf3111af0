"""Validations: each accepted label tested on the test split, with the feature's neural signature.

A validation run replaces the run's previous validations in one transaction.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from store.db import Store


def accepted_labels(db: Store, run_id: int) -> pl.DataFrame:
    """The current label of every feature of the run whose verdict is accept."""
    return db.frame(
        "SELECT c.* FROM current_labels c JOIN saes s USING (sae_id) WHERE s.run_id = ? AND c.verdict = 'accept'"
        " ORDER BY c.sae_id, c.feature_id", [run_id])


def feature_activations(db: Store, features: pl.DataFrame, n_examples: int) -> dict[tuple[int, int], np.ndarray]:
    """Dense activation [n_examples] of each (sae_id, feature_id) row of ``features``, in one scan."""
    out = {(s, f): np.zeros(n_examples, dtype=np.float32) for s, f in features.iter_rows()}
    if not out:
        return out
    with db.registered("wanted", features.unique()):
        long = db.frame("SELECT a.sae_id, a.feature_id, a.example_id, a.value FROM activations a"
                        " JOIN wanted w USING (sae_id, feature_id) ORDER BY a.sae_id, a.feature_id")
    for (sae_id, feature_id), part in long.partition_by(["sae_id", "feature_id"], as_dict=True).items():
        out[(sae_id, feature_id)][part["example_id"].to_numpy()] = part["value"].to_numpy()
    return out


def decoder_rows(db: Store, features: pl.DataFrame) -> dict[tuple[int, int], np.ndarray]:
    """Decoder weights [n_units] of each (sae_id, feature_id) row of ``features``, in unit order."""
    if features.is_empty():
        return {}
    with db.registered("wanted", features.unique()):
        long = db.frame("SELECT d.sae_id, d.feature_id, d.weight FROM decoder d JOIN wanted w"
                        " USING (sae_id, feature_id) ORDER BY d.sae_id, d.feature_id, d.unit_id")
    return {key: part["weight"].to_numpy() for key, part in
            long.partition_by(["sae_id", "feature_id"], as_dict=True, maintain_order=True).items()}


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
