"""Sync-free training steps (what a CUDA trainer runs), checked on CPU.

A sync-free step selects with tensors of fixed size (engine.sae.selection.batch_top) so that a GPU never stops to tell the
host how many entries it chose. These tests check that it is the same SAE: the same entries, loss and gradients
as the exact-count selection; the same quality after training; and that no operation inside its step would make
a GPU wait (counted here with a dispatch mode, since CPU work never waits).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.sae.model import SAEConfig, SAEStack
from engine.sae.outputs import SparseCode
from engine.sae.selection import batch_top
from engine.sae.sparse_ops import Entries, counts_without_sync, dots_by_gather, sorted_grouping
from engine.sae.train import TrainConfig, TrainData, Trainer
from tests.test_train import planted as planted_with_loadings

CPU = torch.device("cpu")
D_IN, D_SAE, BATCH = 20, 64, 256
PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec")


def poisson_counts(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rates = 0.3 + 3.7 * torch.rand(D_IN, generator=torch.Generator().manual_seed(0))
    return torch.poisson(rates.expand(n, D_IN).contiguous(), generator=generator)


def perturbed_stack(architecture: str, ks: tuple[int, ...], **config) -> SAEStack:
    """A double-precision stack moved off its tied initialisation (no ties between pre-activations)."""
    config.setdefault("d_sae", D_SAE)
    stack = SAEStack(SAEConfig(architecture=architecture, ks=ks, **config), D_IN, tuple(range(len(ks)))).double()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        stack.initialise_from_data(poisson_counts(512, seed=3).double())
        stack.W_enc.add_(0.1 * torch.randn(stack.W_enc.shape, generator=generator, dtype=torch.float64))
        stack.b_enc.copy_(0.1 * torch.randn(stack.b_enc.shape, generator=generator, dtype=torch.float64))
    return stack


def positive_entries(code: SparseCode) -> set[tuple[int, int]]:
    keep = code.value > 0
    return set(zip(code.row[keep].tolist(), code.latent[keep].tolist(), strict=True))


def step_result(stack: SAEStack, x: torch.Tensor, sync_free: bool):
    for name in PARAMETERS:
        getattr(stack, name).grad = None
    out = stack(x, sync_free=sync_free)
    out.loss.backward()
    return out, {name: getattr(stack, name).grad.clone() for name in PARAMETERS}


# -- the same SAE --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("architecture", "ks"), [
    ("batchtopk", (3,)), ("batchtopk", (3, 5)), ("topk", (3, 5)), ("matryoshka", (4, 8)), ("matryoshka", (8,)),
])
def test_a_sync_free_step_chooses_the_same_entries_and_gradients(architecture, ks):
    x = poisson_counts(BATCH, seed=1).double()
    stack = perturbed_stack(architecture, ks, dead_after_examples=100)
    with torch.no_grad():  # AuxK takes part: SAE 0 has 12 dead latents, SAE 1 (where there is one) a single one
        stack.examples_since_fired[0, 40:52] = 1000
        if len(ks) > 1:
            stack.examples_since_fired[1, 3] = 1000
    stack.refresh_dead_hint()
    assert stack.dead_hint == ([12] if len(ks) == 1 else [12, 1])
    exact, exact_grads = step_result(stack, x, sync_free=False)
    fixed, fixed_grads = step_result(stack, x, sync_free=True)
    assert positive_entries(fixed.code) == positive_entries(exact.code)
    if architecture == "topk" or len(ks) > 1:  # the fixed-size code also holds entries of activation 0
        assert len(fixed.code.value) >= len(exact.code.value)
    torch.testing.assert_close(fixed.per_sae_loss, exact.per_sae_loss)
    torch.testing.assert_close(fixed.per_sae_reconstruction, exact.per_sae_reconstruction)
    torch.testing.assert_close(fixed.l0, exact.l0)
    torch.testing.assert_close(fixed.reconstruction, exact.reconstruction)
    for name in PARAMETERS:
        assert float(exact_grads[name].abs().max()) > 0, name
        torch.testing.assert_close(fixed_grads[name], exact_grads[name], msg=lambda m, name=name: f"{name}: {m}")


def test_entries_of_activation_zero_neither_fire_nor_set_the_threshold():
    """TopK with ks (2, 4): SAE 0's code has two slots per example of activation 0 in a sync-free step."""
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=8, ks=(1,)), 4, (0,))
    row = torch.tensor([0, 0, 1, 1])
    code = SparseCode(row, torch.tensor([1, 5, 2, 6]), torch.tensor([0.5, 0.0, 0.25, 0.0]), torch.zeros_like(row))
    stack.examples_since_fired.fill_(10)
    stack.after_step(code, batch=2, sync_free=True)
    assert stack.examples_since_fired[0].tolist() == [12, 0, 0, 12, 12, 12, 12, 12]
    assert stack.threshold.tolist() == [0.25]  # the smallest positive activation, not 0


