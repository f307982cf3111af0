"""BatchTopK selection over dense pre-activations: which (SAE, example, latent) entries a step keeps.

Two ways to the same budget of B·k entries per SAE, over a band [n, B, W] of pre-activations (the whole width, or one
Matryoshka band):
- `batch_cutoffs` (CPU, and inference): exact. The candidates are the entries above a fraction of last step's cutoff
  (one comparison and one nonzero, far cheaper than a top-k over every row), and the cutoff is the
  budget-th largest among them; every entry at or above it is kept, ties included. On the CPU it runs in NumPy
  (`_batch_cutoffs_numpy`: the same result bit for bit, 2-3x faster).
- `batch_top` (a CUDA training step): tensors of fixed size, so that the GPU never stops to tell the host how many
  entries there are; exactly the budget, ties at the cutoff not all kept.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

CANDIDATE_FRACTION = 0.95
"""Candidates are the entries above at most this fraction of last step's cutoff (candidate_floors). Fewer candidates
make a step cheaper (5 % of an 8-SAE step against 0.9); a cutoff that falls further than the floor only costs that
step a fallback to every positive entry, never a different selection."""
BUDGET_NOISE = 4.5
"""A cutoff's fall from one step to the next, times √budget, that candidate_floors leaves room for. The budget-th
largest of a fresh batch varies about as 1/√budget: over 10 epochs of the sample recording, 8 SAEs' cutoffs fell
by at most 4 % at a budget of 8,192 (and 32,768: the drift of learning itself), 9 % at 2,048 and 15 % at 512."""


def candidate_floors(estimate: torch.Tensor, budgets: list[int]) -> torch.Tensor:
    """Each SAE's candidate floor [n]: a fraction of last step's cutoff (`estimate`, [n]), 1 − BUDGET_NOISE/√budget
    but at most CANDIDATE_FRACTION (and at least 0: candidates are positive), so that a small budget's noisier
    cutoff seldom falls below it."""
    fractions = [min(CANDIDATE_FRACTION, max(0.0, 1 - BUDGET_NOISE / math.sqrt(max(budget, 1)))) for budget in budgets]
    return estimate * torch.tensor(fractions, dtype=estimate.dtype, device=estimate.device)


def batch_cutoffs(band: torch.Tensor, budgets: list[int], estimate: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact BatchTopK over a band [n, B, W]: the flat indices into the band (ascending) of each SAE's
    `budgets[i]` largest positive entries, their values, and each SAE's cutoff.

    Candidates are the entries above a fraction of last step's cutoff (one comparison and one
    nonzero, far cheaper than a top-k over every row); if that leaves too few, all positive
    entries are candidates. Either way every entry above the true cutoff is a candidate, so
    the selection is exact.
    """
    if band.device.type == "cpu" and band.dtype in (torch.float32, torch.float64):
        return _batch_cutoffs_numpy(band, budgets, estimate)
    return _batch_cutoffs_torch(band, budgets, estimate)


