"""Plan a sweep in the process that owns the database: read the dataset once, resolve every pack's settings
from the training split (as `mini train` would), check that each fits in memory, and write the sweep folder's
inputs and plan. Everything is checked before the sweep row is written or a file is made."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import InputError
from engine.ingest.matrix import dataset_matrix
from engine.options import check_integer, check_seed
from engine.pipeline import (
    RunSpec,
    check_loss_fits,
    check_memory,
    check_unit_options,
    resolve_roles,
    resolve_settings,
    spec_to_config,
)
from engine.sae.config import SAEConfig
from engine.sae.model_data import ModelData, model_data
from engine.sae.train import TrainConfig
from engine.sweep.folder import SweepFolder, write_json
from engine.sweep.grid import GridValues, Trial, combinations, config_hash, pack_key, parse_grid
from store import Store
from store.datasets import get_dataset

EXECUTORS = ("local", "slurm", "ray")


@dataclass(frozen=True)
class SweepConfig:
    """What `mini sweep` was asked for."""

    dataset: str
    """Dataset name."""
    grid: str
    """The grid as written, e.g. "arch=batchtopk,matryoshka d_sae=64,128 k=4,8"."""
    seeds: int = 1
    """SAEs per configuration, with seeds seed, seed+1, … (they also give each feature its stability)."""
    seed: int = 0
    """First seed."""
    epochs: int | None = None
    """Passes over the train split; None: early stopping on the val loss, as `mini train` chooses."""
    executor: str = "local"
    """local (a process pool here), slurm (submitit job arrays) or ray (Ray tasks)."""
    max_parallel: int | None = None
    """Packs trained at once; None: one per GPU, else one per 1-2 cores here (local), 8 jobs (slurm, ray)."""
    device: str = "auto"
    """Where each worker trains: auto (its GPU if it has one), cuda or cpu."""
    slurm_partition: str | None = None
    """SLURM partition; None: the cluster's default."""
    slurm_gpus_per_task: int = 0
    """GPUs each SLURM job asks for."""
    slurm_cpus_per_task: int = 1
    """CPU cores each SLURM job asks for (and the threads torch uses in it)."""
    slurm_time_min: int = 60
    """Time limit of each SLURM job in minutes."""
    ray_address: str | None = None
    """Address of a running Ray cluster; None: start Ray on this machine."""
    ray_gpus_per_task: float = 0.0
    """GPU share of each Ray task (e.g. 0.25: four small SAEs per GPU)."""
    folder: str | None = None
    """Where the sweep folder goes (shared storage on a cluster); None: beside the database."""
    inputs: str | None = None
    """Transcoder (as `mini train --inputs`): the units every trial's code is computed from; None: plain SAEs."""
    targets: str | None = None
    """Transcoder: the units every trial reconstructs; given together with `inputs`."""
    history: int = 1
    """Bins of context of every trial (as `mini train --history`); 1 is none."""

    def check(self) -> None:
        """Refuse an option out of range, in one line, before anything is read or written."""
        check_integer("--seeds", self.seeds, 1, 1000)
        check_unit_options(self.inputs, self.targets, self.history)
        check_seed("--seed", self.seed, taken=self.seeds, taken_by=f"--seeds {self.seeds}")
        if self.epochs is not None:
            check_integer("--epochs", self.epochs, 1, 100_000)
        if self.executor not in EXECUTORS:
            raise InputError(f"--executor {self.executor}: unknown (use {', '.join(EXECUTORS)})")
        if self.max_parallel is not None:
            check_integer("--max-parallel", self.max_parallel, 1, 10_000)
        if self.device not in ("auto", "cuda", "cpu"):
            raise InputError(f"--device {self.device}: unknown (use auto, cuda or cpu)")
        check_integer("--slurm-gpus-per-task", self.slurm_gpus_per_task, 0, 64)
        check_integer("--slurm-cpus-per-task", self.slurm_cpus_per_task, 1, 1024)
        check_integer("--slurm-time-min", self.slurm_time_min, 1, 60 * 24 * 30)
        if not (math.isfinite(self.ray_gpus_per_task) and 0 <= self.ray_gpus_per_task <= 8):
            raise InputError(f"--ray-gpus-per-task {self.ray_gpus_per_task}: must be a number from 0 to 8")
        if self.executor != "slurm" and (self.slurm_partition or self.slurm_gpus_per_task):
            raise InputError(f"--slurm-* options need --executor slurm (given: {self.executor})")
        if self.executor != "ray" and (self.ray_address or self.ray_gpus_per_task):
            raise InputError(f"--ray-* options need --executor ray (given: {self.executor})")

    def options(self) -> dict[str, Any]:
        """The sweeps.options column: everything but the dataset and grid, which have columns of their own."""
        return {k: v for k, v in asdict(self).items() if k not in ("dataset", "grid")}


def default_folder(database: Path, sweep_id: int) -> Path:
    return database.resolve().parent / f"{database.stem}.sweeps" / f"sweep-{sweep_id}"


