"""Validate a run's accepted labels on the test split and store the results.

Everything that could be tuned (the feature's on-threshold, decoder hyperparameters) is chosen on
train + val; the test split is read only to score. Labels without a predicate are stored as not
testable. p-values of all labels of the run are corrected together (Benjamini–Hochberg).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits

from engine.epochs import Epoch, EpochSelection, resolve_epoch, select_epoch
from engine.errors import Cancelled, InputError
from engine.nulls import benjamini_hochberg
from engine.pipeline import dense_counts
from engine.predicates import Predicate, PredicateMask, evaluate, long_values, parse_predicate
from engine.validate import (
    ValidateConfig,
    choose_threshold,
    cooccurrence,
    decoding_report,
    fit_rows,
    signature_units,
    verdict,
)
from store import Store
from store.datasets import get_dataset, load_examples, load_natural_values, load_natural_variables
from store.epochs import write_epoch
from store.runs import get_run
from store.validations import accepted_labels, decoder_rows, feature_activations, save_validations


@dataclass
class ValidateOutcome:
    run_id: int
    n_labels: int
    """Accepted labels tested in this call."""
    n_testable: int
    n_validated: int
    """Labels that generalise and whose signature is specific (both verdicts)."""
    seconds: float
    n_generalise: int = 0
    """Labels whose MCC interval is above 0 with q < 0.05 on test."""
    n_specific: int = 0
    """Labels whose signature decodes above the random subsets' 95th percentile."""
    n_duplicates: int = 0
    """Labels marked as a weaker repeat of another feature's label (duplicate_of)."""
    n_family: int = 0
    """Distinct tests of the run in the q-value family (every attempt ever stored, each test once)."""
    n_few_trials: int = 0
    """Testable labels whose intervals rest on fewer than MIN_CI_TRIALS test trials."""
    epoch: EpochSelection | None = None
    """The bins validated on (selected test bins; selected train + val bins tune) and where the epoch came from."""
    epoch_note: str | None = None
    """Said when a given epoch replaces the ranking's."""


def predicate_target(predicate: Predicate, values: pl.DataFrame, kinds: dict[str, str], n_examples: int
                     ) -> PredicateMask:
    """Where the predicate holds over the examples, and where its range variables are measured (the rows
    a range is scored on), from the natural values in long form.

    A missing value counts as the predicate not holding: the natural feature is absent there.
    """
    return evaluate(predicate, long_values(values, kinds, n_examples), n_examples)


@dataclass
class _Split:
    """What every label's test needs, built once per run and shared (memory-mapped) with the workers."""

    counts: np.ndarray
    """[examples × units] float32, every split."""
    trials: np.ndarray
    fit: np.ndarray
    """Boolean mask of the epoch's train + val rows: everything tuned is tuned on these."""
    test: np.ndarray
    """Boolean mask of the epoch's test rows: everything scored is scored on these."""
    fit_mean: np.ndarray
    fit_sd: np.ndarray


def _validate_group(split: _Split, labels: list[dict], activations: list[np.ndarray], predicate: Predicate,
                    kinds: dict[str, str], values: pl.DataFrame, config: ValidateConfig) -> list[tuple[dict, dict]]:
    """Validate the labels that share one predicate: one target, one all-unit decoder, shared nulls.

    One BLAS thread, in every worker and in one process too. The decoders' matrices are small
    (20,000 × tens of units), and a multithreaded BLAS made each logistic fit 3× slower on 2 cores (its
    threads spin on work too small to share), besides summing in an order that depends on the thread count.
    """
    with threadpool_limits(1):
        present, measured = predicate_target(predicate, values, kinds, len(split.trials))
        # The claim under test is "the feature signals this predicate", so what is decoded is whether
        # the predicate holds, for ranges and conjunctions too: a place field's units cannot decode
        # position along the whole track (ridge R² near 0) and should not have to.
        target = present.astype(float)
        f, t = split.fit & measured, split.test & measured
        # The decoders' fit rows (a seeded sample when there are many) picked before any copy: at 10⁶
        # examples a copy of every fit row would be ~0.5 GB per predicate for 20,000 rows used.
        rows = np.flatnonzero(f)[fit_rows(int(f.sum()), config)]
        fit_counts, test_counts = split.counts[rows], split.counts[t]
        memo: dict = {}
        out = []
        for label, activation in zip(labels, activations, strict=True):
            fit, test = split.fit, split.test
            threshold = choose_threshold(activation[fit], present[fit])
            co = cooccurrence(activation[test], present[test], split.trials[test], threshold, config)
            weights = label["weights"]
            signature = signature_units(weights, config.signature_share)
            decoding = decoding_report(fit_counts, target[rows], split.trials[rows], test_counts, target[t],
                                       activation[rows], activation[t], "binary", signature, config, memo)
            on = fit & (activation > threshold)
            profile = ((split.counts[on].mean(axis=0) - split.fit_mean) / split.fit_sd if on.any()
                       else np.full(len(weights), np.nan))
            row = {"threshold": threshold, **co, "decode_metric": "balanced_accuracy",
                   "decode_signature": decoding["signature_score"], "decode_all": decoding["all_score"],
                   "decode_feature": decoding["feature_score"], "decode_random_p95": decoding["random_p95"],
                   "signature_over_all": decoding["signature_over_all"],
                   "signature_percentile": decoding["signature_percentile"], "n_signature_units": len(signature)}
            out.append((row, {"signature": signature, "profile": profile}))
        return out