def test_a_band_with_fewer_positive_entries_than_its_budget_fills_it_with_zero_activations():
    band = torch.tensor([[[1.0, -1.0], [-2.0, 3.0]]])  # one SAE, 2 examples × 2 latents, two positive entries
    chosen, values, _ = batch_top(band, [3])
    assert chosen.tolist() == [0, 1, 3] and values.tolist() == [1.0, -1.0, 3.0]
    stack = SAEStack(SAEConfig(architecture="batchtopk", d_sae=2, ks=(1,)), 2, (0,))
    out = stack(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), sync_free=True)
    assert len(out.code.value) == 2 and out.l0.tolist() == [float((out.code.value > 0).sum()) / 2]


def test_dots_by_gather_equal_the_sampled_matmul_across_chunks(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(50, 7, generator=generator), torch.randn(30, 7, generator=generator)
    row = torch.sort(torch.randint(0, 50, (400,), generator=generator)).values
    latent = torch.randint(0, 30, (400,), generator=generator)
    entries = Entries.build(row, latent, 50, 30)
    monkeypatch.setattr("engine.sae.sparse_ops.GATHER_CHUNK", 64)  # 7 chunks, the last one partial
    torch.testing.assert_close(dots_by_gather(left, right, row, latent), entries.pairwise_dots(left, right))
    assert dots_by_gather(left, right, row[:0], latent[:0]).shape == (0,)


def test_counts_without_sync_equal_bincount():
    indices = torch.randint(0, 40, (1000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(counts_without_sync(indices, 50), torch.bincount(indices, minlength=50))


# -- no host synchronisation inside a step -------------------------------------------------------------------
WAITING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim",
               "unique_consecutive", "repeat_interleave", "kthvalue"}
"""Operators that make a GPU report to the host: reading a value (item, bool, float, int), or an output whose size
depends on the data (nonzero, also behind boolean indexing; CUDA's bincount sizes its output by the largest
index; kthvalue is here as batch_cutoffs pairs it with such shapes)."""


class SyncCounter(TorchDispatchMode):
    """Records every waiting operator run while `counting` is set (tolist and numpy are patched separately: on
    CPU tensors they read memory without dispatching)."""

    def __init__(self):
        super().__init__()
        self.counting = False
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if self.counting and name in WAITING_OPS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def syncs_inside_steps(architecture: str, ks: tuple[int, ...], sync_free: bool, monkeypatch) -> tuple[list[str], int]:
    """(waiting operations seen inside Trainer.train_step, steps) over 2 epochs of a stack whose latents count as
    dead after 100 examples, less than a batch (AuxK runs), optimiser excluded: fused Adam's step count lives on the
    device on CUDA."""
    stack = SAEStack(SAEConfig(architecture=architecture, d_sae=256, ks=ks, dead_after_examples=100), D_IN,
                     tuple(range(len(ks))))
    stack.initialise_from_data(poisson_counts(512, seed=3))
    stack._budgets(128)  # a host-side cache of the config's budgets (CPU tensors, no device read), filled once
    # Entries count with bincount on CPU, where it is the faster; on CUDA with counts_without_sync: count that way.
    monkeypatch.setattr("engine.sae.sparse_ops._counts", counts_without_sync)
    # Entries are grouped by latent with NumPy's radix sort on CPU; on CUDA by PyTorch's sort: group that way.
    monkeypatch.setattr("engine.sae.sparse_ops.grouping_order", sorted_grouping)
    data = TrainData(poisson_counts(1024, seed=1), poisson_counts(256, seed=2), CPU)
    config = TrainConfig(epochs=2, batch_size=128, lr=1e-2, log_every=3, device="cpu")
    trainer = Trainer(stack, data, config, sync_free=sync_free)
    counter = SyncCounter()
    step, optimiser_step = trainer.train_step, trainer.optimizer.step
    original_tolist, original_numpy = torch.Tensor.tolist, torch.Tensor.numpy

    def counted(name, function):
        def wrapper(self, *args, **kwargs):
            if counter.counting:
                counter.seen.append(name)
            return function(self, *args, **kwargs)
        return wrapper

    def paused_optimiser_step(*args, **kwargs):
        counter.counting = False
        try:
            return optimiser_step(*args, **kwargs)
        finally:
            counter.counting = True

    def counted_step(batch):
        counter.counting = True
        try:
            return step(batch)
        finally:
            counter.counting = False

    monkeypatch.setattr(torch.Tensor, "tolist", counted("tolist", original_tolist))
    monkeypatch.setattr(torch.Tensor, "numpy", counted("numpy", original_numpy))
    trainer.optimizer.step = paused_optimiser_step
    trainer.train_step = counted_step
    with counter:
        outcome = trainer.run()
    assert max(row["dead_fraction"] for row in outcome.log) > 0, "no latent died: AuxK never ran"
    return counter.seen, outcome.steps


@pytest.mark.parametrize(("architecture", "ks"), [("batchtopk", (3, 5)), ("batchtopk", (4,)), ("topk", (3, 5)),
                                                  ("matryoshka", (4, 8))])
def test_no_operation_inside_a_sync_free_step_waits_for_the_device(architecture, ks, monkeypatch):
    seen, steps = syncs_inside_steps(architecture, ks, sync_free=True, monkeypatch=monkeypatch)
    assert steps == 16
    assert seen == []


def test_the_exact_count_step_does_wait_so_the_counter_sees_it(monkeypatch):
    seen, _ = syncs_inside_steps("batchtopk", (3, 5), sync_free=False, monkeypatch=monkeypatch)
    # On CPU the exact selection reads the pre-activations through NumPy (engine.sae.selection), sizes and all.
    assert {"numpy", "tolist"} <= set(seen)


# -- the same quality after training -------------------------------------------------------------------------
def planted(n: int, seed: int) -> torch.Tensor:
    """Poisson counts driven by sparse planted ensembles: tests/test_train.py's, without the loadings."""
    return planted_with_loadings(n, seed)[0]


def test_sync_free_training_reaches_the_exact_count_fvu():
    train, val = planted(4096, seed=100), planted(1024, seed=101)
    fvu = {}
    for sync_free in (False, True):
        stack = SAEStack(SAEConfig(d_sae=32, ks=(3, 4), dead_after_examples=4096), 30, seeds=(1, 2))
        stack.initialise_from_data(train[:2048])
        config = TrainConfig(epochs=6, batch_size=128, lr=2e-2, log_every=32, device="cpu")
        assert Trainer(stack, TrainData(train, val, CPU), config, sync_free=sync_free).run().status == "finished"
        stack.eval()
        reconstruction = stack.decode(stack.encode(val, use_threshold=True), len(val))
        fvu[sync_free] = (((val - reconstruction) ** 2).sum((1, 2)) / ((val - val.mean(0)) ** 2).sum()).tolist()
    assert max(fvu[False]) < 0.5, fvu
    assert all(abs(a - b) < 0.01 for a, b in zip(fvu[False], fvu[True], strict=True)), fvu


def test_the_trainer_is_sync_free_on_cuda_only_unless_told():
    data = TrainData(poisson_counts(256, seed=1), poisson_counts(64, seed=2), CPU)
    stack = SAEStack(SAEConfig(d_sae=16, ks=(2,)), D_IN, (0,))
    config = TrainConfig(epochs=1, batch_size=64, device="cpu")
    assert Trainer(stack, data, config).sync_free is False
    assert Trainer(stack, data, config, sync_free=True).sync_free is True