def _pack_spec(config: SweepConfig, settings: dict[str, Any], ks: tuple[int, ...]) -> RunSpec:
    given = {"d_sae": settings.get("d_sae"), "k": ks or None, "batch_size": settings.get("batch_size"),
             "epochs": config.epochs}
    return RunSpec(
        dataset=config.dataset,
        sae=SAEConfig(architecture=settings.get("arch", "batchtopk"), d_sae=settings.get("d_sae", 1),
                      loss=settings.get("loss", "mse"), output=settings.get("output", "clamped")),
        train=TrainConfig(epochs=config.epochs or 1, batch_size=settings.get("batch_size", 1),
                          lr=settings.get("lr", 2e-3), seed=config.seed, device=config.device),
        ks=ks or (1,), instances=config.seeds, seed=config.seed,
        auto=tuple(name for name, value in given.items() if value is None),
        inputs=config.inputs, targets=config.targets, history=config.history)


def _trials(pack_id: str, spec: RunSpec, first_id: int, dataset: str) -> list[Trial]:
    trials = []
    for k_index, k in enumerate(spec.ks):
        for i in range(spec.instances):
            config = {"dataset": dataset, "architecture": spec.sae.architecture, "d_sae": spec.sae.d_sae, "k": k,
                      "loss": spec.sae.loss, "output": spec.sae.output, "seed": spec.seed + i, "lr": spec.train.lr,
                      "batch_size": spec.train.batch_size, "epochs": spec.train.epochs,
                      "patience": spec.train.patience}
            # Only where given, so that a plain sweep's trials keep the hashes they always had.
            config.update({key: value for key, value in (("inputs", spec.inputs), ("targets", spec.targets),
                                                         ("history", spec.history)) if value not in (None, 1)})
            trials.append(Trial(first_id + len(trials), pack_id, k_index * spec.instances + i, config,
                                config_hash(config)))
    return trials


def plan_packs(config: SweepConfig, grid: GridValues, data: ModelData) -> list[tuple[str, RunSpec, list[Trial]]]:
    """(pack id, resolved spec, its trials) for every stack the grid makes, in grid order; settings left out
    of the grid are chosen from the train bins of the columns the stacks reconstruct, as `mini train` does."""
    groups: dict[tuple, tuple[dict[str, Any], list[int]]] = {}
    for combination in combinations(grid):
        settings, ks = groups.setdefault(pack_key(combination), (combination, []))
        if "k" in combination:
            ks.append(combination["k"])
    packs, next_id = [], 1
    targets, train = data.targets(), data.splits == "train"
    for settings, ks in groups.values():
        spec = resolve_settings(_pack_spec(config, settings, tuple(ks)), targets, train)
        for k in spec.ks:
            if spec.sae.architecture != "relu" and k > spec.sae.d_sae:
                raise InputError(f"--grid k={k} with d_sae={spec.sae.d_sae}: k must be at most d_sae")
        spec.sae.validate(targets.shape[1])
        pack_id = config_hash(spec_to_config(replace(spec, chosen={})))
        trials = _trials(pack_id, spec, next_id, config.dataset)
        packs.append((pack_id, spec, trials))
        next_id += len(trials)
    return packs


def prepare_sweep(db: Store, config: SweepConfig) -> tuple[dict[str, Any], ModelData,
                                                            list[tuple[str, RunSpec, list[Trial]]]]:
    """Read and check everything a sweep needs (dataset, grid, units, memory), writing nothing; returns (dataset
    row, what every stack trains on: engine.sae.model_data, as `mini train` builds it, and packs)."""
    config.check()
    grid = parse_grid(config.grid)
    dataset = get_dataset(db, config.dataset)
    for loss in grid.values.get("loss", ("mse",)):
        check_loss_fits(loss, dataset)
    roles = resolve_roles(db, config.inputs, config.targets, dataset)  # before the counts: a bad selection at once
    counts, examples = dataset_matrix(db, dataset["dataset_id"], dataset["n_examples"], dataset["n_units"])
    splits = examples["split"].to_numpy().astype(str)
    data = model_data(counts, splits, examples["trial_id"].to_numpy(), roles, config.history)
    packs = plan_packs(config, grid, data)
    for _, spec, _ in packs:  # each worker holds one pack; on a cluster's nodes this is a lower bound
        check_memory(spec, data.counts.shape[0], data.counts.shape[1])
    return dataset, data, packs


def write_inputs(folder: SweepFolder, sweep_id: int, config: SweepConfig, dataset: dict[str, Any],
                 data: ModelData, unit_names: list[str], packs: list[tuple[str, RunSpec, list[Trial]]]) -> None:
    """The files every worker reads; sweep.json last, so a folder with a plan has its inputs. The matrix is the
    model's examples (a transcoder's inputs, with their history, then its targets) and the plan names the units
    of each role, so a worker trains and scores exactly what `mini train` would."""
    folder.inputs.mkdir(parents=True, exist_ok=True)
    for name, array in (("counts.npy", data.counts), ("splits.npy", data.splits)):
        temporary = folder.inputs / f".{name}.{os.getpid()}.tmp.npy"
        np.save(temporary, array)
        os.replace(temporary, folder.inputs / name)
    write_json(folder.inputs / "dataset.json", {
        "name": dataset["name"], "dataset_id": dataset["dataset_id"], "kind": dataset["kind"],
        "value_type": dataset.get("value_type", "counts"), "unit_names": unit_names})
    write_json(folder.plan_file, {
        "sweep_id": sweep_id, "dataset": config.dataset, "grid": config.grid, "options": config.options(),
        "units": None if data.roles is None else data.roles.as_lists(),
        "packs": [{"pack_id": pack_id, "config": spec_to_config(spec),
                   "trials": [t._asdict() for t in trials]} for pack_id, spec, trials in packs]})
