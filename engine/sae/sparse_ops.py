"""Sparse encode and decode with hand-written backward passes: the SAE's hot path.

An SAE step touches only the active (example, latent) entries after the dense encoder matmul. These
autograd Functions keep it that way in the backward pass too: every gradient is a gather or an
`embedding_bag` over the active entries (O(entries × d_in)), where PyTorch's generic backward of
indexing or of `embedding_bag` would scatter into dense tensors or sort on every call.

Entries are described once per step by `Entries` (indices, and the same entries grouped by latent),
and shared by every encode and decode of that step. All tensors are flat over the stack:
row = sae · batch + example, latent = sae · d_sae + feature.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Entries:
    """Active entries sorted by row, with the bookkeeping to sum them by row or by latent."""

    row: torch.Tensor
    """Flat row (sae · batch + example) of each entry, ascending."""
    latent: torch.Tensor
    """Flat latent (sae · d_sae + feature) of each entry."""
    row_offsets: torch.Tensor
    """Start of each row's entries over n · batch rows, then the number of entries (n · batch + 1 values: the
    CSR row pointer, and embedding_bag's offsets with include_last_offset)."""
    n_rows: int
    n_latents: int

    @classmethod
    def build(cls, row: torch.Tensor, latent: torch.Tensor, n_rows: int, n_latents: int) -> Entries:
        return cls(row, latent, group_offsets(row, n_rows), n_rows, n_latents)

    # The entries grouped by latent serve only gradients (sum_by_latent): built on first use, so that inference
    # (validation every epoch, encode and decode everywhere) never sorts.
    @cached_property
    def by_latent(self) -> torch.Tensor:
        """Permutation that groups the entries by latent (stable: by row within a latent)."""
        return grouping_order(self.latent, self.n_latents)

    @cached_property
    def latent_offsets(self) -> torch.Tensor:
        """Start of each latent's entries in `by_latent` order over n · d_sae latents, then the number of entries."""
        return group_offsets(self.latent, self.n_latents)

    @cached_property
    def row_by_latent(self) -> torch.Tensor:
        """`row` in `by_latent` order."""
        return self.row[self.by_latent]

    def pairwise_dots(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left[row] · right[latent] for every entry. On CPU without materialising [entries × d] gathers (a sampled
        matmul over the entries' sparsity pattern: ~50× faster than gather-multiply-sum); elsewhere by gathers in
        chunks of fixed size (dots_by_gather), which no GPU backend has to synchronise for."""
        if left.device.type != "cpu":
            return dots_by_gather(left, right, self.row, self.latent)
        return sampled_dots(self.row_offsets, self.latent, left, right)

    def sum_by_row(self, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """out[r] = Σ_entries in row r  weights · table[latent]   → [n_rows, d]."""
        return F.embedding_bag(self.latent, table, self.row_offsets, per_sample_weights=weights, mode="sum",
                               include_last_offset=True)

    def sum_by_latent(self, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """out[l] = Σ_entries of latent l  weights · table[row]   → [n_latents, d]."""
        return F.embedding_bag(self.row_by_latent, table, self.latent_offsets,
                               per_sample_weights=weights[self.by_latent], mode="sum", include_last_offset=True)


def grouping_order(keys: torch.Tensor, n_keys: int) -> torch.Tensor:
    """A stable permutation that groups `keys` (0 <= key < n_keys) in ascending order. On the CPU, up to 32k keys
    of at most 2^16 values, NumPy's radix sort of uint16 keys (42 against PyTorch's 125 µs at 8k entries, two
    threads); PyTorch's sort elsewhere (at 64k entries it matches NumPy on two threads, and it uses more where there
    are), on the narrowest integer type that holds every key (sorting int16 keys takes a third of the time of int64
    ones)."""
    if keys.device.type == "cpu" and n_keys <= 1 << 16 and len(keys) <= 1 << 15:
        return torch.from_numpy(np.argsort(keys.numpy().astype(np.uint16), kind="stable"))
    return sorted_grouping(keys, n_keys)


def sorted_grouping(keys: torch.Tensor, n_keys: int) -> torch.Tensor:
    """grouping_order by PyTorch's stable sort, on any device (no host synchronisation)."""
    narrow = torch.int16 if n_keys <= 1 << 15 else torch.int32 if n_keys <= 1 << 31 else keys.dtype
    return torch.argsort(keys.to(narrow), stable=True)


def sampled_dots(row_offsets: torch.Tensor, column: torch.Tensor, left: torch.Tensor, right: torch.Tensor
                 ) -> torch.Tensor:
    """left[row] · right[column] for entries sorted by row (row_offsets: CSR's row pointer over left's rows), as a
    sampled matmul over their sparsity pattern (CPU)."""
    with warnings.catch_warnings():  # CSR is "beta" in PyTorch; this one operation on it is stable
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(row_offsets, column, left.new_zeros(len(column)),
                                          (left.shape[0], right.shape[0]), check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, left, right.t(), beta=0.0).values()


GATHER_CHUNK = 1 << 16
"""Entries per chunk of dots_by_gather: two [chunk × d] gathers at a time (512 MiB at d = 1024)."""


