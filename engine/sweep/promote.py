"""Promote a sweep's trial to a run: its configuration's SAEs (every seed of it, which ranking's stability
compares) become an ordinary finished run that can be ranked, reviewed and validated like any other."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from engine.errors import InputError
from engine.pipeline import spec_from_config, spec_to_config
from engine.sweep.folder import RESULT_TABLES, SweepFolder
from store import Store
from store.runs import RunResults, add_trained_run
from store.sweeps import get_sweep, set_promoted, sweep_trials


class Promoted(NamedTuple):
    run_id: int
    sae_ids: list[int]
    trial_ids: list[int]
    """The trials the run holds: the promoted one and the other seeds of its configuration."""


def _subset(results: dict[str, pl.DataFrame], indices: list[int]) -> RunResults:
    """The chosen SAEs of a pack's results, numbered 0, 1, … in the order given."""
    renumber = pl.DataFrame({"sae_id": indices, "new_id": list(range(len(indices)))},
                            schema={"sae_id": pl.Int32, "new_id": pl.Int32})

    def pick(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.with_columns(pl.col("sae_id").cast(pl.Int32))
        return (frame.join(renumber, on="sae_id", how="inner").drop("sae_id").rename({"new_id": "sae_id"})
                .select(frame.columns).sort("sae_id", maintain_order=True))

    picked = {name: pick(frame) for name, frame in results.items()}
    picked["saes"] = picked["saes"].with_columns(pl.col("sae_id").alias("instance"))
    return RunResults(**picked)


def _final_state(weights: Path, indices: list[int], n: int, config: dict[str, Any]) -> bytes:
    """The chosen SAEs of the pack's stack as the run's 'final' checkpoint, as `mini train` stores one: every
    per-SAE tensor (leading dimension n) sliced to them; what the stack shares (the unit scale) kept."""
    import torch

    saved = torch.load(weights, map_location="cpu", weights_only=True)
    chosen = torch.tensor(indices)
    model = {name: tensor[chosen] if tensor.dim() and tensor.shape[0] == n and name != "scale" else tensor
             for name, tensor in saved["model"].items()}
    buffer = io.BytesIO()
    torch.save({"model": model, "config": config}, buffer)
    return buffer.getvalue()


def promote_trial(db: Store, sweep_id: int, trial_id: int) -> Promoted:
    """Store trial `trial_id`'s configuration (all its seeds) as a finished run, in one transaction."""
    sweep = get_sweep(db, sweep_id)
    trials = sweep_trials(db, sweep_id)
    row = trials.filter(pl.col("trial_id") == trial_id).to_dicts()
    if not row:
        raise InputError(f"sweep {sweep_id}: no trial {trial_id} (trials 1-{trials.height})")
    trial = row[0]
    if trial["status"] != "finished":
        raise InputError(f"sweep {sweep_id} trial {trial_id} is {trial['status']}; only a finished trial can be "
                         f"promoted (mini sweep --resume {sweep_id} trains failed and lost ones again)")
    if trial["run_id"] is not None:  # delete_run clears it, so a run_id here is a run that exists
        raise InputError(f"sweep {sweep_id} trial {trial_id} is already run {trial['run_id']}")
    folder = SweepFolder(sweep["folder"])
    pack = next(p for p in folder.plan()["packs"] if p["pack_id"] == trial["pack_id"])
    siblings = [t for t in pack["trials"] if t["config"]["k"] == trial["k"]]
    result = folder.result(trial["pack_id"])
    if not (result / "metrics.json").is_file():
        raise InputError(f"{result}: the trial's result files are gone; mini sweep --resume {sweep_id} trains "
                         "it again")
    frames = {name: pl.read_parquet(result / f"{name}.parquet") for name in RESULT_TABLES
              if (result / f"{name}.parquet").is_file()}
    results = _subset(frames, [t["index"] for t in siblings])
    spec = spec_from_config(pack["config"])
    config: dict[str, Any] = spec_to_config(replace(spec, ks=(trial["k"],), instances=len(siblings)))
    config["sweep"] = {"sweep_id": sweep_id, "trial_ids": [t["trial_id"] for t in siblings],
                       "pack_id": trial["pack_id"], "folder": str(folder.path)}
    metrics = json.loads((result / "metrics.json").read_text())
    ids = [t["trial_id"] for t in siblings]
    state = _final_state(result / "weights.pt", [t["index"] for t in siblings], len(pack["trials"]), config)
    run_id, sae_ids = add_trained_run(
        db, sweep["dataset_id"], config, trial["device"] or "cpu", results,
        examples_seen=int(metrics["examples_seen"]), seconds=float(metrics["seconds"]),
        final=(int(metrics["epochs"]), 0, state), units=folder.plan().get("units"),
        then=lambda run: set_promoted(db, sweep_id, ids, run))
    return Promoted(run_id, sae_ids, ids)
