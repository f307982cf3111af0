"""What Home and `mini info` list: one row per dataset and per run, as plain dicts.

These are read on the way to the app's first frame, so this module imports neither polars nor pyarrow
(a third of a second together); a handful of rows needs no frame.
"""

from __future__ import annotations

from typing import Any

from store.db import Store


def _epoch_text(alias: str = "") -> str:
    """SQL for an analysis_epochs row as text, as engine.epochs.Epoch.describe writes it: `speed > 5 and
    around go:-0.5,0.5`."""
    return f"concat_ws(' and ', {alias}where_sql, 'around ' || {alias}around)"


def dataset_summaries(db: Store) -> list[dict[str, Any]]:
    """One row per dataset with what the Home screen and `mini info` show."""
    return db.records(
        """
        SELECT d.dataset_id, d.name, d.kind, d.value_type, d.n_examples, d.n_units, d.n_trials, d.bin_size_s,
               coalesce(s.n_train, 0) AS n_train, coalesce(s.n_val, 0) AS n_val,
               coalesce(s.n_test, 0) AS n_test,
               coalesce(v.variables, '') AS variables, d.source, d.created_at
        FROM datasets d
        LEFT JOIN (
            SELECT dataset_id,
                   count(*) FILTER (WHERE split = 'train') AS n_train,
                   count(*) FILTER (WHERE split = 'val') AS n_val,
                   count(*) FILTER (WHERE split = 'test') AS n_test
            FROM examples GROUP BY dataset_id
        ) s USING (dataset_id)
        LEFT JOIN (
            SELECT dataset_id, string_agg(variable || ':' || kind, ', ' ORDER BY variable) AS variables
            FROM natural_variables GROUP BY dataset_id
        ) v USING (dataset_id)
        ORDER BY d.dataset_id
        """
    )


def run_summaries(db: Store) -> list[dict[str, Any]]:
    """One row per run with its dataset, settings, QC headline (validation split), its number of quality
    flags, how many of its features are labelled (any current label), how many labels generalise and how
    many are validated (generalise and signature-specific; each label's latest attempt), and the analysis
    epoch it trained on."""
    return db.records(
        f"""
        SELECT r.run_id, d.name AS dataset, r.status, any_value(s.architecture) AS architecture,
               count(s.sae_id) AS n_saes, any_value(s.d_sae) AS d_sae,
               string_agg(DISTINCT s.k::VARCHAR, ',') AS k, r.examples_seen, r.device,
               round(avg(q.fvu), 4) AS val_fvu, round(avg(q.dead_fraction), 4) AS val_dead_fraction,
               (SELECT count(*) FROM quality_flags f WHERE f.run_id = r.run_id) AS flags,
               (SELECT count(*) FROM current_labels c JOIN saes x USING (sae_id) WHERE x.run_id = r.run_id)
                   AS labelled,
               (SELECT count(*) FROM current_validations v JOIN saes x USING (sae_id)
                   WHERE x.run_id = r.run_id AND v.testable AND v.generalises) AS generalises,
               (SELECT count(*) FROM current_validations v JOIN saes x USING (sae_id)
                   WHERE x.run_id = r.run_id AND v.validated) AS validated,
               (SELECT {_epoch_text("a.")} FROM analysis_epochs a
                   WHERE a.run_id = r.run_id AND a.step = 'train') AS epoch,
               r.started_at
        FROM runs r JOIN datasets d USING (dataset_id)
        LEFT JOIN saes s USING (run_id)
        LEFT JOIN qc q ON q.sae_id = s.sae_id AND q.split = 'val'
        GROUP BY r.run_id, d.name, r.status, r.examples_seen, r.device, r.started_at
        ORDER BY r.run_id
        """
    )


def context_summaries(db: Store) -> list[dict[str, Any]]:
    """One row per run trained as a transcoder or with temporal context: run_id, inputs and targets (the
    selections as given; None for an SAE with --history), n_inputs and n_targets (run_units), history (bins)."""
    return db.records(
        """
        SELECT r.run_id, r.config->>'$.inputs' AS inputs, r.config->>'$.targets' AS targets,
               coalesce(TRY_CAST(r.config->>'$.history' AS INTEGER), 1) AS history,
               (SELECT count(*) FROM run_units u WHERE u.run_id = r.run_id AND u.role = 'input') AS n_inputs,
               (SELECT count(*) FROM run_units u WHERE u.run_id = r.run_id AND u.role = 'target') AS n_targets
        FROM runs r
        WHERE r.config->>'$.inputs' IS NOT NULL OR coalesce(TRY_CAST(r.config->>'$.history' AS INTEGER), 1) > 1
        ORDER BY r.run_id
        """
    )


def epoch_summaries(db: Store) -> list[dict[str, Any]]:
    """One row per run and step that read an analysis epoch (`--where`, `--around`): run_id, step, epoch
    (the text, `speed > 5 and around go:-0.5,0.5`), n_train, n_val, n_test (bins selected per split)."""
    return db.records(
        f"""
        SELECT run_id, step, {_epoch_text()} AS epoch, n_train, n_val, n_test
        FROM analysis_epochs ORDER BY run_id, array_position(['train', 'rank', 'validate'], step)
        """
    )
