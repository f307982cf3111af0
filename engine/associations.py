"""Associations of every SAE feature with every natural variable, all features at once.

The caller passes train + val examples only (the test split stays out): nonnegative sparse activations
[examples × features], a trial id per example, and the natural variables aligned to the examples. Every
number below comes from per-(feature, value) sums over the active entries only: never a dense
examples × features array, never a loop over features.

Rows: categorical and binary variables give one row per (feature, value); continuous and circular
variables give one row per (feature, variable) for the feature's best range of the variable. Examples
where the variable is missing (NaN, or category code -1) are left out of everything: N examples remain,
n_in with the value (or in the range), A where the feature is active (> 0), m_in = n_on active and in.

  selectivity         f_in / (f_in + f_out), f_in = m_in / n_in, f_out = (A - m_in) / (N - n_in) (NLDisco)
  auroc               P(act_in > act_out) + ½ P(tie): midranks, where all zeros tie and only each
                      feature's nonzeros are sorted (once)
  contrast            (mean_in - mean_out) / (mean + 1e-12), mean over all N: in units of the feature's
                      own mean, so dense and rare features compare
  effect_size         2 · auroc - 1 (rank-biserial correlation, -1 … 1)
  mutual_information  bits between on/off (activation > 0) and the variable's value or bin. On/off, not
                      activation quantiles: SAE features are mostly zero, so quantiles of a feature would
                      be mostly ties; categorical rows repeat the MI with the whole variable
  best range          contiguous bins (wrapping through 0 for circular variables; low > high then) that
                      maximise Σ (share of the feature's activation − share of examples) over the range,
                      i.e. where the tuning curve sits above the feature's mean; selectivity, auroc,
                      contrast and n_on of a range row describe 'in the range' against 'outside it'.
                      Text 'in [lo, hi)'; the top quantile bin also holds its upper edge (the maximum)
  statistic           what the null is computed for. Categorical/binary: the AUROC of the value against
                      the other non-missing examples from midranks over all examples (equals auroc when
                      nothing is missing); one-sided: the feature is more active with the value.
                      Continuous/circular: mutual_information (any tuning shape).
  p_value             (1 + shuffles with statistic ≥ observed) / (1 + n_shuffles); see engine.nulls
  q_value             Benjamini–Hochberg over every row of the call

Undefined numbers (a feature never active, a value held by every example) are null.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.nulls import (
    Member,
    Trials,
    benjamini_hochberg,
    feature_code_table,
    group_members,
    mi_bits,
    mi_statistic,
    null_exceedances,
    null_tail_p,
    rank_statistic,
)

KINDS = ("categorical", "binary", "continuous", "circular")
EPS = 1e-12
"""Added to the feature's mean in the contrast denominator, so a dead feature gets 0, not 0/0."""

COLUMNS = {"feature_id": pl.Int32, "variable": pl.String, "kind": pl.String, "value": pl.String,
           "low": pl.Float64, "high": pl.Float64, "selectivity": pl.Float64, "auroc": pl.Float64,
           "contrast": pl.Float64, "mutual_information": pl.Float64, "statistic": pl.Float64,
           "p_value": pl.Float64, "q_value": pl.Float64, "effect_size": pl.Float64, "n_on": pl.Int64}
CURVE_COLUMNS = {"feature_id": pl.Int32, "variable": pl.String, "bin": pl.Int32, "low": pl.Float64,
                 "high": pl.Float64, "mean": pl.Float64, "sem": pl.Float64, "n": pl.Int64}


@dataclass(frozen=True)
class AssociationConfig:
    n_bins: int = 10
    """Quantile bins for continuous variables (fewer when quantiles tie); circular variables get this many
    equal-width bins over the period."""
    n_shuffles: int = 200
    """Shuffles in each null; p-values are multiples of 1 / (1 + n_shuffles)."""
    min_shift_fraction: float = 0.1
    """A circular shift moves a trial by at least this share of its length, either way round (0 … 0.5):
    a tiny shift of a slow series would leave it almost aligned and make the null too close to observed."""
    seed: int = 0
    """Seeds the shuffles (shuffle s uses [seed, s]), so results do not depend on n_threads."""
    n_threads: int | None = None
    """Threads running shuffles; None: every core this process may use."""

    def __post_init__(self) -> None:
        if self.n_bins < 1 or self.n_shuffles < 0 or not 0 <= self.min_shift_fraction <= 0.5:
            raise ValueError(f"{self}: need n_bins ≥ 1, n_shuffles ≥ 0, 0 ≤ min_shift_fraction ≤ 0.5")


