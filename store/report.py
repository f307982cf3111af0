"""The queries behind a run's Markdown report (`engine.validation.report`, `mini report`).

The report shows exactly what is stored: these read the run's tables as they are exported beside it,
the dataset's split sizes and natural features for its header, and one feature's tuning to a variable
for its validation sections. Nothing here computes a result; ordering is fixed so the report and its
tables read the same every time.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from store.db import Store
from store.quality import report_flags
from store.validations import run_attempts

_RUN_SAES = "(SELECT sae_id FROM saes WHERE run_id = ?)"
"""The SAE ids of the run whose id is the query's parameter."""


def report_tables(db: Store, run_id: int) -> dict[str, pl.DataFrame]:
    """The run's tables as exported beside the report, by file name, in the order they are written:
    saes, qc, rankings (with density, current label and its latest verdicts), labels (every action),
    current_labels (with their latest attempt), validations (every attempt, `store.validations.run_attempts`),
    analysis_epochs, signatures (with unit names), quality_flags (`store.quality.report_flags`) and, for a run with
    temporal context (--history), encoder_lags (each feature's share of its encoder norm per lag, top unit named)."""
    tables = {
        "saes": db.frame("SELECT * FROM saes WHERE run_id = ? ORDER BY sae_id", [run_id]),
        "qc": db.frame(f"SELECT * EXCLUDE (l0_histogram, density_histogram) FROM qc WHERE sae_id IN {_RUN_SAES}"
                       " ORDER BY sae_id, array_position(['train', 'val', 'test'], split)", [run_id]),
        "rankings": db.frame(
            "SELECT r.sae_id, r.rank, r.feature_id, r.score, r.association, r.mis, r.stability, f.density,"
            " r.suggestion, c.verdict AS label_verdict, coalesce(c.predicate, c.name) AS label, v.generalises,"
            " v.signature_specific, v.validated"
            " FROM rankings r JOIN features f USING (sae_id, feature_id)"
            " LEFT JOIN current_labels c USING (sae_id, feature_id)"
            " LEFT JOIN current_validations v ON v.label_id = c.label_id"
            f" WHERE r.sae_id IN {_RUN_SAES} ORDER BY r.sae_id, r.rank", [run_id]),
        "labels": db.frame(f"SELECT * FROM labels WHERE sae_id IN {_RUN_SAES} ORDER BY label_id", [run_id]),
        "current_labels": db.frame(
            "SELECT c.*, v.attempt, v.generalises, v.signature_specific, v.validated, v.reason AS validation"
            " FROM current_labels c"
            " LEFT JOIN current_validations v ON v.label_id = c.label_id"
            f" WHERE c.sae_id IN {_RUN_SAES} ORDER BY c.sae_id, c.feature_id", [run_id]),
        # Every attempt (the table is append-only), failed and superseded ones included, with whether each
        # is in the q-value family, its label's latest, and of a current accepted label.
        "validations": run_attempts(db, run_id),
        "analysis_epochs": db.frame("SELECT * FROM analysis_epochs WHERE run_id = ?"
                                    " ORDER BY array_position(['train', 'rank', 'validate'], step)", [run_id]),
        "signatures": db.frame(
            "SELECT g.*, u.name AS unit_name FROM signatures g JOIN saes s USING (sae_id)"
            " JOIN runs r USING (run_id) JOIN units u ON u.dataset_id = r.dataset_id AND u.unit_id = g.unit_id"
            " WHERE s.run_id = ? ORDER BY g.sae_id, g.feature_id, abs(g.weight) DESC", [run_id]),
        "quality_flags": report_flags(db, run_id),
    }
    lags = db.frame(
        "SELECT e.sae_id, e.feature_id, e.lag, e.norm, e.norm / sum(e.norm) OVER (PARTITION BY e.sae_id, e.feature_id)"
        " AS share, e.top_unit_id, u.name AS top_unit FROM encoder_lags e JOIN saes s USING (sae_id)"
        " JOIN runs r USING (run_id) JOIN units u ON u.dataset_id = r.dataset_id AND u.unit_id = e.top_unit_id"
        " WHERE s.run_id = ? ORDER BY e.sae_id, e.feature_id, e.lag", [run_id])
    if lags.height:
        tables["encoder_lags"] = lags
    return tables


def split_sizes(db: Store, dataset_id: int) -> pl.DataFrame:
    """split, examples, trials of the dataset, in the order train, val, test."""
    return db.frame("SELECT split, count(*) AS examples, count(DISTINCT trial_id) AS trials FROM examples"
                    " WHERE dataset_id = ? GROUP BY split ORDER BY array_position(['train', 'val', 'test'], split)",
                    [dataset_id])


def variable_summary(db: Store, dataset_id: int) -> pl.DataFrame:
    """variable, kind, n_levels, n_missing of each natural variable of the dataset, by name."""
    return db.frame("SELECT variable, kind, n_levels, n_missing FROM natural_variables WHERE dataset_id = ?"
                    " ORDER BY variable", [dataset_id])


def feature_tuning_curve(db: Store, sae_id: int, feature_id: int, variable: str) -> pl.DataFrame:
    """low, high, mean, sem, n of each bin of the feature's stored tuning curve to a continuous or circular
    variable, in bin order."""
    return db.frame("SELECT low, high, mean, sem, n FROM tuning_curves WHERE sae_id = ? AND feature_id = ?"
                    " AND variable = ? ORDER BY bin", [sae_id, feature_id, variable])


def feature_level_means(db: Store, dataset_id: int, sae_id: int, feature_id: int, variable: str,
                        example_ids: np.ndarray | None = None) -> pl.DataFrame:
    """level, mean, n: the feature's mean activation (0 where it is off) per level of a categorical or
    binary variable over the train + val examples, or only those of `example_ids` (a ranking's epoch) when
    given; levels as text, sorted."""
    in_epoch = "" if example_ids is None else " AND e.example_id IN (SELECT unnest(?))"
    return db.frame(
        "SELECT coalesce(v.category, CAST(v.value AS VARCHAR)) AS level, avg(coalesce(a.value, 0)) AS mean,"
        " count(*) AS n FROM natural_values v JOIN examples e USING (dataset_id, example_id)"
        " LEFT JOIN activations a ON a.sae_id = ? AND a.feature_id = ? AND a.example_id = v.example_id"
        f" WHERE v.dataset_id = ? AND v.variable = ? AND e.split <> 'test'{in_epoch} GROUP BY 1 ORDER BY 1",
        [sae_id, feature_id, dataset_id, variable, *([example_ids.tolist()] if example_ids is not None else [])])
