"""Rank a run's features by how likely each is to be interpretable, and suggest what each encodes.

Only train and validation examples are read: the test split is kept for validation, so nothing
here may depend on it (tests/test_rank.py changes the test split's metadata and checks that the
ranking does not move).

The score of a feature is the mean of three pieces of evidence, each in [0, 1]:

- association: the selectivity index of its first suggestion (engine.analysis.selectivity), 0 when it has none.
  SI = (μ_in − μ_out) / (μ_in + μ_out) of mean activations in and out of the suggested value, field or
  conjunction: it says "this feature is active there, and not elsewhere", whatever the feature's density.
  It replaced 2·AUROC − 1 over all bins, which a sparse feature cannot score on: on the M1 chewie session
  the top 10 by that score had association 0.02–0.05, the most associated features (0.155, 0.124) ranked
  27th, 110th and 143rd, and a 95 %-selective place feature active in 20 bins scored about 0.01. With the
  selectivity index (bench/real.py, defaults): chewie's first target suggestion is rank 1 (was 2; 157th in
  the issue's session); on the linear track direction and position (alone or as directional place fields,
  `position in [60, 100) and direction = decreasing`) are ranks 1 and 2.
- MIS: 2 × (MIS − 0.5), clipped at 0. It asks whether the metadata of its top examples tells them
  apart from its bottom examples, without naming a variable, so it credits conjunctions too.
- stability: the mean best cosine of its decoder row with the other instances of the run, clipped
  at 0. A direction that independent trainings find again belongs to the data, not to a seed.
  Runs with one instance have no stability: the score is then the mean of the other two.

Equal weights because there are no labelled features to fit weights on; each piece is reported
beside the score so a person can sort by any of them. Dead features (never active on train) and
near-constant ones (active on more than half the examples) are ranked last with the reason.

Suggestions are significant associations only (q < 0.05 in one FDR family per SAE: every value, field and
conjunction of every variable, engine.analysis.nulls.family_q_values), by selectivity index to two decimals with a
conjunction first among equals, since it beat both its parts against a null. None for a dead feature, and none from a variable
that cannot be tested on held-out trials: one with a single value in the ranked bins, or a categorical one
whose every value lies in one trial (a clip name per trial). A feature with no suggestion ranks below every
feature with one, whatever its MIS and stability: on a real NWB recording, 500 of 512 features were once
labelled from a column that was 70 in every trial.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.analysis.associations import AssociationConfig, Variable, associate, tuning_curves
from engine.analysis.mis import MISConfig, metadata_embedding, mis_scores
from engine.analysis.stability import stability
from engine.epochs import Epoch, EpochSelection, resolve_epoch, select_epoch
from engine.errors import Cancelled, InputError
from engine.ingest.variables import each_value_in_one_trial
from engine.memory import check_fits, human_bytes
from store import Store
from store.datasets import get_dataset, load_examples, load_natural_values, load_natural_variables
from store.rankings import (
    RankingResults,
    load_activations,
    load_decoder,
    load_features,
    n_activations,
    save_ranking,
)
from store.runs import get_run, load_saes

NEAR_CONSTANT_DENSITY = 0.5
"""A feature active on more than half the examples carries little about any one value."""


@dataclass(frozen=True)
class RankConfig:
    """How to rank; the defaults follow the issue (100 MIS tasks of 9+1, FDR at 5 %)."""

    associations: AssociationConfig = field(default_factory=AssociationConfig)
    """Statistics and their circular-shift null."""
    mis: MISConfig = field(default_factory=MISConfig)
    """MIS tasks."""
    q_threshold: float = 0.05
    """FDR level a suggestion must pass to count as evidence."""
    max_suggestions: int = 9
    """Suggestions kept per feature."""


MAX_SHUFFLES_LIMIT = 1_000_000
"""More shuffles than this would take hours on any recording."""


def rank_config(max_shuffles: int | None) -> RankConfig:
    """The ranking settings with --max-shuffles checked (None: the default)."""
    if max_shuffles is None:
        return RankConfig()
    first = AssociationConfig().n_shuffles
    if not first <= max_shuffles <= MAX_SHUFFLES_LIMIT:
        raise InputError(f"--max-shuffles {max_shuffles}: must be between {first} (the shuffles every p-value "
                         f"gets) and {MAX_SHUFFLES_LIMIT:,}")
    return RankConfig(associations=AssociationConfig(max_shuffles=max_shuffles))


@dataclass
class RankOutcome:
    run_id: int
    sae_ids: list[int]
    seconds: float
    epoch: EpochSelection | None = None
    """The bins ranked (selected train + val bins) and where the epoch came from."""
    epoch_note: str | None = None
    """Said when a given epoch replaces the run's."""


