"""Sweep benchmark: `mini sweep`'s local executor against `mini train` run one after another, and the
per-pack overhead of each executor (local, Ray, SLURM).

    .venv/bin/python bench/sweep.py            # full: about 3-6 min on 2 cores
    .venv/bin/python bench/sweep.py --quick    # seconds-long smoke run (local executor only)

Data: the sample recording (sample_data.generate, `--bins` bins × 120 units), imported into a temporary
database as `mini import` does. Nothing is timed before that.

1. Speed and identical metrics. The grid (by default "arch=batchtopk,matryoshka d_sae=128,256 k=4,8
   loss=mse,poisson", 16 configurations, seed 1, fixed `--epochs`) packs the configurations that differ only
   in k into one stack: 8 packs of 2. The sequential side is what a user would run instead: one
   engine.pipeline.train_run per pack (`mini train --arch A --d-sae D --k 4,8 --loss L --seed 1 --epochs E`),
   one after another, in this process, on the same database, with torch's default threads. The sweep side is
   engine.sweep.run_sweep.start_sweep(executor="local", max_parallel=2), planning and ingesting included.
   Every trial's val FVU in sweep_trials is compared with the val FVU in the qc table of the sequential run's
   SAE of the same pack and k.
2. Overhead per pack: `--overhead-packs` tiny packs (one epoch, d_sae 16) with max_parallel 1 through each
   executor. Overhead = (wall of the executor phase, i.e. engine.sweep.executors.run_packs as start_sweep
   calls it, which includes the per-pack ingestion and starting/stopping Ray − Σ each pack's own compute,
   `ended_unix − started_unix` from its result's started.json and metrics.json) / packs. SLURM is a real
   one-node cluster (tests/slurm_cluster.py, needs root and SLURM installed), started here and stopped after
   if this bench started it; where it cannot start, its figure is null and `unavailable` says why.

Prints progress to stderr and, last on stdout, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
warnings.filterwarnings("ignore")

GRID = "arch=batchtopk,matryoshka d_sae=128,256 k=4,8 loss=mse,poisson"
QUICK_GRID = "arch=batchtopk d_sae=16 k=2,4 loss=mse,poisson"
OVERHEAD_GRID = "arch=batchtopk,matryoshka d_sae=16 k=4 loss=mse,poisson"
"""Four tiny packs (one SAE each) for the overhead part; `--overhead-packs` takes the first N."""
SEED = 1
DATASET = "sample"
TARGETS = {"speedup": 1.6, "max_val_fvu_difference": 1e-6, "overhead_s_per_trial": {"local": 2.0, "slurm": 10.0}}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def import_sample(db_path: Path, data_folder: Path, bins: int) -> dict[str, Any]:
    from engine.ingest.importer import ImportOptions, import_files
    from sample_data import SampleConfig, generate
    from store import Store

    config = SampleConfig(n_bins=bins)
    counts_path, meta_path = generate(config).write(data_folder)
    with Store.open(db_path) as db:
        result = import_files(db, counts_path, meta_path, ImportOptions(name=DATASET, bin_size_s=config.bin_size_s))
    return {"bins": result.n_examples, "units": result.n_units, "splits": result.split_sizes}


def pack_settings(grid: str) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
    """(settings without k, the ks) per pack, in the order the sweep plans them."""
    from engine.sweep.grid import combinations, pack_key, parse_grid

    groups: dict[tuple, tuple[dict[str, Any], list[int]]] = {}
    for combination in combinations(parse_grid(grid)):
        _, ks = groups.setdefault(pack_key(combination), ({k: v for k, v in combination.items() if k != "k"}, []))
        ks.append(combination["k"])
    return [(settings, tuple(ks)) for settings, ks in groups.values()]


def sequential(db_path: Path, grid: str, epochs: int) -> tuple[float, dict[tuple, float]]:
    """One train_run per pack, as `mini train` builds its spec; returns (wall seconds, val FVU per
    (arch, d_sae, loss, k))."""
    from engine.pipeline import RunSpec, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from store import Store

    fvu: dict[tuple, float] = {}
    with Store.open(db_path, create=False) as db:
        start = time.perf_counter()
        for settings, ks in pack_settings(grid):
            spec = RunSpec(dataset=DATASET, sae=SAEConfig(architecture=settings["arch"], d_sae=settings["d_sae"],
                                                          loss=settings["loss"]),
                           train=TrainConfig(epochs=epochs, batch_size=1, seed=SEED, device="cpu"),
                           ks=ks, instances=1, seed=SEED, auto=("batch_size",))
            clock = time.perf_counter()
            outcome = train_run(db, spec)
            log(f"  train {settings} k={','.join(map(str, ks))}: run {outcome.run_id}, "
                f"{time.perf_counter() - clock:.1f} s")
            rows = db.frame("SELECT s.k, q.fvu FROM saes s JOIN qc q USING (sae_id) WHERE s.run_id = ? "
                            "AND q.split = 'val'", [outcome.run_id])
            for k, value in rows.iter_rows():
                fvu[(settings["arch"], settings["d_sae"], settings["loss"], k)] = value
        seconds = time.perf_counter() - start
    return seconds, fvu


def sweep(db_path: Path, grid: str, epochs: int, executor: str, max_parallel: int,
          folder: Path | None = None) -> dict[str, Any]:
    """A sweep through start_sweep; its wall, the executor phase's wall (run_packs), its trials and the
    packs' own compute seconds."""
    from engine.sweep import run_sweep
    from engine.sweep.folder import SweepFolder
    from engine.sweep.plan import SweepConfig
    from store import Store
    from store.sweeps import sweep_trials

    phase: dict[str, float] = {}
    run_packs = run_sweep.run_packs

    def timed_run_packs(*args: Any, **kwargs: Any) -> None:
        clock = time.perf_counter()
        try:
            run_packs(*args, **kwargs)
        finally:
            phase["seconds"] = time.perf_counter() - clock

    config = SweepConfig(dataset=DATASET, grid=grid, seeds=1, seed=SEED, epochs=epochs, executor=executor,
                         max_parallel=max_parallel, device="cpu", folder=str(folder) if folder else None)
    run_sweep.run_packs = timed_run_packs  # start_sweep calls it by this name; restored below
    try:
        start = time.perf_counter()
        outcome = run_sweep.start_sweep(db_path, config, report=lambda m: log(f"  {m}"))
        seconds = time.perf_counter() - start
    finally:
        run_sweep.run_packs = run_packs
    if outcome.failed or not outcome.ingested:
        sys.exit(f"bench/sweep.py: the {executor} sweep ended with {outcome.failed} failed trial(s), "
                 f"ingested={outcome.ingested}")
    sweep_folder = SweepFolder(outcome.folder)
    compute = []
    for pack in sweep_folder.plan()["packs"]:
        state = sweep_folder.state(pack["pack_id"])
        compute.append(state.ended["ended_unix"] - state.started["started_unix"])
    with Store.open(db_path, create=False) as db:
        trials = sweep_trials(db, outcome.sweep_id)
    return {"seconds": seconds, "executor_seconds": phase["seconds"], "compute_seconds": compute,
            "trials": trials, "threads": sweep_folder.state(sweep_folder.plan()["packs"][0]["pack_id"]).started}


