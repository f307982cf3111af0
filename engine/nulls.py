"""Nulls for feature–variable associations: shuffles that keep autocorrelation, counted sparsely.

Why not a per-example permutation: spike-derived features and most behavioural variables are slow, so
two independent slow series line up by chance over stretches of many examples, and a permutation that
scatters single examples calls those coincidences significant. Instead the variable is shifted
circularly within each trial (the same as shifting the features the other way): both series keep their
autocorrelation and every trial keeps its level, only their alignment is broken. Two exceptions:

- trials shorter than MIN_SHIFT_TRIAL examples cannot be shifted meaningfully, so those trials swap
  whole blocks among themselves (block permutation);
- a variable that is constant within every trial (condition, choice) would not move under any shift
  (its null would equal the observed value, p = 1 for everything), so whole trials swap values instead.

Shifts go through a hub (see null_exceedances), which keeps the p-values exact although shifts have a
minimum size.

One shuffle (one offset per trial, one trial permutation) serves every feature and every variable of
the call: all features' statistics are recomputed from one gather and one pass over the active entries
per group of variables, instead of one shuffle per feature. Each feature's p-value is still a valid
Monte-Carlo p-value; p-values of different features share their shuffles, so they are dependent, which
Benjamini–Hochberg tolerates for the positive dependence this gives. Shuffles are seeded by their index,
so they run on several threads with identical results (numpy's take and scipy's sparse-to-dense
conversion release the GIL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import xlogy

MIN_SHIFT_TRIAL = 5
"""Trials with fewer examples than this are block-permuted, not shifted: a shift of 1–4 examples of a
slow series barely moves it."""

MAX_GROUP_CODES = 512
"""Variables are counted together while the product of their code counts stays at or below this. One
pass over the combined code replaces one per variable (each pass touches every active entry);
past ~512 cells per feature the table no longer sits in cache and its marginals cost more than they save."""

SHUFFLE_BLOCK = 8
"""Shuffles a thread runs per task; blocks are summed in order so results do not depend on threads."""

TIE_TOLERANCE = 1e-12
"""A null statistic this close below the observed one counts as reaching it (conservative): equal counts
give bit-identical statistics, but different counts can reach mathematically equal values by other
float paths."""


@dataclass(frozen=True)
class Trials:
    """Runs of equal consecutive trial ids, and per-row bookkeeping for shifting within them."""

    starts: np.ndarray
    """First row of each trial, int64."""
    lengths: np.ndarray
    """Rows per trial, int64."""
    row_start: np.ndarray
    """[n] first row of each row's trial."""
    row_pos: np.ndarray
    """[n] position of each row within its trial."""
    row_len: np.ndarray
    """[n] length of each row's trial."""
    short_rows: np.ndarray
    """Rows of trials shorter than MIN_SHIFT_TRIAL, trial by trial: where the block permutation writes."""

    @classmethod
    def from_ids(cls, trial_ids: np.ndarray) -> Trials:
        ids = np.asarray(trial_ids)
        n = len(ids)
        # A trial is a run of equal ids: the caller promises contiguity, and a run is what a shift needs.
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if n else np.zeros(0, np.int64)
        lengths = np.diff(np.r_[starts, n]).astype(np.int64)
        starts = starts.astype(np.int64)
        row_start = np.repeat(starts, lengths)
        short = lengths < MIN_SHIFT_TRIAL
        return cls(starts, lengths, row_start, np.arange(n, dtype=np.int64) - row_start,
                   np.repeat(lengths, lengths), concat_ranges(starts[short], lengths[short]))

    @property
    def n_trials(self) -> int:
        return len(self.starts)


def concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([arange(s, s + l) for s, l in zip(starts, lengths)]) without the Python loop."""
    before = np.cumsum(lengths) - lengths
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def shift_offsets(trials: Trials, rng: np.random.Generator, min_shift_fraction: float) -> np.ndarray:
    """A random circular shift per trial, at least min_shift_fraction of its length either way round
    (0 for trials shorter than MIN_SHIFT_TRIAL)."""
    lengths = trials.lengths
    low = np.maximum(1, np.ceil(min_shift_fraction * lengths)).astype(np.int64)
    span = np.maximum(lengths - 2 * low + 1, 1)  # offsets low … length - low
    offsets = low + np.floor(rng.random(len(lengths)) * span).astype(np.int64)
    offsets[lengths < MIN_SHIFT_TRIAL] = 0
    return offsets


def shift_sources(trials: Trials, rng: np.random.Generator, min_shift_fraction: float,
                  hub: np.ndarray) -> np.ndarray:
    """Row whose variable value each row receives in one shuffle: the hub's shift plus a random shift of
    its own within each trial (see null_exceedances), and a random order of the short trials' blocks
    written back over their rows."""
    lengths = trials.lengths
    offsets = (hub + shift_offsets(trials, rng, min_shift_fraction)) % np.maximum(lengths, 1)
    pos = trials.row_pos + np.repeat(offsets, lengths)
    pos -= trials.row_len * (pos >= trials.row_len)  # offset < length: one wrap at most
    source = trials.row_start + pos
    short = np.flatnonzero(lengths < MIN_SHIFT_TRIAL)
    if len(short) > 1:
        order = rng.permutation(short)
        source[trials.short_rows] = concat_ranges(trials.starts[order], lengths[order])
    return source


@dataclass
class Member:
    """One test inside a CodeGroup: the codes that move under the null, optionally codes that stay put,
    and the statistic computed from the member's [features, n_codes] table.

    A member's code is moving × n_fixed + fixed: the conjunction tests shuffle one variable while the
    other stays aligned with the features ("does direction add to this place field?")."""

    key: int
    """Caller's index of the test."""
    n_codes: int
    """Codes of the member: (moving values + 1 for missing) × n_fixed."""
    codes: np.ndarray
    """[n] int64 moving code per row (its last value is 'missing')."""
    by_trial: np.ndarray | None
    """[n_trials] moving code per trial when it is constant within every trial: then whole trials swap
    values in the null; None: shift within trials."""
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray]
    """(table [features, n_codes] of summed activations, rows per code [n_codes]) → statistic array."""
    fixed: np.ndarray | None = None
    """[n] int64 code per row that no shuffle moves; None: none."""
    n_fixed: int = 1
    """Values of `fixed` (1 when None)."""
    code_rows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Rows per code as observed (set by CodeGroup.prepare); a shift keeps it unless part is fixed."""


def feature_code_table(indptr: np.ndarray, entry_codes: np.ndarray, data: np.ndarray,
                       n_codes: int) -> np.ndarray:
    """[features, n_codes]: Σ data of the active entries by (feature, code of the entry's row).

    The feature-major entries with their codes as column indices are a CSR matrix [features × codes]
    with repeated columns, and its dense conversion sums repeats in one pass over the entries, with the
    GIL released: ~3x faster than bincount(feature · n_codes + code), which needs the index arithmetic
    and a min/max scan first."""
    return sp.csr_array((data, entry_codes, indptr), shape=(len(indptr) - 1, n_codes)).toarray()


@dataclass
class CodeGroup:
    """Members whose codes are combined into one code per row, so that one gather and one pass over
    the active entries give every member's [feature, code] table (as marginals of the combined table)."""

    members: list[Member]
    size: int = 0
    marginals: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    shifted: np.ndarray | None = None
    swapped: np.ndarray | None = None
    fixed: np.ndarray | None = None

    def prepare(self) -> None:
        dims = [m.n_codes for m in self.members]
        self.size = int(np.prod(dims))
        strides = np.cumprod([1, *dims[::-1]])[:-1][::-1]  # first member varies slowest
        grid = np.indices(dims).reshape(len(dims), -1)
        offsets = np.cumsum([0, *dims[:-1]])
        self.marginals = np.zeros((self.size, sum(dims)))
        for j in range(len(dims)):  # a handful of variables, not features
            self.marginals[np.arange(self.size), offsets[j] + grid[j]] = 1.0
        shifted, swapped, fixed = [], [], []
        for member, stride in zip(self.members, strides, strict=True):
            full = member.codes * member.n_fixed + (0 if member.fixed is None else member.fixed)
            member.code_rows = np.bincount(full, minlength=member.n_codes).astype(np.float64)
            moving_stride = stride * member.n_fixed
            if member.by_trial is None:
                shifted.append(member.codes * moving_stride)
            else:
                swapped.append(member.by_trial * moving_stride)
            if member.fixed is not None:
                fixed.append(member.fixed * stride)
        # int32 codes: the per-shuffle gather reads a 4 MB array per million examples, not 8 MB
        self.shifted = np.sum(shifted, axis=0).astype(np.int32) if shifted else None
        self.swapped = np.sum(swapped, axis=0).astype(np.int32) if swapped else None
        self.fixed = np.sum(fixed, axis=0).astype(np.int32) if fixed else None

    def tables(self, entry_rows: np.ndarray, indptr: np.ndarray, data: np.ndarray, trials: Trials,
               source: np.ndarray | None, order: np.ndarray | None,
               buffer: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each member's [features, n_codes] table and rows per code under one shuffle (source/order None:
        as observed)."""
        combined = np.zeros(len(trials.row_start), np.int32)
        if self.shifted is not None:
            combined += self.shifted if source is None else np.take(self.shifted, source, mode="clip")
        if self.swapped is not None:
            by_trial = self.swapped if order is None else self.swapped[order]
            combined += np.repeat(by_trial, trials.lengths)
        if self.fixed is not None:
            combined += self.fixed
        np.take(combined, entry_rows, out=buffer, mode="clip")  # 'clip' skips the bounds check
        table = feature_code_table(indptr, buffer, data, self.size)
        # marginals by one small matmul: summing a 5-axis table over 4 axes at a time is ~10x slower
        table = table.astype(np.float64, copy=False) @ self.marginals
        bounds = np.cumsum([m.n_codes for m in self.members])[:-1]
        if self.fixed is not None and (source is not None or order is not None):  # joint counts change
            rows = np.split(np.bincount(combined, minlength=self.size) @ self.marginals, bounds)
        else:
            rows = [self._rows(m, trials, order) for m in self.members]
        return np.split(table, bounds, axis=1), rows

    def _rows(self, member: Member, trials: Trials, order: np.ndarray | None) -> np.ndarray:
        if member.by_trial is None or order is None:  # a shift moves rows within trials: counts unchanged
            return member.code_rows
        moving = np.repeat(member.by_trial[order], trials.lengths)
        full = moving * member.n_fixed + (0 if member.fixed is None else member.fixed)
        return np.bincount(full, minlength=member.n_codes).astype(np.float64)


def group_members(members: list[Member]) -> list[CodeGroup]:
    """First-fit decreasing: fewest groups whose code products stay within MAX_GROUP_CODES."""
    groups: list[CodeGroup] = []
    sizes: list[int] = []
    for member in sorted(members, key=lambda m: -m.n_codes):
        for i, size in enumerate(sizes):
            if size * member.n_codes <= MAX_GROUP_CODES:
                groups[i].members.append(member)
                sizes[i] *= member.n_codes
                break
        else:
            groups.append(CodeGroup([member]))
            sizes.append(member.n_codes)
    return groups


def null_exceedances(groups: list[CodeGroup], entry_rows: np.ndarray, indptr: np.ndarray, data: np.ndarray,
                     trials: Trials, shuffles: range, min_shift_fraction: float, seed: int,
                     n_threads: int | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each member key: (observed statistic, number of the given shuffles whose statistic reached it).
    entry_rows: int64 row of each active entry, feature-major; indptr: int32 feature offsets (CSC); data:
    the weight each entry adds to the tables (its activation).

    Shuffle s is drawn from the generator seeded [seed, 1 + s], whatever the features passed: a second
    call with later shuffles on fewer features (engine.associations asks for more shuffles where a
    p-value is at its floor) continues the same sequence.

    Shifts of at least a minimum size are not a group (two of them can add up to almost no shift), so
    nulls drawn directly from the observed alignment resemble each other more than they resemble it, and
    p-values come out too small (8% below 0.05 on independent data, for a variable that marks the
    quarters of each trial). Hence Besag & Clifford's parallel scheme: one random shift takes the
    observed alignment to a hub, and each null is one random shift away from the hub. The observed and
    the nulls are then exchangeable (each is one symmetric step from the hub), and the p-value is exact
    for data whose law does not change under shifts within trials. Block and trial permutations are
    uniform over a group already and need no hub."""
    for group in groups:
        group.prepare()
    members = [m for g in groups for m in g.members]
    needs_shift = any(m.by_trial is None for m in members)

    def statistics(source, order, buffer) -> dict[int, np.ndarray]:
        out = {}
        for group in groups:
            tables, rows = group.tables(entry_rows, indptr, data, trials, source, order, buffer)
            for member, table, code_rows in zip(group.members, tables, rows, strict=True):
                out[member.key] = member.statistic(table, code_rows)
        return out

    hub = shift_offsets(trials, np.random.default_rng([seed, 0]), min_shift_fraction)
    buffer = np.empty(len(entry_rows), indptr.dtype)
    observed = statistics(None, None, buffer)

    def run(block: range) -> dict[int, np.ndarray]:
        own = np.empty(len(entry_rows), indptr.dtype)
        reached = {k: np.zeros(v.shape, np.int64) for k, v in observed.items()}
        for s in block:
            rng = np.random.default_rng([seed, 1 + s])  # by index: the same shuffles on any thread count
            source = shift_sources(trials, rng, min_shift_fraction, hub) if needs_shift else None
            order = rng.permutation(trials.n_trials)
            for key, null in statistics(source, order, own).items():
                with np.errstate(invalid="ignore"):
                    reached[key] += null >= observed[key] - TIE_TOLERANCE
        return reached

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_threads = max(1, min(n_threads or cores, len(shuffles) or 1))
    blocks = [range(start, min(start + SHUFFLE_BLOCK, shuffles.stop))
              for start in range(shuffles.start, shuffles.stop, SHUFFLE_BLOCK)]
    with ThreadPoolExecutor(n_threads) as pool:
        results = list(pool.map(run, blocks))
    out = {}
    for key, obs in observed.items():
        total = np.sum([r[key] for r in results], axis=0) if results else np.zeros(obs.shape, np.int64)
        out[key] = (obs, np.where(np.isnan(obs), len(shuffles), total).astype(np.int64))  # undefined: p = 1
    return out


def mi_bits(on: np.ndarray, n_in: np.ndarray) -> np.ndarray:
    """Plug-in mutual information (bits) between on/off and the value, per feature; on [F, K], n_in [K].
    MI = (Σ c log c − Σ row log row − Σ col log col + N log N) / N over the 2 × K table of counts c."""
    total = n_in.sum()
    if total == 0:
        return np.full(len(on), np.nan)
    active = on.sum(axis=1)
    cells = xlogy(on, on).sum(axis=1) + xlogy(n_in - on, n_in - on).sum(axis=1)
    margins = xlogy(active, active) + xlogy(total - active, total - active) + xlogy(n_in, n_in).sum()
    return np.maximum((cells - margins + xlogy(total, total)) / (total * math.log(2)), 0.0)


def monte_carlo_p(reached: np.ndarray, n_shuffles: int) -> np.ndarray:
    """(1 + shuffles reaching the observed statistic) / (1 + shuffles): never 0, exact under the null."""
    return (1.0 + reached) / (1.0 + n_shuffles)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH q-values: q_(i) = min over j ≥ i of p_(j) · m / j (p sorted ascending), capped at 1.

    Undefined p-values (NaN: a test that could not be made) get NaN and do not count in m; without
    this, one NaN would turn every q into NaN through the running minimum.
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = defined.size
    if m == 0:
        return q
    order = defined[np.argsort(p[defined], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def family_q_values(p_values: np.ndarray, families: np.ndarray) -> np.ndarray:
    """q-values for one false-discovery family made of several sub-families (one per variable, or per pair
    of variables for conjunctions): Benjamini–Hochberg within each sub-family, times the number of
    sub-families that hold a defined p-value, capped at 1.

    q < α is BH at α / G within each of the G sub-families, which keeps the false discovery rate over
    all the tests at most α: the false share of all discoveries is at most the sum of the sub-families'
    false shares, each at most α / G. A variable that nothing encodes then gets any discovery at all with
    probability at most α / G, however many discoveries the encoded variables make; a plain BH over the
    pooled tests would let it through at a rate that grows with them."""
    p = np.asarray(p_values, dtype=np.float64)
    families = np.asarray(families)
    q = np.full(p.shape, np.nan)
    defined = ~np.isnan(p)
    names = np.unique(families[defined])
    for name in names:
        where = np.flatnonzero(families == name)
        q[where] = benjamini_hochberg(p[where])
    return np.minimum(q * max(len(names), 1), 1.0)
