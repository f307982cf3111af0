"""Validations: each accepted label tested on the test split, with the feature's neural signature.

Attempts are appended, never replaced (a failed attempt stays in the run's multiple-testing family);
`current_validations` is each label's latest.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """Decoder weights [n_units] of each (sae_id, feature_id) row of ``features``, indexed by the dataset's unit id
    (a transcoder decodes only its target units: the others weigh 0)."""
    if features.is_empty():
        return {}
    with db.registered("wanted", features.unique()):
        long = db.frame("SELECT d.sae_id, d.feature_id, d.unit_id, d.weight, ds.n_units FROM decoder d JOIN wanted w"
                        " USING (sae_id, feature_id) JOIN saes s USING (sae_id) JOIN runs r USING (run_id)"
                        " JOIN datasets ds USING (dataset_id) ORDER BY d.sae_id, d.feature_id, d.unit_id")
    out = {}
    for key, part in long.partition_by(["sae_id", "feature_id"], as_dict=True, maintain_order=True).items():
        row = np.zeros(int(part["n_units"][0]), dtype=part["weight"].to_numpy().dtype)
        row[part["unit_id"].to_numpy()] = part["weight"].to_numpy()
        out[key] = row
    return out


def append_attempts(db: Store, run_id: int, attempts: pl.DataFrame, signatures: pl.DataFrame, *,
                    epoch: dict[str, Any] | None, judge: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
    """Append validation attempts of the run, in one transaction with everything that follows from them,
    and return every attempt of the run as `run_attempts` reads it.

    Each attempt gets its feature's attempt number: the number its test (label_id, where_sql, around) got
    before when it repeats one, else one more than the feature's highest. The labels' signatures are
    replaced by these attempts'. The epoch row (`store.epochs.epoch_row`; None: every test bin) is written.
    Then `judge` (engine.validation.validate_run.judge_attempts) gets every attempt of the run and returns the rows
    whose q_value, verdicts, duplicate_of and reason change with the family: those are updated."""
    from store.epochs import write_epoch

    attempts = attempts.with_columns(pl.col(pl.Float64).fill_nan(None))
    with db.transaction():
        write_epoch(db, run_id, "validate", epoch)
        db.insert_frame("validations", _numbered(db, attempts))
        with db.registered("tested_labels", attempts.select("label_id").unique()):
            db.con.execute("DELETE FROM signatures WHERE label_id IN (SELECT label_id FROM tested_labels)")
        if signatures.height:
            db.insert_frame("signatures", signatures)
        attempts = run_attempts(db, run_id)
        judged = judge(attempts)
        if judged.height:
            with db.registered("judged", judged):
                db.con.execute(
                    "UPDATE validations SET q_value = j.q_value, generalises = j.generalises,"
                    " signature_specific = j.signature_specific, validated = j.validated,"
                    " duplicate_of = j.duplicate_of, reason = j.reason"
                    " FROM judged j WHERE validations.validation_id = j.validation_id")
        return attempts.update(judged, on="validation_id", include_nulls=True)  # as stored, not read back


def _numbered(db: Store, attempts: pl.DataFrame) -> pl.DataFrame:
    """The attempts with their `attempt` numbers (see append_attempts)."""
    with db.registered("incoming", attempts.select("sae_id", "feature_id").unique()):
        known = db.records(
            "SELECT v.sae_id, v.feature_id, v.label_id, v.where_sql, v.around, min(v.attempt) AS attempt"
            " FROM validations v JOIN incoming i USING (sae_id, feature_id) GROUP BY ALL")
    tests = {(r["sae_id"], r["feature_id"], r["label_id"], r["where_sql"], r["around"]): r["attempt"] for r in known}
    top: dict[tuple[int, int], int] = {}
    for (sae, feature, *_), number in tests.items():
        top[(sae, feature)] = max(top.get((sae, feature), 0), number)
    numbers = []
    for row in attempts.iter_rows(named=True):
        key = (row["sae_id"], row["feature_id"], row["label_id"], row.get("where_sql"), row.get("around"))
        if key not in tests:
            top[key[:2]] = tests[key] = top.get(key[:2], 0) + 1
        numbers.append(tests[key])
    return attempts.with_columns(pl.Series("attempt", numbers, dtype=pl.Int32))


def run_attempts(db: Store, run_id: int) -> pl.DataFrame:
    """Every validation attempt of the run, oldest first, with three flags: `in_family` (the latest row of its
    test: label_id, where_sql, around), `latest_of_label` (the label's latest attempt, what
    current_validations shows) and `current` (the label is its feature's current accepted label)."""
    return db.frame(
        "SELECT v.*,"
        " row_number() OVER (PARTITION BY v.label_id, v.where_sql, v.around ORDER BY v.validation_id DESC) = 1"
        "   AS in_family,"
        " row_number() OVER (PARTITION BY v.label_id ORDER BY v.validation_id DESC) = 1 AS latest_of_label,"
        " c.label_id IS NOT NULL AS current"
        " FROM validations v JOIN saes s USING (sae_id)"
        " LEFT JOIN current_labels c ON c.label_id = v.label_id AND c.verdict = 'accept'"
        " WHERE s.run_id = ? ORDER BY v.validation_id", [run_id])


def latest_attempt(db: Store, label_id: int) -> dict[str, Any]:
    """The label's latest validation attempt (its row of current_validations)."""
    return db.frame("SELECT * FROM current_validations WHERE label_id = ?", [label_id]).to_dicts()[0]


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


def sae_code(db: Store, sae_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stored activation of the SAE: (example_id, feature_id, value) arrays, for its sparse code."""
    frame = db.frame("SELECT example_id, feature_id, value FROM activations WHERE sae_id = ?", [sae_id])
    return (frame["example_id"].to_numpy(), frame["feature_id"].to_numpy(),
            frame["value"].to_numpy().astype(np.float32))


def sae_decoder(db: Store, sae_id: int, d_sae: int, n_units: int) -> np.ndarray:
    """The SAE's decoder rows [d_sae × units] float32 (count units), as stored."""
    frame = db.frame("SELECT feature_id, unit_id, weight FROM decoder WHERE sae_id = ?", [sae_id])
    out = np.zeros((d_sae, n_units), dtype=np.float32)
    out[frame["feature_id"].to_numpy(), frame["unit_id"].to_numpy()] = frame["weight"].to_numpy()
    return out


def sae_densities(db: Store, sae_id: int, d_sae: int) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's train density and whether it is dead, [d_sae] each (a feature without a row: dead)."""
    frame = db.frame("SELECT feature_id, density, dead FROM features WHERE sae_id = ?", [sae_id])
    density, dead = np.zeros(d_sae), np.ones(d_sae, dtype=bool)
    ids = frame["feature_id"].to_numpy()
    density[ids] = frame["density"].fill_null(0).to_numpy()
    dead[ids] = frame["dead"].fill_null(True).to_numpy()
    return density, dead
