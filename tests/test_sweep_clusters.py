"""`mini sweep` on the executors of a cluster, for real: Ray started by the sweep (`ray.init` on this machine's
2 cores) and SLURM through submitit on a one-node SLURM with accounting (tests/slurm_cluster.py). The same
settings and seeds give the same val FVU as the local executor's workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.spike_cases import assert_refused
from tests.sweep_data import folder_of, sweep, trials

GRID = "d_sae=16,32 k=2"


def _same_figures(db: Path, first: int, second: int) -> None:
    """Trials of the same configuration in two sweeps have the same val FVU and L0."""
    a = {t["config_hash"]: t for t in trials(db, first).values()}
    b = {t["config_hash"]: t for t in trials(db, second).values()}
    assert a.keys() == b.keys() and len(a) == 4
    for key, trial in a.items():
        assert abs(trial["val_fvu"] - b[key]["val_fvu"]) <= 1e-6, (trial, b[key])
        assert abs(trial["val_l0"] - b[key]["val_l0"]) <= 1e-6


@pytest.fixture(scope="module")
def locally_swept(small_db, tmp_path_factory) -> Path:
    """The small database after the local executor's sweep of GRID (sweep 1): what each cluster's sweep is compared
    with, run once for both; copy it (with its sweeps folder) before writing."""
    from tests.app_data import copy_database

    db = copy_database(small_db, tmp_path_factory.mktemp("local_sweep"), "swept.duckdb")
    local = sweep(db, "--dataset", "small", "--grid", GRID, "--seeds", "2", "--epochs", "2")
    assert local.returncode == 0, local.stderr
    return db


def copy_swept(template: Path, folder: Path) -> Path:
    """A copy of a swept database and its sweeps folder in `folder`."""
    shutil.copytree(template.parent / f"{template.stem}.sweeps", folder / f"{template.stem}.sweeps")
    return Path(shutil.copy(template, folder / template.name))


def test_a_ray_sweep_gives_the_local_sweep_s_figures(locally_swept, tmp_path):
    db = copy_swept(locally_swept, tmp_path)
    ray = sweep(db, "--dataset", "small", "--grid", GRID, "--seeds", "2", "--epochs", "2", "--executor", "ray",
                "--max-parallel", "2")
    assert ray.returncode == 0, ray.stderr
    assert {t["status"] for t in trials(db, 2).values()} == {"finished"}
    assert all(t["job_id"].startswith("ray task ") for t in trials(db, 2).values())
    _same_figures(db, 1, 2)


def test_a_missing_extra_is_named_with_its_install_command(small_db, tmp_path):
    from tests.app_data import copy_database

    db = copy_database(small_db, tmp_path, "extra.duckdb")
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = os.environ | {"PYTHONPATH": str(shadow.parent)}
    done = run_cli("sweep", "--dataset", "small", "--grid", GRID, "--executor", "ray", "--db", str(db),
                   cwd=tmp_path, env=env)
    assert_refused(done, ("needs ray", "pip install -e '.[ray]'"))
    assert not folder_of(db).parent.exists()


def test_a_slurm_sweep_runs_as_job_arrays_and_a_cancelled_job_is_trained_again_on_resume(
        locally_swept, tmp_path, slurm_partition):
    db = copy_swept(locally_swept, tmp_path)
    on_slurm = sweep(db, "--dataset", "small", "--grid", GRID, "--seeds", "2", "--epochs", "2", "--executor",
                     "slurm", "--slurm-partition", slurm_partition, "--slurm-time-min", "5", "--max-parallel", "2")
    assert on_slurm.returncode == 0, on_slurm.stderr
    stored = trials(db, 2)
    assert {t["status"] for t in stored.values()} == {"finished"}
    jobs = {t["job_id"] for t in stored.values()}
    assert len(jobs) == 2 and all("_" in job for job in jobs)  # one array task per pack
    _same_figures(db, 1, 2)

    # A job cancelled in the middle of its pack: the sweep says it was lost, and --resume trains it again.
    owner = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "sweep", "--dataset", "small", "--grid", "d_sae=16 k=2", "--epochs",
         "300", "--executor", "slurm", "--slurm-partition", slurm_partition, "--db", str(db)],
        cwd=db.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = list(folder_of(db, 3).glob("packs/*/attempts/*/started.json"))
        deadline = time.monotonic() + 120
        while not started:
            assert time.monotonic() < deadline, "the SLURM job never started"
            time.sleep(0.2)
            started = list(folder_of(db, 3).glob("packs/*/attempts/*/started.json"))
        job = json.loads(started[0].read_text())["job_id"]
        subprocess.run(["scancel", job], check=True)
        _, err = owner.communicate(timeout=180)
    finally:
        owner.kill()
    assert owner.returncode == 1, err
    (lost,) = trials(db, 3).values()
    assert lost["status"] == "lost" and f"SLURM job {job}" in lost["error"], lost
    resumed = sweep(db, "--resume", "3", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    (trained,) = trials(db, 3).values()
    assert trained["status"] == "finished" and trained["attempts"] == 2 and trained["job_id"] != job
