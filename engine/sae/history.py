"""Temporal context (`mini train --history L`): the input of bin t is bins t-L+1 … t of the same trial.

The model's example for bin t is [lag 0 (bin t) | lag 1 (bin t-1) | … | lag L-1] of the input units, followed by
bin t's target units; the stack is then a transcoder (engine.sae.model) from L × inputs to the targets.

History never crosses a trial boundary: a bin with fewer than L-1 earlier bins in its own trial (the first L-1
bins of every trial) is no example for training, validation or QC. Every bin still needs a code, because ranking
and validation read every bin of a split, so those bins are encoded with their missing lags set to each unit's
mean over the train bins: a typical value, which moves the code as little as any value can (a zero would read as
silence, a burst of inhibition the unit never showed). How many bins this concerns is said when training starts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from engine.errors import InputError
from engine.memory import check_fits, human_bytes
from engine.options import check_integer

MAX_HISTORY = 64
"""Most lags --history may ask for: 64 bins is seconds of context at the usual bin sizes, and each lag adds a
copy of the input units to every example."""


class HistoryExamples(NamedTuple):
    """The model's examples with their history, and which bins have all of it."""

    examples: np.ndarray
    """[bins, L × inputs + targets] float32: lag 0's inputs first, then lag 1's, …, then the targets."""
    complete: np.ndarray
    """[bins] bool: the bin has L-1 earlier bins in its own trial (an example for training and QC)."""


def check_history(history: int) -> int:
    return check_integer("--history", history, 1, MAX_HISTORY,
                         why="the input of a bin is that many bins of its trial, the bin itself included")


def trial_positions(trial_ids: np.ndarray) -> np.ndarray:
    """Each bin's index within its run of consecutive bins of one trial (0 at a trial's first bin)."""
    n = len(trial_ids)
    starts = np.ones(n, dtype=bool)
    starts[1:] = trial_ids[1:] != trial_ids[:-1]
    start_index = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - start_index


def history_examples(counts: np.ndarray, inputs: np.ndarray, targets: np.ndarray, trial_ids: np.ndarray,
                     history: int, fill: np.ndarray) -> HistoryExamples:
    """Examples for a stack with `history` lags of the `inputs` columns of `counts` (bins in time order, their
    trial ids in `trial_ids`), decoding the `targets` columns of the same bin; `fill` [len(inputs)] stands in
    for lags before a bin's trial began."""
    n, d_in, d_out = counts.shape[0], len(inputs), len(targets)
    size = n * (history * d_in + d_out) * 4
    check_fits(f"--history {history}: {n:,} bins × ({history} lags × {d_in:,} input units + {d_out:,} targets) as "
               f"float32 ({human_bytes(size)})", size, "use a smaller --history or fewer --inputs")
    if len(trial_ids) != n:
        raise InputError(f"the dataset has {n:,} bins but {len(trial_ids):,} trial ids")
    position = trial_positions(trial_ids)
    source = counts[:, inputs].astype(np.float32, copy=False)
    out = np.empty((n, history * d_in + d_out), dtype=np.float32)
    for lag in range(history):
        block = out[:, lag * d_in:(lag + 1) * d_in]
        block[lag:] = source[:n - lag]
        block[position < lag] = fill  # before the bin's trial began (and the recording's first bins)
    out[:, history * d_in:] = counts[:, targets]
    return HistoryExamples(out, position >= history - 1)


def lag_norms(w_enc: np.ndarray, history: int) -> np.ndarray:
    """[n, d_sae, L] norm of each feature's encoder weights at each lag, from W_enc [n, d_sae, L × inputs]."""
    n, d_sae, width = w_enc.shape
    return np.linalg.norm(w_enc.reshape(n, d_sae, history, width // history), axis=-1)
