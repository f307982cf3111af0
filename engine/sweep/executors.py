"""Where a sweep's packs train: a process pool here, SLURM job arrays through submitit, or Ray tasks.

Each executor runs `engine.sweep.worker.run_pack(folder, pack_id)` once per pack and calls `on_done(pack_id,
error)` as each ends (error None: it finished; else why not). What a pack produced is in the sweep folder
either way; an executor only says when to look. A job that ended without a result or a failure of its own
(killed, out of memory, a lost node) is marked lost in the folder.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from engine.errors import InputError
from engine.sweep.folder import SweepFolder
from engine.sweep.plan import SweepConfig
from engine.sweep.worker import run_pack

OnDone = Callable[[str, "str | None"], None]

INSTALL = {"slurm": "pip install -e '.[slurm]' (submitit)", "ray": "pip install -e '.[ray]' (Ray)"}


def missing_extra(executor: str) -> str | None:
    """One line saying how to install what `executor` needs, or None when it is installed."""
    module = {"slurm": "submitit", "ray": "ray"}.get(executor)
    if module is None:
        return None
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        return f"--executor {executor} needs {module}, which is not installed; {INSTALL[executor]}"
    return None


def check_executor(config: SweepConfig) -> None:
    """Refuse, before anything is written, an executor that cannot run here: its extra missing, no sbatch for
    SLURM, or --device cuda for local workers on a machine without a GPU (a cluster's nodes may have one)."""
    missing = missing_extra(config.executor)
    if missing:
        raise InputError(missing)
    if config.executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise InputError("--executor slurm: no SLURM here (sbatch is not on PATH); run mini sweep on the "
                             "cluster's login node")
    if config.executor == "local" and config.device == "cuda":
        local_slots(config)  # refuses when no GPU is visible


def run_packs(config: SweepConfig, folder: SweepFolder, pack_ids: list[str], on_done: OnDone,
              cancel: threading.Event | None = None) -> None:
    """Train `pack_ids` with the configured executor, calling on_done as each ends."""
    if not pack_ids:
        return
    cancel = cancel or threading.Event()
    if config.executor == "local":
        _run_local(config, folder, pack_ids, on_done, cancel)
    elif config.executor == "slurm":
        _run_slurm(config, folder, pack_ids, on_done, cancel)
    elif config.executor == "ray":
        _run_ray(config, folder, pack_ids, on_done, cancel)
    else:
        raise InputError(f"--executor {config.executor}: unknown")


# -- local: a process pool --------------------------------------------------------------------------------
def local_slots(config: SweepConfig) -> tuple[int, int, int]:
    """(workers, threads per worker, GPUs): one worker per visible GPU when training on GPUs, else one per
    core (or per pair of cores beyond 8), capped by --max-parallel."""
    import torch

    cores = len(os.sched_getaffinity(0))
    gpus = torch.cuda.device_count() if config.device in ("auto", "cuda") else 0
    if config.device == "cuda" and gpus == 0:
        raise InputError("--device cuda: no CUDA GPU is visible here (use --device cpu or auto)")
    workers = gpus if gpus else (cores if cores <= 8 else cores // 2)
    workers = config.max_parallel or workers
    threads = max(1, cores // workers)
    return workers, threads, gpus


_busy = threading.Event()
"""Set in a pool worker while it trains a pack."""


def _pin_worker(slots: Any, threads: int, gpus: int) -> None:
    """A pool worker's start: take a slot, see only that slot's GPU (before CUDA starts) and use its share of
    the cores; and leave once the owner is gone."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    os.environ["MINI_SWEEP_THREADS"] = str(threads)
    os.environ["MINI_SWEEP_JOB_ID"] = f"local worker {slot} (PID {os.getpid()})"
    owner = os.getppid()

    def leave_when_orphaned() -> None:
        # A killed owner leaves its pool's workers waiting on a queue that it can no longer write to (each
        # holds the queue's write end too, so they never see it close). A worker in the middle of a pack
        # finishes it, since its result is a file the next --resume ingests; an idle one exits.
        while True:
            time.sleep(0.5)
            if os.getppid() != owner and not _busy.is_set():
                os._exit(0)

    threading.Thread(target=leave_when_orphaned, daemon=True, name="mini-orphan-watch").start()


def _local_task(folder: str, pack_id: str) -> dict[str, Any]:
    _busy.set()
    try:
        return run_pack(folder, pack_id)
    finally:
        _busy.clear()


def _run_local(config: SweepConfig, folder: SweepFolder, pack_ids: list[str], on_done: OnDone,
               cancel: threading.Event) -> None:
    workers, threads, gpus = local_slots(config)
    workers = min(workers, len(pack_ids))
    context = multiprocessing.get_context("spawn")  # no fork: the owner may hold threads and a DuckDB file
    queue = list(pack_ids)
    while queue and not cancel.is_set():
        round_started = time.time_ns()
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        with _sigint_ignored():  # inherited by the workers: ctrl+c is the owner's to handle, below
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_pin_worker,
                                       initargs=(slots, threads, gpus))
            futures: dict[Future, str] = {pool.submit(_local_task, str(folder.path), pack): pack for pack in queue}
        queue = []
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if cancel.is_set():
                    raise KeyboardInterrupt
                for future in done:
                    pack = futures[future]
                    # on_done stays outside the try: an error of its own (a ctrl+c while it ingests) is not the
                    # pack's, and must stop the sweep, not be recorded as the pack failing.
                    try:
                        future.result()
                    except BrokenProcessPool:
                        # A worker died (killed, out of memory): the pool is gone, with every pack in it.
                        if folder.state(pack).status == "finished":
                            on_done(pack, None)
                        elif _started_since(folder, pack, round_started):
                            folder.mark_lost(pack, "its worker process died (killed, or out of memory)")
                            on_done(pack, "lost: its worker process died (killed, or out of memory)")
                        else:
                            queue.append(pack)  # never started: train it in a new pool
                        continue
                    except Exception as error:  # the worker wrote failed.json; this is the same error
                        on_done(pack, f"{type(error).__name__}: {error}")
                        continue
                    on_done(pack, None)
        except BaseException as error:  # ctrl+c, or the owner failing while it ingests: the workers stop with it
            processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            why = ("interrupted (ctrl+c)" if isinstance(error, KeyboardInterrupt)
                   else f"the sweep's owner stopped ({type(error).__name__})")
            for pack in futures.values():
                if _started_since(folder, pack, round_started):
                    folder.mark_lost(pack, f"{why}: its worker was stopped")
            raise
        pool.shutdown(wait=True)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Start worker processes that ignore SIGINT (an ignored signal stays ignored across exec), so a ctrl+c,
    which the terminal sends to the whole process group, reaches only the owner: it stops the workers itself
    and records why, and no worker prints a traceback over the owner's last lines. Signals can be set only
    from the main thread; elsewhere (the app's workers) the pool starts as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _started_since(folder: SweepFolder, pack: str, since_ns: int) -> bool:
    return any(int(p.name.split("-", 1)[0]) >= since_ns for p in folder.attempts(pack))


# -- SLURM through submitit -------------------------------------------------------------------------------
def _run_slurm(config: SweepConfig, folder: SweepFolder, pack_ids: list[str], on_done: OnDone,
               cancel: threading.Event) -> None:
    import submitit

    # A new folder per round: job ids restart when a cluster's state is wiped, and submitit would read an
    # old job's result from a reused folder.
    executor = submitit.AutoExecutor(folder=_round_folder(folder), cluster="slurm")
    parameters: dict[str, Any] = {"timeout_min": config.slurm_time_min, "cpus_per_task": config.slurm_cpus_per_task,
                                  "slurm_array_parallelism": config.max_parallel or 8, "tasks_per_node": 1,
                                  "name": f"mini-{folder.path.name}"}
    if config.slurm_partition:
        parameters["slurm_partition"] = config.slurm_partition
    if config.slurm_gpus_per_task:
        parameters["gpus_per_node"] = config.slurm_gpus_per_task
    executor.update_parameters(**parameters)
    jobs = executor.map_array(run_pack, [str(folder.path)] * len(pack_ids), pack_ids)
    pending = dict(zip(pack_ids, jobs, strict=True))
    try:
        while pending:
            if cancel.is_set():
                raise KeyboardInterrupt
            for pack, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[pack]
                try:  # on_done outside it, as in _run_local
                    job.result()
                except submitit.core.utils.UncompletedJobError as error:
                    why = f"lost: SLURM job {job.job_id} ended without a result ({str(error).splitlines()[0]})"
                    folder.mark_lost(pack, why)
                    on_done(pack, why)
                    continue
                except Exception as error:
                    on_done(pack, f"SLURM job {job.job_id}: {_last_line(error)}")
                    continue
                on_done(pack, None)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for job in pending.values():
            job.cancel(check=False)
        raise


def _last_line(error: BaseException) -> str:
    """submitit's FailedJobError carries the job's whole traceback; its last line is the error."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _round_folder(folder: SweepFolder):
    path = folder.path / "executor" / f"{time.time_ns():020d}"
    path.mkdir(parents=True)
    return path


# -- Ray ---------------------------------------------------------------------------------------------------
def _ray_task(folder: str, pack_id: str, threads: int) -> dict[str, Any]:
    import ray

    os.environ["MINI_SWEEP_THREADS"] = str(threads)
    os.environ["MINI_SWEEP_JOB_ID"] = f"ray task {ray.get_runtime_context().get_task_id()}"
    return run_pack(folder, pack_id)


def _run_ray(config: SweepConfig, folder: SweepFolder, pack_ids: list[str], on_done: OnDone,
             cancel: threading.Event) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    threads = 1
    task = ray.remote(num_cpus=threads, num_gpus=config.ray_gpus_per_task, max_retries=0)(_ray_task)
    limit = config.max_parallel or 8
    queue, running = list(pack_ids), {}
    try:
        while queue or running:
            if cancel.is_set():
                raise KeyboardInterrupt
            while queue and len(running) < limit:
                pack = queue.pop(0)
                running[task.remote(str(folder.path), pack, threads)] = pack
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                pack = running.pop(ref)
                try:  # on_done outside it, as in _run_local
                    ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    on_done(pack, _last_line(error))
                    continue
                except ray.exceptions.RayError as error:  # the worker died: no failure of its own
                    why = f"lost: Ray worker died ({type(error).__name__})"
                    folder.mark_lost(pack, why)
                    on_done(pack, why)
                    continue
                on_done(pack, None)
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
