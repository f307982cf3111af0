"""BatchTopK's exact selection: the CPU's NumPy path gives PyTorch's result bit for bit, and both are the top-k."""

from __future__ import annotations

import pytest
import torch

from engine.sae.selection import _batch_cutoffs_numpy, _batch_cutoffs_torch, batch_cutoffs, entries_above


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
