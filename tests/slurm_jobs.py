"""Functions that the SLURM tests submit through submitit; a job imports them from here by name (cloudpickle
pickles a module-level function by reference), so the job's PYTHONPATH must hold the project root."""

from __future__ import annotations

import os
import socket


def square_in_job(value: int) -> dict[str, object]:
    """`value`'s square with the job's SLURM ids, host and pid: proof that it ran as a SLURM array task."""
    return {"value": value, "square": value * value, "job_id": os.environ.get("SLURM_JOB_ID"),
            "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"), "host": socket.gethostname(),
            "pid": os.getpid()}

def die_without_result() -> None:
    """Kill the job's own process, as the kernel's OOM killer would: submitit gets no result file."""
    os.kill(os.getpid(), 9)
