"""A CPU training step's exact BatchTopK without the float32 encoder matmul: screened in bfloat16, decided in float32.

The dense encoder matmul is most of a CPU step, and almost all of its [n, B, D] products are only compared with a
cutoff and dropped. On a CPU with bfloat16 dot-product instructions (AVX512-BF16, AMX) a bf16 matmul takes under
half the time. Its products are not the float32 ones, but they differ from the exact ones by a bounded amount, so
they can screen: every entry whose float32 pre-activation is above last step's floor (a fraction of its cutoff, what
`batch_cutoffs` takes as candidates: selection.candidate_floors) has a bf16 product above a lowered floor. Only the
entries that pass the screen (about 1.3× the candidates) get float32 pre-activations, by a sampled matmul, and
`batch_cutoffs`' rule then runs on those: the same entries and cutoffs, with values that differ from the dense
matmul's only in float32 rounding. At inference a BatchTopK threshold is the floor itself (`screened_above`).

The bound, for an input row x and an encoder row w with the bias folded in (x̃ = [x, 1], w̃ = [w, b]): rounding both
to bf16 (unit roundoff u = 2⁻⁸) moves each product by at most (2u + u²)·|x̃ᵢ w̃ᵢ|; the float32 accumulation adds
at most K·2⁻²⁴ of Σ|x̃ᵢ w̃ᵢ| (K ≤ 2⁸ here, so 2⁻¹⁶ covers it); Σ|x̃ᵢ w̃ᵢ| ≤ ‖x̃‖·‖w̃‖; and rounding the sum to bf16
costs one more factor (1 − u), taken as (1 − 3u) to absorb the floor's own rounding to bf16. With every floor
positive, bf16 values compare as their int16 bit patterns, which NumPy compares at memory speed.
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import torch

from engine.sae.selection import above_floors, candidate_floors, cutoffs_among, sae_bounds
from engine.sae.sparse_ops import group_offsets, index_div, sampled_dots

SCREEN_MIN_ELEMENTS = 1 << 21
"""Smallest step (SAEs × batch × width) the screen is used for. Its fixed costs (norms, bf16 copies, the lowered
floors) outweigh the matmul it saves on small steps: at batch 1024 and width 512 on two cores it was 4 % slower
than the dense path for one SAE, even for two, 6 % faster for four and 10-12 % for eight."""

_U = 2.0 ** -8
"""bfloat16's unit roundoff."""
_RELATIVE_ERROR = 2 * _U + _U * _U + 2.0 ** -16
"""Bound on |bf16 product − exact| / (‖x̃‖·‖w̃‖): the operands' rounding and a float32 accumulation of ≤ 256 terms."""


@functools.cache
def native_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (the screen is a loss where bf16 is emulated). Read from the
    kernel's CPU flags: Linux only; elsewhere the dense float32 path runs."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def screened_cutoffs(centred: torch.Tensor, centred_flat: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
                     budgets: list[int], estimate: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """`batch_cutoffs(centred @ w_encᵀ + b_enc, budgets, estimate)` without the dense float32 matmul: (flat indices
    into [n, B, D], their float32 pre-activations, each SAE's cutoff), or None where the screen cannot decide (a
    lowered floor at or below 0, where the bound is wider than the floor, or fewer candidates than a budget: the
    caller then takes the dense path).

    centred [n, B, d] float32 (the encoder's input per SAE), centred_flat its [n·B, d] copy, w_enc [n, D, d],
    b_enc [n, D], estimate [n] last step's cutoffs (all > 0)."""
    n, batch, _ = centred.shape
    width = w_enc.shape[1]
    floor = candidate_floors(estimate, budgets)  # [n], float32 as batch_cutoffs computes it
    passed = screen(centred, w_enc, b_enc, floor)
    if passed is None:
        return None
    # From here batch_cutoffs' rule on the float32 values: candidates above the floor, each SAE's budget-th largest.
    candidates, values = _exactly_above(passed, centred_flat, w_enc, b_enc, floor, batch)
    bounds = sae_bounds(candidates, n, batch * width)
    if (np.diff(bounds) < np.asarray(budgets)).any():
        return None
    return cutoffs_among(candidates, values, bounds, budgets)


def screened_above(centred: torch.Tensor, centred_flat: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
                   floors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`entries_above(centred @ w_encᵀ + b_enc, floors)` (a BatchTopK threshold's selection at inference) without the
    dense float32 matmul: (flat indices into [n, B, D], ascending; their float32 pre-activations), or None where a
    lowered floor is at or below 0 (the caller then takes the dense path). Arguments as screened_cutoffs'; floors [n]."""
    passed = screen(centred, w_enc, b_enc, floors)
    if passed is None:
        return None
    chosen, values = _exactly_above(passed, centred_flat, w_enc, b_enc, floors, centred.shape[1])
    return torch.from_numpy(chosen), torch.from_numpy(values)


def _exactly_above(passed: torch.Tensor, centred_flat: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
                   floors: torch.Tensor, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Of the entries that passed the screen (flat indices into [n, B, D]), those whose float32 pre-activation (a
    sampled matmul over them alone) is above their SAE's floor: (indices, pre-activations) as NumPy arrays."""
    n, width, d = w_enc.shape
    row = index_div(passed, width)  # sae · B + example
    sae = index_div(row, batch)
    latent = passed - (row - sae) * width  # sae · D + feature
    values = sampled_dots(group_offsets(row, n * batch), latent, centred_flat, w_enc.reshape(n * width, d))
    values += b_enc.reshape(-1).index_select(0, latent)
    above = np.flatnonzero(values.numpy() > floors.numpy()[sae.numpy()])
    return passed.numpy()[above], values.numpy()[above]


def screen(centred: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor, floor: torch.Tensor) -> torch.Tensor | None:
    """Flat indices into [n, B, D] (ascending) of a superset of the entries whose pre-activation centred · w + b is
    above its SAE's floor ([n]), from one bf16 matmul; None where a lowered floor is at or below 0."""
    n, batch, d = centred.shape
    width = w_enc.shape[1]
    # ‖x̃‖ per example and the largest ‖w̃‖ per SAE: one bound per (SAE, example) row, compared as a [n, B, 1] floor.
    input_norms = torch.linalg.vector_norm(centred, dim=2).square_().add_(1).sqrt_()
    weight_norms = (torch.linalg.vector_norm(w_enc, dim=2).square() + b_enc.square()).sqrt_().amax(1)
    lowered = (floor.unsqueeze(1) - input_norms * weight_norms.unsqueeze(1) * _RELATIVE_ERROR - 1e-30) * (1 - 3 * _U)
    if not bool((lowered > 0).all()):
        return None
    inputs = centred.new_empty((n, batch, d + 1), dtype=torch.bfloat16)
    inputs[..., :d] = centred
    inputs[..., d] = 1
    weights = w_enc.new_empty((n, width, d + 1), dtype=torch.bfloat16)
    weights[..., :d] = w_enc
    weights[..., d] = b_enc
    products = torch.bmm(inputs, weights.transpose(1, 2))
    floors = lowered.to(torch.bfloat16).view(torch.int16).unsqueeze(2).numpy()
    return torch.from_numpy(above_floors(products.view(torch.int16).numpy(), floors))
