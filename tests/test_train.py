"""Trainer: learning-rate schedule, exact resume, cancel, best-on-validation, refusals, planted recovery.

Real training on small CPU tensors; every run is a few dozen to a thousand tiny steps.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.sae.model import SAEConfig, SAEStack
from engine.sae.train import NonFiniteLoss, TrainConfig, TrainData, Trainer, learning_rate, pick_device

CPU = torch.device("cpu")
D_IN = 20

def poisson_counts(n: int, seed: int, d_in: int = D_IN) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rates = 0.3 + 3.7 * torch.rand(d_in, generator=torch.Generator().manual_seed(0))
    return torch.poisson(rates.expand(n, d_in).contiguous(), generator=generator)


def make_data() -> TrainData:
    return TrainData(poisson_counts(1024, seed=1), poisson_counts(256, seed=2), CPU)


def make_stack(architecture: str = "batchtopk", ks: tuple[int, ...] = (3, 5), **config) -> SAEStack:
    config.setdefault("d_sae", 48)
    config.setdefault("dead_after_examples", 300)  # AuxK and the dead counters take part
    stack = SAEStack(SAEConfig(architecture=architecture, ks=ks, **config), D_IN, seeds=tuple(range(10, 10 + len(ks))))
    stack.initialise_from_data(poisson_counts(512, seed=3))
    return stack


def small_config(**changes) -> TrainConfig:
    settings = {"epochs": 4, "batch_size": 128, "lr": 1e-2, "log_every": 3, "seed": 5, "device": "cpu"}
    settings.update(changes)
    return TrainConfig(**settings)


# -- learning rate ---------------------------------------------------------------------------------------
def test_learning_rate_warms_up_holds_then_decays_along_a_cosine_to_zero():
    config = TrainConfig(lr=2e-3, warmup_fraction=0.05, decay_fraction=0.3)
    total = 1000
    rates = [learning_rate(config, step, total) for step in range(total)]
    warmup, decay_start = 50, 700
    assert all(a < b for a, b in itertools.pairwise(rates[:warmup]))  # rises
    assert rates[0] == pytest.approx(2e-3 / warmup)
    assert rates[warmup - 1] == pytest.approx(2e-3)
    assert all(rate == 2e-3 for rate in rates[warmup:decay_start])  # constant in the middle
    decay = rates[decay_start:]
    assert all(a > b for a, b in itertools.pairwise(decay))  # falls
    for step in (decay_start, 775, 850, 925, 999):  # along half a cosine
        progress = (step - decay_start) / (total - decay_start)
        assert rates[step] == pytest.approx(1e-3 * (1 + math.cos(math.pi * progress)))
    assert rates[850] == pytest.approx(1e-3)  # half-way down at half the decay
    assert rates[-1] < 1e-7  # ~0 at the end
    assert max(rates) == pytest.approx(2e-3)


def test_learning_rate_for_tiny_runs_stays_positive_and_bounded():
    config = TrainConfig(lr=1e-2)
    for total in (1, 2, 3, 10):
        rates = [learning_rate(config, step, total) for step in range(total)]
        assert all(0 < rate <= 1e-2 for rate in rates)


# -- resume ----------------------------------------------------------------------------------------------
def assert_same_stack(a: SAEStack, b: SAEStack) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


class ScriptedValidation(Trainer):
    """Validation losses chosen per epoch, so the best epoch is not simply the last."""

    script = ((3.0, 5.0), (1.0, 4.0), (2.0, 3.0), (4.0, 6.0))

    def validation_loss(self) -> list[float]:
        return list(self.script[self.epoch - 1])


@pytest.mark.parametrize(("architecture", "select_on_val", "trainer_class"), [
    ("batchtopk", True, ScriptedValidation),  # SAE 0's best epoch comes before the cut, SAE 1's after
    ("batchtopk", True, Trainer),
    ("matryoshka", False, Trainer),
])
def test_resume_ends_exactly_where_an_uninterrupted_run_does(architecture, select_on_val, trainer_class):
    config = small_config(select_on_val=select_on_val)
    ks = (4, 8) if architecture == "matryoshka" else (3, 5)

    uninterrupted = trainer_class(make_stack(architecture, ks), make_data(), config)
    outcome_a = uninterrupted.run()
    assert outcome_a.status == "finished"

    cancel = threading.Event()
    captured: list[bytes] = []

    def at_checkpoint(state):
        if state["epoch"] == 2:
            buffer = io.BytesIO()  # through bytes, as the run store keeps it
            torch.save(copy.deepcopy(state), buffer)
            captured.append(buffer.getvalue())
            cancel.set()

    first = trainer_class(make_stack(architecture, ks), make_data(), config, on_checkpoint=at_checkpoint,
                          cancel=cancel)
    outcome_b = first.run()
    assert outcome_b.status == "cancelled"
    assert outcome_b.steps == 2 * 8 and len(captured) == 1

    resumed = trainer_class(make_stack(architecture, ks), make_data(), config)
    resumed.load_state(torch.load(io.BytesIO(captured[0]), weights_only=False))
    assert resumed.epoch == 2 and resumed.step == 16
    outcome_c = resumed.run()
    assert outcome_c.status == "finished"

    assert_same_stack(uninterrupted.stack, resumed.stack)  # parameters and threshold, counters, estimates
    assert float(uninterrupted.stack.threshold.abs().sum()) > 0
    assert outcome_c.steps == outcome_a.steps == 32
    assert outcome_c.examples_seen == outcome_a.examples_seen
    assert outcome_c.log == outcome_a.log  # every logged loss, l0, dead fraction, lr and val loss
    assert outcome_c.best_epoch == outcome_a.best_epoch
    assert outcome_c.best_val_loss == outcome_a.best_val_loss
    if trainer_class is ScriptedValidation:
        assert outcome_c.best_epoch == [2, 3]
    # The run did train: the logged loss fell.
    first_loss = [row["loss"] for row in outcome_a.log[:2]]
    last_loss = [row["loss"] for row in outcome_a.log[-2:]]
    assert all(last < first for first, last in zip(first_loss, last_loss, strict=True))


def test_a_resume_from_a_different_checkpoint_state_differs():
    """The resume comparison can fail: resuming from a perturbed checkpoint ends elsewhere."""
    config = small_config(epochs=3)
    uninterrupted = Trainer(make_stack(), make_data(), config)
    uninterrupted.run()
    cancel = threading.Event()
    captured = []

    def at_checkpoint(state):
        captured.append(copy.deepcopy(state))
        cancel.set()

    Trainer(make_stack(), make_data(), config, on_checkpoint=at_checkpoint, cancel=cancel).run()
    state = captured[0]
    for group in state["optimizer"]["state"].values():  # lose Adam's moments
        group["exp_avg"].zero_()
        group["exp_avg_sq"].zero_()
    resumed = Trainer(make_stack(), make_data(), config)
    resumed.load_state(state)
    resumed.run()
    assert not torch.equal(uninterrupted.stack.W_enc, resumed.stack.W_enc)


def test_each_step_projects_the_decoder_gradient_and_keeps_rows_unit_norm():
    stack = make_stack()
    calls = []
    project = stack.remove_parallel_decoder_grad

    def spy():
        project()
        grad = stack.W_dec.grad
        calls.append(float((grad * stack.W_dec.detach()).sum(-1).abs().max()))

    stack.remove_parallel_decoder_grad = spy
    outcome = Trainer(stack, make_data(), small_config(epochs=1)).run()
    assert len(calls) == outcome.steps == 8
    assert max(calls) < 1e-6
    norms = torch.linalg.vector_norm(stack.W_dec.detach(), dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)


# -- progress --------------------------------------------------------------------------------------------
def test_the_first_steps_report_progress_before_log_every_without_adding_log_rows():
    """8 steps an epoch (1024 / 128), 2 epochs, log_every 5: a watcher hears steps 1, 2 and 4 at once, then
    every 5th step and each epoch's end; train_log keeps only the logged steps, as before."""
    config = small_config(epochs=2, log_every=5)
    events = []
    outcome = Trainer(make_stack(), make_data(), config, on_progress=events.append).run()
    assert [(event.step, event.val_loss is not None) for event in events] == [
        (1, False), (2, False), (4, False), (5, False), (8, True), (10, False), (15, False), (16, True)]
    assert sorted({row["step"] for row in outcome.log}) == [5, 8, 10, 15, 16]
    assert len(outcome.log) == 5 * 2  # a row per SAE per logged step