@dataclass
class Variable:
    """One natural variable, already aligned to the examples passed in."""

    name: str
    """Column name, copied into the result."""
    kind: str
    """'categorical', 'binary', 'continuous' or 'circular'."""
    values: np.ndarray | None = None
    """float64 [n], NaN = missing: continuous, circular, binary (0/1)."""
    categories: np.ndarray | None = None
    """int codes [n], -1 = missing: categorical only."""
    labels: list[str] | None = None
    """Label per category code (binary: per 0/1); default: the code as text."""
    period: float | None = None
    """Circular only: 2π for radians, 360 for degrees."""


@dataclass
class _Coded:
    """A variable as one code per example: 0 … n_values-1, and n_values for missing."""

    variable: Variable
    codes: np.ndarray
    n_values: int
    labels: list[str] | None
    edges: np.ndarray | None


@dataclass
class _Entries:
    """The active (nonzero) entries in feature-major order (CSC), with what ranking them needs."""

    n_rows: int
    n_features: int
    rows: np.ndarray
    feature: np.ndarray
    values: np.ndarray
    indptr: np.ndarray

    @classmethod
    def build(cls, activations) -> _Entries:
        matrix = sp.csc_matrix(activations, dtype=np.float64, copy=True)  # copy: the fixes below are in place
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        if matrix.data.size and (matrix.data.min() < 0 or not np.isfinite(matrix.data).all()):
            raise ValueError("activations must be finite and nonnegative")
        n_rows, n_features = matrix.shape
        feature = np.repeat(np.arange(n_features, dtype=np.int64), np.diff(matrix.indptr))
        # int64 rows: np.take would otherwise convert 8M indices on every shuffle; int32 offsets (when
        # they fit) so that the per-shuffle sparse tables need no index conversion either
        offsets = matrix.indptr.astype(np.int32 if matrix.nnz < 2**31 else np.int64)
        return cls(n_rows, n_features, matrix.indices.astype(np.int64), feature, matrix.data, offsets)

    @cached_property
    def per_feature(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.float64)

    @cached_property
    def _ties(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Entries sorted by (feature, value); per sorted entry: first and last position of its tie group,
        and the first position of its feature."""
        # One sort of feature + value / (2 max) is twice as fast as two; it can only misorder values that
        # round to the same key, which the check below catches (then: exact two-pass sort).
        top = 2 * self.values.max() if len(self.values) else 1.0
        order = np.argsort(self.feature + self.values / top)
        feature, values, position = self.feature[order], self.values[order], np.arange(len(order))
        if np.any((values[1:] < values[:-1]) & (feature[1:] == feature[:-1])):
            by_value = np.argsort(self.values)
            narrow = np.int16 if self.n_features <= 2**15 else np.int64  # int16: numpy's stable sort is radix
            order = by_value[np.argsort(self.feature[by_value].astype(narrow), kind="stable")]
            feature, values = self.feature[order], self.values[order]
        new = np.r_[True, (feature[1:] != feature[:-1]) | (values[1:] != values[:-1])]
        start = np.maximum.accumulate(np.where(new, position, 0))
        last = np.r_[new[1:], True]
        end = np.minimum.accumulate(np.where(last, position, len(order))[::-1])[::-1]
        return order, start, end, self.indptr[feature]

    @cached_property
    def global_ranks(self) -> np.ndarray:
        return self.midranks(None)

    def midranks(self, mask: np.ndarray | None) -> np.ndarray:
        """Per entry: midrank (1 …) among its feature's nonzero entries that `mask` keeps (None: all).
        Entries outside the mask get a meaningless number."""
        order, start, end, feature_start = self._ties
        if mask is None:
            ranks_sorted = (start + end) / 2 - feature_start + 1
        else:
            kept = mask[order].astype(np.int64)
            through = np.cumsum(kept)
            before = through - kept
            ranks_sorted = (before[start] - before[feature_start]) + (through[end] - before[start] + 1) / 2
        ranks = np.empty(len(order))
        ranks[order] = ranks_sorted
        return ranks

    def codes_at(self, codes: np.ndarray) -> np.ndarray:
        """The code of each active entry's row, in the index dtype the sparse tables want."""
        return np.take(codes.astype(self.indptr.dtype), self.rows, mode="clip")

    def table(self, entry_codes: np.ndarray, n_codes: int, weights: np.ndarray | None = None) -> np.ndarray:
        """[features, n_codes]: sum of weights (count if None) of the active entries by code."""
        data = np.ones(len(entry_codes)) if weights is None else weights
        return feature_code_table(self.indptr, entry_codes, data, n_codes)


def _encode(variable: Variable, n_rows: int, n_bins: int) -> _Coded:
    kind = variable.kind
    if kind not in KINDS:
        raise ValueError(f"variable '{variable.name}': kind {kind!r} is not one of {', '.join(KINDS)}")
    source = variable.categories if kind == "categorical" else variable.values
    if source is None or len(source) != n_rows:
        raise ValueError(f"variable '{variable.name}': needs {'categories' if kind == 'categorical' else 'values'} "
                         f"for all {n_rows} examples")
    if kind in ("categorical", "binary"):
        if kind == "binary":
            values = np.asarray(source, dtype=np.float64)
            missing = ~np.isfinite(values)
            if np.any((values[~missing] != 0) & (values[~missing] != 1)):
                raise ValueError(f"variable '{variable.name}': binary values must be 0, 1 or NaN")
            raw, given = np.where(missing, -1, values).astype(np.int64), variable.labels or ["0", "1"]
        else:
            raw, given = np.asarray(source).astype(np.int64), variable.labels
            missing = raw < 0
        present = np.unique(raw[~missing])  # only values that occur get a row
        codes = np.where(missing, len(present), np.searchsorted(present, raw)).astype(np.int64)
        labels = [given[c] if given is not None and c < len(given) else str(c) for c in present.tolist()]
        return _Coded(variable, codes, len(present), labels, None)
    values = np.asarray(source, dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.all():  # nothing to bin: the variable gives no rows
        return _Coded(variable, np.zeros(n_rows, np.int64), 0, None, np.zeros(0))
    if kind == "circular":
        period = variable.period
        if period is None or not period > 0:
            raise ValueError(f"variable '{variable.name}': circular needs a positive period")
        phase = np.mod(np.where(missing, 0.0, values), period)
        edges = np.linspace(0.0, period, n_bins + 1)
        codes = np.minimum((phase / period * n_bins).astype(np.int64), n_bins - 1)
    else:
        finite = values[~missing]
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)))  # ties merge bins
        edges = np.r_[edges, edges] if len(edges) == 1 else edges
        codes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    n_values = len(edges) - 1
    return _Coded(variable, np.where(missing, n_values, codes).astype(np.int64), n_values, None, edges)