def validate_run(db: Store, run_id: int, config: ValidateConfig | None = None,
                 report: Callable[[str], None] = lambda _: None, n_jobs: int = -1,
                 cancel: threading.Event | None = None, epoch: Epoch | None = None) -> ValidateOutcome:
    """Validate every accepted label of the run on its dataset's test split and store the results.

    Labels that share a predicate are validated together (one target, one all-unit decoder); the groups
    run in ``n_jobs`` worker processes (-1: one per core), each single-threaded (in one process too), so
    the result does not depend on n_jobs.

    `cancel` set stops it after the predicate group in hand (Cancelled); results are stored only at the
    end, in one transaction, so a cancelled validation leaves the stored ones as they were.

    `epoch` (--where/--around) scores on the test bins it selects and tunes on its train + val bins;
    None: the ranking's epoch (the run's when it was never ranked).
    """
    config = config or ValidateConfig()
    started = time.perf_counter()
    run = get_run(db, run_id)
    labels = accepted_labels(db, run_id)
    if labels.is_empty():
        raise InputError(f"run {run_id} has no accepted labels; label features with `mini label` (or the app)")
    epoch, source, note = resolve_epoch(db, run_id, "validate", epoch)
    split, values, kinds, selection = _read_split(db, run, epoch, source)
    parsed, unparsed = _parse_predicates(labels, kinds)
    testable = labels.filter(pl.col("label_id").is_in(list(parsed)))
    activation = feature_activations(db, testable.select("sae_id", "feature_id"), len(split.trials))
    weights = decoder_rows(db, testable.select("sae_id", "feature_id"))
    # Labels whose predicates have one target (the same clauses, however spaced or ordered) share it.
    groups: dict[tuple, list[dict]] = {}
    for label in testable.iter_rows(named=True):
        label["weights"] = weights[(label["sae_id"], label["feature_id"])]
        groups.setdefault(parsed[label["label_id"]].target, []).append(label)
    n_jobs = min(len(groups), effective_n_jobs(n_jobs)) if groups else 1
    tasks = [delayed(_validate_group)(
        split, group, [activation[(g["sae_id"], g["feature_id"])] for g in group], parsed[group[0]["label_id"]],
        kinds, _values_of(values, parsed[group[0]["label_id"]]), config)
        for group in groups.values()]
    report(f"{testable.height} labels, {len(groups)} predicates, {n_jobs} worker(s)")
    results: dict[int, tuple[dict, dict]] = {}
    done = 0
    outcomes = Parallel(n_jobs=n_jobs, return_as="generator")(tasks)
    try:
        for group, outcome in zip(groups.values(), outcomes, strict=True):
            for label, result in zip(group, outcome, strict=True):
                results[label["label_id"]] = result
            done += len(group)
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"validation of run {run_id} cancelled after {done} of {testable.height} "
                                "labels; nothing was stored")
            report(f"{done}/{testable.height} labels: {group[0]['predicate']}")
    finally:
        with warnings.catch_warnings():  # joblib warns that it cancelled the groups in flight: as asked
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed")
            outcomes.close()  # a cancel or a failure stops the workers' remaining groups
    rows, signature_rows = _result_rows(labels, results, weights, unparsed)
    frame = _with_verdicts(pl.DataFrame(rows, infer_schema_length=None), config)
    keep = [c for c in frame.columns if c in _VALIDATION_COLUMNS]
    save_validations(db, run_id, frame.select(keep),
                     pl.concat(signature_rows) if signature_rows else pl.DataFrame(), epoch=selection.row())
    n_validated = int(frame["validated"].sum()) if "validated" in frame.columns else 0
    return ValidateOutcome(run_id, frame.height, int(frame["testable"].sum()), n_validated,
                           time.perf_counter() - started, selection, note)