def overhead(db_path: Path, executor: str, packs: int, grid: str) -> float:
    result = sweep(db_path, grid, 1, executor, 1, folder=db_path.parent / f"overhead-{executor}")
    if len(result["compute_seconds"]) != packs:
        sys.exit(f"bench/sweep.py: expected {packs} packs, the sweep planned {len(result['compute_seconds'])}")
    per_pack = (result["executor_seconds"] - sum(result["compute_seconds"])) / packs
    log(f"  {executor}: executor phase {result['executor_seconds']:.2f} s, packs' compute "
        f"{sum(result['compute_seconds']):.2f} s → {per_pack:.2f} s overhead per pack")
    return per_pack


def start_slurm() -> tuple[str | None, str | None, str | None]:
    """(owner to stop it with, or None when it was already up; None or why SLURM cannot be used; partition)."""
    from tests import slurm_cluster

    reason = slurm_cluster.cannot_start_reason()
    if reason:
        return None, reason, None
    owner = f"bench-sweep-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        cluster = slurm_cluster.start(owner=owner)
    except slurm_cluster.SlurmUnavailable as error:
        return None, str(error).splitlines()[0], None
    log(f"  SLURM {'started' if cluster.started else 'already up'} in {cluster.seconds:.1f} s")
    return (owner if cluster.started else None), None, cluster.partition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: tiny data and grid, "
                        "local executor only")
    parser.add_argument("--bins", type=int, default=None, help="sample recording bins (default 30000; quick 3000)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every pack (default 3; quick 1)")
    parser.add_argument("--grid", default=None, help=f"the sweep's grid (default {GRID!r})")
    parser.add_argument("--executors", default=None,
                        help="executors whose overhead is measured (default local,ray,slurm; quick: local)")
    parser.add_argument("--overhead-packs", type=int, choices=(2, 4), default=None,
                        help="tiny packs per executor (default 4; quick 2)")
    parser.add_argument("--dir", default=None, help="where the temporary directory goes")
    args = parser.parse_args()
    bins = args.bins or (3000 if args.quick else 30_000)
    epochs = args.epochs or (1 if args.quick else 3)
    grid = args.grid or (QUICK_GRID if args.quick else GRID)
    executors = (args.executors or ("local" if args.quick else "local,ray,slurm")).split(",")
    n_overhead = args.overhead_packs or (2 if args.quick else 4)
    if not set(executors) <= {"local", "ray", "slurm"} or bins < 1000 or epochs < 1:
        sys.exit("bench/sweep.py: --executors takes local,ray,slurm; --bins ≥ 1000; --epochs ≥ 1")
    overhead_grid = OVERHEAD_GRID if n_overhead == 4 else "arch=batchtopk d_sae=16 k=4 loss=mse,poisson"
    import torch

    result: dict[str, Any] = {"bench": "sweep", "quick": args.quick, "grid": grid, "epochs": epochs, "seed": SEED}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        db_path = Path(folder) / "bench.duckdb"
        data = import_sample(db_path, Path(folder) / "data", bins)
        log(f"sample recording: {data['bins']:,} bins × {data['units']} units, splits {data['splits']}")
        result.update({"data": f"sample_data.generate(SampleConfig(n_bins={bins}))", "bins": data["bins"],
                       "units": data["units"]})
        log(f"sequential train_run per pack (torch threads {torch.get_num_threads()}):")
        sequential_s, sequential_fvu = sequential(db_path, grid, epochs)
        log("sweep, local executor, max_parallel 2:")
        local = sweep(db_path, grid, epochs, "local", 2)
        trials = local["trials"]
        differences = []
        for row in trials.iter_rows(named=True):
            key = (row["architecture"], row["d_sae"], row["loss"], row["k"])
            differences.append(abs(row["val_fvu"] - sequential_fvu[key]))
            log(f"  trial {row['trial_id']:2} {key}: sweep {row['val_fvu']:.8f}, train {sequential_fvu[key]:.8f}")
        result.update({
            "configurations": trials.height, "packs": trials["pack_id"].n_unique(),
            "sequential_s": round(sequential_s, 2), "local_s": round(local["seconds"], 2),
            "local_executor_s": round(local["executor_seconds"], 2),
            "local_packs_compute_s": round(sum(local["compute_seconds"]), 2),
            "speedup": round(sequential_s / local["seconds"], 3),
            "max_val_fvu_difference": max(differences),
            "sequential_threads": torch.get_num_threads(), "sweep_worker_threads": local["threads"]["threads"]})
        log(f"sequential {sequential_s:.1f} s, sweep {local['seconds']:.1f} s → {result['speedup']}×; "
            f"max |Δ val FVU| {max(differences):.3g}")
        per_trial: dict[str, float | None] = {"local": None, "ray": None, "slurm": None}
        unavailable: dict[str, str] = {name: "not run (--executors)" for name in per_trial if name not in executors}
        for executor in executors:
            log(f"overhead, {executor} executor, {n_overhead} tiny packs, max_parallel 1:")
            if executor == "ray" and _missing("ray"):
                unavailable["ray"] = _missing("ray")
                continue
            owner = None
            if executor == "slurm":
                if _missing("slurm"):
                    unavailable["slurm"] = _missing("slurm")
                    continue
                owner, reason, _ = start_slurm()
                if reason:
                    unavailable["slurm"] = reason
                    log(f"  {reason}")
                    continue
            try:
                per_trial[executor] = round(overhead(db_path, executor, n_overhead, overhead_grid), 3)
            finally:
                if owner:
                    from tests import slurm_cluster

                    slurm_cluster.stop(owner=owner)
        result["overhead_packs"] = n_overhead
        result["overhead_s_per_trial"] = per_trial
        if unavailable:
            result["unavailable"] = unavailable
    speedup_target = TARGETS["speedup"]
    result["targets"] = TARGETS
    result["meets_targets"] = {
        "speedup": result["speedup"] >= speedup_target,
        "max_val_fvu_difference": result["max_val_fvu_difference"] <= TARGETS["max_val_fvu_difference"],
        "overhead_s_per_trial": {name: None if per_trial[name] is None else per_trial[name] <= limit
                                 for name, limit in TARGETS["overhead_s_per_trial"].items()},
    }
    result["cpus"] = len(os.sched_getaffinity(0))
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


def _missing(executor: str) -> str | None:
    from engine.sweep.executors import missing_extra

    return missing_extra(executor)


if __name__ == "__main__":
    main()
