"""Train one pack of a sweep from its folder: what a local worker process, a SLURM job or a Ray task runs.

A worker reads the sweep folder's inputs and plan and writes its results there; it never opens the database
(the owning process ingests the files). It trains exactly as `mini train` does with the same settings
(engine.pipeline's build_stack, Trainer and engine.run_results.collect_results on the same matrix), so a trial's
metrics do not depend on where it ran.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
import traceback
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from engine.analysis.stability import stability
from engine.pipeline import build_stack, spec_from_config
from engine.quality_flags import FlagContext
from engine.run_results import collect_results
from engine.sae.model_data import UnitRoles
from engine.sae.train import Trainer
from engine.sweep.folder import RESULT_TABLES, SweepFolder, now, read_json, write_json


def job_id() -> str | None:
    """The scheduler's name for this job, where there is one."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    if os.environ.get("SLURM_JOB_ID"):
        return os.environ["SLURM_JOB_ID"]
    return os.environ.get("MINI_SWEEP_JOB_ID")


def _threads() -> None:
    """Use the cores this job was given: SLURM's allocation, or the local pool's share."""
    for name in ("MINI_SWEEP_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(name, "").isdigit() and int(os.environ[name]) > 0:
            torch.set_num_threads(int(os.environ[name]))
            return


def run_pack(folder: str, pack_id: str) -> dict[str, Any]:
    """Train pack `pack_id` of the sweep in `folder`; returns its metrics (also in result/metrics.json).

    A failure is written to the try's failed.json (the error and the end of its traceback) and raised again,
    so the executor sees it too."""
    sweep = SweepFolder(folder)
    attempt = sweep.new_attempt(pack_id)
    _threads()
    started = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": job_id(), "started_at": now(),
               "started_unix": time.time(), "threads": torch.get_num_threads()}
    write_json(attempt / "started.json", started)
    try:
        return _train(sweep, pack_id, attempt, started)
    except BaseException as error:
        why = "interrupted (ctrl+c, or the executor cancelled it)" if isinstance(error, KeyboardInterrupt) \
            else f"{type(error).__name__}: {error}".strip()[:2000]
        write_json(attempt / "failed.json", {
            "error": why, "ended_at": now(),
            "traceback": traceback.format_exc()[-4000:]})
        raise


def _pack(plan: dict[str, Any], pack_id: str) -> dict[str, Any]:
    for pack in plan["packs"]:
        if pack["pack_id"] == pack_id:
            return pack
    raise KeyError(f"no pack {pack_id} in the sweep's plan")


def _train(sweep: SweepFolder, pack_id: str, attempt: Path, started: dict[str, Any]) -> dict[str, Any]:
    clock = time.perf_counter()
    plan = sweep.plan()
    pack = _pack(plan, pack_id)
    spec = spec_from_config(pack["config"])
    dataset = read_json(sweep.inputs / "dataset.json")
    # The model's examples as the planner built them (engine.sae.model_data) and the units of each role.
    counts = np.load(sweep.inputs / "counts.npy")
    splits = np.load(sweep.inputs / "splits.npy")
    roles = UnitRoles.from_lists(plan.get("units"))
    stack, data = build_stack(spec, counts, splits, dataset["kind"], None if roles is None else len(roles.targets))
    started["device"] = str(data.device)
    write_json(attempt / "started.json", started)
    outcome = Trainer(stack, data, spec.train).run()
    context = FlagContext(normalized=spec.normalize_units, raw_counts=dataset["value_type"] == "counts")
    results = collect_results(stack, counts, splits, outcome, dataset["kind"], dataset["unit_names"], context,
                              baselines=FolderBaselines(sweep.path / "baselines"),
                              target_units=None if roles is None else roles.targets,
                              input_units=None if roles is None else roles.inputs, history=spec.history)
    seconds = time.perf_counter() - clock
    staging = attempt / "result"
    staging.mkdir()
    for table in RESULT_TABLES:
        frame = getattr(results, table)
        if frame is None:
            continue
        frame = frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)
        frame.write_parquet(staging / f"{table}.parquet")
    buffer = io.BytesIO()
    torch.save({"model": stack.state_dict(), "config": pack["config"]}, buffer)
    (staging / "weights.pt").write_bytes(buffer.getvalue())
    decoders = stack.folded_weights()["W_dec"].cpu().numpy()
    metrics = {"trials": trial_metrics(pack, results.qc, decoders, outcome.best_epoch), "seconds": seconds,
               "examples_seen": outcome.examples_seen, "status": outcome.status, "ended_at": now(),
               "ended_unix": time.time(),
               "epochs": outcome.epochs}
    write_json(staging / "metrics.json", metrics)
    write_json(staging / "started.json", started)
    try:
        os.rename(staging, sweep.result(pack_id))  # whole or absent; the first try to finish wins
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)  # another try of this pack finished first: keep its result
    return metrics


class FolderBaselines(MutableMapping):
    """QC's PCA and NMF baselines of the sweep's dataset, one JSON file per (split, components), shared by every
    stack of the sweep: they depend on the counts, the splits and the number of components only, and fitting
    them is most of a small stack's time after training. Two workers may fit the same one at once; both write
    the same figures."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, key: tuple[str, int]) -> Path:
        return self.folder / f"{key[0]}-{int(key[1])}.json"

    def __getitem__(self, key: tuple[str, int]) -> tuple[float, float | None]:
        try:
            pca, nmf = read_json(self._path(key))
        except (OSError, ValueError):
            raise KeyError(key) from None
        return pca, nmf

    def __setitem__(self, key: tuple[str, int], value: tuple[float, float | None]) -> None:
        self.folder.mkdir(exist_ok=True)
        write_json(self._path(key), list(value))

    def __delitem__(self, key: tuple[str, int]) -> None:
        self._path(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for path in self.folder.glob("*.json") if self.folder.is_dir() else ():
            split, _, components = path.stem.rpartition("-")
            yield split, int(components)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def trial_metrics(pack: dict[str, Any], qc: pl.DataFrame, weights: np.ndarray, best_epoch: list[int]
                  ) -> list[dict[str, Any]]:
    """Per trial: FVU on train and val, L0 and dead fraction on val, best epoch, and stability (the mean over
    its features of the best decoder cosine in the other seeds of the same k; None with one seed), from the
    pack's QC rows and decoder weights [SAEs, d_sae, d_in]. Nothing from the test split: the model is chosen
    from these."""
    by_k: dict[int, list[int]] = {}
    for trial in pack["trials"]:
        by_k.setdefault(trial["config"]["k"], []).append(trial["index"])
    scores, _ = stability({i: weights[i] for i in range(weights.shape[0])}, list(by_k.values()))
    mean_stability = scores.group_by("sae_id").agg(pl.col("stability").mean())
    stable = dict(zip(mean_stability["sae_id"].to_list(), mean_stability["stability"].to_list(), strict=True))

    def figure(index: int, split: str, column: str) -> float | None:
        rows = qc.filter((pl.col("sae_id") == index) & (pl.col("split") == split))[column]
        return None if rows.is_empty() or rows[0] is None else float(rows[0])

    return [{"trial_id": t["trial_id"], "index": t["index"], "best_epoch": int(best_epoch[t["index"]]),
             "train_fvu": figure(t["index"], "train", "fvu"), "val_fvu": figure(t["index"], "val", "fvu"),
             "val_l0": figure(t["index"], "val", "l0_mean"),
             "val_dead_fraction": figure(t["index"], "val", "dead_fraction"),
             "stability": stable.get(t["index"])} for t in pack["trials"]]
