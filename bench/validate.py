"""Validation benchmark: planted pairings validate, wrong ones do not; and speed at scale.

    .venv/bin/python bench/validate.py                  # both parts (~40 min on 2 cores)
    .venv/bin/python bench/validate.py --skip-scale     # the science part only (~5 min)

Science (the sample recording, 60,000 bins × 120 units, demo training settings): the metadata gets a
shuffled copy of each encoded variable (``<name>_shuffled``: the series rotated by half the session,
so its values no longer line up with the neurons while its own statistics are unchanged). Each planted
latent is paired with one feature per SAE (Hungarian assignment on the correlation of activity on
train + val), then with the pairing of the run's SAE where that correlation is higher (the run trains
two instances; a person labels whichever shows the feature cleanly; test plays no part in the choice),
and three rounds of labels are validated
through the real `validate_run`:

  planted     the latent's own predicate (``condition = 3``, ``position in [0.05, 0.25)``)
  distractor  a predicate on a variable nothing encodes (``distractor`` upper half, ``house_light = 1``)
  shuffled    the planted predicate on the shuffled copy (``condition_shuffled = 3``)

Done means: every planted pairing generalises and validates, event-like ones (cue, reward) with MCC ≥ 0.7,
signature decoding above the random subsets' 95th percentile; no wrong label generalises. The signature's
share of all-unit decoding above chance is reported (`signature_over_all_min`, and how many reach 0.9). The three rounds relabel the same features, so they are attempts 1–3 of each and
the last round's q-values correct over all 45 tests. For context, the *ceiling* is the MCC of the planted latent's own activity against its
predicate (latents fire in bursts, so not even the ground truth reaches MCC 1).

Scale: the sample generator at 1,000,000 bins, one SAE (512 latents, k 8, 1 epoch), ranked, the first
suggestion of the top 200 features accepted, then `validate_run` timed in one process, in CPU seconds
(robust to a busy machine; `--jobs` divides the wall time by the cores with identical results). Then the
first ``--baseline`` labels are validated by mini and by the scikit-learn way of bench/validate_baseline.py,
shared per predicate as mini shares (the fair ratio) and unshared (the naive one), each from the database
to the figures with one BLAS thread; outside the timing the two ways must agree exactly and their figures
are compared with mini's stored ones.

Prints progress to stderr and, last on stdout, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from threadpoolctl import threadpool_limits
from validate_baseline import COMPARED, Pairing, Recording, differences, validate_pairings

from engine.analysis.predicates import parse_predicate
from engine.analysis.rank import rank_config, rank_run
from engine.demo import DEMO_RUN, auto_accept_top
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import RunSpec, dataset_matrix, train_run
from engine.sae.config import SAEConfig
from engine.sae.train import TrainConfig
from engine.validation.labels import label_feature
from engine.validation.validate import ValidateConfig, choose_threshold, cooccurrence, validate_config
from engine.validation.validate_run import predicate_target, validate_run
from sample_data import SampleConfig, generate
from store import Store
from store.datasets import GroundTruth, load_natural_values, load_natural_variables
from store.validations import accepted_labels, decoder_rows, feature_activations, latest_attempt

SHUFFLED = ("condition", "phase", "reward", "position", "speed")
EVENT_LIKE = ("cue", "reward")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_sample(db: Store, folder: Path, config: SampleConfig, shuffled: bool) -> int:
    recording = generate(config)
    if shuffled:
        meta, half = recording.metadata, len(recording.metadata) // 2
        # Rotate by half the session (missing values move with their rows: nothing is invented).
        recording.metadata = meta.with_columns(
            pl.concat([meta[name].slice(half), meta[name].slice(0, half)]).alias(f"{name}_shuffled")
            for name in SHUFFLED)
    counts_path, meta_path = recording.write(folder)
    truth = GroundTruth(variables=recording.variable_roles, latents=recording.latents,
                        loadings=recording.loadings, activity=recording.activity)
    result = import_files(db, counts_path, meta_path, ImportOptions(name="sample", bin_size_s=config.bin_size_s),
                          ground_truth=truth)
    log(f"  imported {result.n_examples:,} examples × {result.n_units} units, {result.n_trials} trials")
    return result.dataset_id


def pair_features(db: Store, sae_id: int, dataset_id: int, fit: np.ndarray) -> dict[int, tuple[int, float]]:
    """latent_id → (feature_id, correlation): one feature of the SAE per latent, the best correlation of
    activity on train + val (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    n = len(fit)
    truth = db.frame("SELECT example_id, latent_id, value FROM ground_truth_activity")
    acts = db.frame("SELECT example_id, feature_id, value FROM activations WHERE sae_id = ?", [sae_id])
    n_latents = int(truth["latent_id"].max()) + 1
    n_features = int(db.scalar("SELECT d_sae FROM saes WHERE sae_id = ?", [sae_id]))
    latent = np.zeros((n, n_latents), dtype=np.float32)
    latent[truth["example_id"].to_numpy(), truth["latent_id"].to_numpy()] = truth["value"].to_numpy()
    feature = np.zeros((n, n_features), dtype=np.float32)
    feature[acts["example_id"].to_numpy(), acts["feature_id"].to_numpy()] = acts["value"].to_numpy()
    lz = latent[fit] - latent[fit].mean(0)
    fz = feature[fit] - feature[fit].mean(0)
    corr = (lz.T @ fz) / np.outer(np.linalg.norm(lz, axis=0) + 1e-12, np.linalg.norm(fz, axis=0) + 1e-12)
    rows, cols = linear_sum_assignment(-corr)
    return {int(r): (int(c), float(corr[r, c])) for r, c in zip(rows, cols, strict=True)}


def pair_across_saes(db: Store, run_id: int, dataset_id: int, fit: np.ndarray) -> dict[int, tuple[int, int]]:
    """latent_id → (sae_id, feature_id): each SAE of the run paired with the latents, then per latent the
    SAE whose feature correlates best on train + val. A person labels whichever instance shows the
    feature most cleanly; this choice sees train + val only, never test."""
    best: dict[int, tuple[float, int, int]] = {}
    for (sae_id,) in db.con.execute("SELECT sae_id FROM saes WHERE run_id = ? ORDER BY sae_id", [run_id]).fetchall():
        for latent_id, (feature_id, corr) in pair_features(db, sae_id, dataset_id, fit).items():
            if latent_id not in best or corr > best[latent_id][0]:
                best[latent_id] = (corr, sae_id, feature_id)
    return {latent_id: (sae_id, feature_id) for latent_id, (_, sae_id, feature_id) in best.items()}


def ceiling(db: Store, dataset_id: int, latent: dict, splits: np.ndarray, trials: np.ndarray,
            kinds: dict[str, str], values: pl.DataFrame, config: ValidateConfig) -> float:
    """MCC on test of the planted latent's own activity against its predicate (threshold on train + val)."""
    present, _ = predicate_target(parse_predicate(latent["predicate"], kinds), values, kinds, len(splits))
    act = db.frame("SELECT example_id, value FROM ground_truth_activity WHERE latent_id = ?", [latent["latent_id"]])
    activity = np.zeros(len(splits))
    activity[act["example_id"].to_numpy()] = act["value"].to_numpy()
    fit, test = splits != "test", splits == "test"
    threshold = choose_threshold(activity[fit], present[fit])
    return cooccurrence(activity[test], present[test], trials[test], threshold,
                        replace(config, n_bootstrap=10, n_shifts=1))["mcc"]


def _r(value, digits: int = 3):
    """Rounded for the JSON line; undefined (None or NaN) stays None."""
    return None if value is None or value != value else round(value, digits)


def validation_rows(db: Store, run_id: int) -> list[dict]:
    return db.frame("SELECT v.* FROM current_validations v JOIN current_labels c USING (label_id)"
                    " JOIN saes s ON s.sae_id = v.sae_id WHERE s.run_id = ? ORDER BY v.feature_id",
                    [run_id]).to_dicts()


def science(epochs: int | None) -> dict[str, object]:
    config = ValidateConfig()
    with tempfile.TemporaryDirectory() as folder:
        db = Store.open(Path(folder) / "bench.duckdb")
        dataset_id = import_sample(db, Path(folder) / "data", SampleConfig(), shuffled=True)
        spec = DEMO_RUN if epochs is None else replace(DEMO_RUN, train=replace(DEMO_RUN.train, epochs=epochs))
        start = time.perf_counter()
        run_id = train_run(db, spec).run_id
        log(f"  trained run {run_id} in {time.perf_counter() - start:.0f} s")
        examples = db.frame("SELECT split, trial_id FROM examples WHERE dataset_id = ? ORDER BY example_id",
                            [dataset_id])
        splits, trials = examples["split"].to_numpy(), examples["trial_id"].to_numpy()
        pairs = pair_across_saes(db, run_id, dataset_id, splits != "test")
        latents = {r["latent_id"]: r for r in db.frame("SELECT * FROM ground_truth_latents").to_dicts()}
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables WHERE dataset_id = ?",
                              [dataset_id]).iter_rows())
        values = load_natural_values(db, dataset_id)
        fit_ids = np.flatnonzero(splits != "test")
        median = float(values.filter((pl.col("variable") == "distractor") & pl.col("example_id").is_in(fit_ids))
                       ["value"].median())

        rounds = {
            "planted": lambda lat, i: lat["predicate"],
            "distractor": lambda lat, i: f"distractor in [{median:.4g}, inf)" if i % 2 == 0 else "house_light = 1",
            "shuffled": lambda lat, i: lat["predicate"].replace(lat["variable"], f"{lat['variable']}_shuffled", 1),
        }
        out: dict[str, object] = {}
        per_latent: dict[str, dict] = {}
        for name, make in rounds.items():
            for i, (latent_id, (sae_id, feature_id)) in enumerate(sorted(pairs.items())):
                label_feature(db, run_id, feature_id, sae_id=sae_id, name=f"{name}: {latents[latent_id]['name']}",
                              predicate=make(latents[latent_id], i))
            start = time.perf_counter()
            outcome = validate_run(db, run_id, config)
            log(f"  {name}: {outcome.n_generalise}/{outcome.n_testable} generalise, {outcome.n_validated} also"
                f" signature-specific; q over {outcome.n_family} tests ({outcome.seconds:.0f} s)")
            rows = {(r["sae_id"], r["feature_id"]): r for r in validation_rows(db, run_id)}
            out[f"{name}_generalise"] = outcome.n_generalise
            out[f"{name}_validated"] = outcome.n_validated
            out[f"{name}_family"] = outcome.n_family
            out[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
            for latent_id, (sae_id, feature_id) in pairs.items():
                row = rows[(sae_id, feature_id)]
                entry = per_latent.setdefault(latents[latent_id]["name"], {"sae": sae_id, "feature": feature_id})
                entry[name] = {"mcc": _r(row["mcc"]), "mcc_ci_low": _r(row["mcc_ci_low"]),
                               "q": _r(row["q_value"], 4), "attempt": row["attempt"],
                               "generalises": row["generalises"], "validated": row["validated"]}
                if name == "planted":
                    entry[name].update(
                        signature=_r(row["decode_signature"]), all_units=_r(row["decode_all"]),
                        random_p95=_r(row["decode_random_p95"]), signature_over_all=_r(row["signature_over_all"]),
                        n_signature_units=row["n_signature_units"])
        for latent in latents.values():
            per_latent[latent["name"]]["ceiling_mcc"] = _r(
                ceiling(db, dataset_id, latent, splits, trials, kinds, values, config))
        db.close()
    planted = [v["planted"] for v in per_latent.values()]
    events = {k: v["planted"]["mcc"] for k, v in per_latent.items() if k in EVENT_LIKE}
    out.update({
        "pairings": len(per_latent),
        "event_like_mcc": events, "event_like_mcc_at_least_0_7": all(m >= 0.7 for m in events.values()),
        "signature_over_all_min": min(p["signature_over_all"] for p in planted),
        "signature_at_least_0_9_of_all": sum(p["signature_over_all"] >= 0.9 for p in planted),
        "signature_above_random_p95": sum(p["signature"] > p["random_p95"] for p in planted),
        "wrong_validated": int(out["distractor_validated"]) + int(out["shuffled_validated"]),
        "wrong_generalise": int(out["distractor_generalise"]) + int(out["shuffled_generalise"]),
        "planted_all_generalise": out["planted_generalise"] == len(per_latent),
        "per_latent": per_latent,
    })
    return out


def baseline_recording(db: Store, dataset_id: int, n_examples: int) -> Recording:
    """The dataset read from the database as the baseline needs it (the same reads mini's validation makes)."""
    n_units = int(db.scalar("SELECT n_units FROM datasets WHERE dataset_id = ?", [dataset_id]))
    counts, examples = dataset_matrix(db, dataset_id, n_examples, n_units)
    splits = examples["split"].to_numpy()
    kinds = dict(load_natural_variables(db, dataset_id).select("variable", "kind").iter_rows())
    return Recording(counts, examples["trial_id"].to_numpy(), (splits == "train") | (splits == "val"),
                     splits == "test", load_natural_values(db, dataset_id), kinds)


def timed(work):
    """(result, wall seconds, CPU seconds of this process) of work(), with one BLAS thread."""
    with threadpool_limits(1):
        start, cpu = time.perf_counter(), time.process_time()
        result = work()
        return result, time.perf_counter() - start, time.process_time() - cpu


def compare(db: Store, run_id: int, dataset_id: int, n_examples: int, labels: pl.DataFrame,
            config: ValidateConfig) -> dict[str, object]:
    """mini and the scikit-learn way (shared and unshared) on the same labels, each from the database to the
    figures, one BLAS thread each; then, outside the timing, their figures compared."""
    label_ids = labels["label_id"].to_list()
    rows = labels.select("label_id", "sae_id", "feature_id", "predicate").to_dicts()
    outcome, mini_wall, mini_cpu = timed(lambda: validate_run(db, run_id, config, n_jobs=1, label_ids=label_ids))

    def baseline(shared: bool):
        recording = baseline_recording(db, dataset_id, n_examples)
        features = labels.select("sae_id", "feature_id")
        return validate_pairings(recording, rows, feature_activations(db, features, n_examples),
                                 decoder_rows(db, features), config, shared)

    shared, shared_wall, shared_cpu = timed(lambda: baseline(True))
    log(f"  scikit-learn, shared per predicate: {shared_cpu / len(rows):.2f} s CPU per pairing")
    unshared, unshared_wall, unshared_cpu = timed(lambda: baseline(False))
    log(f"  scikit-learn, everything per pairing: {unshared_cpu / len(rows):.2f} s CPU per pairing")

    if any(not same(shared[i], unshared[i]) for i in label_ids):
        sys.exit("bench/validate.py: the shared and unshared scikit-learn ways disagree; the sharing is wrong")
    stored = {i: latest_attempt(db, i) for i in label_ids}
    if any((shared[i] is not None) != bool(stored[i]["testable"]) for i in label_ids):
        sys.exit("bench/validate.py: mini and the scikit-learn way disagree on which labels are testable")
    gaps = [differences(shared[i], stored[i]) for i in label_ids if shared[i] is not None]
    worst = {name: round(max((g[name] for g in gaps), default=0.0), 4) for name in COMPARED}
    n = len(rows)
    return {
        "compared_pairings": n, "compared_predicates": labels["predicate"].n_unique(),
        "compared_testable": outcome.n_testable, "blas_threads": 1,
        "mini_compared_wall_seconds": round(mini_wall, 1), "mini_compared_cpu_seconds_per_pairing": round(mini_cpu / n, 3),
        "sklearn_shared_wall_seconds": round(shared_wall, 1),
        "sklearn_shared_cpu_seconds_per_pairing": round(shared_cpu / n, 3),
        "sklearn_unshared_wall_seconds": round(unshared_wall, 1),
        "sklearn_unshared_cpu_seconds_per_pairing": round(unshared_cpu / n, 3),
        "speedup_vs_sklearn_shared": round(shared_cpu / mini_cpu, 2),
        "speedup_vs_sklearn_unshared": round(unshared_cpu / mini_cpu, 2),
        "sklearn_shared_equals_unshared": True,
        "sklearn_max_abs_difference_from_mini": worst,
    }


def same(a: Pairing | None, b: Pairing | None) -> bool:
    """The same figures, NaN equal to NaN (the two ways run the same code on the same rows)."""
    if a is None or b is None:
        return a is b
    return all(np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float), equal_nan=True)
               for x, y in zip(a, b, strict=True))


