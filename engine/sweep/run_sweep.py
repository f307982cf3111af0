"""Drive a sweep: plan it, hand its packs to an executor, and ingest what the workers leave in the folder.

The process that drives a sweep holds the database only for moments: to plan (reading the dataset, writing
the sweep row) and to ingest each finished pack. Meanwhile the app may hold it, watch the folder and ingest
itself; a finished trial lives in the folder until then, so killing the driver loses none, and
`mini sweep --resume` trains again only the packs without a result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import polars as pl

from engine.errors import InputError
from engine.sweep.executors import check_executor, run_packs
from engine.sweep.folder import SweepFolder
from engine.sweep.plan import SweepConfig, default_folder, prepare_sweep, write_inputs
from store import Store
from store.datasets import load_unit_names
from store.db import is_interrupt
from store.errors import StoreLockedError
from store.sweeps import TRIAL_COLUMNS, add_sweep, get_sweep, next_sweep_id, save_trials

Report = Callable[[str], None]


class SweepOutcome(NamedTuple):
    sweep_id: int
    folder: Path
    finished: int
    """Trials finished (every one of the sweep, this round or earlier)."""
    failed: int
    """Trials failed or lost: `mini sweep --resume` trains them again."""
    seconds: float
    ingested: bool
    """Whether the database holds the latest state (False: another process held it at the end)."""


def sweep_folder_for(db_path: Path, config: SweepConfig, sweep_id: int) -> Path:
    if config.folder:
        return Path(config.folder).resolve() / f"{db_path.stem}-sweep-{sweep_id}"
    return default_folder(db_path, sweep_id)


def trial_frame(sweep_id: int, folder: SweepFolder) -> pl.DataFrame:
    """Every trial's row of sweep_trials, from the files alone."""
    import json

    rows = []
    for pack in folder.plan()["packs"]:
        state = folder.state(pack["pack_id"])
        started, ended = state.started or {}, state.ended or {}
        metrics = {m["trial_id"]: m for m in ended.get("trials", [])} if state.status == "finished" else {}
        for trial in pack["trials"]:
            figures = metrics.get(trial["trial_id"], {})
            config = trial["config"]
            rows.append({
                "sweep_id": sweep_id, "trial_id": trial["trial_id"], "pack_id": pack["pack_id"],
                "config": json.dumps(config, sort_keys=True), "config_hash": trial["config_hash"],
                "architecture": config["architecture"], "d_sae": config["d_sae"], "k": config["k"],
                "loss": config["loss"], "seed": config["seed"], "status": state.status,
                "attempts": state.attempts, "job_id": started.get("job_id"), "host": started.get("host"),
                "device": started.get("device"), "started_at": started.get("started_at"),
                "finished_at": ended.get("ended_at"), "seconds": ended.get("seconds"),
                "examples_seen": ended.get("examples_seen"), "best_epoch": figures.get("best_epoch"),
                "train_fvu": figures.get("train_fvu"), "val_fvu": figures.get("val_fvu"),
                "val_l0": figures.get("val_l0"), "val_dead_fraction": figures.get("val_dead_fraction"),
                "stability": figures.get("stability"),
                "error": ended.get("error") if state.status in ("failed", "lost") else None,
            })
    schema = {"sweep_id": pl.Int32, "trial_id": pl.Int32, "pack_id": pl.String, "config": pl.String,
              "config_hash": pl.String, "architecture": pl.String, "d_sae": pl.Int32, "k": pl.Int32,
              "loss": pl.String, "seed": pl.Int64, "status": pl.String, "attempts": pl.Int32,
              "job_id": pl.String, "host": pl.String, "device": pl.String, "started_at": pl.String,
              "finished_at": pl.String, "seconds": pl.Float64, "examples_seen": pl.Int64, "best_epoch": pl.Int32,
              "train_fvu": pl.Float64, "val_fvu": pl.Float64, "val_l0": pl.Float64,
              "val_dead_fraction": pl.Float64, "stability": pl.Float64, "error": pl.String}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(pl.col("started_at", "finished_at").str.to_datetime("%Y-%m-%d %H:%M:%S",
                                                                                   strict=False)).select(TRIAL_COLUMNS)


def ingest(db: Store, sweep_id: int) -> pl.DataFrame:
    """Write what the sweep's folder says of every trial into sweep_trials (idempotent); returns the rows
    written."""
    frame = trial_frame(sweep_id, SweepFolder(get_sweep(db, sweep_id)["folder"]))
    save_trials(db, frame)
    return frame


def ingest_if_free(db_path: Path, sweep_id: int, folder: SweepFolder) -> tuple[bool, pl.DataFrame]:
    """Read the folder's trials and write them with a short-lived connection; (False, the trials) when another
    process holds the database (the app: it ingests the folder itself)."""
    frame = trial_frame(sweep_id, folder)
    try:
        with Store.open(db_path, create=False) as db:
            save_trials(db, frame)
        return True, frame
    except StoreLockedError:
        return False, frame
    except Exception as error:
        if is_interrupt(error):  # a ctrl+c during the write: DuckDB reports it as its own error
            raise KeyboardInterrupt from error
        raise


