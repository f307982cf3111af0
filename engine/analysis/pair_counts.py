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

import numpy as np

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
    short_rows: np.ndarray | None = None
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
    def build(cls, codes: np.ndarray, fixed: np.ndarray, n_fixed: int, n_codes: int, by_trial: np.ndarray | None,
              absent: np.ndarray | None, row_trial: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              long: np.ndarray, short_rows: np.ndarray) -> PairCounts | None:
        """A member's counts (engine.analysis.nulls.Member: `codes` moving, `fixed` kept, `by_trial` set where whole
        trials swap values, `absent` rows without a value) over trials given by each row's trial, their starts and
        lengths; `long`: [trials] bool, the trials a shift moves; `short_rows`: the rows of the others. None where
        the lag table would pass LAG_TABLE_LIMIT."""
        n_trials = len(starts)
        fixed = fixed.astype(np.int64)
        if by_trial is not None:
            present = np.ones(len(fixed), bool) if absent is None else ~absent
            per_trial = np.bincount(row_trial[present] * n_fixed + fixed[present],
                                    minlength=n_trials * n_fixed).reshape(n_trials, n_fixed)
            missing = n_codes // n_fixed - 1
            without = np.bincount(missing * n_fixed + fixed[~present], minlength=n_codes)
            return cls(n_codes, by_trial=by_trial.astype(np.int64), per_trial=per_trial.astype(np.float64),
                       n_fixed=n_fixed, without_value=without.astype(np.float64))
        long_trials = np.flatnonzero(long)
        long_lengths = lengths[long_trials]
        n_rows = len(fixed)
        if n_rows * n_codes > LAG_TABLE_LIMIT or int((long_lengths**2).sum()) > LAG_TABLE_LIMIT:
            return None
        moving = codes.astype(np.int64) * n_fixed
        table = np.zeros((n_rows, n_codes), np.uint16 if long_lengths.max(initial=0) < 1 << 16 else np.int32)
        for trial in long_trials:  # a few hundred trials; each a [L, L] count
            start, length = int(starts[trial]), int(lengths[trial])
            position = np.arange(length)
            source = start + (position[None, :] + position[:, None]) % length  # [lag, row]: what row receives
            codes = moving[source] + fixed[start + position][None, :]
            lagged = position[:, None] * n_codes + codes
            table[start:start + length] = np.bincount(lagged.ravel(), minlength=length * n_codes).reshape(length,
                                                                                                          n_codes)
        return cls(n_codes, lag_table=table, long_starts=starts[long_trials], long_trials=long_trials,
                   short_rows=short_rows, moving=moving, fixed=fixed)

    def at(self, offsets: np.ndarray | None, order: np.ndarray, short_sources: np.ndarray | None) -> np.ndarray:
        """[n_codes] float64 rows per code under a shuffle: its shift per trial (`offsets`), its order of whole
        trials (`order`: trial t takes the value of trial order[t]) and the rows whose values the short trials'
        rows take (`short_sources`, in the order of `short_rows`)."""
        if self.by_trial is not None:
            assert self.per_trial is not None and self.without_value is not None
            codes = self.by_trial[order][:, None] * self.n_fixed + np.arange(self.n_fixed)
            return np.bincount(codes.ravel(), self.per_trial.ravel(), minlength=self.n_codes) + self.without_value
        assert self.lag_table is not None and self.long_trials is not None and offsets is not None
        counts = self.lag_table[self.long_starts + offsets[self.long_trials]].sum(axis=0, dtype=np.int64)
        if self.short_rows is not None and len(self.short_rows):
            assert short_sources is not None and self.moving is not None and self.fixed is not None
            counts += np.bincount(self.moving[short_sources] + self.fixed[self.short_rows], minlength=self.n_codes)
        return counts.astype(np.float64)
