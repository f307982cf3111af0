"""Train a stack of SAEs: Adam with warm-up, constant and cosine decay; validation each epoch; resume.

The trainer knows nothing of the database. Data comes in through `TrainData` (the seam between
trainer and data provider); progress goes out through a callback; checkpoints go out as a dict
that `load_state` takes back. Everything that decides the result (init seeds, epoch order, optimiser
state) is in that dict or derived from seeds, so a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine.errors import InputError
from engine.options import MAX_EPOCHS, MAX_LR, Bound, check_integer, check_number, check_seed, fraction
from engine.sae.model import SAEStack
from engine.sae.outputs import ForwardOutput

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; defaults suit ~10⁵ examples of ~10² units."""

    epochs: int = 30
    """Passes over the training split."""
    batch_size: int = 1024
    """Examples per step."""
    lr: float = 2e-3
    """Peak learning rate of Adam."""
    warmup_fraction: float = 0.02
    """Share of steps spent warming the learning rate up from 0."""
    decay_fraction: float = 0.3
    """Share of steps, at the end, over which the learning rate decays to 0 along a cosine."""
    seed: int = 0
    """Seed of the epoch order (the SAEs' own seeds set their initialisation)."""
    device: str = "auto"
    """auto (cuda, then mps, then cpu), cuda, mps or cpu."""
    log_every: int = 20
    """Steps between progress events and train_log rows."""
    select_on_val: bool = True
    """Keep each SAE's weights from the epoch with its lowest validation loss."""
    patience: int | None = None
    """Stop early once no SAE's validation loss has improved for this many epochs (None: train every
    epoch). Small recordings overfit long before a fixed epoch count runs out; with select_on_val the
    weights kept are those of each SAE's best epoch either way."""
    precision: str = "auto"
    """Arithmetic of the dense encoder matmul: fp32, bf16 (autocast; the sparse steps, the loss and the weights
    stay float32) or auto (bf16 on CUDA, fp32 elsewhere). On CPU bf16 pays only where the CPU has bf16 matrix
    units; see bench/README.md."""

    def __post_init__(self) -> None:
        # Checked here, where the CLI, the app and resumed runs all pass, before any run row is written.
        check_number("--lr", self.lr, Bound(0, inclusive=False), Bound(MAX_LR),
                     why="Adam moves each weight by up to lr per step; the default is 0.002")
        check_integer("--epochs", self.epochs, 1, MAX_EPOCHS)
        check_integer("--batch-size", self.batch_size, 1)
        check_seed("--seed", self.seed)
        if self.patience is not None:
            check_integer("--patience", self.patience, 1, MAX_EPOCHS)
        check_integer("log_every", self.log_every, 1)
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}: unknown (use {', '.join(PRECISIONS)})")
        for name in ("warmup_fraction", "decay_fraction"):
            fraction(name, getattr(self, name))


class NonFiniteLoss(InputError):
    """Training diverged: a loss or a weight became NaN or infinite. The message starts with "at epoch E"
    and says what to try; the run is stored as failed with it."""


@dataclass
class TrainProgress:
    """One progress event: what a progress bar or a live plot shows."""

    step: int
    total_steps: int
    epoch: int
    examples_seen: int
    examples_per_s: float
    lr: float
    loss: list[float]
    l0: list[float]
    dead_fraction: list[float]
    val_loss: list[float] | None = None
    reconstruction_loss: list[float] | None = None
    """The reconstruction part of `loss` (loss minus the AuxK or L1 term)."""
    epochs: int = 0
    """Epochs planned (the most there will be when `patience` may stop training early)."""
    patience: int | None = None

    def mean_losses(self) -> tuple[float, float]:
        """(reconstruction, auxiliary) loss averaged over the SAEs: the figure to follow, and the AuxK (or L1)
        term beside it, which starts only once latents count as dead and inside a total reads as a jump."""
        total = sum(self.loss) / len(self.loss)
        recon = self.reconstruction_loss or self.loss
        reconstruction = sum(recon) / len(recon)
        return reconstruction, total - reconstruction


