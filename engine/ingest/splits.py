"""Train / val / test splits by whole trials (or contiguous blocks), seeded.

The test split is touched only by validation, so it must share no trial with training: neural
activity within a trial is autocorrelated, and a trial split across train and test leaks.
"""

from __future__ import annotations

import numpy as np

from engine.errors import InputError
from engine.options import check_integer, check_seed

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_TEST_TRIALS = 10
"""Trials the test split gets at least, where the recording has four times as many: validation resamples
whole test trials for its intervals and swaps them for the null of a trial-level label, and with fewer
than ~10 both fail. (Seven test trials with two of one direction allow 21 arrangements: no trial-level
label could reach p < 0.05, however well it held.) Mirrors engine.validation.validation_text.MIN_CI_TRIALS."""


MIN_BLOCKS = 3
"""Contiguous blocks a recording without trials is cut into at least: one each for train, val and test."""


def check_fractions(fractions: tuple[float, float, float]) -> None:
    # `not f > 0` (rather than `f <= 0`) so that NaN, which compares false either way, is refused too.
    if (len(fractions) != 3 or any(not (np.isfinite(f) and f > 0) for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6):
        raise InputError(f"--split {','.join(f'{f:g}' for f in fractions)}: need three positive numbers "
                         "that sum to 1, none NaN or infinite")


def check_split_options(seed: int, n_blocks: int) -> None:
    """Refuse a split seed NumPy cannot take and fewer blocks than splits."""
    check_seed("--seed", seed)
    check_integer("--blocks", n_blocks, MIN_BLOCKS, why="one block each for train, val and test")


def contiguous_blocks(n_examples: int, n_blocks: int) -> np.ndarray:
    """Block id per example: n_blocks runs of (nearly) equal length, in time order."""
    n_blocks = max(MIN_BLOCKS, min(n_blocks, n_examples))
    return (np.arange(n_examples) * n_blocks // n_examples).astype(np.int32)


def assign_splits(
    trial_sizes: np.ndarray, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) for each trial, given each trial's number of examples.

    Trials are visited in a seeded random order and each goes to the split furthest below its share
    of examples, so proportions hold by examples (not just by trial count) and each split gets trials.
    When a few long trials fill the test share, train trials (the next in that seeded order) move to test
    until it holds MIN_TEST_TRIALS, for recordings with at least four times that many trials.
    """
    check_fractions(fractions)
    n_trials = len(trial_sizes)
    if n_trials < 3:
        raise InputError(f"{n_trials} trial(s): need at least 3 to make train, val and test splits")
    targets = np.asarray(fractions) * float(np.sum(trial_sizes))
    filled = np.zeros(3)
    split_of = np.empty(n_trials, dtype=np.int8)
    order = np.random.default_rng(seed).permutation(n_trials)
    for position, trial in enumerate(order):
        remaining = n_trials - position
        empty = np.flatnonzero(filled == 0)
        if len(empty) and remaining <= len(empty):
            choice = empty[0]  # the last trials go to splits that have none yet
        else:
            choice = int(np.argmax((targets - filled) / targets))
        split_of[trial] = choice
        filled[choice] += trial_sizes[trial]
    if n_trials >= 4 * MIN_TEST_TRIALS:
        short = MIN_TEST_TRIALS - int(np.count_nonzero(split_of == 2))
        if short > 0:
            moved = [t for t in order if split_of[t] == 0][:short]
            split_of[moved] = 2
    return split_of