# -- cancel ----------------------------------------------------------------------------------------------
def test_cancel_from_another_thread_stops_after_the_step_in_flight():
    config = small_config(epochs=100_000, log_every=1)
    progressed = threading.Event()
    cancel = threading.Event()
    steps_seen = []

    def on_progress(event):
        steps_seen.append(event.step)
        progressed.set()

    trainer = Trainer(make_stack(), make_data(), config, on_progress=on_progress, cancel=cancel)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("outcome", trainer.run()))
    worker.start()
    assert progressed.wait(timeout=30)
    cancel.set()
    # Read after the set: a step finished since is counted here, and at most the one in flight follows.
    seen_at_cancel = steps_seen[-1]
    worker.join(timeout=60)  # a wait, not a speed check: how quickly it stops is bench/train.py's figure
    assert not worker.is_alive()
    outcome = result["outcome"]
    assert outcome.status == "cancelled"
    assert outcome.steps < 1000 and outcome.steps == trainer.step
    assert outcome.steps <= seen_at_cancel + 1  # at most the step in flight finished
    assert outcome.examples_seen == outcome.steps * config.batch_size


def test_cancel_before_the_first_step_trains_nothing():
    cancel = threading.Event()
    cancel.set()
    stack = make_stack()
    before = copy.deepcopy(stack.state_dict())
    outcome = Trainer(stack, make_data(), small_config(), cancel=cancel).run()
    assert outcome.status == "cancelled" and outcome.steps == 0 and outcome.examples_seen == 0
    assert all(torch.equal(before[name], tensor) for name, tensor in stack.state_dict().items())


