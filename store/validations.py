"""Validations: each accepted label tested on the test split, with the feature's neural signature.

A validation run replaces the run's previous validations in one transaction.
"""

from __future__ import annotations

from typing import Any

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


def save_validations(db: Store, run_id: int, validations: pl.DataFrame, signatures: pl.DataFrame, *,
                     epoch: dict[str, Any] | None = None) -> None:
    """Replace the run's validations, and the epoch they were scored on (`store.epochs.epoch_row`; None:
    every test bin)."""
    from store.epochs import write_epoch

    with db.transaction():
        write_epoch(db, run_id, "validate", epoch)
        for table in ("validations", "signatures"):
            db.con.execute(f"DELETE FROM {table} WHERE sae_id IN (SELECT sae_id FROM saes WHERE run_id = ?)",
                           [run_id])
        if validations.height:
            db.insert_frame("validations", validations)
        if signatures.height:
            db.insert_frame("signatures", signatures)


def validation_summary(db: Store, run_id: int) -> pl.DataFrame:
    """The latest attempt of every label of the run validated so far, generalising labels first."""
    return db.frame(
        "SELECT v.sae_id, v.feature_id, v.label_id, v.attempt, v.predicate, v.testable, v.mcc, v.mcc_ci_low,"
        " v.mcc_ci_high, v.n_test_trials, v.p_value, v.n_shifts, v.q_value, v.decode_metric, v.decode_signature,"
        " v.decode_all, v.decode_random_p95, v.generalises, v.signature_specific, v.validated, v.duplicate_of,"
        " v.reason FROM current_validations v JOIN saes s USING (sae_id) WHERE s.run_id = ?"
        " ORDER BY v.generalises DESC NULLS LAST, v.signature_specific DESC NULLS LAST, v.mcc DESC NULLS LAST,"
        " v.sae_id, v.feature_id", [run_id])


def run_pairings(db: Store, run_id: int) -> pl.DataFrame:
    """Every accepted label of the run (its current label) with the validation of that very label.

    Validation columns are those of the label's latest attempt (current_validations); NULL (and
    `validated_at` NULL) for a label accepted since the last validation, including one that replaced a
    validated label of the same feature. Ordered by SAE, then generalising, then validated pairings first,
    then by MCC; untested labels last.
    """
    return db.frame(
        "SELECT c.label_id, c.sae_id, c.feature_id, c.name, c.predicate, c.variable, c.source, c.note,"
        " r.rank, v.created_at AS validated_at,"
        " v.* EXCLUDE (label_id, sae_id, feature_id, predicate, created_at)"
        " FROM current_labels c JOIN saes s USING (sae_id)"
        " LEFT JOIN current_validations v ON v.label_id = c.label_id"
        " LEFT JOIN rankings r ON r.sae_id = c.sae_id AND r.feature_id = c.feature_id"
        " WHERE s.run_id = ? AND c.verdict = 'accept'"
        " ORDER BY c.sae_id, v.label_id IS NULL, v.testable DESC NULLS LAST, v.generalises DESC NULLS LAST,"
        " v.validated DESC NULLS LAST,"
        " v.mcc DESC NULLS LAST, r.rank NULLS LAST, c.feature_id", [run_id])


def run_signature_units(db: Store, run_id: int) -> pl.DataFrame:
    """The signature units of every validated label of the run, strongest decoder weight first."""
    return db.frame(
        "SELECT g.label_id, g.unit_id, u.name AS unit_name, g.weight, g.coactivation"
        " FROM signatures g JOIN saes s USING (sae_id) JOIN runs r USING (run_id)"
        " JOIN units u ON u.dataset_id = r.dataset_id AND u.unit_id = g.unit_id"
        " WHERE s.run_id = ? AND g.in_signature ORDER BY g.label_id, abs(g.weight) DESC, g.unit_id", [run_id])