@dataclass
class TrainOutcome:
    status: str
    """finished or cancelled."""
    steps: int
    examples_seen: int
    best_epoch: list[int]
    best_val_loss: list[float]
    log: list[dict[str, Any]] = field(default_factory=list)
    """One row per SAE per logged step: sae (index), step, epoch, examples_seen, loss, reconstruction_loss,
    auxiliary_loss, l0, dead_fraction, lr, val_loss."""
    epochs: int = 0
    """Epochs trained."""
    stopped_early: bool = False
    """True when training stopped because validation loss stopped improving (TrainConfig.patience)."""


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible to PyTorch here (use --device cpu or auto)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple's Metal backend is not available here")
    if requested not in ("cuda", "mps", "cpu"):
        raise InputError(f"--device {requested}: unknown (use auto, cuda, mps or cpu)")
    return torch.device(requested)


def warm_up() -> None:
    """Import what building the first trainer imports (Adam pulls in torch's compiler front end the first time
    one is made: over a second), so that an app can do it while a person is still filling in a form."""
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except (RuntimeError, TypeError):
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


class TrainData:
    """Training and validation examples held on the training device, batched in a seeded order."""

    def __init__(self, train: torch.Tensor, val: torch.Tensor, device: torch.device):
        if train.shape[0] == 0:
            raise InputError("the train split is empty: nothing to train on")
        self.train = train.to(device, torch.float32)
        self.val = val.to(device, torch.float32)
        self.device = device

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.train.shape[0] // batch_size)

    def batches(self, epoch: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """Full batches in an order fixed by (seed, epoch): the last partial batch is dropped."""
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.train.shape[0], generator=generator).to(self.device)
        size = min(batch_size, self.train.shape[0])
        shuffled = self.train.index_select(0, order)  # one gather per epoch; batches are then views
        for start in range(0, self.steps_per_epoch(size) * size, size):
            yield shuffled[start: start + size]


