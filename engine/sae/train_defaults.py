"""Training settings chosen from the recording when the person gives none.

A fixed d_sae 512, k 8, batch 1024, 30 epochs suits the sample recording (120 units, 42k training bins)
and overfits a real session of 30 units and 2k training bins: 2 optimiser steps per epoch, val FVU 1.65
on the rat linear track, half the latents dead. The rule below was measured on the four real recordings in
shared/data and the sample (docs/architecture.md, "Training settings chosen from the recording", has
the table); every choice is printed with its
reason, and any setting given on the command line is kept as given.

- d_sae = one latent per 75 training bins, but at least 1 × and at most 4 × the units (a multiple of 8, at
  least 8): 2k training bins support about as many latents as units (on the linear track 2 × units left
  16 % and 4 × units 40 % of them dead on val), while 42k bins of the sample need 4 × to recover its
  planted ensembles (decoder MMCS 0.94 at 2 ×, 0.97 at 4 ×).
- k = units / 8 (1 to 8), at most the mean number of units active in a training bin: a code should not
  be asked to explain more independent parts than a bin has spikes.
- batch = training bins / 16 rounded down to a power of two (32 to 1024): at least 16 steps per epoch.
- epochs: early stopping on the validation loss (patience 10 epochs), at most enough epochs for
  about 8,000 steps (30 to 300); each SAE keeps its best epoch's weights.
- a latent silent for one pass over the training split (at most 50,000 bins) is dead, so AuxK revives
  it within an epoch or two instead of after 20 epochs of a small recording.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

AUTO_SETTINGS = ("d_sae", "k", "batch_size", "epochs")
"""Settings `mini train` chooses from the recording when they are not given."""

BINS_PER_LATENT = 75
"""d_sae = training bins / this, within [1, MAX_LATENTS_PER_UNIT] × units."""
MAX_LATENTS_PER_UNIT = 4
UNITS_PER_ACTIVE_LATENT = 8
"""k = units / this."""
MAX_K = 8
STEPS_PER_EPOCH = 16
"""Batch size at most training bins / this."""
TARGET_STEPS = 8_000
"""The epoch cap aims at about this many optimiser steps."""
PATIENCE = 10
"""Epochs without a better validation loss before training stops."""
DEAD_AFTER_MAX = 50_000


class RecordingShape(NamedTuple):
    """What the rule looks at: the size and sparsity of the training split."""

    n_units: int
    n_train: int
    """Training examples (bins)."""
    active_units_per_bin: float
    """Mean number of units with a non-zero value in a training bin."""


class ChosenSettings(NamedTuple):
    """Settings chosen from the recording, each with the reason printed beside it."""

    d_sae: int
    k: int
    batch_size: int
    max_epochs: int
    patience: int
    dead_after_examples: int
    reasons: dict[str, str]
    """setting → 'value (why)'."""


def recording_shape(counts: np.ndarray, train: np.ndarray) -> RecordingShape:
    """The shape the rule needs, from the training rows (`train`, a mask) of counts [bins × units].

    Active units are counted per row of the whole matrix and then masked: the training rows are never
    copied out (the trainer makes its own copy of them)."""
    n_train = int(np.count_nonzero(train))
    active = float(np.count_nonzero(counts, axis=1)[train].mean()) if n_train else 0.0
    return RecordingShape(counts.shape[1], n_train, active)


def _power_of_two_at_most(value: float) -> int:
    return 2 ** max(0, math.floor(math.log2(max(value, 1))))


def choose_settings(shape: RecordingShape) -> ChosenSettings:
    """The rule of the module docstring."""
    units, n_train = shape.n_units, shape.n_train
    by_bins = n_train / BINS_PER_LATENT
    latents = min(max(by_bins, units), MAX_LATENTS_PER_UNIT * units)
    d_sae = max(8, math.ceil(latents / 8) * 8)
    d_reason = (f"one latent per {BINS_PER_LATENT} of {n_train:,} training bins"
                if units < by_bins < MAX_LATENTS_PER_UNIT * units
                else f"{units} units" if by_bins <= units else f"{MAX_LATENTS_PER_UNIT} × {units} units")
    k_limits = [
        (max(1, round(units / UNITS_PER_ACTIVE_LATENT)), f"{units} units / {UNITS_PER_ACTIVE_LATENT}"),
        (max(1, round(shape.active_units_per_bin)),
         f"{shape.active_units_per_bin:.1f} units active per training bin"),
        (MAX_K, f"at most {MAX_K}"),
        (d_sae, f"at most d_sae {d_sae}"),
    ]
    k, k_reason = min(k_limits, key=lambda limit: limit[0])
    batch = min(1024, max(32, _power_of_two_at_most(n_train / STEPS_PER_EPOCH)))
    batch = min(batch, max(1, n_train))
    steps = max(1, n_train // batch)
    max_epochs = min(300, max(30, math.ceil(TARGET_STEPS / steps)))
    dead_after = max(batch, min(DEAD_AFTER_MAX, n_train))
    reasons = {
        "d_sae": f"{d_sae} ({d_reason})",
        "k": f"{k} ({k_reason})",
        "batch_size": f"{batch} ({steps} steps per epoch over {n_train:,} training bins)",
        "epochs": f"early stopping on val (patience {PATIENCE}), at most {max_epochs}",
    }
    return ChosenSettings(d_sae, k, batch, max_epochs, PATIENCE, dead_after, reasons)
