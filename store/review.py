"""The queries behind the Features and Review screens.

A screen reads a whole SAE's small tables once (ranking, suggestions, tuning curves, decoder) and then
one feature at a time: its activations, its labels and the validation of its current label. The one
read that is slow at scale is a feature's activations: `activations` is ordered by example, so
``WHERE feature_id = ?`` scans every activation of the SAE (about 200 ms at 1 M examples × k = 32).
`activations_by_feature` holds the same rows ordered by feature, built once per SAE
(`build_activations_by_feature`), which turns that scan into a read of one or two row groups.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import polars as pl

from store.db import Store
from store.errors import StoreError


def run_dataset(db: Store, run_id: int) -> dict[str, Any]:
    """The dataset a run was trained on (its row of `datasets`, options parsed as get_dataset gives them)."""
    rows = db.frame("SELECT d.* FROM runs r JOIN datasets d USING (dataset_id) WHERE r.run_id = ?", [run_id])
    if rows.is_empty():
        raise StoreError(f"{db.path}: no run {run_id}")
    row = rows.to_dicts()[0]
    row["options"] = json.loads(row["options"])
    return row


def run_saes(db: Store, run_id: int) -> pl.DataFrame:
    """sae_id, instance, architecture, d_sae, k of each SAE of the run, in instance order."""
    return db.frame("SELECT sae_id, instance, architecture, d_sae, k FROM saes WHERE run_id = ? ORDER BY instance",
                    [run_id])


def ranked_features(db: Store, sae_id: int) -> pl.DataFrame:
    """One row per ranked feature, in rank order: its ranking, density, current label and the verdicts of
    that label's latest validation attempt (if any): `generalises`, `signature_specific` and `validated`
    (both). They are NULL when the current label has no validation (not an accept, not validated yet, or
    validated before the label changed); `testable` is false for an accepted label without a predicate."""
    return db.frame(
        """
        SELECT r.rank, r.feature_id, r.score, r.association, r.mis, r.stability, f.density, f.dead,
               r.suggestion, r.reason, c.label_id, c.verdict, c.name AS label, c.predicate AS label_predicate,
               c.source AS label_source, v.testable, v.generalises, v.signature_specific, v.validated
        FROM rankings r JOIN features f USING (sae_id, feature_id)
        LEFT JOIN current_labels c USING (sae_id, feature_id)
        LEFT JOIN current_validations v ON v.label_id = c.label_id
        WHERE r.sae_id = ? ORDER BY r.rank
        """, [sae_id])


def sae_rankings(db: Store, sae_id: int) -> pl.DataFrame:
    """feature_id, rank, score, association, mis, stability, reason of each ranked feature, in rank order."""
    return db.frame("SELECT feature_id, rank, score, association, mis, stability, reason FROM rankings"
                    " WHERE sae_id = ? ORDER BY rank", [sae_id])


def feature_rows(db: Store, sae_id: int) -> pl.DataFrame:
    """feature_id, density, mean_act, max_act, dead of every feature of the SAE."""
    return db.frame("SELECT feature_id, density, mean_act, max_act, dead FROM features WHERE sae_id = ?"
                    " ORDER BY feature_id", [sae_id])


def sae_suggestions(db: Store, sae_id: int) -> pl.DataFrame:
    return db.frame("SELECT feature_id, position, variable, predicate, value, low, high, score, p_value, q_value,"
                    " effect_size FROM suggestions WHERE sae_id = ? ORDER BY feature_id, position", [sae_id])


def sae_tuning_curves(db: Store, sae_id: int) -> pl.DataFrame:
    return db.frame("SELECT feature_id, variable, bin, low, high, mean, sem, n FROM tuning_curves WHERE sae_id = ?"
                    " ORDER BY feature_id, variable, bin", [sae_id])


def decoder_matrix(db: Store, sae_id: int, d_sae: int, n_units: int) -> np.ndarray:
    """The SAE's decoder as a dense [d_sae, n_units] float32 array (count units)."""
    long = db.con.sql("SELECT feature_id, unit_id, weight FROM decoder WHERE sae_id = ?",
                      params=[sae_id]).to_arrow_table()
    matrix = np.zeros((d_sae, n_units), dtype=np.float32)
    matrix[long["feature_id"].to_numpy(), long["unit_id"].to_numpy()] = long["weight"].to_numpy()
    return matrix