def _variables(db: Store, dataset_id: int, keep: np.ndarray) -> list[Variable]:
    """The dataset's natural variables restricted to the examples in `keep` (sorted example ids)."""
    values = load_natural_values(db, dataset_id)
    position = np.full(int(keep.max()) + 1 if len(keep) else 0, -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    variables = []
    for spec in load_natural_variables(db, dataset_id).iter_rows(named=True):
        rows = values.filter(pl.col("variable") == spec["variable"])
        example = rows["example_id"].to_numpy()
        inside = example < len(position)
        where = np.where(inside, position[np.minimum(example, len(position) - 1)], -1)
        used = where >= 0
        if spec["kind"] == "categorical":
            # Levels seen in train + val only: a level that exists only in test must not even add a test.
            labels = sorted(set(rows["category"].to_numpy()[used].tolist()), key=_natural_order)
            code_of = {label: i for i, label in enumerate(labels)}
            codes = np.full(len(keep), -1, dtype=np.int64)
            codes[where[used]] = [code_of[c] for c in rows["category"].to_numpy()[used]]
            variables.append(Variable(spec["variable"], "categorical", np.full(len(keep), np.nan), codes, labels,
                                      None))
        else:
            numbers = np.full(len(keep), np.nan)
            numbers[where[used]] = rows["value"].to_numpy()[used]
            variables.append(Variable(spec["variable"], spec["kind"], numbers, None, None, spec["period"]))
    return variables


ACTIVATION_ROW_BYTES = 12 + 8 + 1 + 12 + 12
"""Bytes one stored activation takes while an SAE is ranked: the frame (int32, int32, float32), its row in the
ranked bins (int64), the in-bins mask, the sparse matrix (value, row, column) and its CSC conversion."""

MAX_CONTINUOUS_CODES = 41
"""Codes a continuous or circular variable takes in the association tables at most: 40 bins and missing."""


def check_rank_memory(db: Store, run_id: int, saes: pl.DataFrame, n_rows: int, n_units: int,
                      variables: list[Variable]) -> None:
    """Refuse a ranking whose arrays would not fit, before any is made: the metadata embedding (one column per
    category of each categorical variable, for every ranked bin, built and then stacked), the decoders as
    dense float64 matrices, and for the largest SAE its activations as a sparse matrix and the association
    tables ([features × codes] float64, one per thread and its marginals) of every shuffle thread."""
    columns = sum(len(v.labels or ()) if v.kind == "categorical" else 2 if v.kind == "circular" else 1
                  for v in variables)
    codes = sum(len(v.labels or ()) + 1 if v.kind == "categorical" else MAX_CONTINUOUS_CODES for v in variables)
    embedding = n_rows * columns * 8 * 2
    decoders = int(saes["d_sae"].sum()) * n_units * 8 * 2
    stored = n_activations(db, saes["sae_id"].to_list())
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_sae = max((stored.get(row["sae_id"], 0) * ACTIVATION_ROW_BYTES + row["d_sae"] * codes * 8 * 2 * (threads + 1)
                   for row in saes.iter_rows(named=True)), default=0)
    check_fits(f"run {run_id}: ranking {n_rows:,} bins needs {human_bytes(embedding)} for the metadata embedding "
               f"({columns:,} columns over {len(variables)} variables), {human_bytes(decoders)} for the decoders "
               f"and {human_bytes(per_sae)} per SAE for its activations and association tables "
               f"({codes:,} codes, {threads} threads)", embedding + decoders + per_sae,
               "a variable with very many categories is better imported as a number, or left out"
               if embedding > decoders + per_sae else "use a machine with more memory, or rank fewer bins (--where)")


def _natural_order(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _embedding(variables: list[Variable]) -> tuple[np.ndarray, list[str]]:
    columns = {}
    for v in variables:
        columns[v.name] = (v.kind, v.categories if v.kind == "categorical" else v.values, v.period)
    return metadata_embedding(columns)


def predicate(variable: str, kind: str, value: str) -> str:
    """The text a person reads and labels with: `condition = 3`, `speed in [20, 35)`, or a conjunction
    `position in [0.5, 0.7) and direction = left` (its association row holds the whole text)."""
    if kind in ("categorical", "binary"):
        return f"{variable} = {value}"
    if kind == "conjunction":
        return value
    return f"{variable} {value}"


def rankable_variables(variables: list[Variable], trial_ids: np.ndarray) -> tuple[list[Variable], list[str]]:
    """The variables a label could be tested on held-out trials, and the names of the others with why.

    A variable with one value in the ranked bins says nothing; a categorical one whose every value lies
    in one trial names trials, and splits by whole trials leave no held-out trial to test it on."""
    kept, skipped = [], []
    for v in variables:
        if v.kind == "categorical":
            if len(np.unique(v.categories[v.categories >= 0])) < 2:
                skipped.append(f"{v.name} (one value)")
                continue
            if each_value_in_one_trial(v.categories, trial_ids):
                skipped.append(f"{v.name} (each value lies in one trial)")
                continue
        else:
            values = v.values[np.isfinite(v.values)]
            if len(values) == 0 or values.min() == values.max():
                skipped.append(f"{v.name} (one value)")
                continue
        kept.append(v)
    return kept, skipped


def _suggestions(sae_id: int, assoc: pl.DataFrame, dead: pl.Series, config: RankConfig) -> pl.DataFrame:
    """Up to max_suggestions per feature: its significant associations by selectivity index, positive only
    (a feature less active with a value is not a label of it); none for a dead feature."""
    ordered = assoc.filter((pl.col("q_value") < config.q_threshold) & (pl.col("statistic") > 0)
                           & ~pl.col("feature_id").is_in(dead.implode())).sort(
        [pl.col("feature_id"), (pl.col("statistic") * 100).round(), pl.col("kind") == "conjunction", pl.col("statistic")],
        descending=[False, True, True, True])
    top = ordered.group_by("feature_id", maintain_order=True).head(config.max_suggestions)
    conjunction = pl.col("kind") == "conjunction"
    return top.with_columns(
        pl.lit(sae_id, pl.Int32).alias("sae_id"),
        (pl.int_range(pl.len()).over("feature_id") + 1).cast(pl.Int32).alias("position"),
        pl.struct("variable", "kind", "value").map_elements(
            lambda r: predicate(r["variable"], r["kind"], r["value"]), return_dtype=pl.String).alias("predicate"),
        pl.col("statistic").alias("score"),
        # a conjunction's target is its predicate text alone (engine.validation.labels parses it)
        *(pl.when(conjunction).then(None).otherwise(pl.col(c)).alias(c) for c in ("value", "low", "high")),
    ).select("sae_id", "feature_id", "position", "variable", "predicate", "value", "low", "high", "score",
             "p_value", "q_value", "effect_size")


def combine(sae_id: int, features: pl.DataFrame, assoc: pl.DataFrame, mis: pl.DataFrame,
            stable: pl.DataFrame, suggestions: pl.DataFrame, config: RankConfig) -> pl.DataFrame:
    """The rankings rows of one SAE (see the module docstring for the formula)."""
    first = suggestions.filter(pl.col("position") == 1).select(
        "feature_id", pl.col("predicate").alias("suggestion"), pl.col("score").alias("association"))
    frame = (features
             .join(mis.select("feature_id", pl.col("mis").alias("mis_raw")), on="feature_id", how="left")
             .join(stable.select("feature_id", "stability"), on="feature_id", how="left")
             .join(first, on="feature_id", how="left")
             .with_columns(pl.col("association").fill_null(0.0).clip(0, 1),
                           (2 * (pl.col("mis_raw") - 0.5)).clip(0, 1).fill_nan(None).alias("mis"),
                           pl.col("stability").clip(0, 1)))
    pieces = [pl.col("association"), pl.col("mis").fill_null(0.0)]
    if frame["stability"].null_count() < frame.height:
        pieces.append(pl.col("stability").fill_null(0.0))
    reason = (pl.when(pl.col("dead")).then(pl.lit("dead: never active on train"))
              .when(pl.col("density") > NEAR_CONSTANT_DENSITY)
              .then(pl.lit(f"near-constant: active on more than {NEAR_CONSTANT_DENSITY:.0%} of examples"))
              .otherwise(None))
    frame = frame.with_columns((pl.sum_horizontal(pieces) / len(pieces)).alias("score"), reason.alias("reason"))
    # A feature without a significant suggestion never outranks one with: it offers nothing to label or test.
    frame = frame.sort([pl.col("reason").is_not_null(), pl.col("suggestion").is_null(), "score"],
                       descending=[False, False, True])
    return frame.with_columns(
        pl.lit(sae_id, pl.Int32).alias("sae_id"),
        pl.int_range(1, frame.height + 1, dtype=pl.Int32).alias("rank"),
    ).select("sae_id", "feature_id", "rank", "score", "association", "mis", "stability", "suggestion", "reason")


def rank_run(db: Store, run_id: int, config: RankConfig | None = None,
             report: Callable[[str], None] = lambda _: None,
             on_progress: Callable[[int, int], None] = lambda done, total: None,
             epoch: Epoch | None = None, cancel: threading.Event | None = None) -> RankOutcome:
    """Rank every SAE of a finished run from train + val and store the results.

    `epoch` (--where/--around) ranks on the train + val bins it selects; None: the run's epoch.
    `report` hears each stage (`SAE 3: associations`); `on_progress(done, total)` counts whole SAEs.
    `cancel` set stops it between SAEs and between blocks of shuffles (engine.errors.Cancelled): results
    are stored only at the end, in one transaction, so a cancelled ranking leaves the stored one as it was."""
    config = config or RankConfig()
    started = time.perf_counter()
    run = get_run(db, run_id)
    if run["status"] == "failed":  # a diverged run's message starts "at epoch E, step S: …"
        message = (run["message"] or "no reason was stored").splitlines()[0]
        raise InputError(f"run {run_id} failed{' ' if message.startswith('at epoch') else ': '}{message}; "
                         "train again")
    saes = load_saes(db, run_id)
    if saes.is_empty():
        raise InputError(f"run {run_id} has no trained SAEs (status {run['status']}); train or resume it first")
    dataset = get_dataset(db, run["config"]["dataset"])
    examples = load_examples(db, dataset["dataset_id"])
    epoch, source, note = resolve_epoch(db, run_id, "rank", epoch)
    selection = select_epoch(db, dataset, examples, epoch, "rank", source)
    # A trial whose selected bins have gaps stays one trial for the nulls and MIS (engine/epochs.py says why).
    keep = examples["example_id"].to_numpy()[(examples["split"].to_numpy() != "test") & selection.selected]
    trial_ids = examples["trial_id"].to_numpy()[keep]
    variables, skipped = rankable_variables(_variables(db, dataset["dataset_id"], keep), trial_ids)
    if skipped:
        report(f"not ranked against {', '.join(skipped)}: no held-out trial could test a label on it")
    if not variables:
        raise InputError(f"run {run_id}: dataset '{dataset['name']}' has no variable a label could be tested on in "
                         f"the ranked bins{' (' + ', '.join(skipped) + ')' if skipped else ''}; import behaviour or "
                         "trial variables with it")
    check_rank_memory(db, run_id, saes, len(keep), dataset["n_units"], variables)
    embedding, column_variable = _embedding(variables)
    position = np.full(dataset["n_examples"], -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    sae_ids = saes["sae_id"].to_list()
    decoders = _decoders(db, sae_ids)
    groups = [g["sae_id"].to_list() for g in saes.partition_by("k", maintain_order=True)]
    stable, matches = stability(decoders, groups)
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in
                                            ("associations", "tuning_curves", "mis", "rankings", "suggestions")}
    for done, row in enumerate(saes.iter_rows(named=True)):
        _stop_if_cancelled(cancel, run_id, done, saes.height)
        on_progress(done, saes.height)
        sae_id, d_sae = row["sae_id"], row["d_sae"]
        report(f"SAE {sae_id}: associations")
        acts = load_activations(db, sae_id)
        rows = position[acts["example_id"].to_numpy()]
        used = rows >= 0
        matrix = sp.csc_matrix((acts["value"].to_numpy()[used], (rows[used], acts["feature_id"].to_numpy()[used])),
                               shape=(len(keep), d_sae))
        try:
            assoc = _with_range(associate(matrix, trial_ids, variables, config.associations, cancel)).with_columns(
                pl.lit(sae_id, pl.Int32).alias("sae_id"))
        except Cancelled:
            _stop_if_cancelled(cancel, run_id, done, saes.height)
            raise
        report(f"SAE {sae_id}: tuning curves, MIS")
        curves = tuning_curves(matrix, variables, config.associations).with_columns(
            pl.lit(sae_id, pl.Int32).alias("sae_id"))
        mis = mis_scores(matrix, trial_ids, embedding, column_variable, config.mis)
        features = load_features(db, sae_id)
        suggestions = _suggestions(sae_id, assoc, features.filter(pl.col("dead"))["feature_id"], config)
        parts["associations"].append(assoc)
        parts["tuning_curves"].append(curves)
        parts["mis"].append(_mis_long(sae_id, mis))
        parts["suggestions"].append(suggestions)
        parts["rankings"].append(combine(sae_id, features, assoc, mis,
                                         stable.filter(pl.col("sae_id") == sae_id), suggestions, config))
    _stop_if_cancelled(cancel, run_id, saes.height, saes.height)
    results = RankingResults(**{name: pl.concat(frames, how="diagonal_relaxed") for name, frames in parts.items()},
                             feature_matches=matches)
    report(f"storing the ranking of {saes.height} SAE{'s' if saes.height != 1 else ''}")
    save_ranking(db, sae_ids, results, run_id=run_id, epoch=selection.row())
    on_progress(saes.height, saes.height)
    return RankOutcome(run_id, sae_ids, time.perf_counter() - started, selection, note)


def _stop_if_cancelled(cancel: threading.Event | None, run_id: int, done: int, total: int) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"ranking of run {run_id} cancelled after {done} of {total} SAEs; nothing of it was stored")


def _with_range(assoc: pl.DataFrame) -> pl.DataFrame:
    """Drop field and conjunction rows without a field: a feature never active where the variable has a
    value (e.g. a dead latent), or with a flat tuning curve, has none to test or suggest, and
    `associations.value` is never null."""
    return assoc.filter(pl.col("value").is_not_null())


def _decoders(db: Store, sae_ids: list[int]) -> dict[int, np.ndarray]:
    long = load_decoder(db, sae_ids)
    out = {}
    for (sae_id,), part in long.partition_by("sae_id", as_dict=True).items():
        matrix = np.zeros((part["feature_id"].max() + 1, part["unit_id"].max() + 1))
        matrix[part["feature_id"].to_numpy(), part["unit_id"].to_numpy()] = part["weight"].to_numpy()
        out[sae_id] = matrix
    return out


def _mis_long(sae_id: int, mis: pl.DataFrame) -> pl.DataFrame:
    """One row per feature and variable ('*' = all metadata) for the `mis` table."""
    per_variable = [c for c in mis.columns if c.startswith("mis_") and c != "mis_soft"]
    overall = mis.select("feature_id", pl.lit("*").alias("variable"), "mis", "mis_soft",
                         pl.col("n_tasks_run").alias("n_tasks"), "reason")
    each = [mis.select("feature_id", pl.lit(c.removeprefix("mis_")).alias("variable"), pl.col(c).alias("mis"),
                       pl.lit(None, pl.Float64).alias("mis_soft"), pl.col("n_tasks_run").alias("n_tasks"), "reason")
            for c in per_variable]
    return pl.concat([overall, *each]).with_columns(pl.lit(sae_id, pl.Int32).alias("sae_id"),
                                                    pl.col("mis").fill_nan(None))
