"""Rows per code of a conjunction's member under each shuffle, by lookup instead of a pass over every row.

A conjunction member's code pairs a moving value (shifted within trials, or swapped with whole trials) with a fixed
one (the partner variable, which stays aligned with the features), and its statistic needs how many rows hold each
pair under the shuffle. Counted directly, that is a pass over every row of the recording per shuffle, although the
member's table touches only the active entries of the few features it tests: the late rounds of a conjunction's
p-value ran 20,000 shuffles of one feature at ~1.4 ms each on the 60,000-bin sample, 27 s of a 57-s ranking.

Here each trial's counts are tabulated once per lag (a shift within a trial is one of its L lags) or once per trial
(a swap moves a whole trial's value), so a shuffle costs a lookup per trial. The counts are integers, the same as
the direct count's exactly (tests/test_pair_counts.py). Where the lag tables would be large (long trials, many
codes) `PairCounts.build` returns None and engine.analysis.nulls counts directly, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from engine.analysis.nulls import Member, RowView, Shuffle, Trials

LAG_TABLE_LIMIT = 1 << 25
"""Most entries of a member's lag table (uint16 where every trial is shorter than 65,536 rows: 64 MB), and most
(lag, row) pairs counted to build it (Σ L² over the shifted trials): a recording of a few long trials, or a
conjunction of many codes, counts directly instead (the sample's largest: 51,001 ranked rows × 378 codes, 39 MB)."""


@dataclass(frozen=True)
class PairCounts:
    """One member's rows per code (moving value × n_fixed + fixed value) under any shuffle."""

    n_codes: int
    lag_table: np.ndarray | None = None
    """Shifted member: [rows, n_codes] counts; row start + o holds its trial's counts when shifted by o (rows of
    trials too short to shift hold nothing)."""
    long_starts: np.ndarray | None = None
    """Shifted member: first row of each trial long enough to shift."""
    long_trials: np.ndarray | None = None
    """Shifted member: those trials' indices."""
    short: RowView | None = None
    """Shifted member: the rows of trials too short to shift (their blocks are permuted; counted directly)."""
    moving: np.ndarray | None = None
    """Shifted member: [rows] moving code × n_fixed."""
    fixed: np.ndarray | None = None
    """Shifted member: [rows] fixed code."""
    by_trial: np.ndarray | None = None
    """Swapped member: [trials] its moving code per trial."""
    per_trial: np.ndarray | None = None
    """Swapped member: [trials, n_fixed] rows with a value, by trial and fixed value."""
    n_fixed: int = 1
    without_value: np.ndarray | None = None
    """Swapped member: [n_codes] rows without a value (they keep the missing code under every swap)."""

    @classmethod
    def build(cls, member: Member, trials: Trials, long: np.ndarray, short: RowView) -> PairCounts | None:
        """`long`: [trials] bool, the trials a shift moves; `short`: the rows of the others. None where the lag
        table would pass LAG_TABLE_LIMIT."""
        assert member.fixed is not None
        n_fixed, n_codes = member.n_fixed, member.n_codes
        fixed = member.fixed.astype(np.int64)
        if member.by_trial is not None:
            present = np.ones(len(fixed), bool) if member.absent is None else ~member.absent
            per_trial = np.bincount(trials.row_trial[present] * n_fixed + fixed[present],
                                    minlength=trials.n_trials * n_fixed).reshape(trials.n_trials, n_fixed)
            missing = n_codes // n_fixed - 1
            without = np.bincount(missing * n_fixed + fixed[~present], minlength=n_codes)
            return cls(n_codes, by_trial=member.by_trial.astype(np.int64), per_trial=per_trial.astype(np.float64),
                       n_fixed=n_fixed,
                       without_value=without.astype(np.float64))
        long_trials = np.flatnonzero(long)
        lengths = trials.lengths[long_trials]
        n_rows = len(fixed)
        if n_rows * n_codes > LAG_TABLE_LIMIT or int((lengths**2).sum()) > LAG_TABLE_LIMIT:
            return None
        moving = member.codes.astype(np.int64) * n_fixed
        table = np.zeros((n_rows, n_codes), np.uint16 if lengths.max(initial=0) < 1 << 16 else np.int32)
        for trial in long_trials:  # a few hundred trials; each a [L, L] count
            start, length = int(trials.starts[trial]), int(trials.lengths[trial])
            position = np.arange(length)
            source = start + (position[None, :] + position[:, None]) % length  # [lag, row]: what row receives
            codes = moving[source] + fixed[start + position][None, :]
            lagged = position[:, None] * n_codes + codes
            table[start:start + length] = np.bincount(lagged.ravel(), minlength=length * n_codes).reshape(length,
                                                                                                          n_codes)
        return cls(n_codes, lag_table=table, long_starts=trials.starts[long_trials], long_trials=long_trials,
                   short=short, moving=moving, fixed=fixed)

    def at(self, trials: Trials, shuffle: Shuffle) -> np.ndarray:
        """[n_codes] float64 rows per code under `shuffle`."""
        if self.by_trial is not None:
            assert self.per_trial is not None and self.without_value is not None
            value = self.by_trial[shuffle.order]  # trial t takes the value of trial order[t]
            codes = value[:, None] * self.n_fixed + np.arange(self.n_fixed)
            return np.bincount(codes.ravel(), self.per_trial.ravel(), minlength=self.n_codes) + self.without_value
        assert self.lag_table is not None and self.long_trials is not None and shuffle.offsets is not None
        counts = self.lag_table[self.long_starts + shuffle.offsets[self.long_trials]].sum(axis=0, dtype=np.int64)
        if self.short is not None and len(self.short.rows):
            source = self.short.sources(trials, shuffle)
            counts += np.bincount(self.moving[source] + self.fixed[self.short.rows], minlength=self.n_codes)
        return counts.astype(np.float64)