def _by_trial(codes: np.ndarray, trials: Trials) -> np.ndarray | None:
    """The code of each trial when the variable is constant within every trial (else None)."""
    if trials.n_trials < 2 or np.any((codes[1:] != codes[:-1]) & (trials.row_pos[1:] > 0)):
        return None
    return codes[trials.starts]


def _sums(entries: _Entries, coded: _Coded) -> dict[str, np.ndarray]:
    """Observed per-(feature, value) sums; missing examples dropped."""
    k, codes = coded.n_values, coded.codes
    cells = entries.codes_at(codes)
    on = entries.table(cells, k + 1)[:, :k]
    n_in = np.bincount(codes, minlength=k + 1)[:k].astype(np.float64)
    zeros = n_in.sum() - on.sum(axis=1)
    # ranks among the non-missing examples; the global ones do when no active entry is on a missing one
    ranks = entries.global_ranks if on.sum() == len(cells) else entries.midranks(cells < k)
    rank_weights = ranks + (zeros[entries.feature] - 1) / 2  # rank among N examples, minus the zeros' share
    return {"on": on, "n_in": n_in, "sum": entries.table(cells, k + 1, entries.values)[:, :k],
            "ranks": entries.table(cells, k + 1, rank_weights)[:, :k], "zeros": zeros}


