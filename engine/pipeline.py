"""Train a run end to end: load a dataset from the store, train, encode every split, QC, persist.

This is the one engine module that writes training results, through store.runs. The run row is
committed before training starts and a checkpoint after every epoch, so a cancelled or killed run
can be resumed; the results are written in one transaction at the end.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from engine.epochs import Epoch, EpochSelection, read_splits, select_epoch
from engine.errors import InputError
from engine.ingest.matrix import dataset_matrix
from engine.memory import check_fits, human_bytes
from engine.options import check_integer, check_seed
from engine.quality_flags import FlagContext
from engine.run_results import QuitRequested, collect_results, stop_if_quitting
from engine.sae.history import check_history
from engine.sae.model import SAEConfig, SAEStack
from engine.sae.model_data import UnitRoles, model_data
from engine.sae.train import (
    NonFiniteLoss,
    TrainConfig,
    TrainData,
    Trainer,
    TrainOutcome,
    TrainProgress,
    pick_device,
)
from engine.sae.train_defaults import AUTO_SETTINGS, choose_settings, recording_shape
from engine.sae.unit_selection import parse_selection, resolve_selection
from store import Store
from store.datasets import get_dataset, load_unit_attributes, load_unit_names
from store.errors import StoreInterrupted
from store.runs import (
    get_run,
    load_checkpoint,
    reopen_run,
    save_checkpoint,
    save_run_results,
    set_run_status,
    start_run,
)


@dataclass(frozen=True)
class RunSpec:
    """What to train: the dataset, the SAE stack and how to train it."""

    dataset: str
    """Dataset name."""
    sae: SAEConfig
    """Architecture, width and loss; `sae.ks` is filled from `ks` × `instances`."""
    train: TrainConfig
    """Optimiser, epochs, device."""
    ks: tuple[int, ...] = (8,)
    """k values to sweep; each gets `instances` SAEs."""
    instances: int = 1
    """SAEs per k, with seeds seed, seed+1, …"""
    seed: int = 0
    """First SAE seed."""
    normalize_units: bool = False
    """Divide each unit by its train standard deviation while training (folded back afterwards)."""
    epoch: Epoch = field(default_factory=Epoch)
    """The bins to train on (`--where`, `--around`): selected train bins, selected val bins for the val loss."""
    auto: tuple[str, ...] = ()
    """Settings to choose from the recording (engine.sae.train_defaults.AUTO_SETTINGS); the rest are as given."""
    chosen: dict[str, str] = field(default_factory=dict)
    """Filled when the run starts: each chosen setting with its reason (stored in runs.config)."""
    inputs: str | None = None
    """Transcoder: the units the code is computed from (engine.sae.unit_selection syntax); None: a plain SAE."""
    targets: str | None = None
    """Transcoder: the units the code reconstructs; given together with `inputs`."""
    history: int = 1
    """Bins of context (engine.sae.history): the input of bin t is bins t-L+1 … t of its trial; 1 is no context."""

    def __post_init__(self) -> None:
        check_unit_options(self.inputs, self.targets, self.history)
        check_integer("--instances", self.instances, 1)
        check_seed("--seed", self.seed, taken=self.instances, taken_by=f"--instances {self.instances}")  # the SAEs take seeds seed … seed + instances - 1


def check_unit_options(inputs: str | None, targets: str | None, history: int) -> None:
    """Refuse --inputs, --targets and --history in one line when they cannot mean anything, before any dataset is
    read: `mini train` (RunSpec) and `mini sweep` (SweepConfig) check them here, with the same messages."""
    if (inputs is None) != (targets is None):
        given, missing = ("--inputs", "--targets") if targets is None else ("--targets", "--inputs")
        raise InputError(f"{given} without {missing}: a transcoder needs both (or neither, for a plain SAE)")
    check_history(history)
    if inputs is not None and targets is not None:
        parse_selection("--inputs", inputs)
        parse_selection("--targets", targets)


class TrainingCancelled(Exception):
    """Cancelled before training started (while reading the dataset or building the stack): no run row was
    written, so there is nothing to store or resume."""


@dataclass
class RunOutcome:
    run_id: int
    status: str
    sae_ids: list[int]
    outcome: TrainOutcome
    seconds: float
    epoch: EpochSelection | None = None
    """The bins the run trained on and how many of each split."""


def resolve_roles(db: Store, inputs: str | None, targets: str | None, dataset: dict[str, Any]) -> UnitRoles | None:
    """The units `inputs` and `targets` (--inputs, --targets) select in the dataset (None for a plain SAE), refused
    in one line when either names nothing."""
    if inputs is None or targets is None:
        return None
    names = load_unit_names(db, dataset["dataset_id"])
    attributes = load_unit_attributes(db, dataset["dataset_id"])
    return UnitRoles(resolve_selection(parse_selection("--inputs", inputs), names, attributes),
                     resolve_selection(parse_selection("--targets", targets), names, attributes))


def _stack_seeds(spec: RunSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ks = tuple(k for k in spec.ks for _ in range(spec.instances))
    seeds = tuple(spec.seed + i for _ in spec.ks for i in range(spec.instances))
    return ks, seeds


def _serialise(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def check_memory(spec: RunSpec, n_examples: int, d_in: int) -> None:
    """Refuse a stack whose training or results would not fit in this machine's memory (engine.memory),
    before any run row is written.

    Training holds each parameter four times (weights, gradients, Adam's two moments) in float32; storing
    the results holds every SAE's reconstruction of every example (float32), its active latents (about 32
    bytes each, with the copy a sort makes) and its decoder as rows (about 40 bytes a weight)."""
    n_saes = len(spec.ks) * spec.instances
    training = spec.sae.d_sae * d_in * n_saes * 4 * 4
    results = n_saes * (n_examples * d_in * 4 + n_examples * max(spec.ks) * 32 + spec.sae.d_sae * d_in * 40)
    check_fits(f"--d-sae {spec.sae.d_sae:,} × {d_in:,} units × {n_saes:,} SAE(s) (--instances {spec.instances:,} "
               f"× {len(spec.ks)} k) needs {human_bytes(training)} to train (weights, gradients, Adam) and "
               f"{human_bytes(results)} for the results over {n_examples:,} examples", training + results,
               "use a smaller --d-sae or fewer --instances")


def build_stack(spec: RunSpec, counts: np.ndarray, splits: np.ndarray, kind: str, d_out: int | None = None
                ) -> tuple[SAEStack, TrainData]:
    """The stack `spec` asks for, initialised from the training rows, and its train/val data on the device
    (refused first when it would not fit in memory). A sweep's workers call it as train_run does. With `d_out`,
    a transcoder: `counts` are model_examples, whose last d_out columns are the targets."""
    check_memory(spec, counts.shape[0], counts.shape[1])
    ks, seeds = _stack_seeds(spec)
    sae = replace(spec.sae, ks=ks, nonnegative_output=kind == "spike_counts")
    if sae.loss in ("msle", "poisson") and kind != "spike_counts":
        raise InputError(f"--loss {sae.loss}: needs non-negative counts; this dataset holds activations (use mse)")
    train = torch.from_numpy(counts[splits == "train"])
    if train.shape[0] == 0:
        raise InputError(f"dataset '{spec.dataset}': the train split is empty")
    scale = train.std(0).clamp_min(1e-3) if spec.normalize_units else None
    if d_out is None:
        stack = SAEStack(sae, counts.shape[1], seeds, input_scale=scale)
    else:
        d_in = counts.shape[1] - d_out
        stack = SAEStack(sae, d_in, seeds, input_scale=None if scale is None else scale[:d_in], d_out=d_out,
                         target_scale=None if scale is None else scale[d_in:])
    sample = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(spec.seed))[:10_000]]
    stack.initialise_from_data(sample)
    device = pick_device(spec.train.device)
    return stack, TrainData(train, torch.from_numpy(counts[splits == "val"]), device)


def resolve_settings(spec: RunSpec, counts: np.ndarray, train: np.ndarray) -> RunSpec:
    """The spec with every setting in `spec.auto` chosen from the training rows (`train`, a mask of
    `counts`), reasons in `chosen`."""
    unknown = set(spec.auto) - set(AUTO_SETTINGS)
    if unknown:
        raise ValueError(f"cannot choose {sorted(unknown)} from the recording")
    if not spec.auto:
        return spec
    chosen = choose_settings(recording_shape(counts, train))
    sae, config, ks = spec.sae, spec.train, spec.ks
    reasons = {name: chosen.reasons[name] for name in AUTO_SETTINGS if name in spec.auto}
    if "d_sae" in spec.auto:
        if "k" not in spec.auto and max(ks) > chosen.d_sae // 2 and sae.architecture != "relu":
            raise InputError(f"--k {max(ks)}: the d_sae chosen from the recording is {chosen.d_sae}, too few latents "
                             f"to choose {max(ks)} from; give --d-sae too (at least {2 * max(ks)}) or a smaller --k")
        sae = replace(sae, d_sae=chosen.d_sae)
    if "k" in spec.auto:
        ks = (min(chosen.k, sae.d_sae),)
        if ks[0] != chosen.k:
            reasons["k"] = f"{ks[0]} (at most d_sae {sae.d_sae})"
    if "batch_size" in spec.auto:
        config = replace(config, batch_size=chosen.batch_size)
    if "epochs" in spec.auto:
        patience = chosen.patience if config.patience is None else config.patience  # a given patience stays
        config = replace(config, epochs=chosen.max_epochs, patience=patience)
        reasons["epochs"] = f"early stopping on val (patience {patience}), at most {config.epochs}"
    sae = replace(sae, dead_after_examples=chosen.dead_after_examples)
    return replace(spec, sae=sae, train=config, ks=ks, auto=(), chosen=reasons)


def check_loss_fits(loss: str, dataset: dict[str, Any]) -> None:
    """Refuse a Poisson loss on rates (values that are not whole numbers, e.g. smoothed counts).

    The Poisson likelihood assumes counts whose variance equals their mean; smoothing averages
    neighbouring bins and shrinks the variance, so the loss would weight bins wrongly and its value
    would not be a likelihood. MSE and MSLE make no such assumption.
    """
    if loss == "poisson" and dataset.get("value_type") == "rates":
        raise InputError(f"--loss poisson: dataset '{dataset['name']}' holds rates (values that are not whole "
                         "numbers, e.g. smoothed counts), and a Poisson likelihood needs whole spike counts; use "
                         "--loss mse or msle, or import the counts unsmoothed")


def train_run(db: Store, spec: RunSpec, *, on_progress: Callable[[TrainProgress], None] | None = None,
              cancel: threading.Event | None = None, resume_run: int | None = None,
              report: Callable[[str], None] = lambda _: None,
              on_stage: Callable[[str], None] = lambda _: None,
              quitting: threading.Event | None = None,
              on_run: Callable[[int], None] = lambda _: None) -> RunOutcome:
    """Train (or resume) a run and store its results; returns the run id and what happened.

    Settings named in `spec.auto` are chosen from the training split first, and `report` says which.
    `on_stage` hears what happens before the first step (reading the dataset, choosing settings, building
    the stack), which can take seconds on a large recording. `cancel` is also checked between those stages
    (TrainingCancelled: nothing written). `quitting`, set together with `cancel` by a caller about to exit,
    stops without encoding or storing the weights so far: the run is marked cancelled at its last epoch
    checkpoint, at once, and `--resume` continues it from there. It is looked at after every step, between
    the SAEs (and batches) while the results are computed, and while they are stored (their transaction is
    interrupted and rolled back whole), so a quitting caller waits well under a second. `on_run` hears the
    run's id once its row is written (or reopened): from then on there is a run to mark."""
    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled("cancelled before training started; nothing was stored")

    if resume_run is not None:
        run = get_run(db, resume_run)
        if run["status"] == "finished":
            raise InputError(f"run {resume_run} already finished; nothing to resume")
        spec = spec_from_config(run["config"])
    dataset = get_dataset(db, spec.dataset)
    check_loss_fits(spec.sae.loss, dataset)
    on_stage(f"reading dataset '{spec.dataset}' ({dataset['n_examples']:,} examples × {dataset['n_units']:,} "
             "units)…")
    roles = resolve_roles(db, spec.inputs, spec.targets, dataset)  # before the counts are read: a bad selection is refused at once
    counts, examples = dataset_matrix(db, dataset["dataset_id"], dataset["n_examples"], dataset["n_units"])
    check_cancel()
    selection = select_epoch(db, dataset, examples, spec.epoch, "train")
    # Bins outside the epoch belong to no split here: they are neither trained on nor scored by QC, but
    # they are still encoded, so a later ranking or validation may read another epoch.
    splits = np.where(selection.selected, examples["split"].to_numpy(), "outside")
    if spec.epoch.is_set:
        report(selection.summary(read_splits("train")))
    data_in = model_data(counts, splits, examples["trial_id"].to_numpy(), roles, spec.history)
    counts, splits, roles = data_in.counts, data_in.splits, data_in.roles
    if note := data_in.history_note(spec.history):
        report(note)
    if spec.auto:
        on_stage(f"choosing {', '.join(name for name in AUTO_SETTINGS if name in spec.auto)} from the recording…")
    targets = data_in.targets()
    spec = resolve_settings(spec, targets, splits == "train")  # chosen for the epoch's train bins
    check_cancel()
    n_saes = len(spec.ks) * spec.instances
    on_stage(f"building {n_saes} SAE{'s' if n_saes != 1 else ''} (d_sae {spec.sae.d_sae:,}, "
             f"k {', '.join(map(str, spec.ks))}) from {int((splits == 'train').sum()):,} training examples…")
    stack, data = build_stack(spec, counts, splits, dataset["kind"], data_in.d_out)
    check_cancel()
    if roles is not None:
        context = f", {spec.history} bins of history" if spec.history > 1 else ""
        report(f"{roles.describe()} ({spec.inputs or 'all'} → {spec.targets or 'all'}{context})")
    if spec.chosen and resume_run is None:
        report("chosen from the recording: " + ", ".join(f"{name} {why}" for name, why in spec.chosen.items()))
    config = spec_to_config(spec)
    if resume_run is None:
        units = None if roles is None else roles.as_lists()
        run_id = start_run(db, dataset["dataset_id"], config, str(data.device), epoch=selection.row(), units=units)
    else:
        run_id = resume_run
        reopen_run(db, run_id)
    on_run(run_id)

    def checkpoint(state: dict[str, Any]) -> None:
        save_checkpoint(db, run_id, "latest", state["epoch"], state["step"], _serialise(state))

    started = time.perf_counter()
    try:  # from here on a failure marks the run failed (or cancelled), never leaves it 'running'
        trainer = Trainer(stack, data, spec.train, on_progress=on_progress, on_checkpoint=checkpoint,
                          cancel=cancel)
        if resume_run is not None:
            saved = load_checkpoint(db, run_id)
            if saved is None:  # killed before the first epoch ended: nothing to continue from, and it must say so
                report(f"run {run_id} stopped before its first checkpoint: training starts again at epoch 1")
            else:
                report(f"run {run_id} resumes after epoch {saved[0]} (its last checkpoint)")
                trainer.load_state(torch.load(io.BytesIO(saved[2]), map_location=data.device, weights_only=False))
        on_stage(f"training on {data.device}: the first steps…")
        outcome = trainer.run()
        try:
            stop_if_quitting(quitting)
            context = FlagContext(normalized=spec.normalize_units,
                                  raw_counts=dataset.get("value_type", "counts") == "counts")
            results = collect_results(stack, counts, splits, outcome, dataset["kind"],
                                      load_unit_names(db, dataset["dataset_id"]), context, quitting=quitting,
                                      target_units=None if roles is None else roles.targets,
                                      input_units=None if roles is None else roles.inputs, history=spec.history)
            with db.interrupted_when(quitting):
                sae_ids = save_run_results(db, run_id, results, status=outcome.status,
                                           examples_seen=outcome.examples_seen,
                                           seconds=time.perf_counter() - started)
        except (QuitRequested, StoreInterrupted):
            # Every epoch that ended was checkpointed (or loaded from one on resume); nothing of the results is
            # stored (their one transaction was rolled back, if it had begun).
            where = f"after epoch {trainer.epoch}" if trainer.epoch else "the start (no epoch had ended)"
            set_run_status(db, run_id, "cancelled", f"cancelled when the app quit; mini train --resume {run_id} "
                           f"continues from {where}")
            return RunOutcome(run_id, "cancelled", [], outcome, time.perf_counter() - started, selection)
        save_checkpoint(db, run_id, "final", trainer.epoch, trainer.step, _serialise(
            {"model": stack.state_dict(), "config": config}))
    except NonFiniteLoss as error:
        set_run_status(db, run_id, "failed", str(error))
        raise InputError(f"run {run_id} failed {error}") from error
    except BaseException as error:
        set_run_status(db, run_id, "failed" if isinstance(error, Exception) else "cancelled",
                       f"{type(error).__name__}: {error}")
        raise
    return RunOutcome(run_id, outcome.status, sae_ids, outcome, time.perf_counter() - started, selection)


def spec_to_config(spec: RunSpec) -> dict[str, Any]:
    return {"dataset": spec.dataset, "sae": asdict(spec.sae), "train": asdict(spec.train), "ks": list(spec.ks),
            "instances": spec.instances, "seed": spec.seed, "normalize_units": spec.normalize_units,
            "chosen": spec.chosen, "epoch": spec.epoch.to_config(), "inputs": spec.inputs, "targets": spec.targets,
            "history": spec.history}


def spec_from_config(config: dict[str, Any]) -> RunSpec:
    sae = {k: tuple(v) if isinstance(v, list) else v for k, v in config["sae"].items()}
    return RunSpec(dataset=config["dataset"], sae=SAEConfig(**sae), train=TrainConfig(**config["train"]),
                   ks=tuple(config["ks"]), instances=config["instances"], seed=config["seed"],
                   normalize_units=config["normalize_units"], chosen=dict(config.get("chosen", {})),
                   epoch=Epoch.from_config(config.get("epoch")), inputs=config.get("inputs"),
                   targets=config.get("targets"), history=config.get("history", 1))
