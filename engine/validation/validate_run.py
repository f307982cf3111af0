"""Validate a run's accepted labels on the test split and store each attempt.

Everything that could be tuned (the feature's on-threshold, decoder hyperparameters) is chosen on
train + val; the test split is read only to score. Labels without a predicate, or whose figures cannot be
computed on test, are stored as not testable with the reason.

Every attempt is kept (appended, never replaced), and q-values correct over every distinct test the run
ever made (each label on each epoch once): relabelling a feature until a label passes leaves the failed
attempts in the family, so the last one pays for the ones before it. A repeat of the same test (same label,
same epoch) is not a new attempt and does not grow the family.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from joblib import Parallel, delayed, effective_n_jobs
from scipy import sparse
from threadpoolctl import threadpool_limits

from engine.analysis.nulls import benjamini_hochberg
from engine.analysis.predicates import Predicate, PredicateMask, evaluate, long_values, parse_predicate
from engine.epochs import Epoch, EpochSelection, resolve_epoch, select_epoch
from engine.errors import Cancelled, InputError
from engine.ingest.matrix import dense_counts
from engine.memory import check_fits
from engine.validation.ablation import (
    SAEMaterial,
    SignatureTask,
    TestEncoding,
    encode_test,
    final_stack_state,
    load_final,
    necessity,
    signature_ablations,
    signature_columns,
)
from engine.validation.freezes import check_test_allowed
from engine.validation.validate import (
    ValidateConfig,
    choose_threshold,
    cooccurrence,
    decoding_report,
    fit_rows,
    signature_units,
    verdicts,
)
from engine.validation.validation_summary import verdict_counts
from engine.validation.validation_text import MIN_CI_TRIALS
from store import Store
from store.datasets import get_dataset, load_examples, load_natural_values, load_natural_variables
from store.runs import get_run, load_checkpoint, load_saes
from store.validations import (
    accepted_labels,
    append_attempts,
    decoder_rows,
    feature_activations,
    latest_attempt,
    sae_code,
    sae_decoder,
    sae_densities,
)


@dataclass
class ValidateOutcome:
    run_id: int
    n_labels: int
    """Accepted labels tested in this call."""
    n_testable: int
    n_validated: int
    """Labels that generalise and whose signature is specific (both verdicts)."""
    seconds: float
    epoch: EpochSelection | None = None
    """The bins validated on (selected test bins; selected train + val bins tune) and where the epoch came from."""
    epoch_note: str | None = None
    """Said when a given epoch replaces the ranking's."""
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


def predicate_target(predicate: Predicate, values: pl.DataFrame, kinds: dict[str, str], n_examples: int
                     ) -> PredicateMask:
    """Where the predicate holds over the examples, and where every clause's variable is measured (the only
    rows validation scores), from the natural values in long form."""
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
                    kinds: dict[str, str], values: pl.DataFrame, config: ValidateConfig,
                    materials: dict[int, SAEMaterial]) -> list[tuple[dict, dict]]:
    """Validate the labels that share one predicate: one target, one all-unit decoder, shared nulls.

    Every figure is computed on the rows where every variable of the predicate has a value (the same rows
    for the threshold, the co-occurrence, its null, the decoders and the ablations). When the predicate never or always
    holds there, on test or on train + val, nothing can be scored: the labels come back not testable.

    One BLAS thread, in every worker and in one process too. The decoders' matrices are small
    (20,000 × tens of units), and a multithreaded BLAS made each logistic fit 3× slower on 2 cores (its
    threads spin on work too small to share), besides summing in an order that depends on the thread count.
    """
    with threadpool_limits(1):
        present, measured = predicate_target(predicate, values, kinds, len(split.trials))
        fit, test = split.fit & measured, split.test & measured
        why = _untestable(present, fit, test, predicate)
        if why:
            return [({"testable": False, "reason": f"not testable: {why}"}, {}) for _ in labels]
        # The claim under test is "the feature signals this predicate", so what is decoded is whether
        # the predicate holds, for ranges and conjunctions too: a place field's units cannot decode
        # position along the whole track (ridge R² near 0) and should not have to.
        target = present.astype(float)
        # The decoders' fit rows (a seeded sample when there are many) picked before any copy: at 10⁶
        # examples a copy of every fit row would be ~0.5 GB per predicate for 20,000 rows used.
        rows = np.flatnonzero(fit)[fit_rows(int(fit.sum()), config)]
        fit_counts, test_counts = split.counts[rows], split.counts[test]
        memo: dict = {}
        ablation_memos: dict[int, dict] = {}  # per SAE: its readout and nulls, shared by its labels here
        out = []
        for label, activation in zip(labels, activations, strict=True):
            threshold = choose_threshold(activation[fit], present[fit])
            co = cooccurrence(activation[test], present[test], split.trials[test], threshold, config)
            weights = label["weights"]
            signature = signature_units(weights, config.signature_share)
            decoding = decoding_report(fit_counts, target[rows], split.trials[rows], test_counts, target[test],
                                       activation[rows], activation[test], "binary", signature, config, memo)
            on = fit & (activation > threshold)
            profile = ((split.counts[on].mean(axis=0) - split.fit_mean) / split.fit_sd if on.any()
                       else np.full(len(weights), np.nan))
            ablation, readout = necessity(materials[label["sae_id"]], label["feature_id"], rows, test, present,
                                          split.trials, config, ablation_memos.setdefault(label["sae_id"], {}))
            row = {"testable": True, "threshold": threshold, **co, "decode_metric": "balanced_accuracy",
                   "decode_signature": decoding["signature_score"], "decode_all": decoding["all_score"],
                   "decode_feature": decoding["feature_score"], "decode_random_p95": decoding["random_p95"],
                   "signature_over_all": decoding["signature_over_all"],
                   "signature_percentile": decoding["signature_percentile"], "n_signature_units": len(signature),
                   **ablation}
            out.append((row, {"signature": signature, "profile": profile, "readout": readout}))
        return out


