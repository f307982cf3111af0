"""`mini sweep`: train a grid of SAE settings here, on SLURM or on Ray; show a sweep; promote a trial to a run.

    mini sweep --dataset NAME --grid "arch=batchtopk,matryoshka d_sae=64,128 k=4,8" [--seeds 3] …
    mini sweep --resume SWEEP          train the trials without a result again (failed, lost, never started)
    mini sweep show [SWEEP]            the sweeps, or one sweep's trials with its Pareto front (★)
    mini sweep promote SWEEP TRIAL     the trial's configuration (every seed) as a run to rank and review
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tui.cli_common import add_unit_options, db_path, open_store, say

ACTIONS = ("show", "promote")


def _sweep_number(text: str, what: str) -> int:
    from engine.errors import InputError

    try:
        value = int(text)
    except ValueError:
        raise InputError(f"mini sweep: {what} '{text}' is not a whole number") from None
    if value < 1:
        raise InputError(f"mini sweep: {what} {value} must be at least 1")
    return value


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.errors import InputError

    words = list(args.action)
    if words and words[0] in ACTIONS:
        if args.dataset or args.grid or args.resume is not None:
            raise InputError(f"mini sweep {words[0]}: takes no --dataset, --grid or --resume")
        if words[0] == "show":
            if len(words) > 2:
                raise InputError("mini sweep show [SWEEP]: one sweep at most")
            return _show(args, _sweep_number(words[1], "SWEEP") if len(words) == 2 else None)
        if len(words) != 3:
            raise InputError("mini sweep promote SWEEP TRIAL: give the sweep and the trial, e.g. 1 7")
        return _promote(args, _sweep_number(words[1], "SWEEP"), _sweep_number(words[2], "TRIAL"))
    if words:
        raise InputError(f"mini sweep: unknown action '{words[0]}' (use show or promote, or options to start one)")
    return _run(args)


def _config(args: argparse.Namespace):
    from engine.errors import InputError
    from engine.sweep.plan import SweepConfig

    if not args.dataset or not args.grid:
        raise InputError("mini sweep: give --dataset NAME and --grid \"KEY=V1,V2 …\" (or --resume SWEEP); "
                         "`mini info` lists the datasets")
    config = SweepConfig(
        dataset=args.dataset, grid=args.grid, seeds=args.seeds, seed=args.seed, epochs=args.epochs,
        executor=args.executor or "local", max_parallel=args.max_parallel, device=args.device,
        slurm_partition=args.slurm_partition, slurm_gpus_per_task=args.slurm_gpus_per_task,
        slurm_cpus_per_task=args.slurm_cpus_per_task, slurm_time_min=args.slurm_time_min,
        ray_address=args.ray_address, ray_gpus_per_task=args.ray_gpus_per_task, folder=args.folder,
        inputs=args.inputs, targets=args.targets, history=args.history)
    config.check()
    return config


def _run(args: argparse.Namespace) -> int:
    from engine.errors import InputError

    if args.resume is not None:
        given = [name for name in ("dataset", "grid", "epochs", "folder", "inputs", "targets")
                 if getattr(args, name) is not None] + (["history"] if args.history != 1 else [])
        if given:
            raise InputError(f"mini sweep --resume: a sweep keeps its own settings; drop --{given[0]}")
        config = None
    else:
        config = _config(args)  # every option checked before anything heavy is imported or opened
    from engine.sweep.run_sweep import drive_sweep, start_sweep
    from store.sweeps import sweep_trials

    path = db_path(args)
    if not path.exists():
        raise InputError(f"{path}: no database here (mini import … or mini demo makes one)")
    if config is None:
        sweep = int(args.resume) if args.resume.isdigit() else Path(args.resume)
        outcome = drive_sweep(path, sweep, report=say, executor=args.executor)
    else:
        outcome = start_sweep(path, config, report=say)
    if outcome.ingested:
        with open_store(args, read_only=True) as db:
            _print_trials(sweep_trials(db, outcome.sweep_id))
    else:
        say(f"sweep {outcome.sweep_id}: the database was held by another process at the end; the results are in "
            f"{outcome.folder} and go in at the next `mini sweep --resume {outcome.sweep_id}` or in the app")
    failed = f", {outcome.failed} failed or lost (mini sweep --resume {outcome.sweep_id} trains them again)" \
        if outcome.failed else ""
    say(f"sweep {outcome.sweep_id}: {outcome.finished} trial(s) finished{failed} in {outcome.seconds:.0f} s; "
        f"mini sweep promote {outcome.sweep_id} TRIAL makes one a run")
    print(outcome.sweep_id)
    return 1 if outcome.failed else 0


def _print_trials(trials) -> None:
    from engine.sweep.summary import trial_table
    from tui.table_text import render_table

    print(render_table(trial_table(trials)))


def _show(args: argparse.Namespace, sweep_id: int | None) -> int:
    from store.sweeps import get_sweep, list_sweeps, sweep_trials
    from tui.table_text import render_table

    with open_store(args, read_only=True) as db:
        if sweep_id is None:
            sweeps = list_sweeps(db)
            if sweeps.is_empty():
                print("no sweeps yet: mini sweep --dataset NAME --grid \"d_sae=64,128 k=4,8\"")
            else:
                print(render_table(sweeps))
            return 0
        sweep = get_sweep(db, sweep_id)
        trials = sweep_trials(db, sweep_id)
    print(f"sweep {sweep_id}: dataset '{sweep['dataset']}', grid \"{sweep['grid']}\", {sweep['executor']} "
          f"executor, folder {sweep['folder']}; ingested {sweep['ingested_at']}")
    _print_trials(trials)
    print("★: on the Pareto front of val L0 against val FVU (no trial lower on both); no test figure is used")
    return 0


def _promote(args: argparse.Namespace, sweep_id: int, trial_id: int) -> int:
    from engine.sweep.promote import promote_trial
    from engine.sweep.run_sweep import ingest

    with open_store(args, create=False) as db:
        ingest(db, sweep_id)  # the folder may hold news the database has not seen
        promoted = promote_trial(db, sweep_id, trial_id)
    say(f"sweep {sweep_id} trial {trial_id}: promoted to run {promoted.run_id} (trials "
        f"{', '.join(map(str, promoted.trial_ids))}: every seed of its configuration; SAEs "
        f"{', '.join(map(str, promoted.sae_ids))}); next: mini rank --run {promoted.run_id}")
    print(promoted.run_id)
    return 0


def add_sweep_command(add) -> None:
    sweep = add("sweep", cmd_sweep, "train a grid of SAE settings (here, on SLURM or on Ray), show a sweep, "
                                    "promote a trial to a run")
    sweep.add_argument("action", nargs="*", metavar="ACTION",
                       help="none: start (--dataset, --grid) or resume (--resume) a sweep; `show [SWEEP]`: the "
                            "sweeps, or one sweep's trials and Pareto front; `promote SWEEP TRIAL`: make a trial a "
                            "run")
    sweep.add_argument("--dataset", help="dataset name (see `mini info`)")
    sweep.add_argument("--grid", help="settings to cross, e.g. \"arch=batchtopk,matryoshka d_sae=64,128 k=4,8 "
                                      "loss=mse,poisson\" (keys: arch, d_sae, k, loss, lr, batch_size, output; "
                                      "those left out are chosen from the recording as mini train does)")
    sweep.add_argument("--seeds", type=int, default=1, help="SAEs per configuration, consecutive seeds (default 1; "
                                                            "2 or more also measure stability)")
    sweep.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    sweep.add_argument("--epochs", type=int, help="passes over the train split (default: early stopping on val)")
    add_unit_options(sweep)
    sweep.add_argument("--executor", choices=["local", "slurm", "ray"],
                       help="where packs train: local (a process pool here; default), slurm (submitit job "
                            "arrays) or ray (Ray tasks); with --resume, overrides the sweep's own")
    sweep.add_argument("--max-parallel", type=int, metavar="N",
                       help="packs trained at once (default: one per GPU or core here; 8 jobs on SLURM or Ray)")
    sweep.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"],
                       help="where each worker trains (default auto)")
    sweep.add_argument("--folder", metavar="DIR", help="where the sweep folder goes; on a cluster, storage every "
                                                       "node reads (default: NAME.sweeps/ beside the database)")
    sweep.add_argument("--resume", metavar="SWEEP", help="train again the trials without a result; SWEEP is its id, "
                                                         "or its folder (while another process holds the database)")
    sweep.add_argument("--slurm-partition", metavar="P", help="SLURM partition (default: the cluster's default)")
    sweep.add_argument("--slurm-gpus-per-task", type=int, default=0, metavar="G", help="GPUs per SLURM job")
    sweep.add_argument("--slurm-cpus-per-task", type=int, default=1, metavar="C",
                       help="cores per SLURM job (default 1)")
    sweep.add_argument("--slurm-time-min", type=int, default=60, metavar="M",
                       help="time limit of each SLURM job in minutes (default 60)")
    sweep.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (default: start Ray here)")
    sweep.add_argument("--ray-gpus-per-task", type=float, default=0.0, metavar="F",
                       help="GPU share of each Ray task, e.g. 0.25 (default 0)")