def _adam(stack: SAEStack, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel (one launch for every parameter, and on CUDA no host read of the step count);
    torch's multi-tensor (foreach) Adam where a build lacks the fused kernel for the device."""
    try:
        return torch.optim.Adam(stack.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(stack.parameters(), lr=lr, foreach=True)


def _advice(config: TrainConfig) -> str:
    return (f"try a --lr lower than {config.lr:g}, or check the dataset's counts for extreme "
            "values")


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    warmup = max(1, round(config.warmup_fraction * total_steps))
    decay_start = total_steps - round(config.decay_fraction * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if step >= decay_start:
        progress = (step - decay_start) / max(1, total_steps - decay_start)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr


class Trainer:
    """Trains an SAEStack on TrainData; `run()` can be cancelled and resumed from `state()`."""

    def __init__(self, stack: SAEStack, data: TrainData, config: TrainConfig,
                 on_progress: Callable[[TrainProgress], None] | None = None,
                 on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 cancel: threading.Event | None = None, sync_free: bool | None = None):
        """`sync_free`: steps that never wait for the device (SAEStack.forward's sync_free); default on CUDA only,
        where waiting costs a step's worth of time, and off elsewhere, where the exact-count selection is faster."""
        self.stack = stack.to(data.device)
        self.sync_free = data.device.type == "cuda" if sync_free is None else sync_free
        self.data = data
        self.config = config
        self.on_progress = on_progress or (lambda _: None)
        self.on_checkpoint = on_checkpoint
        self.cancel = cancel or threading.Event()
        self.optimizer = _adam(self.stack, config.lr)
        self.step = 0
        self.epoch = 0
        self.examples_seen = 0
        n = stack.n
        self.best_val = [math.inf] * n
        self.best_epoch = [-1] * n
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.log: list[dict[str, Any]] = []
        self.total_steps = config.epochs * data.steps_per_epoch(config.batch_size)
        # Each step's loss since the last check, kept on the device so that watching for a non-finite one costs
        # one copy and no synchronisation per step; read with each progress event and at each epoch's end (at
        # most log_every steps apart). float64 holds any loss exactly (MPS has no float64; its losses are float32).
        self._recent_losses = torch.zeros(config.log_every, device=data.device,
                                          dtype=torch.float32 if data.device.type == "mps" else torch.float64)
        self._recent_from = 0
        """Step of _recent_losses[0]."""

    # -- checkpoint -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this trainer is (at an epoch boundary)."""
        return {
            "model": copy.deepcopy(self.stack.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "step": self.step, "epoch": self.epoch, "examples_seen": self.examples_seen,
            "best_val": list(self.best_val), "best_epoch": list(self.best_epoch),
            "best_weights": copy.deepcopy(self.best_weights), "log": list(self.log),
            "config": asdict(self.config),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.stack.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.examples_seen = state["step"], state["epoch"], state["examples_seen"]
        self.best_val, self.best_epoch = list(state["best_val"]), list(state["best_epoch"])
        self.best_weights = state["best_weights"]
        self.log = list(state["log"])

    # -- training -------------------------------------------------------------------------------------
    def _autocast(self):
        device = self.data.device.type
        precision = self.config.precision
        if precision == "bf16" or (precision == "auto" and device == "cuda"):
            return torch.autocast(device, dtype=torch.bfloat16)
        return nullcontext()

    @torch.no_grad()
    def validation_loss(self) -> list[float]:
        """Reconstruction loss per SAE on the validation split, encoded as at inference."""
        val = self.data.val
        if val.shape[0] == 0:
            return [math.nan] * self.stack.n
        self.stack.eval()
        total = torch.zeros(self.stack.n, device=val.device)
        use_threshold = self.stack.config.architecture in ("batchtopk", "matryoshka")
        rows = self.stack.chunk_rows()
        for start in range(0, val.shape[0], rows):
            batch = val[start: start + rows]
            with self._autocast():
                out = self.stack(batch, use_threshold=use_threshold, aux=False)
            total += out.per_sae_reconstruction.float() * batch.shape[0]
        self.stack.train()
        return (total / val.shape[0]).tolist()

    def _keep_best(self, val_loss: list[float]) -> None:
        params = {name: p.detach() for name, p in self.stack.named_parameters()}
        params["threshold"] = self.stack.threshold
        if self.best_weights is None:
            self.best_weights = {name: t.clone() for name, t in params.items()}
        for i, loss in enumerate(val_loss):
            if math.isnan(loss) or loss < self.best_val[i]:
                self.best_val[i], self.best_epoch[i] = loss, self.epoch
                for name, tensor in params.items():
                    self.best_weights[name][i] = tensor[i]

    def _restore_best(self) -> None:
        if not self.config.select_on_val or self.best_weights is None:
            return
        with torch.no_grad():
            for name, p in self.stack.named_parameters():
                p.copy_(self.best_weights[name])
            self.stack.threshold.copy_(self.best_weights["threshold"])

    def run(self) -> TrainOutcome:
        """Train until the configured epochs are done or `cancel` is set."""
        config, stack = self.config, self.stack
        stack.train()
        started, seen_at_start, step_at_start = time.perf_counter(), self.examples_seen, self.step
        self._recent_from = self.step
        self.stack.refresh_dead_hint()
        if self.stalled():  # resumed after the stopping epoch's checkpoint, before its results were stored
            self._restore_best()
            return self._outcome("finished", stopped_early=True)
        while self.epoch < config.epochs:
            for batch in self.data.batches(self.epoch, config.batch_size, config.seed):
                if self.cancel.is_set():
                    return self._outcome("cancelled")
                out, lr = self.train_step(batch)
                if self.step % config.log_every == 0:
                    self._check_finite(weights=False)
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    self._emit(out, lr, (self.examples_seen - seen_at_start) / elapsed)
                elif 0 < (done := self.step - step_at_start) < config.log_every and done & (done - 1) == 0:
                    # The 1st, 2nd, 4th, 8th … step of this run() before a logged one: a person watching sees
                    # training move at once, not after log_every steps (unlogged: train_log keeps its rows).
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    self._emit(out, lr, (self.examples_seen - seen_at_start) / elapsed, logged=False)
            self.epoch += 1
            self._check_finite(weights=True)
            val_loss = self.validation_loss()
            if not all(math.isfinite(v) for v in val_loss) and self.data.val.shape[0] > 0:
                raise NonFiniteLoss(f"at epoch {self.epoch} of {config.epochs}: the validation loss became "
                                    f"non-finite ({_advice(config)})")
            self._keep_best(val_loss)
            elapsed = max(time.perf_counter() - started, 1e-9)
            self._emit(out, lr, (self.examples_seen - seen_at_start) / elapsed, val_loss)
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.state())
            if self.stalled():
                self._restore_best()
                return self._outcome("finished", stopped_early=True)
        self._restore_best()
        return self._outcome("finished")

    def train_step(self, batch: torch.Tensor) -> tuple[ForwardOutput, float]:
        """One optimiser step on a batch: its forward output and the learning rate it used."""
        stack = self.stack
        lr = learning_rate(self.config, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            out = stack(batch, sync_free=self.sync_free)
        self._recent_losses[self.step - self._recent_from] = out.loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        stack.remove_parallel_decoder_grad()
        self.optimizer.step()
        stack.after_step(out.code, batch.shape[0], sync_free=self.sync_free)
        self.step += 1
        self.examples_seen += batch.shape[0]
        return out, lr

    def _check_finite(self, weights: bool) -> None:
        """Stop training (NonFiniteLoss) once a loss or (with `weights`, at an epoch's end) a weight is NaN or
        infinite: from there on every step is NaN, and the weights kept would be garbage."""
        seen = self._recent_losses[:self.step - self._recent_from]
        bad = (~torch.isfinite(seen)).nonzero()
        self._recent_from = self.step
        self.stack.refresh_dead_hint()  # a host read already happens here: the AuxK budgets ride along
        if len(bad):
            step = self._recent_from - len(seen) + int(bad[0]) + 1
            epoch = (step - 1) // self.data.steps_per_epoch(self.config.batch_size) + 1
            raise NonFiniteLoss(f"at epoch {epoch} of {self.config.epochs}, step {step}: the training loss became "
                                f"non-finite ({_advice(self.config)})")
        if weights:
            with torch.no_grad():
                bad = [name for name, p in self.stack.named_parameters() if not bool(torch.isfinite(p).all())]
            if bad:
                raise NonFiniteLoss(f"at epoch {self.epoch} of {self.config.epochs}, step {self.step}: the weights "
                                    f"({', '.join(bad)}) became non-finite ({_advice(self.config)})")

    def stalled(self) -> bool:
        """Whether every SAE has gone `patience` epochs without a better validation loss.

        Derived from best_epoch alone, so a resumed run stops where an uninterrupted one does."""
        patience = self.config.patience
        if patience is None or self.data.val.shape[0] == 0:
            return False
        return all(self.epoch - best >= patience for best in self.best_epoch)

    def _emit(self, out: ForwardOutput, lr: float, rate: float, val_loss: list[float] | None = None, *,
              logged: bool = True) -> None:
        dead = self.stack.dead_mask().float().mean(1).tolist()
        loss = out.per_sae_loss.float().tolist()
        reconstruction = out.per_sae_reconstruction.float().tolist()
        progress = TrainProgress(self.step, self.total_steps, self.epoch, self.examples_seen, rate, lr,
                                 loss, out.l0.float().tolist(), dead, val_loss, reconstruction,
                                 self.config.epochs, self.config.patience)
        for i in range(self.stack.n if logged else 0):
            self.log.append({"sae": i, "step": self.step, "epoch": self.epoch,
                             "examples_seen": self.examples_seen, "loss": loss[i],
                             "reconstruction_loss": reconstruction[i], "auxiliary_loss": loss[i] - reconstruction[i],
                             "l0": progress.l0[i], "dead_fraction": dead[i], "lr": lr,
                             "val_loss": None if val_loss is None else val_loss[i]})
        self.on_progress(progress)

    def _outcome(self, status: str, stopped_early: bool = False) -> TrainOutcome:
        return TrainOutcome(status, self.step, self.examples_seen, list(self.best_epoch), list(self.best_val),
                            self.log, self.epoch, stopped_early)
