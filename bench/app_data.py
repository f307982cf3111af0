"""A large run for bench/app.py, written straight into a mini database (no training).

Sizes default to the issue's: 1,000,000 examples × 200 units, one SAE of 4,096 features with k = 32
(about 32 M activation rows). Everything is random but has the real schema and realistic shapes: trials
of 250 examples split 70/15/15 by whole trials, four natural variables (a per-trial categorical
`condition`, continuous `speed` and `position`, a binary `reward`), activations whose feature
popularity is skewed like an SAE's, a full decoder, a ranking with 1–4 suggestions per feature, tuning
curves for the continuous variables and a few hundred automatic labels. Seeded: one seed, one file.

It is also a run `engine.analysis.rank.rank_run` ranks for real, as bench/app.py has the app do in the background:
a finished run with its SAE, decoder and features, and a dataset whose trials are split by whole trials and
whose variables a label could be tested on (rank_run reads nothing else).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from store import Store
from store.datasets import NewDataset, add_dataset


@dataclass(frozen=True)
class LargeRun:
    n_examples: int = 1_000_000
    n_units: int = 200
    d_sae: int = 4096
    k: int = 32
    trial_length: int = 250
    n_conditions: int = 8
    n_auto_labels: int = 300
    seed: int = 0


def _dataset(spec: LargeRun, rng: np.random.Generator) -> NewDataset:
    n, n_trials = spec.n_examples, -(-spec.n_examples // spec.trial_length)
    example_id = np.arange(n, dtype=np.int32)
    trial_of = example_id // spec.trial_length
    trial_split = rng.choice(np.array(["train", "val", "test"]), size=n_trials, p=[0.7, 0.15, 0.15])
    first = np.arange(n_trials) * spec.trial_length
    trials = pl.DataFrame({"trial_id": np.arange(n_trials, dtype=np.int32),
                           "label": [f"t{i}" for i in range(n_trials)], "split": trial_split,
                           "first_example": first.astype(np.int32),
                           "n_examples": np.minimum(spec.trial_length, n - first).astype(np.int32)})
    examples = pl.DataFrame({"example_id": example_id, "trial_id": trial_of.astype(np.int32),
                             "time_s": example_id * 0.02, "split": trial_split[trial_of]})
    units = pl.DataFrame({"unit_id": np.arange(spec.n_units, dtype=np.int32),
                          "name": [f"unit_{i}" for i in range(spec.n_units)],
                          "mean_count": rng.gamma(2.0, 0.5, spec.n_units), "firing_rate_hz": None},
                         schema_overrides={"firing_rate_hz": pl.Float64})
    condition = rng.integers(0, spec.n_conditions, n_trials)[trial_of]
    phase = (example_id % spec.trial_length) / spec.trial_length
    speed = np.abs(30 * np.sin(np.pi * phase) + rng.normal(0, 3, n))
    reward = (phase > 0.9).astype(float)
    values = pl.concat([
        pl.DataFrame({"example_id": example_id, "variable": "condition", "value": None,
                      "category": condition.astype(str)}, schema_overrides={"value": pl.Float64}),
        pl.DataFrame({"example_id": example_id, "variable": "speed", "value": speed, "category": None},
                     schema_overrides={"category": pl.String}),
        pl.DataFrame({"example_id": example_id, "variable": "position", "value": phase, "category": None},
                     schema_overrides={"category": pl.String}),
        pl.DataFrame({"example_id": example_id, "variable": "reward", "value": reward, "category": None},
                     schema_overrides={"category": pl.String}),
    ])
    variables = pl.DataFrame({"variable": ["condition", "speed", "position", "reward"],
                              "kind": ["categorical", "continuous", "continuous", "binary"],
                              "period": [None] * 4, "n_levels": [spec.n_conditions, None, None, 2],
                              "n_missing": [0] * 4, "source": ["inferred"] * 4},
                             schema_overrides={"period": pl.Float64, "n_levels": pl.Int32})
    counts = pl.DataFrame({"example_id": [], "unit_id": [], "value": []},
                          schema={"example_id": pl.Int32, "unit_id": pl.Int32, "value": pl.Float32})
    return NewDataset(name="large", source="bench/app_data.py", kind="spike_counts", bin_size_s=0.02,
                      trial_source="column:trial", split_seed=spec.seed, options={}, units=units, trials=trials,
                      examples=examples, counts=counts, variables=variables, values=values)


def _activations(spec: LargeRun, rng: np.random.Generator) -> pl.DataFrame:
    """Poisson(k) distinct feature ids per example, skewed towards low ids (a few frequent features)."""
    per_example = np.clip(rng.poisson(spec.k, spec.n_examples), 1, spec.d_sae)
    rows = int(per_example.sum())
    example_id = np.repeat(np.arange(spec.n_examples, dtype=np.int32), per_example)
    starts = np.concatenate(([0], np.cumsum(per_example)[:-1]))
    rank = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_example)
    span = (spec.d_sae - np.repeat(per_example, per_example) + 1).astype(np.int64)
    draw = (rng.random(rows) ** 2 * span).astype(np.int64)
    draw = np.sort(example_id.astype(np.int64) * spec.d_sae + draw) - example_id.astype(np.int64) * spec.d_sae
    # A random permutation of ids so that frequent features are spread over the ranking.
    feature_id = rng.permutation(spec.d_sae).astype(np.int32)[(draw + rank)]
    return pl.DataFrame({"sae_id": np.ones(rows, dtype=np.int32), "example_id": example_id,
                         "feature_id": feature_id,
                         "value": rng.lognormal(0.5, 0.5, rows).astype(np.float32)})


def _ranking(spec: LargeRun, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    d = spec.d_sae
    parts = rng.random((3, d))
    score = parts.mean(axis=0)
    order = np.argsort(-score, kind="stable")
    rank = np.empty(d, dtype=np.int32)
    rank[order] = np.arange(1, d + 1, dtype=np.int32)
    rows = []
    for feature in range(d):
        for position in range(1, int(rng.integers(1, 5)) + 1):
            choice = rng.integers(0, 4)
            if choice == 0:
                level = str(rng.integers(0, spec.n_conditions))
                rows.append((feature, position, "condition", f"condition = {level}", level, None, None))
            elif choice == 3:
                rows.append((feature, position, "reward", "reward = 1", "1", None, None))
            else:
                variable, top = ("speed", 40.0) if choice == 1 else ("position", 1.0)
                low = round(float(rng.uniform(0, top * 0.7)), 2)
                high = round(low + top * 0.2, 2)
                rows.append((feature, position, variable, f"{variable} in [{low}, {high})", None, low, high))
    suggestions = pl.DataFrame(rows, schema=["feature_id", "position", "variable", "predicate", "value", "low", "high"],
                               orient="row").with_columns(
        pl.lit(1, pl.Int32).alias("sae_id"), pl.Series("score", rng.random(len(rows))),
        pl.Series("p_value", rng.random(len(rows)) * 0.01), pl.Series("q_value", rng.random(len(rows)) * 0.05),
        pl.Series("effect_size", rng.random(len(rows))))
    first = suggestions.filter(pl.col("position") == 1).sort("feature_id")["predicate"]
    rankings = pl.DataFrame({"sae_id": np.ones(d, dtype=np.int32), "feature_id": np.arange(d, dtype=np.int32),
                             "rank": rank, "score": score, "association": parts[0], "mis": parts[1],
                             "stability": parts[2], "suggestion": first, "reason": None},
                            schema_overrides={"reason": pl.String})
    bins = 10
    curves = []
    for variable, top in (("speed", 40.0), ("position", 1.0)):
        edges = np.linspace(0, top, bins + 1)
        curves.append(pl.DataFrame({
            "sae_id": np.ones(d * bins, dtype=np.int32), "feature_id": np.repeat(np.arange(d, dtype=np.int32), bins),
            "variable": variable, "bin": np.tile(np.arange(bins, dtype=np.int32), d),
            "low": np.tile(edges[:-1], d), "high": np.tile(edges[1:], d), "mean": rng.random(d * bins),
            "sem": rng.random(d * bins) * 0.1, "n": np.full(d * bins, 1000, dtype=np.int32)}))
    return rankings, suggestions, pl.concat(curves)


def build_large_run(path: Path, spec: LargeRun = LargeRun()) -> int:
    """Write the database at ``path`` and return the run id (always 1 in a new file)."""
    rng = np.random.default_rng(spec.seed)
    with Store.open(path) as db:
        dataset_id = add_dataset(db, _dataset(spec, rng))
        activations = _activations(spec, rng)
        density = activations.group_by("feature_id").len().with_columns(
            (pl.col("len") / spec.n_examples).alias("density"))
        features = (pl.DataFrame({"feature_id": np.arange(spec.d_sae, dtype=np.int32)})
                    .join(density, on="feature_id", how="left")
                    .with_columns(pl.lit(1, pl.Int32).alias("sae_id"), pl.lit(0, pl.Int32).alias("level"),
                                  pl.col("density").fill_null(0.0), pl.lit(1.9).alias("mean_act"),
                                  pl.lit(12.0).alias("max_act"), (pl.col("len").is_null()).alias("dead"),
                                  pl.lit(0.0).alias("encoder_bias")).drop("len"))
        decoder = pl.DataFrame({
            "sae_id": np.ones(spec.d_sae * spec.n_units, dtype=np.int32),
            "feature_id": np.repeat(np.arange(spec.d_sae, dtype=np.int32), spec.n_units),
            "unit_id": np.tile(np.arange(spec.n_units, dtype=np.int32), spec.d_sae),
            "weight": rng.normal(0, 1, spec.d_sae * spec.n_units).astype(np.float32)})
        rankings, suggestions, curves = _ranking(spec, rng)
        config = {"dataset": "large", "sae": {"architecture": "batchtopk", "d_sae": spec.d_sae}, "ks": [spec.k],
                  "instances": 1, "seed": spec.seed}
        with db.transaction():
            db.con.execute("INSERT INTO runs (run_id, dataset_id, status, config, device, examples_seen, seconds)"
                           " VALUES (1, ?, 'finished', ?, 'cpu', ?, 1.0)",
                           [dataset_id, json.dumps(config), spec.n_examples])
            db.con.execute("INSERT INTO saes (sae_id, run_id, instance, architecture, d_in, d_sae, k, seed, loss)"
                           " VALUES (1, 1, 0, 'batchtopk', ?, ?, ?, ?, 'mse')", [spec.n_units, spec.d_sae, spec.k,
                                                                                 spec.seed])
            for table, frame in (("features", features), ("decoder", decoder), ("activations", activations),
                                 ("rankings", rankings), ("suggestions", suggestions), ("tuning_curves", curves)):
                db.insert_frame(table, frame)
            top = rankings.sort("rank").head(spec.n_auto_labels).join(
                suggestions.filter(pl.col("position") == 1), on=["sae_id", "feature_id"])
            labels = top.select("sae_id", "feature_id", pl.lit("accept").alias("verdict"),
                                pl.col("predicate").alias("name"), "predicate", "variable", "value", "low", "high",
                                pl.lit("auto").alias("source"))
            db.insert_frame("labels", labels)
        db.con.execute("CHECKPOINT")
    return 1