def _batch_cutoffs_torch(band: torch.Tensor, budgets: list[int], estimate: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """batch_cutoffs in PyTorch operations, for any device and dtype."""
    n, batch, width = band.shape
    flat = band.reshape(-1)
    per_sae = batch * width
    if estimate is None:
        candidates = (flat > 0).nonzero().squeeze(1)
    else:
        candidates = (band > candidate_floors(estimate, budgets).view(n, 1, 1)).view(-1).nonzero().squeeze(1)
    sae = candidates // per_sae if n > 1 else None
    counts = [len(candidates)] if sae is None else torch.bincount(sae, minlength=n).tolist()
    if estimate is not None and any(c < b for c, b in zip(counts, budgets, strict=True)):
        candidates = (flat > 0).nonzero().squeeze(1)
        sae = candidates // per_sae if n > 1 else None
        counts = [len(candidates)] if sae is None else torch.bincount(sae, minlength=n).tolist()
    values = flat.index_select(0, candidates)
    if sae is None:  # one SAE: its cutoff is a scalar, no per-entry gather
        take = min(budgets[0], counts[0])
        cutoff = values.topk(take, sorted=False).values.min() if take else band.new_zeros(())
        keep = (values >= cutoff).nonzero().squeeze(1)
        return candidates.index_select(0, keep), values.index_select(0, keep), cutoff.reshape(1)
    if len(set(budgets)) == 1 and min(counts) >= budgets[0]:
        # Every SAE takes the same budget from at least as many candidates: one k-th value over a padded
        # [n, most candidates] table instead of a top-k per SAE.
        starts = torch.tensor(list(itertools.accumulate(counts, initial=0))[:-1], device=band.device)
        table = values.new_full((n, max(counts)), -torch.inf)
        table[sae, torch.arange(len(values), device=band.device) - starts[sae]] = values
        cutoffs = -torch.kthvalue(-table, budgets[0], dim=1).values
        keep = (values >= cutoffs[sae]).nonzero().squeeze(1)
        return candidates.index_select(0, keep), values.index_select(0, keep), cutoffs
    cutoffs = band.new_zeros(n)  # band's dtype: a float32 cutoff would round a float64 one
    start = 0
    for i, count in enumerate(counts):  # a few SAEs at most: a loop of small ops
        take = min(budgets[i], count)
        if take:
            cutoffs[i] = values[start: start + count].topk(take, sorted=False).values.min()
        start += count
    keep = (values >= cutoffs[sae]).nonzero().squeeze(1)
    return candidates.index_select(0, keep), values.index_select(0, keep), cutoffs


def _batch_cutoffs_numpy(band: torch.Tensor, budgets: list[int], estimate: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """batch_cutoffs on the CPU through NumPy, on a view of the same memory, with the same result bit for bit.
    NumPy's comparison and flatnonzero over [8, 1024, 512] float32 take 0.6 and 1.6 ms on one core, PyTorch's
    2.4 and 4.6 ms (its comparison writes one bool at a time); true_indices takes the flatnonzero to under half."""
    n, batch, width = band.shape
    per_sae = batch * width
    values_of = band.detach().numpy()
    zeros = np.zeros((n, 1, 1), dtype=values_of.dtype)
    if estimate is None:
        candidates = above_floors(values_of, zeros)
    else:
        candidates = above_floors(values_of, candidate_floors(estimate, budgets).to(band.dtype).view(n, 1, 1).numpy())
    bounds = sae_bounds(candidates, n, per_sae)
    if estimate is not None and (np.diff(bounds) < np.asarray(budgets)).any():
        candidates = above_floors(values_of, zeros)
        bounds = sae_bounds(candidates, n, per_sae)
    values = values_of.reshape(-1)[candidates]  # a copy only where the band is a strided view (a Matryoshka band)
    return cutoffs_among(candidates, values, bounds, budgets)


def sae_bounds(candidates: np.ndarray, n: int, per_sae: int) -> np.ndarray:
    """Where each SAE's candidates start in ascending flat indices into [n, per_sae], then their end (n + 1 values):
    a binary search, not a division and a bincount."""
    return np.searchsorted(candidates, np.arange(n + 1) * per_sae)


def cutoffs_among(candidates: np.ndarray, values: np.ndarray, bounds: np.ndarray, budgets: list[int]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchTopK's rule over candidates (ascending flat indices into [n, per_sae], their values, and each SAE's
    slice of them, sae_bounds): each SAE's cutoff is the budget-th largest of its candidates (0 where it has none),
    and every candidate at or above it is kept; the cutoff is one partition of the SAE's slice."""
    n = len(bounds) - 1
    cutoffs = np.zeros(n, dtype=values.dtype)
    for i, (start, end) in enumerate(itertools.pairwise(bounds.tolist())):  # a few SAEs at most
        take = min(budgets[i], end - start)
        if take:  # the take-th largest of the SAE's candidates
            cutoffs[i] = np.partition(values[start:end], end - start - take)[end - start - take]
    keep = np.flatnonzero(values >= np.repeat(cutoffs, np.diff(bounds)))
    return torch.from_numpy(candidates[keep]), torch.from_numpy(values[keep]), torch.from_numpy(cutoffs)


def above_floors(values_of: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Flat indices (ascending) of the entries of [n, B, W] above their SAE's floor ([n, 1, 1] or [n, B, 1]). One
    core: comparing the SAEs' halves on a second thread measured 2-3 % slower on two cores (PyTorch's OpenMP
    workers still spin there after the matmul)."""
    return true_indices(values_of > floors)


SPARSE_WORDS = 0.5
"""true_indices looks inside the 8-byte words with a true byte only where they are at most this fraction of all."""


def true_indices(mask: np.ndarray) -> np.ndarray:
    """np.flatnonzero of a bool array, faster where few are true. NumPy's nonzero visits every byte (0.5 ns each:
    2.2 ms over a step's 4M screened products); here it visits one flag per 8-byte word, then the bytes of only the
    words with a true byte in them: a quarter of the words at the 3.5 % of products a screen passes, 1.1 ms in all."""
    flat = np.ascontiguousarray(mask).reshape(-1)  # a copy only of a strided mask (a view of one may be strided)
    whole = len(flat) - len(flat) % 8
    words = flat[:whole].view(np.uint64)
    busy = np.flatnonzero(words != 0)
    if len(busy) > SPARSE_WORDS * len(words):  # dense: the detour costs more than it skips
        return np.flatnonzero(flat)
    byte = np.flatnonzero(words[busy].view(np.bool_))  # positions among the busy words' bytes
    found = (busy << 3)[byte >> 3] | (byte & 7)
    if whole < len(flat):
        found = np.concatenate([found, whole + np.flatnonzero(flat[whole:])])
    return found


def entries_above(pre: torch.Tensor, floors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices into pre [n, B, D], ascending; their values) of the entries above their SAE's floor ([n]): the
    selection at inference (a BatchTopK threshold) and ReLU's. On the CPU through NumPy (above_floors), bit for bit
    PyTorch's comparison and nonzero at a fraction of their time."""
    n = pre.shape[0]
    if pre.device.type == "cpu" and pre.dtype in (torch.float32, torch.float64):
        values_of = pre.detach().numpy()
        chosen = above_floors(values_of, floors.to(pre.dtype).view(n, 1, 1).numpy())
        return torch.from_numpy(chosen), torch.from_numpy(values_of.reshape(-1)[chosen])
    chosen = (pre > floors.view(n, 1, 1)).view(-1).nonzero().squeeze(1)
    return chosen, pre.reshape(-1).index_select(0, chosen)


def batch_top(band: torch.Tensor, budgets: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchTopK over a band [n, B, W] in tensors of fixed size (no host synchronisation): the flat indices into
    the band (ascending) of each SAE's `budgets[i]` largest entries, their values and each SAE's smallest pick.

    Unlike batch_cutoffs it takes exactly the budget: ties at the cutoff are not all kept, and where a band has
    fewer positive entries than its budget the rest are entries <= 0, whose activations relu makes 0 (they add
    nothing to the reconstruction and get no gradient; l0 and the dead counters skip them)."""
    n, batch, width = band.shape
    per_sae = batch * width
    flat = band.reshape(n, per_sae)
    takes = [min(budget, per_sae) for budget in budgets]
    groups = [(slice(0, n), takes[0])] if len(set(takes)) == 1 else [(slice(i, i + 1), t) for i, t in enumerate(takes)]
    picks, values, cutoffs = [], [], []
    for rows, take in groups:
        top, index = flat[rows].topk(take, dim=1, sorted=False)
        index, order = index.sort(dim=1)
        top = top.gather(1, order)
        first = rows.start
        offsets = torch.arange(first, first + top.shape[0], device=band.device).unsqueeze(1) * per_sae
        picks.append((index + offsets).reshape(-1))
        values.append(top.reshape(-1))
        cutoffs.append(top.amin(1) if take else band.new_zeros(top.shape[0]))
    return torch.cat(picks), torch.cat(values), torch.cat(cutoffs)