def sae_encoder_lags(db: Store, sae_id: int) -> pl.DataFrame:
    """An SAE trained with --history: feature_id, lag, norm, top_unit (the name of the input unit that weighs most
    at that lag), by feature and lag; empty for an SAE without temporal context."""
    return db.frame(
        "SELECT e.feature_id, e.lag, e.norm, coalesce(u.name, e.top_unit_id::VARCHAR) AS top_unit"
        " FROM encoder_lags e JOIN saes s USING (sae_id) JOIN runs r USING (run_id)"
        " LEFT JOIN units u ON u.dataset_id = r.dataset_id AND u.unit_id = e.top_unit_id"
        " WHERE e.sae_id = ? ORDER BY e.feature_id, e.lag", [sae_id])


def unit_names(db: Store, dataset_id: int) -> list[str]:
    return [row[0] for row in db.con.execute("SELECT name FROM units WHERE dataset_id = ? ORDER BY unit_id",
                                             [dataset_id]).fetchall()]


def example_columns(db: Store, dataset_id: int) -> pl.DataFrame:
    """trial_id, time_s, split of every example, in example order (one row per example)."""
    return db.frame("SELECT trial_id, time_s, split FROM examples WHERE dataset_id = ? ORDER BY example_id",
                    [dataset_id])


def variable_values(db: Store, dataset_id: int, variable: str) -> pl.DataFrame:
    """example_id, value, category of one natural variable (missing values have no row)."""
    return db.frame("SELECT example_id, value, category FROM natural_values WHERE dataset_id = ? AND variable = ?",
                    [dataset_id, variable])


def label_vocabulary(db: Store, run_id: int) -> tuple[list[str], list[str]]:
    """(label names, predicates) already used on the run's SAEs or suggested for them: what the label
    box completes. Suggestions' predicates come first by how often they are suggested first."""
    names = [r[0] for r in db.con.execute(
        "SELECT name FROM labels JOIN saes USING (sae_id) WHERE run_id = ? AND name IS NOT NULL"
        " GROUP BY name ORDER BY max(label_id) DESC", [run_id]).fetchall()]
    predicates = [r[0] for r in db.con.execute(
        "SELECT predicate FROM (SELECT predicate, count(*) FILTER (WHERE position = 1) AS first, count(*) AS n"
        " FROM suggestions JOIN saes USING (sae_id) WHERE run_id = ? GROUP BY predicate"
        " UNION ALL SELECT predicate, 1000000, 0 FROM labels JOIN saes USING (sae_id)"
        " WHERE run_id = ? AND predicate IS NOT NULL) GROUP BY predicate ORDER BY max(first) DESC, max(n) DESC,"
        " predicate", [run_id, run_id]).fetchall()]
    return names, predicates


def labelled_features(db: Store, sae_id: int) -> set[int]:
    """Features of the SAE that have a current label."""
    return {r[0] for r in db.con.execute("SELECT feature_id FROM current_labels WHERE sae_id = ?",
                                         [sae_id]).fetchall()}


def _dicts(db: Store, sql: str, params: list) -> list[dict[str, Any]]:
    """Rows as dicts, for the small per-feature reads Review makes on every key (no frame overhead)."""
    result = db.con.execute(sql, params)
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def feature_labels(db: Store, sae_id: int, feature_id: int) -> list[dict[str, Any]]:
    """Every labelling action on the feature, newest first, with `undone` set for undone ones."""
    return _dicts(db, "SELECT l.*, u.label_id IS NOT NULL AS undone FROM labels l LEFT JOIN label_undos u"
                      " USING (label_id) WHERE l.sae_id = ? AND l.feature_id = ? ORDER BY l.label_id DESC",
                  [sae_id, feature_id])


