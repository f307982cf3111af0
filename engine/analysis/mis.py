"""MIS on metadata: the Mechanistic Interpretability Score (Zimmermann et al., "Measuring Mechanistic
Interpretability at Scale Without Humans") with examples described by their metadata instead of images.

Per feature and task: K+1 examples drawn from the feature's top pool and K+1 from its bottom pool; in each
draw the K most extreme are the explanations (E⁺, E⁻) and the least extreme is the query (q⁺, q⁻), and no
explanation shares the query's trial (bins of one trial share context, so a same-trial match would
score the trial, not the feature). With s(q, E) the mean similarity of q to E,
Δ = [s(q⁺,E⁺) − s(q⁺,E⁻)] − [s(q⁻,E⁺) − s(q⁻,E⁻)], and a task is solved when Δ > 0.

Similarity is the negative *squared* Euclidean distance on the standardised metadata embedding. It is a
sum over variables, so a variable's score uses exactly its own terms of the full Δ, and the spread of E
cancels out of Δ, leaving Δ = 2 (q⁺ − q⁻) · (ē⁺ − ē⁻) with ē the centroids: a few array ops per feature.
Cosine was rejected: an example at the mean of every variable embeds as a zero vector, and cosine
restricted to one z-scored column is only a sign.

Pools. The bottom pool is every example at or below the feature's `quantile` quantile (ties included), so
for a sparse feature it is every example where the feature is silent. The top pool is the strongest
⌈quantile · n_active⌉ (but at least k+1) of the n_active examples above that threshold: for a sparse
feature, the top quarter of its activations. Pools over `pool_cap` are subsampled uniformly once per feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

TIE_TOLERANCE = 1e-9
"""|Δ| at or below this is a tie, scored ½: discrete metadata makes exact ties common (an unrelated binary
variable gives q⁺ = q⁻ in half the tasks), and counting them as failures would put chance at 0.25."""


@dataclass(frozen=True)
class MISConfig:
    n_tasks: int = 100
    """Tasks per feature; the binomial standard error of a score is ≤ 0.5/√n_tasks (0.05 at 100)."""
    k: int = 9
    """Explanations per side and task; k+1 examples are drawn per side, the least extreme is the query."""
    quantile: float = 0.25
    """Size of the bottom pool (fraction of all examples) and of the top pool (fraction of active ones)."""
    seed: int = 0
    """Base seed; feature f draws from default_rng([seed, f]), so its score depends on its own column and
    index, never on the other features."""
    alpha: float = 1.0
    """mis_soft = mean σ(α Δ). Δ is in squared standardised units (every variable has total variance 1),
    and a variable that fully separates top from bottom adds a few units, so α = 1 puts σ(1) ≈ 0.73 on
    a one-unit Δ and saturates near 1 for a clean feature."""
    pool_cap: int = 2048
    """Pools larger than this are subsampled uniformly, once per feature: bounds the sorting per feature
    (a bottom pool can be every silent example of a million)."""


def _zscore(v: np.ndarray) -> np.ndarray:
    mean, std = np.nanmean(v), np.nanstd(v)
    z = (v - mean) / std if std > 0 else np.zeros_like(v)
    return np.nan_to_num(z, nan=0.0)  # missing -> the mean: pulls the example toward no one in particular


def _unit_weight(block: np.ndarray) -> np.ndarray:
    # A variable's weight is its total variance; scaling it to 1 (that of one z-scored column) keeps a
    # 20-level category from outweighing a speed in the distance just because it spans 20 columns.
    total = float(block.var(axis=0).sum())
    return block / math.sqrt(total) if total > 0 else block


def metadata_embedding(
    columns: dict[str, tuple[str, np.ndarray, float | None]],
) -> tuple[np.ndarray, list[str]]:
    """[n, m] embedding of the metadata and the variable of each of its m columns.

    columns: name -> (kind, values, period). continuous / binary: z-scored, NaN -> 0 (the mean).
    categorical: int codes, one-hot, -1 (missing) -> all zeros, scaled to total variance 1.
    circular: (cos, sin) of 2π·v/period, NaN -> (0, 0) (the circle's centre), scaled to total variance 1.
    """
    blocks, owners = [], []
    for name, (kind, values, period) in columns.items():
        if kind in ("continuous", "binary"):
            block = _zscore(np.asarray(values, dtype=np.float64))[:, None]
        elif kind == "categorical":
            codes = np.asarray(values).astype(np.int64)
            block = np.zeros((len(codes), int(codes.max(initial=-1)) + 1))
            block[np.flatnonzero(codes >= 0), codes[codes >= 0]] = 1.0
            block = _unit_weight(block)
        elif kind == "circular" and period:
            angle = 2 * np.pi * np.asarray(values, dtype=np.float64) / period
            block = _unit_weight(np.nan_to_num(np.stack([np.cos(angle), np.sin(angle)], axis=1), nan=0.0))
        elif kind == "circular":
            raise ValueError(f"circular variable '{name}' needs a period")
        else:
            raise ValueError(f"variable '{name}': unknown kind '{kind}'")
        blocks.append(block)
        owners += [name] * block.shape[1]
    return np.hstack(blocks), owners


def _pools(rows: np.ndarray, vals: np.ndarray, dense: np.ndarray | None, n: int, config: MISConfig,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | str:
    """(top, bottom) example indices, each ordered most extreme first (ties in random order), or a reason."""
    q, k = config.quantile, config.k
    lower = math.floor(q * (n - 1))  # position of the quantile in sorted order ("lower" method)
    silent_bottom = len(vals) == 0 or (vals.min() > 0 and lower < n - len(rows))
    if silent_bottom:  # the quantile is 0: the bottom pool is the silent examples, never materialised
        above, above_vals = rows, vals
    else:
        x = dense if dense is not None else np.zeros(n)
        x[rows] = vals
        b = np.partition(x, lower)[lower]
        above, low = np.flatnonzero(x > b), np.flatnonzero(x <= b)
        above_vals, bottom = x[above], low[np.lexsort((rng.random(len(low)), x[low]))]
    if len(above) < k + 1:  # most features of a big SAE stop here, before any bottom work
        return f"active on {len(above)} examples, needs at least k+1 = {k + 1}"
    if silent_bottom:
        n_bottom = n - len(rows)
        u = rng.choice(n_bottom, min(config.pool_cap, n_bottom), replace=False)  # random order = tie order
        bottom = u + np.searchsorted(rows - np.arange(len(rows)), u, side="right")  # the u-th silent one
    size = max(k + 1, math.ceil(q * len(above)))
    cut = np.partition(above_vals, len(above) - size)[len(above) - size]  # size-th largest, ties kept
    head = np.flatnonzero(above_vals >= cut)  # sort only the top, not every active example
    top = above[head[np.lexsort((rng.random(len(head)), -above_vals[head]))]][:size]
    if len(top) > config.pool_cap:  # sorted positions keep the extremeness order
        top = top[np.sort(rng.choice(len(top), config.pool_cap, replace=False))]
    if len(bottom) > config.pool_cap:
        bottom = bottom[np.sort(rng.choice(len(bottom), config.pool_cap, replace=False))]
    return top, bottom


def _draw(pool: np.ndarray, trials: np.ndarray, config: MISConfig, rng: np.random.Generator,
          side: str) -> tuple[np.ndarray, np.ndarray] | str:
    """Queries [T] and explanations [T, K] (example indices) from one pool ordered most extreme first.

    A valid draw is K+1 pool members whose least extreme (the query) shares its trial with none of the
    other K. Drawing the query with weight C(m, K), m = members more extreme than it in other trials,
    then K of those m uniformly, gives every valid draw the same probability: no rejection loop.
    """
    k, n_pool = config.k, len(pool)
    trial = trials[pool]
    order = np.argsort(trial, kind="stable")  # stable: within a trial, members stay in rank order
    sorted_trial = trial[order]
    starts = np.r_[True, sorted_trial[1:] != sorted_trial[:-1]]
    if starts.sum() < 2:
        return f"{side} examples all in one trial"
    rank = np.arange(n_pool)
    m = rank.copy()  # members ranked before each one, minus those in its own trial
    m[order] -= rank - np.maximum.accumulate(np.where(starts, rank, 0))
    ok = m >= k
    if not ok.any():
        return f"{side} examples in too few trials to draw k = {k} from trials other than the query's"
    log_w = np.full(n_pool, -np.inf)
    log_w[ok] = np.log(m[ok, None] - np.arange(k)).sum(axis=1)  # log C(m, K) up to a constant
    w = np.exp(log_w - log_w.max())
    query = rng.choice(n_pool, config.n_tasks, p=w / w.sum())
    return pool[query], pool[_pick(query, trial, k, rng)]


def _pick(query: np.ndarray, trial: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per task, k distinct pool ranks drawn uniformly among those before its query in other trials.

    i.i.d. candidates uniform on [0, query) that survive the trial filter are uniform on the eligible set,
    and the first k distinct of them a uniform k-subset: 3k+8 candidates per task instead of a key per
    pool member (25× less work at pool_cap 2048). Tasks left short redo it with a key per member.
    """
    n_tasks, width = len(query), 3 * k + 8
    cand = (rng.random((n_tasks, width)) * query[:, None]).astype(np.int64)
    by_value = np.argsort(cand, axis=1, kind="stable")  # stable: the first-drawn copy comes first
    sorted_cand = np.take_along_axis(cand, by_value, axis=1)
    repeat = np.zeros_like(cand, dtype=bool)
    np.put_along_axis(repeat, by_value[:, 1:], sorted_cand[:, 1:] == sorted_cand[:, :-1], axis=1)
    valid = ~repeat & (trial[cand] != trial[query][:, None])
    first = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # first k valid, in drawing order
    picked = np.take_along_axis(cand, first, axis=1)
    short = np.flatnonzero(valid.sum(axis=1) < k)
    if len(short):
        span = int(query[short].max())
        rank = np.arange(span)
        eligible = (rank < query[short, None]) & (trial[:span] != trial[query[short]][:, None])
        keys = np.where(eligible, rng.random((len(short), span)), 2.0)
        picked[short] = np.argpartition(keys, k - 1, axis=1)[:, :k]  # m ≥ k eligible: the k smallest are
    return picked


def _feature_draws(column: tuple[np.ndarray, np.ndarray, np.ndarray | None], trial_ids: np.ndarray,
                   n: int, feature: int, config: MISConfig) -> dict[str, np.ndarray] | str:
    rng = np.random.default_rng([config.seed, feature])
    pools = _pools(*column, n, config, rng)
    if isinstance(pools, str):
        return pools
    draws = {}
    for side, pool in zip(("top", "bottom"), pools, strict=True):
        drawn = _draw(pool, trial_ids, config, rng, side)
        if isinstance(drawn, str):
            return drawn
        draws[f"query_{side}"], draws[f"expl_{side}"] = drawn
    return draws


def _columns(activations):
    """feature -> (active rows ascending, their values, dense column or None)."""
    if hasattr(activations, "tocsc"):  # scipy sparse, duck-typed so the engine needs no scipy import
        csc = activations.tocsc()
        csc = csc if csc.has_sorted_indices else csc.sorted_indices()
        def get(f):
            part = slice(csc.indptr[f], csc.indptr[f + 1])
            rows, vals = csc.indices[part].astype(np.int64), np.asarray(csc.data[part], dtype=np.float64)
            nonzero = vals != 0  # explicit zeros are silence
            return rows[nonzero], vals[nonzero], None
    else:
        dense = np.asarray(activations)
        def get(f):
            x = np.ascontiguousarray(dense[:, f], dtype=np.float64)
            rows = np.flatnonzero(x)
            return rows, x[rows], x
    return get


def draw_tasks(activations, trial_ids: np.ndarray, feature: int,
               config: MISConfig = MISConfig()) -> dict[str, np.ndarray] | str:
    """The examples mis_scores draws for one feature (query_top [T], expl_top [T, K], query_bottom,
    expl_bottom), or the reason it gets NaN. For checks and for showing a person the tasks."""
    return _feature_draws(_columns(activations)(feature), np.asarray(trial_ids), activations.shape[0],
                          feature, config)


def _solved(delta: np.ndarray) -> np.ndarray:
    return np.where(np.abs(delta) <= TIE_TOLERANCE, 0.5, (delta > 0).astype(np.float64))


def mis_scores(activations, trial_ids: np.ndarray, embedding: np.ndarray, column_variable: list[str],
               config: MISConfig = MISConfig()) -> pl.DataFrame:
    """One row per feature: feature_id, mis, mis_soft, n_tasks_run, mis_<variable>..., reason.

    activations: [n, n_features] ndarray or scipy sparse matrix; trial_ids: [n]; embedding: [n, m] from
    metadata_embedding, column_variable its m column owners. Unscorable features get NaN and a reason.
    """
    n, n_features = activations.shape
    trial_ids = np.asarray(trial_ids)
    embedding = np.asarray(embedding, dtype=np.float64)
    if len(trial_ids) != n or embedding.shape[0] != n or embedding.shape[1] != len(column_variable):
        raise ValueError("activations, trial_ids, embedding and column_variable disagree in size")
    if config.k < 1 or config.n_tasks < 1 or not 0 < config.quantile <= 0.5:
        raise ValueError("need k ≥ 1, n_tasks ≥ 1 and 0 < quantile ≤ 0.5")
    variables = list(dict.fromkeys(column_variable))
    names = [f"mis_{v}" for v in variables]
    if len(set(names) | {"mis", "mis_soft"}) != len(names) + 2:
        raise ValueError("variable names collide with each other or with mis_soft")
    owner = np.zeros((len(column_variable), len(variables)))
    owner[np.arange(len(column_variable)), [variables.index(v) for v in column_variable]] = 1.0
    mis, soft = np.full(n_features, np.nan), np.full(n_features, np.nan)
    per_var = np.full((n_features, len(variables)), np.nan)
    n_run = np.zeros(n_features, dtype=np.int32)
    reason: list[str | None] = [None] * n_features
    get = _columns(activations)
    for f in range(n_features):
        draws = _feature_draws(get(f), trial_ids, n, f, config)
        if isinstance(draws, str):
            reason[f] = draws
            continue
        gap_query = embedding[draws["query_top"]] - embedding[draws["query_bottom"]]  # [T, m]
        gap_expl = embedding[draws["expl_top"]].mean(1) - embedding[draws["expl_bottom"]].mean(1)
        delta_var = 2.0 * (gap_query * gap_expl) @ owner  # [T, V]: each variable's share of Δ
        delta = delta_var.sum(axis=1)
        mis[f], per_var[f] = _solved(delta).mean(), _solved(delta_var).mean(axis=0)
        soft[f] = float(np.mean(0.5 * (1.0 + np.tanh(0.5 * config.alpha * delta))))  # σ without overflow
        n_run[f] = len(delta)
    frame = {"feature_id": np.arange(n_features, dtype=np.int32), "mis": mis, "mis_soft": soft,
             "n_tasks_run": n_run}
    frame.update({name: per_var[:, j] for j, name in enumerate(names)})
    return pl.DataFrame(frame).with_columns(pl.Series("reason", reason, dtype=pl.String))
