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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import xlogy
from threadpoolctl import threadpool_limits

from engine.analysis.pair_counts import ShiftedCounts, SwappedCounts, pair_counts
from engine.errors import Cancelled

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
    row_trial: np.ndarray
    """[n] trial index of each row."""
    short_slot: np.ndarray
    """[n] position of each row among the rows of trials shorter than MIN_SHIFT_TRIAL (laid end to end, trial
    by trial, as the block permutation writes them), -1 for rows of trials long enough to shift."""

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
        short_rows = concat_ranges(starts[short], lengths[short])
        short_slot = np.full(n, -1, np.int64)
        short_slot[short_rows] = np.arange(len(short_rows))
        return cls(starts, lengths, row_start, np.arange(n, dtype=np.int64) - row_start,
                   np.repeat(lengths, lengths), np.repeat(np.arange(len(starts)), lengths), short_slot)

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


@dataclass(frozen=True)
class Shuffle:
    """One draw of the null: a shift per trial (through the hub), an order of the short trials' blocks and a
    permutation of whole trials."""

    offsets: np.ndarray | None
    short_order: np.ndarray | None
    order: np.ndarray

    @classmethod
    def draw(cls, trials: Trials, rng: np.random.Generator, min_shift_fraction: float, hub: np.ndarray,
             shifts: bool) -> Shuffle:
        offsets = short_order = None
        if shifts:
            offsets = (hub + shift_offsets(trials, rng, min_shift_fraction)) % np.maximum(trials.lengths, 1)
            short = np.flatnonzero(trials.lengths < MIN_SHIFT_TRIAL)
            short_order = rng.permutation(short) if len(short) > 1 else None
        return cls(offsets, short_order, rng.permutation(trials.n_trials))