def start_sweep(db_path: Path, config: SweepConfig, report: Report = lambda _: None,
                cancel: threading.Event | None = None) -> SweepOutcome:
    """Plan a new sweep (nothing is written unless every check passes), then drive it."""
    config.check()
    check_executor(config)
    with Store.open(db_path, create=False) as db:
        dataset, data, packs = prepare_sweep(db, config)
        unit_names = load_unit_names(db, dataset["dataset_id"])
        sweep_id = next_sweep_id(db)
        path = sweep_folder_for(db_path, config, sweep_id)
        if path.exists():
            raise InputError(f"{path}: already exists (a sweep folder of another database?); remove it or give "
                             "--folder another place")
        n_trials = sum(len(trials) for _, _, trials in packs)
        report(f"sweep {sweep_id}: {n_trials} trial(s) in {len(packs)} pack(s) of dataset '{config.dataset}' "
               f"({data.counts.shape[0]:,} examples × {dataset['n_units']} units); folder {path}")
        if data.roles is not None and config.inputs is not None:
            report(f"sweep {sweep_id}: {data.roles.describe()} ({config.inputs} → {config.targets})")
        if data.history_note(config.history):
            report(f"sweep {sweep_id}: {data.history_note(config.history)}")
        write_inputs(SweepFolder(path), sweep_id, config, dataset, data, unit_names, packs)
        add_sweep(db, dataset["dataset_id"], config.grid, config.options(), config.executor, n_trials,
                  lambda _: path)
    return drive_sweep(db_path, path, report=report, cancel=cancel)  # ingests the pending trials first


def _expected_work(pack: dict) -> float:
    """A pack's training cost, roughly: latents × SAEs × epochs × examples per epoch is the same for all, and
    Matryoshka's nested losses cost about half again."""
    config = pack["config"]
    factor = 1.5 if config["sae"]["architecture"] == "matryoshka" else 1.0
    return config["sae"]["d_sae"] * len(pack["trials"]) * config["train"]["epochs"] * factor


def _find_folder(db_path: Path, sweep: int | Path, report: Report) -> SweepFolder:
    """The sweep's folder: named by the database's sweeps row, or given; while another process holds the
    database, a sweep id is looked for where sweeps go by default."""
    if isinstance(sweep, Path):
        folder = SweepFolder(sweep)
        folder.plan()  # refuses a folder that is not a sweep's
        return folder
    try:
        with Store.open(db_path, create=False) as db:
            return SweepFolder(get_sweep(db, sweep)["folder"])
    except StoreLockedError as error:
        guess = SweepFolder(default_folder(db_path, sweep))
        if not guess.plan_file.is_file():
            raise InputError(f"{error} (or give the sweep's folder: mini sweep --resume FOLDER)") from None
        report(f"sweep {sweep}: the database is held by another process; training from {guess.path}, whose "
               "results go in once it is free")
        return guess


def drive_sweep(db_path: Path, sweep: int | Path, report: Report = lambda _: None,
                cancel: threading.Event | None = None, executor: str | None = None) -> SweepOutcome:
    """Train every pack of the sweep (an id, or its folder) that has no result: all of them the first time;
    failed, lost and never-started ones on --resume. Ingests as each ends; `executor` overrides the sweep's
    own. Needs the database only to find the folder and to ingest, so it runs while the app holds it."""
    folder = _find_folder(db_path, sweep, report)
    plan = folder.plan()
    sweep_id = int(plan["sweep_id"])
    ingest_if_free(db_path, sweep_id, folder)
    config = SweepConfig(dataset=plan["dataset"], grid=plan["grid"], **plan["options"])
    if executor is not None and executor != config.executor:
        from dataclasses import replace

        config = replace(config, executor=executor)
    check_executor(config)
    clock = time.perf_counter()
    packs = plan["packs"]
    sizes = {p["pack_id"]: len(p["trials"]) for p in packs}
    with folder.owned():
        # Longest first: with as many workers as there are packs at the end, a big pack left last would run alone.
        todo = [p["pack_id"] for p in sorted(packs, key=_expected_work, reverse=True)
                if folder.state(p["pack_id"]).status != "finished"]
        finished = sum(sizes.values()) - sum(sizes[p] for p in todo)
        if finished:
            report(f"sweep {sweep_id}: {finished} trial(s) already finished; training the other "
                   f"{sum(sizes[p] for p in todo)}")
        counts = {"done": 0, "failed": 0}
        lock_noted = False

        def on_done(pack: str, error: str | None) -> None:
            nonlocal lock_noted
            counts["failed" if error else "done"] += 1
            what = f"failed: {error}" if error else "finished"
            report(f"sweep {sweep_id}: pack {counts['done'] + counts['failed']} of {len(todo)} "
                   f"({sizes[pack]} trial(s)) {what}")
            if not ingest_if_free(db_path, sweep_id, folder)[0] and not lock_noted:
                lock_noted = True
                report(f"sweep {sweep_id}: the database is held by another process; finished trials stay in "
                       f"{folder.path} and are ingested later (by the app's Sweep screen, or at the end)")

        report(f"sweep {sweep_id}: training {len(todo)} pack(s) with the {config.executor} executor")
        try:
            run_packs(config, folder, todo, on_done, cancel)
        except KeyboardInterrupt:
            ingest_if_free(db_path, sweep_id, folder)  # what finished stays; the rest is one --resume away
            report(f"sweep {sweep_id}: interrupted; mini sweep --resume {sweep_id} trains what is left")
            raise
    ingested, frame = ingest_if_free(db_path, sweep_id, folder)
    return SweepOutcome(sweep_id, folder.path, int((frame["status"] == "finished").sum()),
                        int(frame["status"].is_in(["failed", "lost"]).sum()), time.perf_counter() - clock,
                        ingested)