def _read_split(db: Store, run: dict, epoch: Epoch, source: str
                ) -> tuple[_Split, pl.DataFrame, dict[str, str], EpochSelection]:
    """The run's dataset as validation needs it: counts and the epoch's splits, natural values, variable
    kinds, and the epoch's selection (checked before the counts are read)."""
    dataset = get_dataset(db, run["config"]["dataset"])
    examples = load_examples(db, dataset["dataset_id"])
    selection = select_epoch(db, dataset, examples, epoch, "validate", source)  # before the counts are read
    counts = dense_counts(db, dataset["dataset_id"], dataset["n_examples"], dataset["n_units"])
    splits = np.where(selection.selected, examples["split"].to_numpy(), "outside")
    fit = (splits == "train") | (splits == "val")
    fit_counts = counts[fit]  # one copy for both statistics (~0.4 GB at 10⁶ examples)
    sd = fit_counts.std(axis=0, dtype=np.float64)
    split = _Split(counts, examples["trial_id"].to_numpy(), fit, splits == "test",
                   fit_counts.mean(axis=0, dtype=np.float64), np.where(sd > 0, sd, 1.0))
    del fit_counts
    values = load_natural_values(db, dataset["dataset_id"])
    kinds = dict(load_natural_variables(db, dataset["dataset_id"]).select("variable", "kind").iter_rows())
    return split, values, kinds, selection


def _parse_predicates(labels: pl.DataFrame, kinds: dict[str, str]) -> tuple[dict[int, Predicate], dict[int, str]]:
    """Each label's predicate parsed from its text (label_id -> Predicate), and why a stored text no longer
    parses (label_id -> reason; labels are checked when made, so only a text written some other way)."""
    parsed, unparsed = {}, {}
    for label_id, text in labels.select("label_id", "predicate").iter_rows():
        if text is None:
            continue
        try:
            parsed[label_id] = parse_predicate(text, kinds)
        except InputError as error:
            unparsed[label_id] = f"not testable: {error}"
    return parsed, unparsed


def _values_of(values: pl.DataFrame, predicate: Predicate) -> pl.DataFrame:
    """The natural values a predicate's target is built from (what a worker process is sent)."""
    return values.filter(pl.col("variable").is_in(list(predicate.variables)))


def _result_rows(labels: pl.DataFrame, results: dict[int, tuple[dict, dict]],
                 weights: dict[tuple[int, int], np.ndarray], unparsed: dict[int, str]
                 ) -> tuple[list[dict], list[pl.DataFrame]]:
    """validations rows (labels without a result are not testable) and signatures frames."""
    rows, signature_rows = [], []
    for label in labels.iter_rows(named=True):
        base = {"label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
                "predicate": label["predicate"]}
        if label["label_id"] not in results:
            reason = unparsed.get(label["label_id"], "no predicate: not testable")
            rows.append({**base, "testable": False, "reason": reason})
            continue
        row, extra = results[label["label_id"]]
        rows.append({**base, "testable": True, **row})
        w = weights[(label["sae_id"], label["feature_id"])]
        in_signature = np.zeros(len(w), dtype=bool)
        in_signature[extra["signature"]] = True
        signature_rows.append(pl.DataFrame({
            "label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
            "unit_id": np.arange(len(w), dtype=np.int32), "weight": w.astype(np.float64),
            "coactivation": extra["profile"].astype(np.float64), "in_signature": in_signature}))
    return rows, signature_rows