# -- best on validation ----------------------------------------------------------------------------------
def train_keeping_snapshots(trainer_class: type[Trainer], config: TrainConfig):
    """Train the small stack to the end, keeping a copy of its weights at every checkpoint (by epoch)."""
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def at_checkpoint(state):
        snapshots[state["epoch"]] = copy.deepcopy(state["model"])

    trainer = trainer_class(make_stack(), make_data(), config, on_checkpoint=at_checkpoint)
    return trainer, trainer.run(), snapshots


def test_best_epoch_is_the_argmin_of_logged_val_losses_and_its_weights_are_kept():
    trainer, outcome, snapshots = train_keeping_snapshots(Trainer, small_config())
    check_best(trainer, outcome, snapshots)


def test_best_weights_are_each_saes_own_best_epoch_not_the_last():
    trainer, outcome, snapshots = train_keeping_snapshots(ScriptedValidation, small_config())
    assert outcome.best_epoch == [2, 3]
    assert outcome.best_val_loss == [1.0, 3.0]
    check_best(trainer, outcome, snapshots)
    assert not torch.equal(trainer.stack.W_enc[0], snapshots[4]["W_enc"][0])  # not the last epoch's


def test_without_select_on_val_the_last_weights_stay():
    trainer, outcome, snapshots = train_keeping_snapshots(ScriptedValidation, small_config(select_on_val=False))
    assert outcome.best_epoch == [2, 3]  # still reported
    for name, tensor in trainer.stack.state_dict().items():
        assert torch.equal(tensor, snapshots[4][name]), name


def check_best(trainer: Trainer, outcome, snapshots: dict[int, dict[str, torch.Tensor]]) -> None:
    stack = trainer.stack
    for i in range(stack.n):
        rows = [row for row in outcome.log if row["sae"] == i and row["val_loss"] is not None]
        assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
        best_row = min(rows, key=lambda row: row["val_loss"])
        assert outcome.best_epoch[i] == best_row["epoch"]
        assert outcome.best_val_loss[i] == best_row["val_loss"]
        snapshot = snapshots[outcome.best_epoch[i]]
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            assert torch.equal(getattr(stack, name)[i], snapshot[name][i]), (i, name)


# -- refusals --------------------------------------------------------------------------------------------
def test_empty_train_split_is_refused_in_one_line():
    with pytest.raises(InputError) as caught:
        TrainData(torch.zeros(0, D_IN), poisson_counts(10, seed=1), CPU)
    assert "train split is empty" in str(caught.value) and "\n" not in str(caught.value)


def test_unavailable_or_unknown_devices_are_refused_in_one_line():
    if not torch.cuda.is_available():
        with pytest.raises(InputError) as caught:
            pick_device("cuda")
        message = str(caught.value)
        assert "--device cuda" in message and "\n" not in message
    with pytest.raises(InputError) as caught:
        pick_device("tpu")
    assert "--device tpu" in str(caught.value) and "\n" not in str(caught.value)
    assert pick_device("cpu") == CPU
    assert pick_device("auto").type in ("cuda", "mps", "cpu")