def label_validation(db: Store, label_id: int) -> dict[str, Any] | None:
    rows = _dicts(db, "SELECT * FROM current_validations WHERE label_id = ?", [label_id])
    return rows[0] if rows else None


def label_signature(db: Store, label_id: int) -> pl.DataFrame:
    """unit_id, weight, coactivation, in_signature of a validated label's units, signature units first."""
    return db.frame("SELECT unit_id, weight, coactivation, in_signature FROM signatures WHERE label_id = ?"
                    " ORDER BY in_signature DESC, abs(weight) DESC", [label_id])


# -- one feature's activations -------------------------------------------------------------------------


def feature_activations(db: Store, sae_id: int, feature_id: int, *, by_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """(example_id int32 ascending, value float32) of every example on which the feature is active.

    by_feature: read the ordered copy (fast; only once `activations_by_feature_current` says it is
    current), else scan `activations`.
    """
    table = "activations_by_feature" if by_feature else "activations"
    arrow = db.con.sql(f"SELECT example_id, value FROM {table} WHERE sae_id = ? AND feature_id = ?"
                       " ORDER BY example_id", params=[sae_id, feature_id]).to_arrow_table()
    return (arrow["example_id"].to_numpy().astype(np.int32, copy=False),
            arrow["value"].to_numpy().astype(np.float32, copy=False))


def _source_state(db: Store, sae_id: int) -> tuple[int, Any]:
    """(activation rows, the run's finished_at) of an SAE: together they tell a rebuilt or resumed run's
    SAE from the one a copy was made of, even when a new run reuses a deleted run's sae_id."""
    n_rows = int(db.scalar("SELECT count(*) FROM activations WHERE sae_id = ?", [sae_id]))
    finished = db.scalar("SELECT r.finished_at FROM saes s JOIN runs r USING (run_id) WHERE s.sae_id = ?", [sae_id])
    return n_rows, finished


def activations_by_feature_current(db: Store, sae_id: int) -> bool:
    """Whether activations_by_feature holds exactly the SAE's current activations."""
    rows = db.con.execute("SELECT n_rows, run_finished_at FROM activations_by_feature_builds WHERE sae_id = ?",
                          [sae_id]).fetchall()
    return bool(rows) and rows[0] == _source_state(db, sae_id) and rows[0][0] > 0


def build_activations_by_feature(db: Store, sae_id: int) -> int:
    """(Re)write the SAE's rows of activations_by_feature in feature order, in one transaction, and drop
    copies of SAEs that no longer exist. Returns the rows written."""
    with db.transaction():
        db.con.execute("DELETE FROM activations_by_feature WHERE sae_id = ? OR sae_id NOT IN (SELECT sae_id FROM saes)",
                       [sae_id])
        db.con.execute("DELETE FROM activations_by_feature_builds WHERE sae_id = ?"
                       " OR sae_id NOT IN (SELECT sae_id FROM saes)", [sae_id])
        n_rows, finished = _source_state(db, sae_id)
        db.con.execute("INSERT INTO activations_by_feature SELECT sae_id, feature_id, example_id, value"
                       " FROM activations WHERE sae_id = ? ORDER BY feature_id, example_id", [sae_id])
        db.con.execute("INSERT INTO activations_by_feature_builds (sae_id, n_rows, run_finished_at) VALUES (?, ?, ?)",
                       [sae_id, n_rows, finished])
    return n_rows


_BUILD_LOCK = threading.Lock()
"""Two screens may ask for the same SAE at once; one builds, the other then finds it current."""


def ensure_activations_by_feature(db: Store, sae_id: int) -> int | None:
    """Build the SAE's ordered copy unless it is current; returns the rows written, None if it was current."""
    with _BUILD_LOCK:
        if activations_by_feature_current(db, sae_id):
            return None
        return build_activations_by_feature(db, sae_id)
