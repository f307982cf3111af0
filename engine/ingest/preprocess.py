"""Smoothing and normalisation of binned counts, always within one trial at a time.

Later steps shift activity within trials and split by whole trials; a kernel that reached across a
trial boundary would carry one trial's spikes into its neighbour, which may be in another split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from engine.errors import InputError

NORMALIZATIONS = ("none", "zscore")


@dataclass(frozen=True)
class PreprocessOptions:
    """What to do to the counts after binning (recorded with the dataset)."""

    smooth_s: float = 0.0
    """Gaussian σ in seconds; 0 leaves the counts as they are. Near a trial's edges the kernel is cut at
    the edge and renormalised, so a bin's value is a weighted mean of bins of its own trial."""
    normalize: str = "none"
    """'zscore': per unit and trial, subtract the trial's mean and divide by its standard deviation
    (removes slow drift and trial-level rate differences; the values become signed activations)."""


def check_preprocess(options: PreprocessOptions) -> None:
    if not (options.smooth_s >= 0 and np.isfinite(options.smooth_s)):
        raise InputError(f"--smooth {options.smooth_s}: must be a number of seconds >= 0")
    if options.normalize not in NORMALIZATIONS:
        raise InputError(f"--normalize {options.normalize}: unknown (use {', '.join(NORMALIZATIONS)})")


def check_smoothing(options: PreprocessOptions, trial_of: np.ndarray, bin_size_s: float | None) -> None:
    """Refuse a smoothing that cannot be done (no bin size) or that would flatten every trial."""
    if options.smooth_s == 0:
        return
    if bin_size_s is None:
        raise InputError(f"--smooth {options.smooth_s:g}: needs the bin size; give --bin-size S or a time column "
                         "(--time-col)")
    longest = max(s.stop - s.start for s in _segments(trial_of)) * bin_size_s
    if options.smooth_s > longest:
        # A kernel wider than the trial, renormalised to the trial, leaves little but the trial's mean.
        raise InputError(f"--smooth {options.smooth_s:g}: σ is longer than the longest trial ({longest:g} s); "
                         "smoothing within trials would flatten every trial to its mean")


def _segments(trial_of: np.ndarray) -> list[slice]:
    """Runs of consecutive rows with the same trial."""
    bounds = np.flatnonzero(np.r_[True, trial_of[1:] != trial_of[:-1], True])
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


def smooth_within_trials(counts: np.ndarray, trial_of: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing along time that never crosses a trial boundary."""
    from scipy.ndimage import gaussian_filter1d

    out = counts.astype(np.float64)
    if sigma_bins <= 0:
        return out
    for rows in _segments(trial_of):
        block = out[rows]
        # mode='constant' treats bins beyond the trial as 0; dividing by the smoothed indicator of the
        # trial renormalises the kernel to the part that lies inside it.
        weight = gaussian_filter1d(np.ones(len(block)), sigma_bins, mode="constant")
        out[rows] = gaussian_filter1d(block, sigma_bins, axis=0, mode="constant") / weight[:, None]
    return out


def zscore_within_trials(values: np.ndarray, trial_of: np.ndarray) -> np.ndarray:
    """Per unit and trial: (x − trial mean) / trial std; a unit silent in a trial stays 0 there."""
    out = values.astype(np.float64)
    for rows in _segments(trial_of):
        block = out[rows]
        std = block.std(axis=0)
        out[rows] = (block - block.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return out


def preprocess(counts: np.ndarray, trial_of: np.ndarray, bin_size_s: float | None, options: PreprocessOptions,
               smooth_of: np.ndarray | None = None) -> np.ndarray:
    """Counts after the options, in the order smoothing then normalisation.

    `smooth_of` splits the trials further for smoothing only (e.g. at gaps in the bin times, which the
    kernel must not bridge); z-scoring is always per whole trial.
    """
    check_preprocess(options)
    check_smoothing(options, trial_of, bin_size_s)
    sigma_bins = options.smooth_s / bin_size_s if bin_size_s else 0.0
    values = smooth_within_trials(counts, trial_of if smooth_of is None else smooth_of, sigma_bins)
    if options.normalize == "zscore":
        values = zscore_within_trials(values, trial_of)
    return values
