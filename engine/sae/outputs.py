"""What a stack's encode and forward passes return (engine.sae.model.SAEStack)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SparseCode(NamedTuple):
    """The active (SAE, example, latent) entries of a batch, sorted by SAE then example."""

    row: torch.Tensor
    """sae · batch + example, per entry (int64)."""
    latent: torch.Tensor
    """Latent index within its SAE, per entry (int64)."""
    value: torch.Tensor
    """Activation, per entry (float, with autograd where training)."""
    level: torch.Tensor
    """Matryoshka level of the entry's latent (0 for other architectures)."""


class ForwardOutput(NamedTuple):
    """What a training step needs from a forward pass."""

    reconstruction: torch.Tensor
    """[n, B, d_in] in input units, after the output nonlinearity."""
    code: SparseCode
    loss: torch.Tensor
    """Scalar: the sum over SAEs of each SAE's total loss, so each SAE's gradient is its own."""
    per_sae_loss: torch.Tensor
    """[n] total loss per SAE (reconstruction plus the L1 or AuxK term), detached."""
    per_sae_reconstruction: torch.Tensor
    """[n] reconstruction loss alone per SAE, detached: the figure comparable across steps (the AuxK term
    appears only once latents count as dead, and would read as a jump in the total)."""
    l0: torch.Tensor
    """[n] mean active latents per example."""
