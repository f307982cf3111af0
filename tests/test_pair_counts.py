"""A conjunction member's rows per code under each shuffle, by lookup (engine.analysis.pair_counts), equal the
direct count over every row exactly: for a member shifted within trials (trials long enough to shift and short ones
whose blocks are permuted) and for one whose whole trials swap values (with rows that have no value)."""

from __future__ import annotations

import numpy as np
import pytest

import engine.analysis.pair_counts as pair_counts
from engine.analysis.nulls import (
    MIN_SHIFT_TRIAL,
    CodeGroup,
    Member,
    RowView,
    Shuffle,
    Trials,
    null_exceedances,
    shift_offsets,
)


def recording(seed: int) -> tuple[Trials, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Trials of 1 to 60 rows (several shorter than a shift needs), a slow variable x of 4 values + missing, a
    per-trial variable v of 3 values + missing (blank in some rows and in one whole trial)."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(1, 5, 6), rng.integers(5, 60, 40)])
    rng.shuffle(lengths)
    trial_ids = np.repeat(np.arange(len(lengths)), lengths)
    trials = Trials.from_ids(trial_ids)
    n = len(trial_ids)
    x = np.minimum(np.cumsum(rng.random(n) < 0.1) % 5, 4)  # runs of equal values; 4 is 'missing'
    by_trial = rng.integers(0, 3, trials.n_trials)
    by_trial[3] = 3  # a trial without a value
    v = by_trial[trials.row_trial].copy()
    absent = (v == 3) | (rng.random(n) < 0.05)
    v[absent] = 3
    return trials, x, v, by_trial, absent


def members(x: np.ndarray, v: np.ndarray, by_trial: np.ndarray, absent: np.ndarray) -> list[Member]:
    def statistic(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The largest mean activation over the codes: it moves with the rows per code."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmax(np.where(rows > 0, table / rows, np.nan), axis=1)

    return [Member(0, 5 * 4, x, None, statistic, fixed=v, n_fixed=4),  # x shifts, v stays
            Member(1, 4 * 5, v, by_trial, statistic, fixed=x, n_fixed=5, absent=absent)]  # v's trials swap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_per_code_by_lookup_equal_the_direct_count(seed: int) -> None:
    trials, x, v, by_trial, absent = recording(seed)
    group = CodeGroup(members(x, v, by_trial, absent))
    group.prepare()
    short = RowView.of(trials, np.flatnonzero(trials.row_len < MIN_SHIFT_TRIAL))
    group.prepare_pair_counts(trials, short)
    assert group.pair_counts is not None and all(c is not None for c in group.pair_counts)
    n = len(x)
    everything = RowView.of(trials, np.arange(n))
    entries = RowView.of(trials, np.arange(0, n, 7))
    indptr = np.array([0, len(entries.rows)], np.int32)
    data = np.ones(len(entries.rows))
    hub = shift_offsets(trials, np.random.default_rng([seed, 0]), 0.1)
    buffer = np.empty(len(entries.rows), np.int32)
    for s in range(200):
        shuffle = Shuffle.draw(trials, np.random.default_rng([seed, 1 + s]), 0.1, hub, True)
        source = entries.sources(trials, shuffle)
        lookup = group.tables(entries, everything, data, indptr, trials, shuffle, source, buffer,
                              short.sources(trials, shuffle))[1]
        counts, group.pair_counts = group.pair_counts, None
        direct = group.tables(entries, everything, data, indptr, trials, shuffle, source, buffer)[1]
        group.pair_counts = counts
        for by_lookup, by_pass in zip(lookup, direct, strict=True):
            np.testing.assert_array_equal(by_lookup, by_pass)
        assert sum(lookup[0]) == n  # every row counted once


def test_p_values_are_the_same_with_and_without_the_lag_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    trials, x, v, by_trial, absent = recording(3)
    rng = np.random.default_rng(3)
    n_features = 6
    rows = [np.sort(rng.choice(len(x), 40, replace=False)) for _ in range(n_features)]
    entry_rows = np.concatenate(rows).astype(np.int64)
    indptr = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int32)
    data = rng.random(len(entry_rows))

    def exceedances() -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return null_exceedances([CodeGroup(members(x, v, by_trial, absent))], entry_rows, indptr, data, trials,
                                range(300), 0.1, 7, 2)

    with_tables = exceedances()
    monkeypatch.setattr(pair_counts, "LAG_TABLE_LIMIT", 0)  # every member over the limit: the direct count
    direct = exceedances()
    for key in (0, 1):
        np.testing.assert_array_equal(with_tables[key][0], direct[key][0])
        np.testing.assert_array_equal(with_tables[key][1], direct[key][1])
        assert 0 < direct[key][1].sum() < 300 * n_features  # the nulls reached some statistics, not all