def _untestable(present: np.ndarray, fit: np.ndarray, test: np.ndarray, predicate: Predicate) -> str | None:
    """Why the predicate's figures cannot be computed (None when they can): no test row where its variables
    are measured, or the predicate never or always holds on test, or on train + val (nothing to tune on)."""
    if not test.any():
        return f"no test row has a value of {' and '.join(predicate.variables)}"
    for rows, where in ((test, "test"), (fit, "train + val")):
        n_true = int(np.count_nonzero(present[rows]))
        if n_true == 0:
            return f"{predicate.text} never holds on {where} ({int(rows.sum()):,} rows where it is measured)"
        if n_true == int(rows.sum()):
            return f"{predicate.text} holds on every {where} row where it is measured ({n_true:,})"
    return None


def check_jobs(n_jobs: int) -> None:
    """--jobs: -1 (one worker per core) or 1 to this machine's cores (more only queue for the same cores)."""
    cores = os.cpu_count() or 1
    if n_jobs != -1 and not 1 <= n_jobs <= cores:
        raise InputError(f"--jobs {n_jobs}: must be -1 (one worker per core) or 1 to {cores} (this machine's cores)")


def validate_run(db: Store, run_id: int, config: ValidateConfig | None = None,
                 report: Callable[[str], None] = lambda _: None, n_jobs: int = -1,
                 cancel: threading.Event | None = None, epoch: Epoch | None = None,
                 label_ids: list[int] | None = None, step: str = "validate") -> ValidateOutcome:
    """Validate every accepted label of the run (or those of ``label_ids``) on its dataset's test split and
    append the attempts.

    Labels that share a predicate are validated together (one target, one all-unit decoder); the groups
    run in ``n_jobs`` worker processes (-1: one per core), each single-threaded (in one process too), so
    the result does not depend on n_jobs.

    `cancel` set stops it after the predicate group in hand (Cancelled); results are stored only at the
    end, in one transaction, so a cancelled validation leaves the stored ones as they were.

    `epoch` (--where/--around) scores on the test bins it selects and tunes on its train + val bins;
    None: the ranking's epoch (the run's when it was never ranked). `step` names whose default epoch that
    is (engine.epochs.default_epoch): 'validate_label' takes the stored validations' one.
    """
    check_test_allowed(db, run_id)
    config = config or ValidateConfig()
    started = time.perf_counter()
    run = get_run(db, run_id)
    labels = accepted_labels(db, run_id)
    if label_ids is not None:
        labels = labels.filter(pl.col("label_id").is_in(label_ids))
        if labels.height < len(set(label_ids)):
            missing = sorted(set(label_ids) - set(labels["label_id"].to_list()))
            raise InputError(f"label {missing[0]} is not the current accepted label of a feature of run {run_id}")
    if labels.is_empty():
        raise InputError(f"run {run_id} has no accepted labels; label features with `mini label` (or the app)")
    epoch, source, note = resolve_epoch(db, run_id, step, epoch)
    split, values, kinds, selection = _read_split(db, run, epoch, source)
    parsed, unparsed = _parse_predicates(labels, kinds)
    testable = labels.filter(pl.col("label_id").is_in(list(parsed)))
    n_features, n_bins = testable.select("sae_id", "feature_id").unique().height, len(split.trials)
    # One dense float32 vector per labelled feature, and at worst as many stored rows (about 16 bytes each).
    check_fits(f"run {run_id}: validating {n_features:,} labelled feature(s) over {n_bins:,} bins needs their "
               "activations", n_features * n_bins * (4 + 16), "validate fewer labels at a time (the app validates "
               "one with v)")
    activation = feature_activations(db, testable.select("sae_id", "feature_id"), len(split.trials))
    weights = decoder_rows(db, testable.select("sae_id", "feature_id"))
    materials = _ablation_materials(db, run_id, testable["sae_id"].unique().to_list(), n_bins, split.counts.shape[1])
    # Labels whose predicates have one target (the same clauses, however spaced or ordered) share it.
    groups: dict[tuple, list[dict]] = {}
    for label in testable.iter_rows(named=True):
        label["weights"] = weights[(label["sae_id"], label["feature_id"])]
        groups.setdefault(parsed[label["label_id"]].target, []).append(label)
    cores = effective_n_jobs(n_jobs)
    n_jobs = min(len(groups), cores) if groups else 1
    tasks = [delayed(_validate_group)(
        split, group, [activation[(g["sae_id"], g["feature_id"])] for g in group], parsed[group[0]["label_id"]],
        kinds, _values_of(values, parsed[group[0]["label_id"]]), config,
        {g["sae_id"]: materials[g["sae_id"]] for g in group})
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
    _signature_ablations(db, run_id, split, results, {g["label_id"]: g for gs in groups.values() for g in gs},
                         config, cores, report, cancel)
    rows, signature_rows = _result_rows(labels, results, weights, unparsed, epoch)
    frame = pl.DataFrame(rows, infer_schema_length=None)
    frame = frame.select([c for c in frame.columns if c in _VALIDATION_COLUMNS])
    target_of = _target_key(kinds)
    stored = append_attempts(db, run_id, frame, pl.concat(signature_rows) if signature_rows else pl.DataFrame(),
                             epoch=selection.row(), judge=lambda attempts: judge_attempts(attempts, config, target_of))
    mine = stored.filter(pl.col("label_id").is_in(frame["label_id"].to_list()) & pl.col("latest_of_label"))
    counts = verdict_counts(mine.iter_rows(named=True))  # counted as mini validate and the app count them
    return ValidateOutcome(
        run_id, counts.n_labels, counts.n_testable, counts.n_validated, time.perf_counter() - started, selection,
        note, n_generalise=counts.n_generalise, n_specific=counts.n_specific, n_duplicates=counts.n_duplicates,
        n_family=int((stored["in_family"] & stored["testable"]).sum()), n_few_trials=counts.n_few_trials)


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


def _ablation_materials(db: Store, run_id: int, sae_ids: list[int], n_examples: int, n_units: int
                        ) -> dict[int, SAEMaterial]:
    """Each SAE's stored code, decoder rows and densities (what feature ablation needs)."""
    saes = {row["sae_id"]: row for row in load_saes(db, run_id).iter_rows(named=True)}
    out = {}
    for sae_id in sae_ids:
        d_sae = saes[sae_id]["d_sae"]
        examples, features, values = sae_code(db, sae_id)
        code = sparse.csr_matrix((values, (examples, features)), shape=(n_examples, d_sae))
        density, dead = sae_densities(db, sae_id, d_sae)
        out[sae_id] = SAEMaterial(code, sae_decoder(db, sae_id, d_sae, n_units), density, dead)
    return out


def _signature_ablations(db: Store, run_id: int, split: _Split, results: dict[int, tuple[dict, dict]],
                         labels: dict[int, dict], config: ValidateConfig, n_jobs: int,
                         report: Callable[[str], None], cancel: threading.Event | None) -> None:
    """Signature-unit ablation of every testable label, once every readout is fitted: the labels of one SAE whose
    signatures have one size share their null draws (each encoded once, read by all their readouts), one task per
    (SAE, size). Its columns go into each label's row; NULL with the reason where the run has no 'final'
    checkpoint. The SAEs are encoded here, in the parent, so the workers never import torch."""
    testable = {label_id: result for label_id, result in results.items() if result[0].get("testable")}
    readouts = {label_id: extra.pop("readout") for label_id, (_, extra) in testable.items()}
    for row, _ in testable.values():
        row.update(signature_columns(None, None))
    if not testable:
        return
    final = load_checkpoint(db, run_id, "final")
    saved = load_final(final[2]) if final is not None else None
    instances = dict(load_saes(db, run_id).select("sae_id", "instance").iter_rows())
    test_rows = np.flatnonzero(split.test)
    encodings: dict[int, TestEncoding | str] = {}  # a str: why the SAE has none
    groups: dict[tuple[int, int], list[int]] = {}
    for label_id, (row, extra) in testable.items():
        sae_id = labels[label_id]["sae_id"]
        if final is None:
            row["ablation_note"] = f"no signature-unit ablation: run {run_id} has no 'final' checkpoint"
            continue
        if sae_id not in encodings:
            state, why = final_stack_state(saved, instances[sae_id])
            if state is None:
                encodings[sae_id] = why
            else:
                encodings[sae_id] = encode_test(state, test_rows, split.counts[test_rows])
        if isinstance(encodings[sae_id], str):
            row["ablation_note"] = f"no signature-unit ablation: {encodings[sae_id]}"
        elif len(extra["signature"]):
            groups.setdefault((sae_id, len(extra["signature"])), []).append(label_id)
    tasks = [delayed(signature_ablations)(encodings[sae_id], [SignatureTask(
        np.asarray(results[label_id][1]["signature"]), readouts[label_id].effect, readouts[label_id].intercept,
        np.searchsorted(test_rows, readouts[label_id].test_rows), readouts[label_id].present) for label_id in ids],
        config) for (sae_id, _), ids in groups.items()]
    outcomes = Parallel(n_jobs=min(len(tasks), n_jobs) or 1, return_as="generator")(tasks)
    try:
        for ((sae_id, size), ids), ablations in zip(groups.items(), outcomes, strict=True):
            for label_id, ablation in zip(ids, ablations, strict=True):
                results[label_id][0].update(signature_columns(ablation, None))
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"validation of run {run_id} cancelled during signature-unit ablation; nothing was "
                                "stored")
            report(f"signature-unit ablation: SAE {sae_id}, {len(ids)} label(s) of {size} unit(s)")
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tasks which were still being processed")
            outcomes.close()


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
                 weights: dict[tuple[int, int], np.ndarray], unparsed: dict[int, str], epoch: Epoch
                 ) -> tuple[list[dict], list[pl.DataFrame]]:
    """validations rows (labels without a result are not testable) and signatures frames."""
    rows, signature_rows = [], []
    for label in labels.iter_rows(named=True):
        base = {"label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
                "predicate": label["predicate"], "where_sql": epoch.where if epoch.is_set else None,
                "around": epoch.around if epoch.is_set else None}
        if label["label_id"] not in results:
            reason = unparsed.get(label["label_id"], "not testable: the label has no predicate")
            rows.append({**base, "testable": False, "reason": reason})
            continue
        row, extra = results[label["label_id"]]
        rows.append({**base, **row})
        if not row["testable"]:
            continue
        w = weights[(label["sae_id"], label["feature_id"])]
        in_signature = np.zeros(len(w), dtype=bool)
        in_signature[extra["signature"]] = True
        signature_rows.append(pl.DataFrame({
            "label_id": label["label_id"], "sae_id": label["sae_id"], "feature_id": label["feature_id"],
            "unit_id": np.arange(len(w), dtype=np.int32), "weight": w.astype(np.float64),
            "coactivation": extra["profile"].astype(np.float64), "in_signature": in_signature}))
    return rows, signature_rows


