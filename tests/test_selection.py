"""BatchTopK's exact selection: the CPU's NumPy path gives PyTorch's result bit for bit, and both are the top-k; its
helpers (true_indices: flatnonzero by words; candidate_floors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sae.selection import (
    CANDIDATE_FRACTION,
    _batch_cutoffs_numpy,
    _batch_cutoffs_torch,
    batch_cutoffs,
    candidate_floors,
    entries_above,
    true_indices,
)


def band_with_ties(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Small integers: many entries tie at every cutoff, half of them <= 0."""
    return torch.randint(-4, 5, shape, generator=torch.Generator().manual_seed(seed)).float()


def smooth_band(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "eight SAEs, last step's cutoff": (smooth_band((8, 64, 32), 0), [128] * 8, torch.full((8,), 1.5)),
    "eight SAEs, no estimate yet": (smooth_band((8, 64, 32), 1), [128] * 8, None),
    "estimate too high: all positives": (smooth_band((8, 64, 32), 2), [128] * 8, torch.full((8,), 9.0)),
    "one SAE": (smooth_band((1, 256, 64), 3), [512], torch.tensor([1.2])),
    "budgets differ, one of them 0, one above the positives": (
        smooth_band((4, 32, 16), 4), [10, 0, 100, 10_000], torch.tensor([1.0, 1.0, 0.5, 0.5])),
    "ties at every cutoff": (band_with_ties((3, 50, 20), 5), [40, 1, 2000], None),
    "ties, with an estimate": (band_with_ties((3, 50, 20), 6), [40, 1, 300], torch.tensor([1.0, 2.0, 3.0])),
    "float64": (smooth_band((2, 40, 30), 7).double(), [60, 60], torch.tensor([1.0, 1.0])),
    "a strided band (a Matryoshka band)": (smooth_band((4, 48, 40), 8)[:, :, 8:24], [50] * 4, torch.full((4,), 1.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_the_numpy_path_is_the_torch_path_bit_for_bit(case):
    band, budgets, estimate = CASES[case]
    got, expected = _batch_cutoffs_numpy(band, budgets, estimate), _batch_cutoffs_torch(band, budgets, estimate)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.dtype == theirs.dtype
        assert torch.equal(mine, theirs)


def test_nan_pre_activations_are_never_chosen():
    band = smooth_band((2, 32, 16), 9)
    band[0, 0, :5] = torch.nan
    chosen, values, _ = batch_cutoffs(band, [64, 64], torch.tensor([1.0, 1.0]))
    assert not values.isnan().any()
    assert torch.equal(band.reshape(-1)[chosen], values)


@pytest.mark.parametrize("case", ["eight SAEs, last step's cutoff", "ties at every cutoff", "one SAE"])
def test_each_sae_keeps_its_budget_largest_positive_entries_and_every_tie(case):
    band, budgets, estimate = CASES[case]
    chosen, values, cutoffs = batch_cutoffs(band, budgets, estimate)
    n, batch, width = band.shape
    assert torch.equal(chosen, chosen.sort().values)
    sae = chosen // (batch * width)
    for i in range(n):
        row = band[i].reshape(-1)
        positives = row[row > 0]
        kth = positives.sort(descending=True).values[min(budgets[i], len(positives)) - 1]
        assert cutoffs[i] == kth
        assert torch.equal(values[sae == i].sort().values, row[row >= kth].sort().values)


@pytest.mark.parametrize("case", ["eight SAEs, last step's cutoff", "ties at every cutoff", "float64",
                                  "a strided band (a Matryoshka band)"])
def test_entries_above_a_threshold_are_pytorchs_comparison_and_nonzero(case):
    band, _, _ = CASES[case]
    floors = torch.linspace(-0.5, 1.5, band.shape[0])
    chosen, values = entries_above(band, floors)
    expected = (band > floors.view(-1, 1, 1)).view(-1).nonzero().squeeze(1)
    assert torch.equal(chosen, expected)
    assert torch.equal(values, band.reshape(-1)[expected])


MASKS = {
    "sparse, as a screen leaves it": lambda rng: rng.random((8, 64, 512)) < 0.035,
    "dense: the plain path": lambda rng: rng.random((4, 32, 64)) < 0.6,
    "no true at all": lambda rng: np.zeros((3, 40, 24), dtype=bool),
    "every one true": lambda rng: np.ones((2, 16, 8), dtype=bool),
    "a length that is no multiple of 8, trues in the tail": lambda rng: np.r_[rng.random(1000) < 0.02, [True] * 5],
    "shorter than a word": lambda rng: np.array([False, True, False, True]),
    "empty": lambda rng: np.zeros(0, dtype=bool),
    "not contiguous": lambda rng: (rng.random((64, 48)) < 0.05)[:, ::3],
    "one busy word among idle ones": lambda rng: np.r_[np.zeros(4096, bool), [True] * 8, np.zeros(4096, bool)],
}


@pytest.mark.parametrize("case", MASKS)
def test_true_indices_is_flatnonzero(case):
    mask = MASKS[case](np.random.default_rng(0))
    found = true_indices(mask)
    assert found.dtype == np.intp
    assert np.array_equal(found, np.flatnonzero(mask))


def test_candidate_floors_leave_small_budgets_more_room_and_stay_positive():
    estimate = torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0])
    floors = candidate_floors(estimate, [65_536, 8_192, 2_048, 16, 0]).tolist()
    assert floors[0] == floors[1] == pytest.approx(2.0 * CANDIDATE_FRACTION)  # capped at the usual budgets
    assert floors[1] > floors[2] > floors[3] >= 0.0  # noisier cutoffs of smaller budgets: lower floors
    assert floors[4] == 0.0  # never below 0: candidates are positive entries
    assert candidate_floors(estimate.double(), [8_192] * 5).dtype == torch.float64
