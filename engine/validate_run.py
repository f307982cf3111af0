"""Validate a run's accepted labels on the test split and store the results.

Everything that could be tuned (the feature's on-threshold, decoder hyperparameters) is chosen on
train + val; the test split is read only to score. Labels without a predicate are stored as not
testable. p-values of all labels of the run are corrected together (Benjamini–Hochberg).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.nulls import benjamini_hochberg
from engine.pipeline import dataset_matrix
from engine.validate import (
    ValidateConfig,
    choose_threshold,
    coactivation_profile,
    cooccurrence,
    decoding_report,
    signature_units,
    verdict,
)
from store import Store
from store.datasets import get_dataset, load_natural_values, load_natural_variables
from store.runs import get_run
from store.validations import accepted_labels, decoder_row, feature_activation, save_validations


@dataclass
class ValidateOutcome:
    run_id: int
    n_labels: int
    n_testable: int
    n_validated: int
    seconds: float


def predicate_target(label: dict, values: pl.DataFrame, kind: str, n_examples: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """(present [n] bool: the predicate holds; continuous values [n] with NaN, for ridge decoding).

    A missing value counts as the predicate not holding: the natural feature is absent there.
    """
    rows = values.filter(pl.col("variable") == label["variable"])
    example = rows["example_id"].to_numpy()
    present = np.zeros(n_examples, dtype=bool)
    if label["low"] is None:  # category (or binary) value
        if kind == "binary":
            present[example] = rows["value"].to_numpy() == float(label["value"])
        else:
            present[example] = rows["category"].to_numpy() == label["value"]
        return present, None
    numbers = np.full(n_examples, np.nan)
    numbers[example] = rows["value"].to_numpy()
    low, high = label["low"], label["high"] if label["high"] is not None else np.inf
    with np.errstate(invalid="ignore"):
        inside = (numbers >= low) | (numbers < high) if low > high else (numbers >= low) & (numbers < high)
    return inside & ~np.isnan(numbers), numbers


def validate_run(db: Store, run_id: int, config: ValidateConfig | None = None,
                 report: Callable[[str], None] = lambda _: None) -> ValidateOutcome:
    config = config or ValidateConfig()
    started = time.perf_counter()
    run = get_run(db, run_id)
    labels = accepted_labels(db, run_id)
    if labels.is_empty():
        raise InputError(f"run {run_id} has no accepted labels; label features with `mini label` (or the app)")
    dataset = get_dataset(db, run["config"]["dataset"])
    counts, examples = dataset_matrix(db, dataset["dataset_id"], dataset["n_examples"], dataset["n_units"])
    splits, trials = examples["split"].to_numpy(), examples["trial_id"].to_numpy()
    values = load_natural_values(db, dataset["dataset_id"])
    kinds = dict(load_natural_variables(db, dataset["dataset_id"]).select("variable", "kind").iter_rows())
    fit, test = splits != "test", splits == "test"
    rows, signature_rows = [], []
    for label in labels.iter_rows(named=True):
        base = {"label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
                "predicate": label["predicate"]}
        if label["predicate"] is None:
            rows.append({**base, "testable": False, "reason": "no predicate: not testable"})
            continue
        report(f"feature {label['feature_id']} of SAE {label['sae_id']}: {label['predicate']}")
        act = feature_activation(db, label["sae_id"], label["feature_id"])
        activation = np.zeros(len(splits))
        activation[act["example_id"].to_numpy()] = act["value"].to_numpy()
        kind = kinds[label["variable"]]
        present, numbers = predicate_target(label, values, kind, len(splits))
        threshold = choose_threshold(activation[fit], present[fit])
        co = cooccurrence(activation[test], present[test], trials[test], threshold, config)
        weights = decoder_row(db, label["sae_id"], label["feature_id"])["weight"].to_numpy()
        signature = signature_units(weights, config.signature_share)
        profile = coactivation_profile(counts[fit], activation[fit], threshold)
        # The claim under test is "the feature signals this predicate", so what is decoded is whether
        # the predicate holds, for ranges too: a place field's units cannot decode position along the
        # whole track (ridge R² near 0) and should not have to.
        target = present.astype(float)
        usable = np.ones(len(splits), dtype=bool) if numbers is None else ~np.isnan(numbers)
        f, t = fit & usable, test & usable
        decoding = decoding_report(counts[f], target[f], trials[f], counts[t], target[t], activation[f],
                                   activation[t], "binary", signature, config)
        rows.append({**base, "testable": True, "threshold": threshold, **co,
                     "decode_metric": "balanced_accuracy",
                     "decode_signature": decoding["signature_score"], "decode_all": decoding["all_score"],
                     "decode_feature": decoding["feature_score"], "decode_random_p95": decoding["random_p95"],
                     "signature_over_all": decoding["signature_over_all"],
                     "signature_percentile": decoding["signature_percentile"],
                     "n_signature_units": len(signature)})
        in_signature = np.zeros(len(weights), dtype=bool)
        in_signature[signature] = True
        signature_rows.append(pl.DataFrame({
            "label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
            "unit_id": np.arange(len(weights), dtype=np.int32), "weight": weights.astype(np.float64),
            "coactivation": profile.astype(np.float64), "in_signature": in_signature}))
    frame = pl.DataFrame(rows, infer_schema_length=None)
    if "p_value" in frame.columns:
        testable = frame["testable"].to_numpy()
        q = np.full(frame.height, np.nan)
        q[testable] = benjamini_hochberg(frame["p_value"].to_numpy()[testable])
        frame = frame.with_columns(pl.Series("q_value", q).fill_nan(None))
        decisions = [verdict({**row, "signature_score": row["decode_signature"], "random_p95": row["decode_random_p95"]},
                             row["q_value"] if row["q_value"] is not None else float("nan"), config)
                     if row["testable"] else (None, row["reason"]) for row in frame.iter_rows(named=True)]
        frame = frame.with_columns(pl.Series("validated", [d[0] for d in decisions], dtype=pl.Boolean),
                                   pl.Series("reason", [d[1] for d in decisions], dtype=pl.String))
    keep = [c for c in frame.columns if c in _VALIDATION_COLUMNS]
    save_validations(db, run_id, frame.select(keep),
                     pl.concat(signature_rows) if signature_rows else pl.DataFrame())
    n_validated = int(frame["validated"].sum()) if "validated" in frame.columns else 0
    return ValidateOutcome(run_id, frame.height, int(frame["testable"].sum()), n_validated,
                           time.perf_counter() - started)


_VALIDATION_COLUMNS = {
    "label_id", "sae_id", "feature_id", "predicate", "testable", "threshold", "tp", "fp", "fn", "tn", "precision",
    "recall", "specificity", "f1", "mcc", "mcc_ci_low", "mcc_ci_high", "balanced_accuracy",
    "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "p_value", "q_value", "decode_metric",
    "decode_signature", "decode_all", "decode_feature", "decode_random_p95", "signature_over_all",
    "signature_percentile", "n_signature_units", "validated", "reason",
}
