"""Splits: whole trials only, proportions by examples, seeded, every split non-empty."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import InputError
from engine.ingest.splits import assign_splits, contiguous_blocks


@pytest.fixture
def trial_sizes():
    return np.random.default_rng(3).integers(40, 160, size=500)


def test_proportions_hold_by_examples(trial_sizes):
    split = assign_splits(trial_sizes, (0.7, 0.15, 0.15), seed=0)
    shares = np.array([trial_sizes[split == s].sum() for s in range(3)]) / trial_sizes.sum()
    np.testing.assert_allclose(shares, [0.7, 0.15, 0.15], atol=0.01)


def test_other_fractions_are_honoured(trial_sizes):
    split = assign_splits(trial_sizes, (0.5, 0.2, 0.3), seed=1)
    shares = np.array([trial_sizes[split == s].sum() for s in range(3)]) / trial_sizes.sum()
    np.testing.assert_allclose(shares, [0.5, 0.2, 0.3], atol=0.01)


def test_same_seed_same_split_other_seed_other_split(trial_sizes):
    first = assign_splits(trial_sizes, seed=7)
    np.testing.assert_array_equal(first, assign_splits(trial_sizes, seed=7))
    assert (first != assign_splits(trial_sizes, seed=8)).mean() > 0.2


def test_the_split_is_not_just_time_order(trial_sizes):
    split = assign_splits(trial_sizes, seed=0)
    test_trials = np.flatnonzero(split == 2)
    # Test trials are spread over the session, not one block at its end.
    assert test_trials.min() < len(trial_sizes) * 0.2 and test_trials.max() > len(trial_sizes) * 0.8


@pytest.mark.parametrize("sizes", [[10, 10, 10], [1000, 1, 1], [5, 500, 5, 5]])
def test_every_split_gets_a_trial_even_when_few_or_lopsided(sizes):
    split = assign_splits(np.array(sizes), seed=0)
    assert set(split.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("fractions", [(0.7, 0.3, 0.0), (0.5, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(InputError, match="three positive numbers that sum to 1"):
        assign_splits(np.ones(10), fractions)


def test_fewer_than_three_trials_is_refused():
    with pytest.raises(InputError, match="need at least 3"):
        assign_splits(np.array([10, 10]))


def test_blocks_are_contiguous_and_cover_every_example():
    blocks = contiguous_blocks(1003, 40)
    assert len(blocks) == 1003 and blocks[0] == 0 and blocks[-1] == 39
    assert (np.diff(blocks) >= 0).all() and set(np.diff(blocks).tolist()) <= {0, 1}
    sizes = np.bincount(blocks)
    assert sizes.max() - sizes.min() <= 1


def test_no_trial_in_two_splits_in_the_database(tmp_path, cli):
    from sample_data import SampleConfig, generate

    # Splits are assigned at import (training, ranking and validation only read them): the demo's recording,
    # imported as a user imports it, is the whole case.
    generate(SampleConfig()).write(tmp_path / "data")
    result = cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "demo",
                 "--db", "demo.duckdb", timeout=600)
    assert result.returncode == 0, result.stderr
    query = ("SELECT count(*) FROM (SELECT trial_id FROM examples GROUP BY trial_id "
             "HAVING count(DISTINCT split) > 1)")
    shared = cli("sql", "--db", "demo.duckdb", "--format", "csv", query)
    assert shared.stdout.strip().splitlines() == ["count_star()", "0"]
    agree = cli("sql", "--db", "demo.duckdb", "--format", "csv",
                "SELECT count(*) FROM examples e JOIN trials t USING (dataset_id, trial_id) WHERE e.split <> t.split")
    assert agree.stdout.strip().splitlines()[-1] == "0"
    counted = cli("sql", "--db", "demo.duckdb", "--format", "csv",
                  "SELECT count(DISTINCT e.split), count(DISTINCT t.trial_id) FROM examples e JOIN trials t "
                  "USING (dataset_id, trial_id)")
    assert counted.stdout.strip().splitlines()[-1] == "3,519"  # every split, every trial: the checks above saw them


def test_the_test_split_gets_enough_trials_for_its_intervals():
    from engine.ingest.splits import MIN_TEST_TRIALS

    # 47 trials, three of them very long (a rest at the end of a run): by examples alone the test split
    # would get the long ones and few trials; train trials move over until it holds MIN_TEST_TRIALS.
    sizes = np.r_[np.full(44, 30), 280, 300, 260]
    for seed in range(20):
        split = assign_splits(sizes, seed=seed)
        assert np.count_nonzero(split == 2) >= MIN_TEST_TRIALS
        assert np.count_nonzero(split == 0) > np.count_nonzero(split == 2)  # train stays the largest
    # Fewer than four times as many trials: the shares by examples stand.
    few = assign_splits(np.r_[np.full(30, 30), 280, 300], seed=0)
    assert np.count_nonzero(few == 2) < MIN_TEST_TRIALS
