"""The GPU path, on a CUDA device: `pytest -m cuda` (bench/gpu.sh runs them first; well under 2 minutes on an H100).

Each mirrors a CPU test that passes everywhere: training in fp32 and bf16 reaches the CPU float32 FVU
(tests/test_train.py's bf16 test), a stack of SAEs trains, no training step waits for the device
(tests/test_sync_free.py's counter, here by CUDA's own sync debug mode), encode_all gives the CPU's code, and a
local sweep runs one worker per GPU. Where no CUDA device is visible (CI, laptops) they are skipped, saying so,
unless MINI_REQUIRE_CUDA is set (bench/gpu.sh sets it): then they fail, as a GPU check that checked nothing.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch

from engine.sae.model import SAEConfig, SAEStack
from engine.sae.train import TrainConfig, TrainData, Trainer
from tests.test_train import planted as planted_with_loadings

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _a_cuda_device() -> None:
    if not torch.cuda.is_available():
        message = "needs a CUDA GPU (none is visible to PyTorch here)"
        if os.environ.get("MINI_REQUIRE_CUDA"):
            pytest.fail(f"{message}, and MINI_REQUIRE_CUDA is set")
        pytest.skip(message)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def planted(n: int, seed: int) -> torch.Tensor:
    """Poisson counts driven by sparse planted ensembles: tests/test_train.py's, without the loadings."""
    return planted_with_loadings(n, seed)[0]


@functools.cache
def trained_fvu(device: torch.device, precision: str, ks: tuple[int, ...] = (3, 4)) -> tuple[float, ...]:
    """Validation FVU of each SAE of a stack trained on `device` (the CPU reference is trained once)."""
    train, val = planted(4096, seed=100), planted(1024, seed=101)
    stack = SAEStack(SAEConfig(d_sae=32, ks=ks, dead_after_examples=4096), 30, seeds=tuple(range(1, len(ks) + 1)))
    stack.initialise_from_data(train[:2048])
    config = TrainConfig(epochs=6, batch_size=64, lr=2e-2, log_every=64, device=device.type, precision=precision)
    trainer = Trainer(stack, TrainData(train, val, device), config)
    assert trainer.sync_free == (device.type == "cuda")
    assert trainer.run().status == "finished"
    assert all(p.dtype == torch.float32 and p.device.type == device.type for p in stack.parameters())
    stack.eval()
    val = val.to(device)
    reconstruction = stack.decode(stack.encode(val, use_threshold=True), len(val))
    return tuple((((val - reconstruction) ** 2).sum((1, 2)) / ((val - val.mean(0)) ** 2).sum()).cpu().tolist())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_stack_trained_on_cuda_reaches_the_cpu_float32_fvu(precision):
    cpu = trained_fvu(CPU, "fp32")
    gpu = trained_fvu(CUDA, precision)
    assert max(cpu) < 0.5, cpu
    assert all(abs(a - b) < 0.02 for a, b in zip(cpu, gpu, strict=True)), (cpu, gpu)


@pytest.mark.parametrize(("architecture", "ks"), [("batchtopk", (3, 5)), ("batchtopk", (4,)), ("topk", (3, 5)),
                                                  ("matryoshka", (4, 8))])
def test_no_training_step_waits_for_the_device(architecture, ks):
    """CUDA's sync debug mode raises on any synchronising call (a device read, a copy to the host, a size the host
    must learn) made inside a step; latents count as dead after less than a batch, so AuxK runs too."""
    generator = torch.Generator().manual_seed(1)
    train = torch.poisson(2 * torch.rand(1024, 20, generator=generator), generator=generator)
    stack = SAEStack(SAEConfig(architecture=architecture, d_sae=256, ks=ks, dead_after_examples=100), 20,
                     tuple(range(len(ks))))
    stack.initialise_from_data(train)
    config = TrainConfig(epochs=2, batch_size=128, lr=1e-2, log_every=3, device="cuda", precision="bf16")
    trainer = Trainer(stack, TrainData(train, train[:256], CUDA), config)
    step = trainer.train_step

    def guarded_step(batch):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    trainer.train_step = guarded_step
    outcome = trainer.run()
    assert outcome.steps == 16
    assert max(row["dead_fraction"] for row in outcome.log) > 0, "no latent died: AuxK never ran"


def test_encode_all_on_cuda_gives_the_cpu_code():
    from engine.run_results import encode_all

    train = planted(4096, seed=100)
    stack = SAEStack(SAEConfig(d_sae=32, ks=(3, 4)), 30, seeds=(1, 2))
    stack.initialise_from_data(train[:2048])
    Trainer(stack, TrainData(train, train[:512], CPU), TrainConfig(epochs=2, batch_size=128, device="cpu")).run()
    counts = planted(3000, seed=102).numpy()
    cpu_code, cpu_recon = encode_all(stack, counts, batch=1024)
    gpu_code, gpu_recon = encode_all(stack.to(CUDA), counts, batch=1024)
    key = ["sae_id", "example_id", "feature_id"]
    cpu_keys = set(cpu_code.select(key).iter_rows())
    gpu_keys = set(gpu_code.select(key).iter_rows())
    # Different matmul kernels round differently: an activation within a rounding of the threshold may flip.
    assert len(cpu_keys & gpu_keys) >= 0.995 * max(len(cpu_keys), len(gpu_keys))
    assert np.abs(cpu_recon - gpu_recon).mean() < 1e-3


def test_a_local_sweep_runs_one_worker_per_gpu():
    from engine.sweep.executors import local_slots
    from engine.sweep.plan import SweepConfig

    workers, threads, gpus = local_slots(SweepConfig(dataset="sample", grid="k=4,8", device="cuda"))
    assert gpus == workers == torch.cuda.device_count() >= 1 and threads >= 1