def validate_label(db: Store, run_id: int, label_id: int, config: ValidateConfig | None = None) -> dict:
    """Validate one accepted label now (the review screen's `v`) and return its stored validation row.

    The label's row replaces any earlier validation of the same feature; other labels are not re-tested.
    q-values are a correction over every label of the run, so after storing the row the q-value and verdict
    of every stored validation of the run are recomputed (Benjamini–Hochberg over all of them, the family
    `validate_run` corrects over when nothing changed since): q is never a single label's uncorrected p.
    """
    config = config or ValidateConfig()
    run = get_run(db, run_id)
    label = accepted_labels(db, run_id).filter(pl.col("label_id") == label_id)
    if label.is_empty():
        raise InputError(f"label {label_id} is not the current accepted label of a feature of run {run_id}")
    row = label.row(0, named=True)
    key = (row["sae_id"], row["feature_id"])
    # The epoch of the run's stored validations (else the ranking's), so q-values compare like with like.
    epoch, source, _ = resolve_epoch(db, run_id, "validate_label", None)
    split, values, kinds, selection = _read_split(db, run, epoch, source)
    results, weights = {}, {}
    parsed, unparsed = _parse_predicates(label, kinds)
    if label_id in parsed:
        wanted = label.select("sae_id", "feature_id")
        activation = feature_activations(db, wanted, len(split.trials))[key]
        weights = decoder_rows(db, wanted)
        row["weights"] = weights[key]
        group = _validate_group(split, [row], [activation], parsed[label_id], kinds,
                                _values_of(values, parsed[label_id]), config)
        results[label_id] = group[0]
    rows, signature_rows = _result_rows(label, results, weights, unparsed)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame = frame.select([c for c in frame.columns if c in _VALIDATION_COLUMNS])
    with db.transaction():
        write_epoch(db, run_id, "validate", selection.row())
        for table in ("validations", "signatures"):
            db.con.execute(f"DELETE FROM {table} WHERE sae_id = ? AND feature_id = ?", list(key))
        db.insert_frame("validations", frame)
        if signature_rows:
            db.insert_frame("signatures", signature_rows[0])
        stored = db.frame("SELECT v.* FROM validations v JOIN saes s USING (sae_id) WHERE s.run_id = ?"
                          " ORDER BY v.label_id", [run_id])
        judged = _with_verdicts(stored, config)
        with db.registered("judged", judged.select("label_id", "q_value", "validated", "reason")):
            db.con.execute("UPDATE validations SET q_value = j.q_value, validated = j.validated, reason = j.reason"
                           " FROM judged j WHERE validations.label_id = j.label_id")
    return db.frame("SELECT * FROM validations WHERE label_id = ?", [label_id]).to_dicts()[0]


def _with_verdicts(frame: pl.DataFrame, config: ValidateConfig) -> pl.DataFrame:
    """q-values over the run's testable labels (Benjamini–Hochberg) and each label's verdict."""
    if "p_value" not in frame.columns:
        return frame
    testable = frame["testable"].to_numpy()
    q = np.full(frame.height, np.nan)
    q[testable] = benjamini_hochberg(frame["p_value"].to_numpy()[testable])
    frame = frame.with_columns(pl.Series("q_value", q).fill_nan(None))
    decisions = [verdict({**row, "signature_score": row["decode_signature"], "random_p95": row["decode_random_p95"]},
                         row["q_value"] if row["q_value"] is not None else float("nan"), config)
                 if row["testable"] else (None, row["reason"]) for row in frame.iter_rows(named=True)]
    return frame.with_columns(pl.Series("validated", [d[0] for d in decisions], dtype=pl.Boolean),
                              pl.Series("reason", [d[1] for d in decisions], dtype=pl.String))


_VALIDATION_COLUMNS = {
    "label_id", "sae_id", "feature_id", "predicate", "testable", "threshold", "tp", "fp", "fn", "tn", "precision",
    "recall", "specificity", "f1", "mcc", "mcc_ci_low", "mcc_ci_high", "balanced_accuracy",
    "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "p_value", "q_value", "decode_metric",
    "decode_signature", "decode_all", "decode_feature", "decode_random_p95", "signature_over_all",
    "signature_percentile", "n_signature_units", "validated", "reason",
}
