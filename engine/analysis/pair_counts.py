"""Rows per code of a conjunction's member under each shuffle, by lookup instead of a pass over every row.

A conjunction member's code pairs a moving value (shifted within trials, or swapped with whole trials) with a fixed
one (the partner variable, which stays aligned with the features), and its statistic needs how many rows hold each
pair under the shuffle. Counted directly, that is a pass over every row of the recording per shuffle, although the
member's table touches only the active entries of the few features it tests: the late rounds of a conjunction's
p-value ran 20,000 shuffles of one feature at ~1.4 ms each on the 60,000-bin sample, 27 s of a 57-s ranking.

Here each trial's counts are tabulated once per lag (a shift within a trial is one of its L lags) or once per trial
(a swap moves a whole trial's value), so a shuffle costs a lookup per trial. The counts are integers, the same as
the direct count's exactly (tests/test_pair_counts.py). Where the lag tables would be large (long trials, many
codes) `pair_counts` returns None and engine.analysis.nulls counts directly, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAG_TABLE_LIMIT = 1 << 25
"""Most entries of a member's lag table (uint16 where every trial is shorter than 65,536 rows: 64 MB), and most
(lag, row) pairs counted to build it (Σ L² over the shifted trials): a recording of a few long trials, or a
conjunction of many codes, counts directly instead (the sample's largest: 51,001 ranked rows × 378 codes, 39 MB)."""


def pair_counts(codes: np.ndarray, fixed: np.ndarray, n_fixed: int, n_codes: int, by_trial: np.ndarray | None,
                absent: np.ndarray | None, row_trial: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                long: np.ndarray, short_rows: np.ndarray) -> ShiftedCounts | SwappedCounts | None:
    """A member's counts (engine.analysis.nulls.Member: `codes` moving, `fixed` kept, `by_trial` set where whole
    trials swap values, `absent` rows without a value) over trials given by each row's trial, their starts and
    lengths; `long`: [trials] bool, the trials a shift moves; `short_rows`: the rows of the others. None where the
    lag table would pass LAG_TABLE_LIMIT."""
    fixed = fixed.astype(np.int64)
    if by_trial is not None:
        return SwappedCounts.build(fixed, n_fixed, n_codes, by_trial, absent, row_trial, len(starts))
    return ShiftedCounts.build(codes, fixed, n_fixed, n_codes, starts, lengths, long, short_rows)


@dataclass(frozen=True)
class ShiftedCounts:
    """Rows per code of a member whose moving code shifts within trials."""

    n_codes: int
    lag_table: np.ndarray
    """[rows, n_codes] counts; row start + o holds its trial's counts when shifted by o (rows of trials too short
    to shift hold nothing)."""
    long_starts: np.ndarray
    """First row of each trial long enough to shift."""
    long_trials: np.ndarray
    """Those trials' indices."""
    short_rows: np.ndarray
    """The rows of trials too short to shift (their blocks are permuted; counted directly)."""
    moving: np.ndarray
    """[rows] moving code × n_fixed."""
    fixed: np.ndarray
    """[rows] fixed code."""

    @classmethod
    def build(cls, codes: np.ndarray, fixed: np.ndarray, n_fixed: int, n_codes: int, starts: np.ndarray,
              lengths: np.ndarray, long: np.ndarray, short_rows: np.ndarray) -> ShiftedCounts | None:
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
            lagged = position[:, None] * n_codes + moving[source] + fixed[start + position][None, :]
            table[start:start + length] = np.bincount(lagged.ravel(), minlength=length * n_codes).reshape(length,
                                                                                                          n_codes)
        return cls(n_codes, table, starts[long_trials], long_trials, short_rows, moving, fixed)

    def at(self, offsets: np.ndarray | None, order: np.ndarray, short_sources: np.ndarray | None) -> np.ndarray:
        """[n_codes] float64 rows per code under a shuffle: its shift per trial (`offsets`) and the rows whose
        values the short trials' rows take (`short_sources`, in the order of `short_rows`)."""
        assert offsets is not None
        counts = self.lag_table[self.long_starts + offsets[self.long_trials]].sum(axis=0, dtype=np.int64)
        if len(self.short_rows):
            assert short_sources is not None
            counts += np.bincount(self.moving[short_sources] + self.fixed[self.short_rows], minlength=self.n_codes)
        return counts.astype(np.float64)


@dataclass(frozen=True)
class SwappedCounts:
    """Rows per code of a member whose whole trials swap values."""

    n_codes: int
    n_fixed: int
    by_trial: np.ndarray
    """[trials] the moving code per trial."""
    per_trial: np.ndarray
    """[trials, n_fixed] rows with a value, by trial and fixed value."""
    without_value: np.ndarray
    """[n_codes] rows without a value (they keep the missing code under every swap)."""

    @classmethod
    def build(cls, fixed: np.ndarray, n_fixed: int, n_codes: int, by_trial: np.ndarray, absent: np.ndarray | None,
              row_trial: np.ndarray, n_trials: int) -> SwappedCounts:
        present = np.ones(len(fixed), bool) if absent is None else ~absent
        per_trial = np.bincount(row_trial[present] * n_fixed + fixed[present],
                                minlength=n_trials * n_fixed).reshape(n_trials, n_fixed)
        missing = n_codes // n_fixed - 1
        without = np.bincount(missing * n_fixed + fixed[~present], minlength=n_codes)
        return cls(n_codes, n_fixed, by_trial.astype(np.int64), per_trial.astype(np.float64),
                   without.astype(np.float64))

    def at(self, offsets: np.ndarray | None, order: np.ndarray, short_sources: np.ndarray | None) -> np.ndarray:
        """[n_codes] float64 rows per code under a shuffle's order of whole trials (trial t takes the value of
        trial order[t]); the shift and the short trials' sources do not move it."""
        codes = self.by_trial[order][:, None] * self.n_fixed + np.arange(self.n_fixed)
        return np.bincount(codes.ravel(), self.per_trial.ravel(), minlength=self.n_codes) + self.without_value