@dataclass(frozen=True)
class RowView:
    """What a shuffle needs to know about some rows (the rows of the active entries, or every row), so that
    a shuffle costs work in proportion to them rather than to the recording."""

    rows: np.ndarray
    trial: np.ndarray
    pos: np.ndarray
    length: np.ndarray
    start: np.ndarray
    short_slot: np.ndarray
    in_short: np.ndarray

    @classmethod
    def of(cls, trials: Trials, rows: np.ndarray) -> RowView:
        slot = trials.short_slot[rows]
        return cls(rows, trials.row_trial[rows], trials.row_pos[rows], trials.row_len[rows], trials.row_start[rows],
                   slot, np.flatnonzero(slot >= 0))

    def sources(self, trials: Trials, shuffle: Shuffle) -> np.ndarray:
        """Row whose variable value each of these rows receives: its trial's shift (wrapping within the
        trial), or for rows of short trials the row at the same place of the block order."""
        pos = self.pos + shuffle.offsets[self.trial]
        pos -= self.length * (pos >= self.length)  # offset < length: one wrap at most
        source = self.start + pos
        if shuffle.short_order is not None and len(self.in_short):
            order = shuffle.short_order
            blocks = concat_ranges(trials.starts[order], trials.lengths[order])
            source[self.in_short] = blocks[self.short_slot[self.in_short]]
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
    """[n_trials] moving code per trial when it is constant within every trial where it has a value: then
    whole trials swap values in the null, and rows without a value stay without; None: shift within trials."""
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray]
    """(table [features, n_codes] of summed activations, rows per code [n_codes]) → statistic array."""
    fixed: np.ndarray | None = None
    """[n] int64 code per row that no shuffle moves; None: none."""
    n_fixed: int = 1
    """Values of `fixed` (1 when None)."""
    absent: np.ndarray | None = None
    """[n] bool: rows where a by-trial variable has no value (its missing code stays there); None: none."""
    code_rows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Rows per code as observed (set by CodeGroup.prepare); a shift keeps it unless part is fixed."""


def trial_codes(codes: np.ndarray, missing: int, trials: Trials) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(code of each trial, rows without a value) when the variable is constant within every trial where it
    has a value (a condition that is blank in the inter-trial interval is still a trial's condition: a
    shift within the trial would keep it on the same trials and its null would not move); else (None, None)."""
    present = codes != missing
    if trials.n_trials < 2:
        return None, None
    trial = trials.row_trial[present]
    low = np.full(trials.n_trials, np.iinfo(np.int64).max)
    high = np.full(trials.n_trials, -1)
    np.minimum.at(low, trial, codes[present])
    np.maximum.at(high, trial, codes[present])
    seen = high >= 0
    if np.any(low[seen] != high[seen]):
        return None, None
    return np.where(seen, high, missing), (None if present.all() else ~present)


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
    swapped: list[tuple[np.ndarray, np.ndarray | None, int]] = field(default_factory=list)
    """Per by-trial member: its trial codes × stride, the rows without a value, and its missing code × stride."""
    fixed: np.ndarray | None = None
    pair_counts: list[ShiftedCounts | SwappedCounts | None] | None = None
    """Where members keep part of their code fixed: each member's rows per code by lookup (None for a member
    without a fixed part), or None where a lag table would be too large (then counted over every row)."""

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
                missing = (member.n_codes // member.n_fixed - 1) * moving_stride
                swapped.append(((member.by_trial * moving_stride).astype(np.int32), member.absent, int(missing)))
            if member.fixed is not None:
                fixed.append(member.fixed * stride)
        # int32 codes: the per-shuffle gather reads a 4 MB array per million examples, not 8 MB
        self.shifted = np.sum(shifted, axis=0).astype(np.int32) if shifted else None
        self.swapped = swapped
        self.fixed = np.sum(fixed, axis=0).astype(np.int32) if fixed else None

    def tables(self, entries: RowView, everything: RowView | None, data: np.ndarray, indptr: np.ndarray,
               trials: Trials, shuffle: Shuffle | None, source: np.ndarray | None,
               buffer: np.ndarray, short_sources: np.ndarray | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each member's [features, n_codes] table and rows per code under one shuffle (None: as observed).
        `source`: the entries' source rows under the shuffle (computed once for all groups); `everything`
        views every row: needed only when a member keeps part of its code fixed and its counts have no lookup
        (pair_counts); `short_sources`: under the shuffle, the source rows of the rows of trials too short to
        shift, for the lookups (computed once for all groups)."""
        codes = self.codes_at(entries, trials, shuffle, buffer, source)
        table = feature_code_table(indptr, codes, data, self.size)
        # marginals by one small matmul: summing a 5-axis table over 4 axes at a time is ~10x slower
        table = table.astype(np.float64, copy=False) @ self.marginals
        bounds = np.cumsum([m.n_codes for m in self.members])[:-1]
        if self.fixed is not None and shuffle is not None and self.pair_counts is not None:
            rows = [self._rows(m, trials, shuffle) if counts is None
                    else counts.at(shuffle.offsets, shuffle.order, short_sources)
                    for m, counts in zip(self.members, self.pair_counts, strict=True)]
        elif self.fixed is not None and shuffle is not None:  # part moves, part stays: joint counts change
            assert everything is not None
            every = self.codes_at(everything, trials, shuffle, np.empty(len(everything.rows), np.int32))
            rows = np.split(np.bincount(every, minlength=self.size) @ self.marginals, bounds)
        else:
            rows = [self._rows(m, trials, shuffle) for m in self.members]
        return np.split(table, bounds, axis=1), rows

    def prepare_pair_counts(self, trials: Trials, short: RowView) -> None:
        """Tabulate the rows per code of members with a fixed part (engine.analysis.pair_counts); `short`: the
        rows of trials too short to shift."""
        if self.fixed is None:
            return
        long = trials.lengths >= MIN_SHIFT_TRIAL
        counts = [None if m.fixed is None else
                  pair_counts(m.codes, m.fixed, m.n_fixed, m.n_codes, m.by_trial, m.absent, trials.row_trial,
                              trials.starts, trials.lengths, long, short.rows)
                  for m in self.members]
        built = all(c is not None for c, m in zip(counts, self.members, strict=True) if m.fixed is not None)
        self.pair_counts = counts if built else None

    def codes_at(self, view: RowView, trials: Trials, shuffle: Shuffle | None, out: np.ndarray,
                 source: np.ndarray | None = None) -> np.ndarray:
        """The group's combined code at each row of `view` under `shuffle`."""
        out[:] = 0
        if self.shifted is not None:
            if source is None:
                source = view.rows if shuffle is None else view.sources(trials, shuffle)
            out += np.take(self.shifted, source, mode="clip")  # 'clip' skips the bounds check
        for by_trial, absent, missing in self.swapped:
            values = np.take(by_trial if shuffle is None else by_trial[shuffle.order], view.trial, mode="clip")
            out += values if absent is None else np.where(absent[view.rows], missing, values)
        if self.fixed is not None:
            out += np.take(self.fixed, view.rows, mode="clip")
        return out

    def _rows(self, member: Member, trials: Trials, shuffle: Shuffle | None) -> np.ndarray:
        if member.by_trial is None or shuffle is None:  # a shift moves rows within trials: counts unchanged
            return member.code_rows
        present = trials.lengths if member.absent is None else \
            np.bincount(trials.row_trial[~member.absent], minlength=trials.n_trials)
        rows = np.bincount(member.by_trial[shuffle.order], present, minlength=member.n_codes)
        if member.absent is not None:
            rows[member.n_codes - 1] += member.absent.sum()
        return rows


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
                     n_threads: int | None, cancel: threading.Event | None = None
                     ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each member key: (observed statistic, number of the given shuffles whose statistic reached it).
    entry_rows: int64 row of each active entry, feature-major; indptr: int32 feature offsets (CSC); data:
    the weight each entry adds to the tables (its activation).

    Shuffle s is drawn from the generator seeded [seed, 1 + s], whatever the features passed: a second
    call with later shuffles on fewer features (engine.analysis.associations asks for more shuffles where a
    p-value is at its floor) continues the same sequence.

    Shifts of at least a minimum size are not a group (two of them can add up to almost no shift), so
    nulls drawn directly from the observed alignment resemble each other more than they resemble it, and
    p-values come out too small (8% below 0.05 on independent data, for a variable that marks the
    quarters of each trial). Hence Besag & Clifford's parallel scheme: one random shift takes the
    observed alignment to a hub, and each null is one random shift away from the hub. The observed and
    the nulls are then exchangeable (each is one symmetric step from the hub), and the p-value is exact
    for data whose law does not change under shifts within trials. Block and trial permutations are
    uniform over a group already and need no hub.

    `cancel` set stops the shuffles at the next block of SHUFFLE_BLOCK (engine.errors.Cancelled)."""
    short = RowView.of(trials, np.flatnonzero(trials.row_len < MIN_SHIFT_TRIAL))  # their blocks are permuted
    for group in groups:
        group.prepare()
        group.prepare_pair_counts(trials, short)
    members = [m for g in groups for m in g.members]
    needs_shift = any(m.by_trial is None for m in members)
    looks_up = any(g.pair_counts is not None for g in groups)
    entries = RowView.of(trials, entry_rows)
    everything = RowView.of(trials, np.arange(len(trials.row_start))) \
        if any(g.fixed is not None and g.pair_counts is None for g in groups) else None

    def statistics(shuffle: Shuffle | None, buffer: np.ndarray) -> dict[int, np.ndarray]:
        out = {}
        source = entries.sources(trials, shuffle) if shuffle is not None and needs_shift else None
        short_sources = short.sources(trials, shuffle) \
            if looks_up and shuffle is not None and needs_shift and len(short.rows) else None
        for group in groups:
            tables, rows = group.tables(entries, everything, data, indptr, trials, shuffle, source, buffer,
                                        short_sources)
            for member, table, code_rows in zip(group.members, tables, rows, strict=True):
                out[member.key] = member.statistic(table, code_rows)
        return out

    hub = shift_offsets(trials, np.random.default_rng([seed, 0]), min_shift_fraction)
    observed = statistics(None, np.empty(len(entry_rows), indptr.dtype))

    def run(block: range) -> dict[int, np.ndarray]:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled between blocks of shuffles")
        own = np.empty(len(entry_rows), indptr.dtype)
        reached = {k: np.zeros(v.shape, np.int64) for k, v in observed.items()}
        for s in block:
            rng = np.random.default_rng([seed, 1 + s])  # by index: the same shuffles on any thread count
            shuffle = Shuffle.draw(trials, rng, min_shift_fraction, hub, needs_shift)
            for key, null in statistics(shuffle, own).items():
                with np.errstate(invalid="ignore"):
                    reached[key] += null >= observed[key] - TIE_TOLERANCE
        return reached

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_threads = max(1, min(n_threads or cores, len(shuffles) or 1))
    blocks = [range(start, min(start + SHUFFLE_BLOCK, shuffles.stop))
              for start in range(shuffles.start, shuffles.stop, SHUFFLE_BLOCK)]
    totals = {key: np.zeros(obs.shape, np.int64) for key, obs in observed.items()}
    # One BLAS thread: the shuffles are the parallel work, and each one's marginals matmul is small. A
    # multi-threaded BLAS inside each of these threads oversubscribes the cores (2 × 2 threads on 2 cores),
    # and OpenBLAS's spinning threads then made the matmul ~50x slower on a loaded machine.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(n_threads) as pool:
        # Summed as the blocks finish, not kept: memory stays that of a few blocks whatever the shuffle count
        # (the counts are integers, so the order of the sums changes nothing).
        for reached in pool.map(run, blocks):
            for key, count in reached.items():
                totals[key] += count
    return {key: (obs, np.where(np.isnan(obs), len(shuffles), totals[key]).astype(np.int64))  # undefined: p = 1
            for key, obs in observed.items()}


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


def family_q_values(p_values: np.ndarray, families: np.ndarray, n_families: int | None = None) -> np.ndarray:
    """q-values for one false-discovery family made of several sub-families (one per variable, or per pair
    of variables for conjunctions): Benjamini–Hochberg within each sub-family, times the number of
    sub-families that hold a defined p-value, capped at 1.

    q < α is BH at α / G within each of the G sub-families, which keeps the false discovery rate over
    all the tests at most α: the false share of all discoveries is at most the sum of the sub-families'
    false shares, each at most α / G. A variable that nothing encodes then gets any discovery at all with
    probability at most α / G, however many discoveries the encoded variables make; a plain BH over the
    pooled tests would let it through at a rate that grows with them. `n_families`: G when some
    sub-families are not in this call (None: those present)."""
    p = np.asarray(p_values, dtype=np.float64)
    families = np.asarray(families)
    q = np.full(p.shape, np.nan)
    defined = ~np.isnan(p)
    names = np.unique(families[defined])
    for name in names:
        where = np.flatnonzero(families == name)
        q[where] = benjamini_hochberg(p[where])
    return np.minimum(q * max(n_families or len(names), 1), 1.0)