def validate_label(db: Store, run_id: int, label_id: int, config: ValidateConfig | None = None) -> dict:
    """Validate one accepted label now (the review screen's `v`) and return its stored attempt.

    The attempt is appended like any other: the q-values of the run's whole family (every test it made)
    are recomputed with it, so q is never a single label's uncorrected p. Scored on the epoch of the run's
    stored validations (else the ranking's), so its q compares like with like."""
    check_test_allowed(db, run_id)
    validate_run(db, run_id, config, n_jobs=1, label_ids=[label_id], step="validate_label")
    return latest_attempt(db, label_id)


def _target_key(kinds: dict[str, str]) -> Callable[[str | None], object]:
    """A predicate text's target (the same clauses, however spaced or ordered, give the same key); the text
    itself when it no longer parses."""
    def key(text: str | None) -> object:
        if text is None:
            return None
        try:
            return parse_predicate(text, kinds).target
        except InputError:
            return text
    return key


def judge_attempts(attempts: pl.DataFrame, config: ValidateConfig, target_of: Callable[[str | None], object]
                   ) -> pl.DataFrame:
    """The judged columns of a run's attempts: validation_id, q_value, generalises, signature_specific,
    validated, duplicate_of, reason, for the rows they change.

    The family is every distinct test of the run (label, where_sql, around) at its latest row (`in_family`);
    Benjamini–Hochberg over their p-values gives each its q, then its two verdicts. Superseded rows (a test
    repeated since) are left as they were. Duplicates: among the latest attempts of the current accepted
    labels (`current`), a label whose predicate has the same target as a label of another feature of the
    same SAE is marked as the weaker when its test MCC is lower (ties: the later label)."""
    family = attempts.filter(pl.col("in_family") & pl.col("testable"))
    if family.is_empty():
        return family.select("validation_id")
    q = benjamini_hochberg(family["p_value"].fill_null(np.nan).to_numpy())
    family = family.with_columns(pl.Series("q_value", q).fill_nan(None))
    weaker = _weaker_duplicates(attempts, target_of)
    out = []
    for row in family.iter_rows(named=True):
        v = verdicts({**row, "signature_score": row["decode_signature"], "random_p95": row["decode_random_p95"]},
                     row["q_value"], config)
        stronger = weaker.get(row["validation_id"])
        reason = v.reason
        if stronger is not None:
            reason += (f"; weaker duplicate of label {stronger['label_id']} (feature {stronger['feature_id']},"
                       f" MCC {_nan(stronger['mcc']):.2f})")
        if row["n_test_trials"] is not None and row["n_test_trials"] < MIN_CI_TRIALS:
            reason += f"; only {row['n_test_trials']} test trials: the interval is unreliable"
        out.append({"validation_id": row["validation_id"], "q_value": row["q_value"],
                    "generalises": v.generalises, "signature_specific": v.signature_specific,
                    "validated": v.validated, "duplicate_of": None if stronger is None else stronger["label_id"],
                    "reason": reason})
    return pl.DataFrame(out, schema={"validation_id": pl.Int64, "q_value": pl.Float64, "generalises": pl.Boolean,
                                     "signature_specific": pl.Boolean, "validated": pl.Boolean,
                                     "duplicate_of": pl.Int32, "reason": pl.String})


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _weaker_duplicates(attempts: pl.DataFrame, target_of: Callable[[str | None], object]) -> dict[int, dict]:
    """validation_id of each weaker duplicate → the stronger label's row (see judge_attempts)."""
    current = attempts.filter(pl.col("current") & pl.col("testable") & pl.col("latest_of_label"))
    groups: dict[tuple, list[dict]] = {}
    for row in current.iter_rows(named=True):
        groups.setdefault((row["sae_id"], target_of(row["predicate"])), []).append(row)
    weaker = {}
    for rows in groups.values():
        if len({r["feature_id"] for r in rows}) < 2:
            continue
        rows.sort(key=lambda r: (-_nan(r["mcc"]) if r["mcc"] is not None else np.inf, r["label_id"]))
        for row in rows[1:]:
            weaker[row["validation_id"]] = rows[0]
    return weaker


_VALIDATION_COLUMNS = {
    "label_id", "sae_id", "feature_id", "predicate", "testable", "threshold", "tp", "fp", "fn", "tn", "precision",
    "recall", "specificity", "f1", "mcc", "mcc_ci_low", "mcc_ci_high", "balanced_accuracy",
    "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "n_test_trials", "p_value", "n_shifts",
    "decode_metric", "decode_signature", "decode_all", "decode_feature", "decode_random_p95", "signature_over_all",
    "signature_percentile", "n_signature_units", "reason", "where_sql", "around", "reconstruction_decode",
    "necessity_drop", "necessity_null_p95", "necessity_p", "n_ablation_null", "necessary", "signature_ablation_drop",
    "signature_ablation_null_p95", "signature_ablation_p", "n_signature_ablation_null", "signature_necessary", "ablation_note",
}
