"""The sweep folder: everything a worker reads and writes, so that no worker ever opens the database.

```
sweep.json                 the plan: dataset, grid, options, a transcoder's units by role, every pack's resolved
                           settings and its trials
inputs/counts.npy          the model's examples (engine.sae.model_data): the dataset's dense matrix [examples ×
                           units], float32, or a transcoder's inputs (with --history, every lag) then its targets
inputs/splits.npy          each example's split for training ('outside': not in the epoch, or no full history)
inputs/dataset.json        name, kind, value_type, unit names
packs/<pack>/attempts/<a>/ one try: started.json (host, pid, job, device), then failed.json or lost.json
packs/<pack>/result/       a finished pack, renamed into place whole: the run's tables as Parquet,
                           weights.pt, metrics.json (train and val only), started.json
baselines/<split>-<n>.json QC's PCA and NMF FVU with n components, fitted once for the whole sweep
owner.lock                 held (fcntl) by the process driving the sweep
executor/<round>/          the executor's own files (submitit's logs and pickles), new for every round
```

A result folder appears by one `rename` of a finished temporary folder, so it is whole or absent: a worker
killed while writing leaves only its attempt folder, and when two tries of one pack finish (a resumed sweep
and a job the dead owner left running), the first rename wins and the second is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from engine.errors import InputError

RESULT_TABLES = ("saes", "features", "decoder", "activations", "qc", "unit_qc", "train_log", "flags", "encoder_lags")
"""store.runs.RunResults's frames, one Parquet file each."""


def write_json(path: Path, content: Any) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=1, sort_keys=True, default=str))
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class PackState(NamedTuple):
    """What the files say of a pack."""

    status: str
    """pending (never started), running (started, nothing since), finished, failed or lost."""
    attempts: int
    """Tries started."""
    started: dict[str, Any] | None
    """The latest try's (or the result's) started.json: host, pid, job_id, device, started_at."""
    ended: dict[str, Any] | None
    """failed.json or lost.json of the latest try: error, ended_at; metrics.json for a finished pack."""


class SweepFolder:
    """Paths in a sweep folder, and reading what workers left there."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def plan_file(self) -> Path:
        return self.path / "sweep.json"

    @property
    def inputs(self) -> Path:
        return self.path / "inputs"

    def pack(self, pack_id: str) -> Path:
        return self.path / "packs" / pack_id

    def result(self, pack_id: str) -> Path:
        return self.pack(pack_id) / "result"

    def new_attempt(self, pack_id: str) -> Path:
        """A folder for one try, named so that tries sort in the order they started."""
        attempts = self.pack(pack_id) / "attempts"
        attempts.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}"
        path = attempts / name
        path.mkdir()
        return path

    def attempts(self, pack_id: str) -> list[Path]:
        folder = self.pack(pack_id) / "attempts"
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def plan(self) -> dict[str, Any]:
        if not self.plan_file.is_file():
            raise InputError(f"{self.path}: not a sweep folder (no sweep.json); was it moved or deleted?")
        return read_json(self.plan_file)

    def state(self, pack_id: str) -> PackState:
        attempts = self.attempts(pack_id)
        result = self.result(pack_id)
        if (result / "metrics.json").is_file():
            return PackState("finished", max(1, len(attempts)), _maybe_json(result / "started.json"),
                             read_json(result / "metrics.json"))
        if not attempts:
            return PackState("pending", 0, None, None)
        latest = attempts[-1]
        started = _maybe_json(latest / "started.json")
        for name, status in (("failed.json", "failed"), ("lost.json", "lost")):
            if (latest / name).is_file():
                return PackState(status, len(attempts), started, read_json(latest / name))
        return PackState("running" if started else "pending", len(attempts), started, None)

    def mark_lost(self, pack_id: str, why: str) -> None:
        """The executor saw the pack's job end without a result or a failure of its own (killed, out of
        memory, node lost): say so in its latest try, so the files alone tell what happened."""
        attempts = self.attempts(pack_id)
        if attempts and not (self.result(pack_id) / "metrics.json").is_file() \
                and not (attempts[-1] / "failed.json").is_file():
            write_json(attempts[-1] / "lost.json", {"error": why, "ended_at": now()})

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Hold owner.lock while driving the sweep: a second `mini sweep --resume` of it is refused with the
        holder's PID, and the lock goes with a killed process."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "owner.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise InputError(f"{self.path}: this sweep is being driven by {holder}; wait for it, or stop it "
                                 "and resume") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"PID {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _maybe_json(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (OSError, ValueError):  # absent, or being written by a worker on another host's clock
        return None
