"""The CPU step's bf16-screened BatchTopK, and the threshold's selection at inference screened alike: the entries and
cutoffs of the dense float32 selection, float32 values."""

from __future__ import annotations

import pytest
import torch

import engine.sae.model as model
from engine.sae.model import SAEConfig, SAEStack
from engine.sae.screened_selection import screen, screened_above, screened_cutoffs
from engine.sae.selection import batch_cutoffs, entries_above


def problem(n: int, batch: int, width: int, d: int, scale: float, seed: int):
    """Encoder inputs, weights and biases at a given scale; the bias and the inputs' offset make cancellation."""
    generator = torch.Generator().manual_seed(seed)
    centred = (torch.randn(n, batch, d, generator=generator) + 0.5) * scale
    w_enc = torch.randn(n, width, d, generator=generator) / d ** 0.5
    b_enc = torch.randn(n, width, generator=generator) * scale - 0.3 * scale
    return centred, w_enc, b_enc


def dense(centred, w_enc, b_enc):
    return torch.bmm(centred, w_enc.transpose(1, 2)).add_(b_enc.unsqueeze(1))


@pytest.mark.parametrize(("n", "batch", "width", "d", "scale", "k"), [
    (8, 256, 128, 120, 1.0, 8), (1, 512, 64, 30, 1.0, 4), (3, 200, 100, 121, 3.0, 6), (2, 128, 256, 250, 0.5, 16)])