def _scores(on, n_in, total, ranks, s: dict[str, np.ndarray], expand) -> dict[str, np.ndarray]:
    """selectivity, auroc, contrast, effect_size of 'in' (a value or a range) against the rest."""
    big_n = s["n_in"].sum()
    active, zeros, all_sum = expand(s["on"].sum(axis=1)), expand(s["zeros"]), expand(s["sum"].sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        n_out = big_n - n_in
        f_in, f_out = on / n_in, (active - on) / n_out
        auroc = (n_in * (zeros - n_in) / 2 + ranks) / (n_in * n_out)
        contrast = (total / n_in - (all_sum - total) / n_out) / (all_sum / big_n + EPS)
        return {"selectivity": f_in / (f_in + f_out), "auroc": auroc, "contrast": contrast,
                "effect_size": 2 * auroc - 1, "n_on": on}


def _value_frame(coded: _Coded, s: dict[str, np.ndarray], observed, reached) -> pl.DataFrame:
    n_features, k = s["on"].shape
    scores = _scores(s["on"], s["n_in"], s["sum"], s["ranks"], s, lambda x: x[:, None])
    return pl.DataFrame({
        "feature_id": np.repeat(np.arange(n_features), k), "value": np.tile(np.array(coded.labels), n_features),
        "low": np.full(n_features * k, np.nan), "high": np.full(n_features * k, np.nan),
        **{name: x.ravel() for name, x in scores.items()},
        "mutual_information": np.repeat(mi_bits(s["on"], s["n_in"]), k),
        "statistic": observed.ravel(), "reached": reached.ravel(),
    })


def _candidate_ranges(k: int, circular: bool) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every contiguous run of bins, shortest first; circular runs may wrap."""
    pairs = [(start, length) for length in range(1, k + 1) for start in range(k)
             if (start + length <= k if not circular else length < k or start == 0)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _range_frame(coded: _Coded, s: dict[str, np.ndarray], observed, reached) -> pl.DataFrame:
    n_features, k = s["on"].shape
    edges, circular = coded.edges, coded.variable.kind == "circular"
    starts, lengths = _candidate_ranges(k, circular)
    ends = starts + lengths

    def over(x: np.ndarray) -> np.ndarray:  # [..., k] → sum over each candidate range [..., ranges]
        doubled = np.concatenate([x, x], axis=-1)
        cumulative = np.concatenate([np.zeros((*x.shape[:-1], 1)), np.cumsum(doubled, axis=-1)], axis=-1)
        return cumulative[..., ends] - cumulative[..., starts]

    all_sum = s["sum"].sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(all_sum > 0, s["sum"] / all_sum, 0.0) - s["n_in"] / s["n_in"].sum()
    best = np.argmax(over(excess), axis=1)
    pick = np.arange(n_features), best
    scores = _scores(over(s["on"])[pick], over(s["n_in"])[best], over(s["sum"])[pick],
                     over(s["ranks"])[pick], s, lambda x: x)
    low_edge, high_edge = edges[starts], edges[np.where(ends > k, ends - k, ends)]
    texts = np.array([f"in [{lo:.4g}, {hi:.4g})" for lo, hi in zip(low_edge, high_edge, strict=True)])
    dead = s["on"].sum(axis=1) == 0  # no activation: no best range
    return pl.DataFrame({
        "feature_id": np.arange(n_features), "value": texts[best],
        "low": np.where(dead, np.nan, low_edge[best]), "high": np.where(dead, np.nan, high_edge[best]),
        **scores, "mutual_information": observed, "statistic": observed, "reached": reached,
    }).with_columns(value=pl.when(pl.Series(dead)).then(None).otherwise(pl.col("value")))


def associate(activations, trial_ids: np.ndarray, variables: list[Variable],
              config: AssociationConfig = AssociationConfig()) -> pl.DataFrame:
    """One row per (feature, variable, value or best range), columns COLUMNS; see the module docstring."""
    entries = _Entries.build(activations)
    trial_ids = np.asarray(trial_ids)
    if len(trial_ids) != entries.n_rows:
        raise ValueError(f"{len(trial_ids)} trial ids for {entries.n_rows} examples")
    trials = Trials.from_ids(trial_ids)
    coded = [_encode(v, entries.n_rows, config.n_bins) for v in variables]
    zeros_all = entries.n_rows - entries.per_feature
    by_rank = rank_statistic(entries.n_rows, zeros_all)
    ranked, counted = [], []
    for key, c in enumerate(coded):
        if c.n_values == 0:
            continue
        categorical = c.variable.kind in ("categorical", "binary")
        member = Member(key, c.n_values + 1, c.codes, _by_trial(c.codes, trials),
                        by_rank if categorical else mi_statistic)
        (ranked if categorical else counted).append(member)
    groups = []
    if ranked:
        groups += group_members(ranked, entries.global_ranks + (zeros_all[entries.feature] - 1) / 2)
    if counted:  # float32 ones count exactly below 2^24 per cell, and read half the memory
        ones = np.ones(len(entries.rows), np.float32 if entries.n_rows < 2**24 else np.float64)
        groups += group_members(counted, ones)
    results = null_exceedances(groups, entries.rows, entries.indptr, trials, config.n_shuffles,
                               config.min_shift_fraction, config.seed, config.n_threads)
    frames = []
    for key, summary in sorted(results.items()):
        c = coded[key]
        categorical = c.variable.kind in ("categorical", "binary")
        build = _value_frame if categorical else _range_frame
        frame = build(c, _sums(entries, c), summary.observed, summary.reached)
        p_values = null_tail_p(summary, config.n_shuffles, cube_root=not categorical).ravel()
        frames.append(frame.with_columns(variable=pl.lit(c.variable.name), kind=pl.lit(c.variable.kind),
                                         p_value=pl.Series(p_values)))
    if not frames:
        return pl.DataFrame(schema=COLUMNS)
    result = pl.concat(frames, how="diagonal_relaxed")
    result = result.with_columns(q_value=pl.Series(benjamini_hochberg(result["p_value"].to_numpy())))
    return _finish(result, COLUMNS)


def tuning_curves(activations, variables: list[Variable],
                  config: AssociationConfig = AssociationConfig()) -> pl.DataFrame:
    """Mean activation ± SEM per bin of each continuous or circular variable, every feature; missing
    examples left out. SEM = sample SD (ddof 1, zeros included) / √n; null where n < 2."""
    entries = _Entries.build(activations)
    frames = []
    for variable in variables:
        if variable.kind not in ("continuous", "circular"):
            continue
        c = _encode(variable, entries.n_rows, config.n_bins)
        k = c.n_values
        if k == 0:
            continue
        n_in = np.bincount(c.codes, minlength=k + 1)[:k].astype(np.float64)
        cells = entries.codes_at(c.codes)
        total = entries.table(cells, k + 1, entries.values)[:, :k]
        squares = entries.table(cells, k + 1, entries.values**2)[:, :k]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total / n_in
            variance = np.maximum(squares - total * mean, 0.0) / (n_in - 1)
            sem = np.where(n_in > 1, np.sqrt(variance / n_in), np.nan)
        frames.append(pl.DataFrame({
            "feature_id": np.repeat(np.arange(entries.n_features), k), "variable": variable.name,
            "bin": np.tile(np.arange(k), entries.n_features), "low": np.tile(c.edges[:-1], entries.n_features),
            "high": np.tile(c.edges[1:], entries.n_features), "mean": mean.ravel(), "sem": sem.ravel(),
            "n": np.tile(n_in, entries.n_features),
        }))
    return _finish(pl.concat(frames, how="diagonal_relaxed"), CURVE_COLUMNS) if frames else \
        pl.DataFrame(schema=CURVE_COLUMNS)


def _finish(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Columns in schema order and types, NaN (undefined) as null."""
    return frame.select(
        pl.col(name).cast(dtype).fill_nan(None) if dtype == pl.Float64 else pl.col(name).cast(dtype)
        for name, dtype in schema.items()
    )