def dots_by_gather(left: torch.Tensor, right: torch.Tensor, row: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """left[row] · right[latent] per entry, gathered and multiplied in chunks whose sizes are known on the host."""
    parts = [(left.index_select(0, row[start: start + GATHER_CHUNK])
              * right.index_select(0, latent[start: start + GATHER_CHUNK])).sum(1)
             for start in range(0, len(row), GATHER_CHUNK)]
    return torch.cat(parts) if parts else left.new_zeros(0)


def index_div(indices: torch.Tensor, divisor: int) -> torch.Tensor:
    """indices // divisor for indices >= 0: a shift where the divisor is a power of two (widths and batch sizes
    usually are), which on the CPU takes a tenth of the time of an integer division (19 against 181 µs at 90k)."""
    if divisor & (divisor - 1) == 0:
        return indices >> (divisor.bit_length() - 1)
    return indices // divisor


def group_offsets(sorted_or_grouped: torch.Tensor, n: int) -> torch.Tensor:
    """Where each of 0..n-1 starts once the indices are grouped in ascending order, then where they end (n + 1)."""
    return F.pad(torch.cumsum(_counts(sorted_or_grouped, n), 0), (1, 0))


def _counts(indices: torch.Tensor, n: int) -> torch.Tensor:
    """How often each of 0..n-1 occurs: bincount on CPU (the faster there), counts_without_sync elsewhere."""
    return torch.bincount(indices, minlength=n) if indices.device.type == "cpu" else counts_without_sync(indices, n)


def counts_without_sync(indices: torch.Tensor, n: int) -> torch.Tensor:
    """bincount's result by adding ones: CUDA's bincount reads the largest index on the host to size its output."""
    return torch.zeros(n, dtype=torch.long, device=indices.device).index_add_(0, indices, torch.ones_like(indices))


class _SparseEncode(torch.autograd.Function):
    """value = relu(W_enc[latent] · centred[row] + b_enc[latent]) with centred = input − b_dec of the row's SAE,
    given its precomputed forward value."""

    @staticmethod
    def forward(ctx, pre_values, centred, w_enc, b_enc, b_dec, entries):  # type: ignore[override]
        values = F.relu(pre_values)
        ctx.entries = entries
        ctx.save_for_backward(values, centred, w_enc)
        ctx.n_bias, ctx.b_dec_shape = b_enc.shape[0], b_dec.shape
        return values

    @staticmethod
    def backward(ctx, grad_values):  # type: ignore[override]
        values, centred, w_enc = ctx.saved_tensors
        entries: Entries = ctx.entries
        grad = grad_values * (values > 0)
        grad_w_enc = entries.sum_by_latent(centred, grad)
        grad_b_enc = torch.zeros(ctx.n_bias, dtype=grad.dtype, device=grad.device).index_add_(0, entries.latent, grad)
        grad_b_dec = None
        if ctx.needs_input_grad[4]:
            # d/d b_dec of Σ_entries grad · W_enc[latent] · (x[row] − b_dec) is −Σ_latents grad_b_enc · W_enc[latent]
            # per SAE: one small matmul instead of a gradient for every centred row that is then summed.
            n, d = ctx.b_dec_shape
            grad_b_dec = torch.bmm(grad_b_enc.view(n, 1, -1), w_enc.view(n, -1, d)).view(n, d).neg_()
        return None, None, grad_w_enc, grad_b_enc, grad_b_dec, None


class _SparseDecode(torch.autograd.Function):
    """out[row] = Σ value · W_dec[latent] over the row's entries."""

    @staticmethod
    def forward(ctx, values, w_dec, entries):  # type: ignore[override]
        ctx.entries = entries
        ctx.save_for_backward(values, w_dec)
        return entries.sum_by_row(w_dec, values)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        values, w_dec = ctx.saved_tensors
        entries: Entries = ctx.entries
        grad_out = grad_out.contiguous()
        grad_values = entries.pairwise_dots(grad_out, w_dec)  # d loss / d value = grad_out[row] · W_dec[latent]
        grad_w_dec = entries.sum_by_latent(grad_out, values)
        return grad_values, grad_w_dec, None


def sparse_encode(pre: torch.Tensor, centred: torch.Tensor, w_enc: torch.Tensor, b_enc: torch.Tensor,
                  b_dec: torch.Tensor, entries: Entries) -> torch.Tensor:
    """Values of the entries with a sparse backward. `pre` is the dense pre-activation [n·B, n·D]-flat
    view's values at the entries, computed without autograd; centred [n·B, d] (input − b_dec, without
    autograd: b_dec [n, d] gets its gradient here), w_enc [n·D, d], b_enc [n·D]."""
    return _SparseEncode.apply(pre, centred, w_enc, b_enc, b_dec, entries)


def sparse_decode(values: torch.Tensor, w_dec: torch.Tensor, entries: Entries) -> torch.Tensor:
    """Σ value · W_dec[latent] per row → [n·B, d], with a sparse backward; w_dec is [n·D, d]."""
    return _SparseDecode.apply(values, w_dec, entries)