def test_the_screen_keeps_the_dense_selection(n, batch, width, d, scale, k):
    centred, w_enc, b_enc = problem(n, batch, width, d, scale, seed=n + d)
    pre = dense(centred, w_enc, b_enc)
    budgets = [batch * k] * n
    _, _, cutoffs = batch_cutoffs(pre, budgets, None)  # last step's cutoff: this step's, as after a quiet step
    expected = batch_cutoffs(pre, budgets, cutoffs * 0.97)
    found = screened_cutoffs(centred, centred.reshape(n * batch, d), w_enc, b_enc, budgets, cutoffs * 0.97)
    assert found is not None
    chosen, values, screened_cutoffs_found = found
    assert torch.equal(chosen, expected[0])
    torch.testing.assert_close(values, expected[1], rtol=1e-5, atol=1e-6 * scale)
    torch.testing.assert_close(screened_cutoffs_found, expected[2], rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("seed", [5, 6])
def test_entries_just_above_the_floor_pass_the_screen(seed):
    """A floor low enough that bf16's rounding of the products (up to ~0.02 here, with biases up to ~5) is larger than
    the floor's own margin of rounding (3 units, ~0.012), and example 0 placed a hair above it on every latent: the
    bound must pass them all (without it, some are lost: checked by setting _RELATIVE_ERROR to 0)."""
    centred, w_enc, b_enc = problem(2, 128, 64, 120, 1.0, seed=seed)
    floor = torch.full((2,), 1.0)
    b_enc = b_enc + (floor[0] * (1 + 1e-6) - dense(centred, w_enc, b_enc)[:, 0, :])  # example 0 on the floor
    pre = dense(centred, w_enc, b_enc)
    passed = screen(centred, w_enc, b_enc, floor)
    assert passed is not None
    above = (pre > floor.view(2, 1, 1)).view(-1).nonzero().squeeze(1)
    assert (pre[:, 0, :] > floor.view(2, 1)).sum() > 100  # the hair-thin case is there
    assert set(above.tolist()) <= set(passed.tolist())
    assert len(passed) < 1.5 * len(above)  # and the screen still screens


def test_where_the_screen_cannot_decide_it_says_so():
    centred, w_enc, b_enc = problem(2, 64, 32, 16, 1.0, seed=7)
    args = (centred, centred.reshape(128, 16), w_enc, b_enc, [64, 64])
    assert screened_cutoffs(*args, torch.full((2,), 1e-6)) is None  # the lowered floor would be below 0
    assert screened_cutoffs(*args, torch.full((2,), 1e6)) is None  # fewer candidates than the budget
    tiny = problem(2, 64, 32, 16, 1e-3, seed=7)  # inputs far below the bias column's 1: the bound is wider
    assert screened_cutoffs(tiny[0], tiny[0].reshape(128, 16), tiny[1], tiny[2], [64, 64], torch.full((2,), 1e-3)) is None


def counted(monkeypatch, name: str) -> list[int]:
    """A list that grows by one at each call of engine.sae.model's `name` (which still runs)."""
    calls, real = [], getattr(model, name)
    monkeypatch.setattr(model, name, lambda *args: calls.append(1) or real(*args))
    return calls


def two_saes(x: torch.Tensor) -> SAEStack:
    """Two small SAEs of 40 units initialised on `x`, in training mode."""
    stack = SAEStack(SAEConfig(d_sae=64, ks=(4, 6)), 40, seeds=(0, 1))
    stack.initialise_from_data(x)
    return stack.train()


def test_a_training_step_takes_the_screen_where_the_cpu_has_bf16_and_the_dense_path_elsewhere(monkeypatch):
    torch.manual_seed(0)
    x = torch.poisson(torch.rand(256, 40) * 3)
    calls = counted(monkeypatch, "screened_cutoffs")
    monkeypatch.setattr(model, "SCREEN_MIN_ELEMENTS", 0)  # this step is far smaller than the screen's minimum
    chosen = {}
    for native in (True, False):
        monkeypatch.setattr(model, "native_bf16_matmul", lambda native=native: native)
        stack = two_saes(x)
        stack(x)  # the first step has no cutoff yet: dense
        count = len(calls)
        chosen[native] = stack(x).code
        assert len(calls) == count + native  # called on the second step where bf16 is native, never elsewhere
    assert torch.equal(chosen[True].row, chosen[False].row)
    assert torch.equal(chosen[True].latent, chosen[False].latent)
    torch.testing.assert_close(chosen[True].value, chosen[False].value)


def test_a_step_below_the_minimum_size_stays_dense(monkeypatch):
    calls = counted(monkeypatch, "screened_cutoffs")
    monkeypatch.setattr(model, "native_bf16_matmul", lambda: True)
    x = torch.poisson(torch.rand(256, 40, generator=torch.Generator().manual_seed(1)) * 3)
    stack = two_saes(x)
    stack(x), stack(x)
    assert model.SCREEN_MIN_ELEMENTS > 2 * 256 * 64 and calls == []


@pytest.mark.parametrize(("n", "batch", "width", "d", "scale"), [(8, 256, 128, 120, 1.0), (3, 200, 100, 121, 3.0)])
def test_the_screen_keeps_a_thresholds_selection(n, batch, width, d, scale):
    centred, w_enc, b_enc = problem(n, batch, width, d, scale, seed=n * d)
    pre = dense(centred, w_enc, b_enc)
    floors = torch.quantile(pre.reshape(n, -1), 0.97, dim=1)  # a threshold that keeps about 3 % of the entries
    expected = entries_above(pre, floors)
    found = screened_above(centred, centred.reshape(n * batch, d), w_enc, b_enc, floors)
    assert found is not None
    same_up_to_rounding(found[0], expected[0], pre, floors)
    common = torch.isin(found[0], expected[0])
    torch.testing.assert_close(found[1][common], pre.reshape(-1)[found[0][common]], rtol=1e-5, atol=1e-6 * scale)
    assert screened_above(centred, centred.reshape(n * batch, d), w_enc, b_enc, torch.full((n,), 1e-6)) is None


def test_validation_takes_the_screen_at_inference_only_and_loses_nothing(monkeypatch):
    torch.manual_seed(0)
    x = torch.poisson(torch.rand(256, 40) * 3)
    calls = counted(monkeypatch, "screened_above")
    monkeypatch.setattr(model, "SCREEN_MIN_ELEMENTS", 0)
    stack = two_saes(x)
    for _ in range(3):  # a few steps set the thresholds
        stack.after_step(stack(x).code, len(x))
    assert bool((stack.threshold > 0).all())
    stack(x, use_threshold=True)
    assert calls == []  # in training a threshold's selection stays dense (AuxK may need the dense values)
    stack.eval()
    outputs = {}
    for native in (True, False):
        monkeypatch.setattr(model, "native_bf16_matmul", lambda native=native: native)
        outputs[native] = stack(x, use_threshold=True, aux=False)
    assert len(calls) == 1  # screened where bf16 is native, dense elsewhere
    screened, plain = outputs[True], outputs[False]
    pre = stack.pre_activations(x)
    flat = lambda code: code.row * 64 + code.latent  # noqa: E731  (row = sae · B + example: a flat index into pre)
    same_up_to_rounding(flat(screened.code), flat(plain.code), pre, stack.threshold)
    torch.testing.assert_close(screened.per_sae_reconstruction, plain.per_sae_reconstruction, rtol=1e-4, atol=0)
    same_up_to_rounding(flat(stack.encode(x, use_threshold=True)), flat(plain.code), pre, stack.threshold)


def same_up_to_rounding(chosen: torch.Tensor, expected: torch.Tensor, pre: torch.Tensor, floors: torch.Tensor) -> None:
    """The same flat indices into pre [n, B, D], but for entries within float32 rounding of their SAE's floor (the
    sampled matmul adds in another order than the dense one; a threshold is often an entry's own value)."""
    differ = torch.tensor(sorted(set(chosen.tolist()) ^ set(expected.tolist())), dtype=torch.long)
    floor_of = floors[differ // (pre.shape[1] * pre.shape[2])]
    assert len(differ) <= 0.001 * len(expected) + 2, len(differ)
    assert bool(((pre.reshape(-1)[differ] - floor_of).abs() <= 1e-5 * floor_of.abs()).all())
