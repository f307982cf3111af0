"""The sparse bookkeeping of a training step: grouping the chosen entries by latent, and encoding a split in chunks;
each against the plain operation it replaces."""

from __future__ import annotations

import pytest
import torch

from engine.sae.model import CHUNK_ELEMENTS, SAEConfig, SAEStack
from engine.sae.sparse_ops import Entries, sorted_grouping
from engine.sae.train import TrainConfig, TrainData, Trainer


@pytest.mark.parametrize("per_row", [9, 120])  # 2,700 entries (NumPy's radix sort) and 36,000 (PyTorch's sort)
@pytest.mark.parametrize("n_latents", [512, 1 << 15, (1 << 15) + 1, 1 << 16, (1 << 16) + 1, 70_000])
def test_entries_are_grouped_by_latent_stably_on_either_path(n_latents, per_row):
    generator = torch.Generator().manual_seed(3)
    rows = 300
    row = torch.arange(rows).repeat_interleave(per_row)
    latent = torch.randint(0, n_latents, (rows * per_row,), generator=generator)
    latent[:2] = torch.tensor([0, n_latents - 1])  # both ends of the key range
    entries = Entries.build(row, latent, rows, n_latents)
    grouped = latent[entries.by_latent]
    assert bool((grouped[1:] >= grouped[:-1]).all())
    assert torch.equal(torch.sort(entries.by_latent).values, torch.arange(len(latent)))  # a permutation
    # Stable: within a latent the entries keep their order, so rows ascend (the gradient sums in a fixed order).
    same_latent = grouped[1:] == grouped[:-1]
    assert bool((entries.row_by_latent[1:][same_latent] >= entries.row_by_latent[:-1][same_latent]).all())
    assert torch.equal(entries.row_by_latent, row[entries.by_latent])
    assert torch.equal(entries.by_latent, sorted_grouping(latent, n_latents))  # the CUDA path's permutation
    counts = torch.bincount(latent, minlength=n_latents)
    assert torch.equal(entries.latent_offsets[1:] - entries.latent_offsets[:-1], counts)


def test_entries_are_grouped_by_latent_for_gradients_only(monkeypatch):
    """Validation and encoding never sort (the grouping serves the backward pass); a training step does, once."""
    calls = []
    monkeypatch.setattr("engine.sae.sparse_ops.grouping_order",
                        lambda keys, n_keys: calls.append(len(keys)) or sorted_grouping(keys, n_keys))
    generator = torch.Generator().manual_seed(5)
    x = torch.poisson(torch.rand(512, 20, generator=generator) * 3)
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=64, ks=(4,)), 20, (0,))
    stack.initialise_from_data(x)
    trainer = Trainer(stack, TrainData(x[:384], x[384:], torch.device("cpu")),
                      TrainConfig(epochs=1, batch_size=128, device="cpu"))
    trainer.train_step(x[:128])
    assert calls == [4 * 128]
    trainer.validation_loss()
    stack.decode(stack.encode(x, use_threshold=True), len(x))
    assert calls == [4 * 128]


def test_chunk_rows_keep_the_dense_block_near_its_budget():
    small = SAEStack(SAEConfig(d_sae=512, ks=(8,)), 20, (0,))
    wide = SAEStack(SAEConfig(d_sae=8192, ks=(8, 8)), 20, (0, 1))
    assert small.chunk_rows() * 512 == CHUNK_ELEMENTS
    assert wide.chunk_rows() == 256  # the floor: 2 × 8192 latents would allow fewer rows
    stack = SAEStack(SAEConfig(d_sae=512, ks=(8,) * 8), 20, tuple(range(8)))
    assert stack.chunk_rows() * 8 * 512 == CHUNK_ELEMENTS


def test_validation_loss_in_chunks_is_the_loss_of_the_whole_split():
    generator = torch.Generator().manual_seed(4)
    rates = 0.3 + 3.7 * torch.rand(20, generator=generator)
    train = torch.poisson(rates.expand(2048, 20).contiguous(), generator=generator)
    val = torch.poisson(rates.expand(1000, 20).contiguous(), generator=generator)
    stack = SAEStack(SAEConfig(d_sae=8192, ks=(4, 6)), 20, (0, 1))  # chunks of 256 rows: 4 of them
    stack.initialise_from_data(train)
    trainer = Trainer(stack, TrainData(train, val, torch.device("cpu")),
                      TrainConfig(epochs=1, batch_size=512, select_on_val=False))
    trainer.run()
    assert stack.chunk_rows() < len(val)
    chunked = trainer.validation_loss()
    stack.eval()
    with torch.no_grad():
        whole = stack(val, use_threshold=True, aux=False).per_sae_reconstruction
    assert chunked == pytest.approx(whole.tolist(), rel=1e-5)
    assert all(loss > 0 for loss in chunked)
