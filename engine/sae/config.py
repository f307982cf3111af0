"""SAEConfig: what the SAEs of one stack are (architecture, width, k, loss), checked in one line per setting.

Pure Python (no PyTorch), so that forms and command lines can build and check one before the engine loads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from engine.errors import InputError

ARCHITECTURES = ("batchtopk", "topk", "matryoshka", "relu")
LOSSES = ("mse", "msle", "poisson")


@dataclass(frozen=True)
class SAEConfig:
    """What the SAEs of one stack are; every SAE in a stack shares these except `ks` and the seed."""

    architecture: str = "batchtopk"
    """batchtopk, topk, matryoshka (nested BatchTopK prefixes) or relu (ReLU + L1)."""
    d_sae: int = 512
    """Number of latents (features) per SAE."""
    ks: tuple[int, ...] = (8,)
    """Active latents per example, one per SAE of the stack (a k sweep); TopK exactly, BatchTopK on average."""
    matryoshka_sizes: tuple[int, ...] = ()
    """Prefix sizes, increasing, ending at d_sae; default d_sae/8, /4, /2, 1."""
    matryoshka_k_fractions: tuple[float, ...] = ()
    """Share of k used by each prefix (cumulative, ending at 1); default 1/4, 1/2, 3/4, 1."""
    matryoshka_weights: tuple[float, ...] = ()
    """Loss weight of each prefix's reconstruction; default equal, summing to 1."""
    l1_coefficient: float = 3e-3
    """ReLU only: weight of the L1 penalty on activations × decoder norms."""
    loss: str = "mse"
    """Reconstruction loss: mse, msle (log(τ+x) vs log(τ+x̂)) or poisson (negative log-likelihood)."""
    msle_tau: float = 1.0
    """τ of the MSLE loss: counts below about τ are compared almost linearly."""
    nonnegative_output: bool = True
    """Clamp reconstructions at 0 (spike counts); Poisson always uses a positive rate."""
    output: str = "clamped"
    """How MSE training treats the clamp at 0: 'clamped' (forward clamped, gradient straight through:
    decoder rows match whole ensembles) or 'linear' (no clamp while training: lower FVU, as it also
    reconstructs more of each example's noise, with decoder rows that mix ensembles). See _output."""
    aux_k: int | None = None
    """Dead latents used by the AuxK loss per example; default d_in // 2."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss."""
    dead_after_examples: int = 50_000
    """A latent that has not fired for this many training examples counts as dead."""
    threshold_momentum: float = 0.99
    """BatchTopK: momentum of the running inference threshold."""

    def validate(self, d_in: int) -> None:
        """Refuse settings that cannot train, in one line each."""
        if self.architecture not in ARCHITECTURES:
            raise InputError(f"--arch {self.architecture}: unknown (use {', '.join(ARCHITECTURES)})")
        if self.loss not in LOSSES:
            raise InputError(f"--loss {self.loss}: unknown (use {', '.join(LOSSES)})")
        if self.output not in ("clamped", "linear"):
            raise InputError(f"--output {self.output}: unknown (use clamped or linear)")
        if self.d_sae < 1:
            raise InputError(f"--d-sae {self.d_sae}: must be at least 1")
        if not self.ks:
            raise InputError("--k: at least one value")
        for k in self.ks:
            if self.architecture != "relu" and not 1 <= k <= self.d_sae:
                raise InputError(f"--k {k}: must be between 1 and --d-sae ({self.d_sae})")
        if d_in < 1:
            raise InputError("the dataset has no units")
        if self.architecture == "matryoshka":
            sizes, fractions, weights = self.levels()
            if list(sizes) != sorted(set(sizes)) or sizes[-1] != self.d_sae or sizes[0] < 1:
                raise InputError(f"matryoshka sizes {sizes}: must increase and end at d_sae ({self.d_sae})")
            if not (len(fractions) == len(weights) == len(sizes)):
                raise InputError("matryoshka sizes, k fractions and weights must have the same length")
            if any(b <= a for a, b in itertools.pairwise(fractions)) or abs(fractions[-1] - 1) > 1e-9:
                raise InputError(f"matryoshka k fractions {fractions}: must increase and end at 1")

    def levels(self) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
        """(prefix sizes, cumulative k fractions, loss weights); one level for non-Matryoshka SAEs."""
        if self.architecture != "matryoshka":
            return (self.d_sae,), (1.0,), (1.0,)
        sizes = self.matryoshka_sizes or tuple(
            s for s in dict.fromkeys(max(1, self.d_sae * m // 8) for m in (1, 2, 4, 8))
        )
        n = len(sizes)
        fractions = self.matryoshka_k_fractions or tuple((i + 1) / n for i in range(n))
        weights = self.matryoshka_weights or tuple(1 / n for _ in range(n))
        return tuple(sizes), tuple(fractions), tuple(weights)
