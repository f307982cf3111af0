"""Selectivity statistics of sparse features: how variables are binned, a feature's field on its tuning
curve, and the selectivity index of values, fields and conjunctions, each computable from one
[features × codes] table of summed activations so that every shuffle of the null repeats it.

Why a selectivity index and not an AUROC over all bins: a feature that is 95 % selective for a stretch
of the track but active in 20 bins of 3,000 has an AUROC of about 0.503 (its zeros tie with everything),
so a dense score ranks it by accident of density. The selectivity index compares the feature's mean
activation in and out of the value or field, SI = (μ_in − μ_out) / (μ_in + μ_out) (−1 … 1; 1 = active only
in it), the index physiologists use for preferred against non-preferred stimuli. It does not depend on how
often the feature fires; its null (engine.analysis.nulls) says whether the difference could be chance, which for a
feature seen in a few bins it usually could.

Binning. Continuous variables get equal-width bins whose width is a readable step (1, 2, 2.5 or 5 × 10^n)
chosen so that bins hold about `min_rows_per_bin` examples (between `min_bins` and `max_bins` of them), from
the 1st to the 99th percentile; the few examples beyond fall in open outer bins (−inf or inf edge).
Circular variables with at most MAX_DISCRETE_LEVELS distinct values (eight reach targets) get one bin per
level; other circular variables get equal-width bins over the period.

Fields. A feature's field on a variable is the contiguous run of bins around its tuning-curve peak whose
mean stays at or above half the height from the curve's minimum to its peak (wrapping through 0 on circular
variables): a place field read the usual way. The null repeats this search on every shuffle, so the
p-value of a field accounts for its having been chosen.

Conjunctions `x in field and v = c`: per level c of v, the field of x among the bins where v = c; c is the
level whose conjunction beats both parts most (the larger minimum of the two indices below), and the null
repeats that choice. It beats `v = c` when, among bins with v = c, the feature prefers the field (x moved by
the null, v kept in place); it beats `x in field` when, among bins in the field, it prefers v = c (v moved,
x kept). Both must hold, so its p-value is the larger of the two (an intersection–union test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

MAX_DISCRETE_LEVELS = 20
"""A circular variable with at most this many distinct values is read as levels, not binned."""
NICE_STEPS = (1.0, 2.0, 2.5, 5.0)
CIRCULAR_BIN_COUNTS = (8, 12, 18, 24, 36)
"""Equal-width bin counts for circular variables: 45°, 30°, 20°, 15°, 10°."""


@dataclass(frozen=True)
class Binning:
    n_bins: int | None = None
    """Bins per continuous or circular variable; None: chosen from the data (see the module docstring)."""
    min_rows_per_bin: int = 150
    """Examples a bin should hold when the number of bins is chosen: fewer make tuning curves noisy."""
    min_bins: int = 8
    """Fewest bins when chosen."""
    max_bins: int = 40
    """Most bins when chosen."""

    def __post_init__(self) -> None:
        if (self.n_bins is not None and self.n_bins < 1) or self.min_rows_per_bin < 1 \
                or not 1 <= self.min_bins <= self.max_bins:
            raise ValueError(f"{self}: need n_bins ≥ 1, min_rows_per_bin ≥ 1, 1 ≤ min_bins ≤ max_bins")


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
class Coded:
    """A variable as one code per example: 0 … n_values-1, and n_values for missing."""

    variable: Variable
    codes: np.ndarray
    n_values: int
    labels: list[str] | None
    edges: np.ndarray | None
    """Bin edges (n_values + 1) of continuous and circular variables; the last circular edge is the first
    plus the period."""


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^n that is at least `raw` (> 0)."""
    power = 10.0 ** math.floor(math.log10(raw))
    return next((s * power for s in NICE_STEPS if s * power >= raw * (1 - 1e-9)), 10 * power)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step)) + 2)


