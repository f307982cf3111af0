"""Shared fixtures: the real CLI in a subprocess and small real databases."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sample_data import SampleConfig
    from store import Store

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One compute thread per test worker (and per `mini` it starts): workers already fill the cores,
    # and two threads each made torch spin-wait for cores that were busy (4-10x slower training).
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `mini ARGS` as a separate process, the way a person does."""
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def cli_ranked_database(folder: Path, sample: SampleConfig, *train_options: str) -> Path:
    """`sample`'s recording imported as 'small', trained with `train_options` and ranked (run 1), all
    through the CLI, into `folder/ranked.duckdb`."""
    from sample_data import generate

    generate(sample).write(folder / "data")
    db = str(folder / "ranked.duckdb")
    for args in (["import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "small"],
                 ["train", "--dataset", "small", *train_options],
                 ["rank", "--run", "1"]):
        result = run_cli(*args, "--db", db, cwd=folder, timeout=600)
        assert result.returncode == 0, result.stderr
    return folder / "ranked.duckdb"


@pytest.fixture
def cli(tmp_path: Path):
    def call(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("cwd", tmp_path)
        return run_cli(*args, **kwargs)

    return call


def shared_file(relative: str | Path) -> Path:
    """A file of the shared recordings (`shared/data/…`, beside the project or in any folder above it).

    Where it is absent the test skips, saying where it looked; under CI (CI=true) it fails instead, since
    CI always has shared/ beside the clone and its absence there is a broken setup, not a missing extra."""
    for folder in (ROOT, *ROOT.parents):
        if (folder / relative).is_file():
            return folder / relative
    reason = (f"the real recording is missing: no {relative} in {ROOT} or any folder above it "
              "(see shared/data/README.md)")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def absent_device() -> str:
    """A --device this machine lacks: cuda where no CUDA GPU is visible, else mps (Apple's Metal and CUDA
    never share a machine), so the refusal of a missing device is tested on every machine."""
    import torch

    return "cuda" if not torch.cuda.is_available() else "mps"


@pytest.fixture(scope="session")
def small_db(tmp_path_factory) -> Path:
    """A database holding a small sample recording as dataset 'small' (no runs), for the sweep tests; copy it
    before writing."""
    from tests.sweep_data import build_small_database

    return build_small_database(tmp_path_factory.mktemp("sweep_db"))


@pytest.fixture(scope="session")
def app_db_template(tmp_path_factory, worker_id: str) -> Path:
    """A complete database (dataset, 2 SAEs, ranking, labels, validations) built once per pytest run; read it
    only (copy it before writing).

    Under xdist every worker needs it (the app tests and the bad-input cases fall to both), and building it
    is a training, a ranking and a validation: the first worker to get here builds it in the run's shared
    temporary folder, under a lock, and the others wait for it and use the same file (xdist's recipe)."""
    from filelock import FileLock

    from tests.app_data import build_app_database

    if worker_id == "master":  # no xdist
        return build_app_database(tmp_path_factory.mktemp("app_db"))
    folder = tmp_path_factory.getbasetemp().parent / "app_db"
    built = folder / "built"  # written last: a build that failed half-way is not taken for a template
    with FileLock(folder.with_suffix(".lock")):
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build_app_database(folder)
            built.touch()
    return folder / "app.duckdb"


@pytest.fixture
def app_db(app_db_template, tmp_path) -> Path:
    """A fresh copy of the app database for one test to change as it likes."""
    from tests.app_data import copy_database

    return copy_database(app_db_template, tmp_path)


LONGEST_FIRST = (
    "test_app_quit", "test_sweep", "test_epochs", "test_bad_inputs", "test_validate_run", "test_cli",
    "test_app_train", "test_sweep_clusters", "test_kill_9", "test_transcoder", "test_labels", "test_bench_real",
    "test_history", "test_validate_conjunction", "test_app_sweep", "test_bench_validate", "test_train_cli",
    "test_freeze", "test_bench_sweep", "test_bench_rank", "test_rank", "test_import_preprocess",
    "test_slurm_cluster", "test_sweep_context", "test_train_defaults", "test_capture", "test_validation_display",
    "test_linear_track", "test_app_export",
)
"""Test modules that take longest (`--durations`, whole modules: their fixtures included), longest first.

The suite runs on two workers a module at a time (`--dist loadscope` in pyproject.toml: a module's fixtures are
built once), each worker taking the next module as it finishes one. Started first, the long modules share the
two cores evenly and the run ends on a tail of short ones; in collection order a one-test module of a minute
(a bench, the conjunction) could start last and leave the other worker idle. A module missing here only runs
later; the order changes no test's outcome (modules keep their own tests' order)."""


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order


def pytest_configure(config) -> None:
    # One token per pytest run, set by the controller before xdist starts its workers (they inherit it):
    # whichever worker starts SLURM writes it beside the daemons, and the controller stops only those.
    if not hasattr(config, "workerinput"):
        os.environ.setdefault("MINI_SLURM_OWNER", f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def pytest_sessionfinish(session) -> None:
    if not hasattr(session.config, "workerinput") and "MINI_SLURM_OWNER" in os.environ:
        from tests import slurm_cluster

        if slurm_cluster.STATE.is_dir():
            slurm_cluster.stop(owner=os.environ["MINI_SLURM_OWNER"])


@pytest.fixture(scope="session")
def slurm_partition() -> str:
    """The partition of a real one-node SLURM with accounting (tests/slurm_cluster.py), started once for
    the whole run (or reused when up) and stopped at its end; SLURM_CONF points sbatch, sacct and squeue at
    it. Skips, saying how to install SLURM, where it cannot be started; under CI it fails instead."""
    from tests import slurm_cluster

    reason = slurm_cluster.cannot_start_reason()
    if reason is None:
        try:
            return slurm_cluster.start(owner=os.environ.get("MINI_SLURM_OWNER", "unknown")).partition
        except slurm_cluster.SlurmUnavailable as error:
            reason = str(error)
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def store_copy(path: Path, folder: Path) -> Iterator[Store]:
    """A Store open on a copy of the database at `path` (made in `folder`), for a test that writes to it."""
    from store import Store

    copy = folder / "copy.duckdb"
    shutil.copy(path, copy)
    with Store.open(copy) as store:
        yield store