def scale(n_examples: int, n_labels: int, n_compared: int, max_shuffles: int | None,
          max_draws: int | None = None) -> dict[str, object]:
    config = validate_config(max_draws)
    with tempfile.TemporaryDirectory() as folder:
        db = Store.open(Path(folder) / "bench.duckdb")
        log(f"scale: sample recording at {n_examples:,} bins ...")
        dataset_id = import_sample(db, Path(folder) / "data", SampleConfig(n_bins=n_examples), shuffled=False)
        spec = RunSpec(dataset="sample", sae=SAEConfig(architecture="batchtopk", d_sae=512), ks=(8,), instances=1,
                       train=TrainConfig(epochs=1))
        start = time.perf_counter()
        run_id = train_run(db, spec).run_id
        log(f"  trained 1 epoch in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        rank_run(db, run_id, rank_config(max_shuffles))  # not timed: it only chooses the labels
        log(f"  ranked in {time.perf_counter() - start:.0f} s")
        accepted = auto_accept_top(db, run_id, n_labels)
        labels = accepted_labels(db, run_id)
        n_predicates = labels.select("variable", "value", "low", "high").unique().height
        log(f"  accepted {accepted} labels over {n_predicates} distinct predicates; validating ...")
        # One process (n_jobs=1) and CPU time: the figure per pairing does not depend on how busy the
        # machine is; with n_jobs=-1 the wall time divides by the cores (the results are identical).
        outcome, mini_seconds, mini_cpu = timed(lambda: validate_run(db, run_id, config, n_jobs=1))
        log(f"  mini: {outcome.n_validated}/{outcome.n_testable} validate in {mini_seconds:.0f} s "
            f"({mini_cpu:.0f} s CPU)")
        log(f"  compared: the first {n_compared} labels, by mini and by scikit-learn (shared and unshared) ...")
        compared = compare(db, run_id, dataset_id, n_examples, labels.head(n_compared), config)
        db.close()
    mini_per = mini_cpu / outcome.n_testable
    log(f"  per pairing, CPU: mini {compared['mini_compared_cpu_seconds_per_pairing']} s, scikit-learn shared "
        f"{compared['sklearn_shared_cpu_seconds_per_pairing']} s, unshared "
        f"{compared['sklearn_unshared_cpu_seconds_per_pairing']} s")
    return {"examples": n_examples, "pairings": outcome.n_testable, "distinct_predicates": n_predicates,
            "labels": outcome.n_labels, "generalise": outcome.n_generalise,
            "validated": outcome.n_validated, "mini_wall_seconds": round(mini_seconds, 1),
            "mini_cpu_seconds": round(mini_cpu, 1), "mini_cpu_seconds_per_pairing": round(mini_per, 3),
            **compared, "load_average_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="training epochs for the science part (0: demo's)")
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=20,
                        help="labels (the first ones) validated by mini and by scikit-learn for the comparison")
    parser.add_argument("--max-shuffles", type=int, default=0,
                        help="the scale part's ranking (not timed) caps its shuffles here (0: mini's default)")
    parser.add_argument("--max-draws", type=int, default=0,
                        help="the scale part validates with at most this many draws of each kind, as mini validate "
                             "--max-draws (0: mini's defaults; fewer for a quick check, not for timings)")
    parser.add_argument("--skip-science", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"bench": "validate"}
    if not args.skip_science:
        log("science on the sample recording ...")
        result["science"] = science(args.epochs or None)
    if not args.skip_scale:
        result["scale"] = scale(args.examples, args.labels, args.baseline, args.max_shuffles or None,
                                args.max_draws or None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