def continuous_edges(values: np.ndarray, binning: Binning) -> np.ndarray:
    """Readable equal-width edges over the 1st–99th percentile of the finite `values`, open at an end
    that has examples beyond it."""
    low, high = np.quantile(values, [0.01, 0.99])
    if not high > low:
        low, high = values.min(), values.max()
    if not high > low:
        return np.array([low, low])
    target = binning.n_bins or int(np.clip(len(values) // binning.min_rows_per_bin, binning.min_bins,
                                           binning.max_bins))
    step = nice_step((high - low) / target)
    first, count = math.floor(low / step), math.floor(high / step) - math.floor(low / step) + 1
    edges = np.round((first + np.arange(count + 1)) * step, _decimals(step))
    if values.min() < edges[0]:  # the tail below the 1st percentile joins the first bin, left open
        edges[0] = -np.inf
    if values.max() >= edges[-1]:
        edges[-1] = np.inf
    return edges


def encode(variable: Variable, n_rows: int, binning: Binning) -> Coded:
    kind = variable.kind
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
        return Coded(variable, codes, len(present), labels, None)
    values = np.asarray(source, dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.all():  # nothing to bin: the variable gives no rows
        return Coded(variable, np.zeros(n_rows, np.int64), 0, None, np.zeros(0))
    if kind == "circular":
        period = variable.period
        if period is None or not period > 0:
            raise ValueError(f"variable '{variable.name}': circular needs a positive period")
        phase = np.mod(np.where(missing, 0.0, values), period)
        levels = np.unique(phase[~missing])
        if len(levels) <= MAX_DISCRETE_LEVELS and binning.n_bins is None:
            edges = np.r_[levels, levels[0] + period]  # one bin per level: [level, next level)
            codes = np.searchsorted(levels, phase)
        else:
            k = binning.n_bins or max([c for c in CIRCULAR_BIN_COUNTS
                                       if c * binning.min_rows_per_bin <= (~missing).sum()] or [8])
            edges = np.linspace(0.0, period, k + 1)
            codes = np.minimum((phase / period * k).astype(np.int64), k - 1)
    else:
        edges = continuous_edges(values[~missing], binning)
        codes = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    n_values = len(edges) - 1
    return Coded(variable, np.where(missing, n_values, codes).astype(np.int64), n_values, None, edges)


def selectivity_index(sum_in, n_in, sum_all, n_all) -> np.ndarray:
    """(μ_in − μ_out) / (μ_in + μ_out) of mean activations; NaN where either side is empty or both are 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_in = sum_in / n_in
        mean_out = (sum_all - sum_in) / (n_all - n_in)
        return (mean_in - mean_out) / (mean_in + mean_out)


def field_mask(means: np.ndarray, circular: bool) -> np.ndarray:
    """[features, k] bool: each feature's field, the contiguous bins around its peak at or above half
    height (NaN bins, where no example falls, are never in it). All False where the curve is flat."""
    n_features, k = means.shape
    filled = np.where(np.isnan(means), -np.inf, means)
    peak = np.argmax(filled, axis=1)
    top = filled[np.arange(n_features), peak]
    bottom = np.min(np.where(np.isnan(means), np.inf, means), axis=1)
    with np.errstate(invalid="ignore"):  # flat or empty curves: inf - inf, masked out below
        above = (filled >= (bottom + (top - bottom) / 2)[:, None]) & (top > bottom)[:, None]
    # The run of bins above half height that holds the peak, bounded by the nearest bin below it on each
    # side: on a circle, three copies side by side with the peak in the middle one (a bin below half
    # height always exists, so the run is shorter than the circle).
    copies = 3 if circular else 1
    line = np.tile(above, copies)
    centre = peak + (k if circular else 0)
    index = np.arange(copies * k)
    below = ~line
    left = np.where(below & (index < centre[:, None]), index, -1).max(axis=1) + 1
    right = np.where(below & (index > centre[:, None]), index, copies * k).min(axis=1) - 1
    run = (index >= left[:, None]) & (index <= right[:, None]) & (top > bottom)[:, None]
    return run.reshape(n_features, copies, k).any(axis=1)


class Field(NamedTuple):
    start: np.ndarray
    """[features] first bin of the field (−1: none)."""
    length: np.ndarray
    """[features] bins in it (0: none)."""


def field_bounds(mask: np.ndarray, circular: bool) -> Field:
    """First bin and length of each feature's (contiguous, possibly wrapping) field."""
    n_features, k = mask.shape
    length = mask.sum(axis=1)
    previous = np.roll(mask, 1, axis=1) if circular else np.c_[np.zeros((n_features, 1), bool), mask[:, :-1]]
    starts = mask & ~previous
    start = np.where(length == k, 0, np.argmax(starts, axis=1))
    return Field(np.where(length > 0, start, -1), length)


def value_statistic(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[features, k] selectivity index of each value against the other non-missing examples."""
    sums, n = table[:, :-1], rows[:-1]
    return selectivity_index(sums, n, sums.sum(axis=1, keepdims=True), n.sum())


def tuning_means(sums: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, sums / n, np.nan)


def field_statistic(circular: bool):
    """Statistic of a continuous or circular member: the selectivity index of the field found anew."""
    def statistic(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        sums, n = table[:, :-1], rows[:-1]
        mask = field_mask(tuning_means(sums, n), circular)
        return selectivity_index((sums * mask).sum(axis=1), (n * mask).sum(axis=1), sums.sum(axis=1), n.sum())
    return statistic


class Conjunction(NamedTuple):
    level: np.ndarray
    """[features] chosen level c of the categorical variable."""
    mask: np.ndarray
    """[features, kx] the field of x among bins with v = c."""
    beats_level: np.ndarray
    """[features] SI of the field against the rest of x, among bins with v = c."""
    beats_field: np.ndarray
    """[features] SI of v = c against the other levels, among bins in the field."""
    overall: np.ndarray
    """[features] SI of the conjunction against every other bin."""


def conjunction(sums: np.ndarray, n: np.ndarray, circular: bool) -> Conjunction:
    """Choose each feature's conjunction from joint sums [features, kx, kv] and rows [kx, kv] (missing
    codes dropped); see the module docstring."""
    n_features, kx, kv = sums.shape
    by_level = sums.transpose(0, 2, 1)  # [F, kv, kx]: the tuning curve of x within each level
    masks = field_mask(tuning_means(by_level, n.T[None, :, :]).reshape(-1, kx), circular).reshape(n_features, kv, kx)
    conj_sum, conj_n = (by_level * masks).sum(axis=2), (n.T[None] * masks).sum(axis=2)  # [F, kv]
    beats_level = selectivity_index(conj_sum, conj_n, by_level.sum(axis=2), n.sum(axis=0)[None, :])
    field_sum = np.einsum("fcx,fx->fc", masks, sums.sum(axis=2))
    field_n = masks @ n.sum(axis=1)
    beats_field = selectivity_index(conj_sum, conj_n, field_sum, field_n)
    overall = selectivity_index(conj_sum, conj_n, sums.sum(axis=(1, 2))[:, None], n.sum())
    level = np.argmax(np.nan_to_num(np.minimum(beats_level, beats_field), nan=-np.inf), axis=1)
    rows = np.arange(n_features)
    return Conjunction(level, masks[rows, level], beats_level[rows, level], beats_field[rows, level],
                       overall[rows, level])


def conjunction_statistic(kx: int, kv: int, circular: bool, moving: str):
    """Statistic of one of a conjunction's two tests. The member's codes are moving × n_fixed + fixed:
    moving = 'x' (x shuffled, v fixed: does the field beat v = c alone?) or 'v' (v shuffled, x fixed: does
    v = c beat the field alone?)."""
    def statistic(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if moving == "x":
            joint, joint_rows = table.reshape(-1, kx + 1, kv + 1), rows.reshape(kx + 1, kv + 1)
        else:
            joint = table.reshape(-1, kv + 1, kx + 1).transpose(0, 2, 1)
            joint_rows = rows.reshape(kv + 1, kx + 1).T
        chosen = conjunction(joint[:, :kx, :kv], joint_rows[:kx, :kv], circular)
        return chosen.beats_level if moving == "x" else chosen.beats_field
    return statistic
