"""Ranking benchmark: recovery of the planted latents, and speed at scale.

    .venv/bin/python bench/rank.py                 # both parts (~3 min on 2 cores)
    .venv/bin/python bench/rank.py --skip-scale    # recovery only

Recovery: the sample recording is imported, trained with the demo's settings (2 BatchTopK SAEs,
512 latents, k 8) and ranked through the real pipeline in a temporary database. A planted latent
counts as recovered when a feature in the top 30 of the first SAE has it as its *first* suggestion:
the same variable and category; for position a suggested range whose overlap with the planted field
is at least a quarter of their union; for fast running a range starting at ≥ 0.8 × the planted 25 cm/s. The distractor variables must never be a suggestion with q < 0.05.

Scale: 4,096 features × 1,000,000 examples (about 8 active features per example) × 10 natural
variables of every kind, associations with their null (200 shuffles) plus tuning curves and MIS
(100 tasks), in memory. Target: under 60 s on 2 cores.

Prints progress to stderr and, last on stdout, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.analysis.associations import AssociationConfig, Variable, associate, tuning_curves
from engine.analysis.mis import MISConfig, metadata_embedding, mis_scores


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def matches(suggestion: dict, latent: dict) -> bool:
    if suggestion["variable"] != latent["variable"]:
        return False
    if latent["category"] is not None:
        return suggestion["value"] == latent["category"]
    if suggestion["low"] is None:
        return False
    if latent["high"] is None:  # "speed in [25, inf)": the suggestion must sit on the fast side
        return suggestion["low"] >= 0.8 * latent["low"]
    overlap = min(suggestion["high"], latent["high"]) - max(suggestion["low"], latent["low"])
    union = max(suggestion["high"], latent["high"]) - min(suggestion["low"], latent["low"])
    return overlap / union >= 0.25  # a range that merely touches a field (or spans two) does not count


def recovery(epochs: int | None, bins: int | None, max_shuffles: int | None) -> dict[str, object]:
    from engine.analysis.rank import rank_config
    from engine.demo import DEMO_RUN, run_demo
    from sample_data import SampleConfig
    from store import Store

    config = SampleConfig() if bins is None else SampleConfig(n_bins=bins)
    with tempfile.TemporaryDirectory() as folder:
        db = Store.open(Path(folder) / "bench.duckdb")
        start = time.perf_counter()
        # import, train and rank as the demo does; no labels (recovery reads the ranking alone)
        result = run_demo(db, Path(folder) / "data", config, report=lambda m: log(f"  {m}"), epochs=epochs,
                          auto_accept=0, rank_settings=rank_config(max_shuffles))
        seconds = time.perf_counter() - start
        sae_id = db.scalar("SELECT min(sae_id) FROM saes WHERE run_id = ?", [result.run_id])
        top = db.frame(
            "SELECT r.rank, s.variable, s.value, s.low, s.high FROM rankings r JOIN suggestions s"
            " USING (sae_id, feature_id) WHERE r.sae_id = ? AND s.position = 1 AND r.rank <= 30 ORDER BY r.rank",
            [sae_id]).to_dicts()
        latents = db.frame("SELECT name, variable, category, low, high FROM ground_truth_latents").to_dicts()
        found = {latent["name"]: next((s["rank"] for s in top if matches(s, latent)), None) for latent in latents}
        distractors = db.scalar(
            "SELECT count(*) FROM suggestions s JOIN ground_truth_variables g USING (variable)"
            " WHERE g.role = 'distractor' AND s.q_value < 0.05 AND s.sae_id IN"
            " (SELECT sae_id FROM saes WHERE run_id = ?)", [result.run_id])
        db.close()
    recovered = sum(rank is not None for rank in found.values())
    log(f"  recovered {recovered}/{len(found)}: {found}")
    return {"planted": len(found), "recovered_in_top30": recovered,
            "fraction": round(recovered / len(found), 3), "target_fraction": 0.9,
            "distractor_suggestions_q_below_0_05": int(distractors), "pipeline_seconds": round(seconds, 1),
            "epochs": epochs or DEMO_RUN.train.epochs, "bins": config.n_bins,
            "max_shuffles": rank_config(max_shuffles).associations.max_shuffles, "rank_of_each": found}


def synthetic(n: int, n_features: int, per_example: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    popularity = rng.pareto(1.0, n_features) + 1
    popularity /= popularity.sum()
    rows = np.repeat(np.arange(n), per_example)
    cols = rng.choice(n_features, size=n * per_example, p=popularity)
    values = rng.lognormal(0, 0.5, n * per_example).astype(np.float32)
    matrix = sp.csc_matrix((values, (rows, cols)), shape=(n, n_features))
    matrix.sum_duplicates()
    trials = np.repeat(np.arange(n // 200 + 1), 200)[:n]
    walk = np.cumsum(rng.normal(size=n)) / 50
    variables = [
        Variable("condition", "categorical", categories=np.repeat(rng.integers(0, 8, n // 200 + 1), 200)[:n],
                 labels=[str(i) for i in range(8)]),
        Variable("phase", "categorical", categories=(np.arange(n) % 200) // 50, labels=["a", "b", "c", "d"]),
        Variable("choice", "categorical", categories=rng.integers(0, 3, n), labels=["l", "r", "none"]),
        Variable("reward", "binary", values=(rng.random(n) < 0.05).astype(float)),
        Variable("lick", "binary", values=(rng.random(n) < 0.2).astype(float)),
        Variable("speed", "continuous", values=np.abs(walk) * 10),
        Variable("position", "continuous", values=(np.arange(n) % 200) / 200),
        Variable("pupil", "continuous", values=rng.normal(size=n)),
        Variable("heading", "circular", values=np.mod(walk, 2 * np.pi), period=2 * np.pi),
        Variable("phase_angle", "circular", values=np.mod(np.arange(n) * 0.1, 2 * np.pi), period=2 * np.pi),
    ]
    return matrix, trials, variables


def scale(n: int, n_features: int) -> dict[str, object]:
    log(f"building {n:,} × {n_features:,} sparse activations and 10 variables ...")
    matrix, trials, variables = synthetic(n, n_features, 8)
    timings = {}
    start = time.perf_counter()
    associations = associate(matrix, trials, variables, AssociationConfig())
    timings["associations_seconds"] = round(time.perf_counter() - start, 1)
    log(f"  associations: {associations.height:,} rows in {timings['associations_seconds']} s")
    start = time.perf_counter()
    curves = tuning_curves(matrix, variables, AssociationConfig())
    timings["tuning_curves_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    embedding, owners = metadata_embedding({v.name: (v.kind, v.categories if v.kind == "categorical" else v.values,
                                                     v.period) for v in variables})
    mis = mis_scores(matrix, trials, embedding, owners, MISConfig())
    timings["mis_seconds"] = round(time.perf_counter() - start, 1)
    total = sum(timings.values())
    log(f"  tuning curves {timings['tuning_curves_seconds']} s ({curves.height:,} rows), MIS {timings['mis_seconds']} s"
        f" ({mis.height:,} features); total {total:.1f} s")
    return {"examples": n, "features": n_features, "variables": len(variables), "nonzeros": int(matrix.nnz),
            **timings, "total_seconds": round(total, 1), "target_seconds": 60, "meets_target": total < 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="training epochs for recovery (0: the demo's)")
    parser.add_argument("--bins", type=int, default=0, help="bins of the sample recording for recovery (0: its own)")
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--max-shuffles", type=int, default=None,
                        help="most shuffles behind one p-value in recovery (default: mini rank's)")
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"bench": "rank"}
    if not args.skip_recovery:
        log("recovery on the sample recording ...")
        result["recovery"] = recovery(args.epochs or None, args.bins or None, args.max_shuffles)
    if not args.skip_scale:
        result["scale"] = scale(args.examples, args.features)
    print(json.dumps(result))


if __name__ == "__main__":
    pl.Config.set_tbl_rows(50)
    main()