@pytest.mark.parametrize(("poison_after", "log_every", "caught_at"), [(2, 10, 8), (10, 5, 15), (6, 3, 8)])
def test_a_non_finite_loss_stops_training_naming_its_first_step(poison_after, log_every, caught_at):
    """The step named is the first whose loss was not finite, though it is only read every log_every steps."""
    stack = make_stack()
    data = make_data()  # 8 steps per epoch at batch 128
    seen = []

    def poison(event):
        seen.append(event.step)
        if event.step == poison_after:
            with torch.no_grad():
                stack.b_dec[0, 0] = math.nan  # SAE 0's next loss is NaN
    trainer = Trainer(stack, data, small_config(epochs=4, log_every=log_every), on_progress=poison)
    with pytest.raises(NonFiniteLoss) as caught:
        trainer.run()
    message = str(caught.value)
    epoch = poison_after // 8 + 1
    assert message.startswith(f"at epoch {epoch} of 4, step {poison_after + 1}: the training loss became non-finite")
    assert "\n" not in message
    assert trainer.step == caught_at  # found at the first check after it: a progress event or an epoch's end


def test_an_empty_validation_split_still_trains():
    data = TrainData(poisson_counts(512, seed=1), torch.zeros(0, D_IN), CPU)
    outcome = Trainer(make_stack(), data, small_config(epochs=2)).run()
    assert outcome.status == "finished" and outcome.steps == 8
    assert all(math.isnan(loss) for loss in outcome.best_val_loss)


# -- planted recovery ------------------------------------------------------------------------------------
def planted(n: int, seed: int, d_in: int = 30, n_latents: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """x = Poisson(base + Z @ L): 6 binary latents, each on in ~10 % of examples, each loading 5 units."""
    generator = torch.Generator().manual_seed(0)
    loadings = torch.zeros(n_latents, d_in)
    for i in range(n_latents):
        units = torch.randperm(d_in, generator=generator)[:5]
        loadings[i, units] = 6.0 * (0.5 + torch.rand(5, generator=generator))
    generator = torch.Generator().manual_seed(seed)
    on = (torch.rand(n, n_latents, generator=generator) < 0.1).float()
    return torch.poisson(0.5 + on @ loadings, generator=generator), loadings


def test_planted_sparse_latents_are_recovered_without_dead_latents():
    train, loadings = planted(4096, seed=100)
    val, _ = planted(1024, seed=101)
    stack = SAEStack(SAEConfig(d_sae=32, ks=(3,), dead_after_examples=4096), 30, seeds=(1,),
                     input_scale=train.std(0).clamp_min(1e-3))
    stack.initialise_from_data(train[:2048])
    config = TrainConfig(epochs=16, batch_size=64, lr=2e-2, log_every=64, device="cpu")
    outcome = Trainer(stack, TrainData(train, val, CPU), config).run()
    assert outcome.status == "finished"
    decoder = stack.folded_weights()["W_dec"][0]  # in count units
    cosine = F.normalize(loadings, dim=1) @ F.normalize(decoder, dim=1).T
    best = cosine.max(dim=1).values
    assert float(best.mean()) >= 0.9, best
    assert float(best.min()) >= 0.8, best
    assert outcome.log[-1]["dead_fraction"] < 0.05
    fired = torch.bincount(stack.encode(train, use_threshold=True).latent, minlength=32)
    assert float((fired == 0).float().mean()) < 0.05


def test_bf16_precision_trains_on_cpu_to_the_fp32_fvu():
    """precision="bf16" runs the dense encoder matmul under CPU autocast: a different run (so autocast took
    effect), with a validation FVU within 0.02 of float32's and the weights still float32."""
    train, _ = planted(4096, seed=100)
    val, _ = planted(1024, seed=101)
    fvu, weights = {}, {}
    for precision in ("fp32", "bf16"):
        stack = SAEStack(SAEConfig(d_sae=32, ks=(3,), dead_after_examples=4096), 30, seeds=(1,))
        stack.initialise_from_data(train[:2048])
        config = TrainConfig(epochs=6, batch_size=64, lr=2e-2, log_every=64, device="cpu", precision=precision)
        assert Trainer(stack, TrainData(train, val, CPU), config).run().status == "finished"
        stack.eval()
        reconstruction = stack.decode(stack.encode(val, use_threshold=True), len(val))[0]
        fvu[precision] = float(((val - reconstruction) ** 2).sum() / ((val - val.mean(0)) ** 2).sum())
        weights[precision] = stack.W_enc.detach().clone()
        assert all(p.dtype == torch.float32 for p in stack.parameters())
    assert not torch.equal(weights["fp32"], weights["bf16"])
    assert fvu["fp32"] < 0.5 and abs(fvu["bf16"] - fvu["fp32"]) < 0.02, fvu


def test_an_unknown_precision_is_refused_in_one_line():
    with pytest.raises(InputError) as caught:
        TrainConfig(precision="fp8")
    assert str(caught.value) == "precision 'fp8': unknown (use auto, fp32, bf16)"
