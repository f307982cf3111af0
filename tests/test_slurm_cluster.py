"""submitit against a real one-node SLURM with accounting (tests/slurm_cluster.py): the ground the sweep's
SLURM executor stands on."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.slurm_jobs import die_without_result, square_in_job

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("CI"):
    import submitit  # CI installs the dev extra, which holds it: its absence there is a broken setup
else:
    submitit = pytest.importorskip("submitit", reason="submitit is missing: pip install -e '.[slurm]'")


@pytest.fixture
def executor(slurm_partition, tmp_path, monkeypatch):
    """An AutoExecutor on the test cluster with a new folder (job ids restart at 1 with each cluster, so a
    reused folder would hold stale results); the jobs import tests.slurm_jobs from the project root."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition=slurm_partition, timeout_min=2, cpus_per_task=1,
                               slurm_array_parallelism=2)
    return executor


def test_map_array_runs_every_task_as_a_slurm_array_task(executor):
    jobs = executor.map_array(square_in_job, [3, 4, 5, 6])

    results = [job.result() for job in jobs]

    assert [result["square"] for result in results] == [9, 16, 25, 36]
    assert len({job.job_id for job in jobs}) == 4
    assert [result["array_task_id"] for result in results] == ["0", "1", "2", "3"]
    assert {result["array_job_id"] for result in results} == {jobs[0].job_id.split("_")[0]}
    assert len({result["job_id"] for result in results}) == 4


def test_a_job_that_dies_without_its_result_raises_instead_of_hanging(executor):
    job = executor.submit(die_without_result)
    began = time.monotonic()
    while not job.done():  # done() asks sacct: without accounting this would never turn true
        assert time.monotonic() - began < 60, f"job {job.job_id} still not done after 60 s ({job.state})"
        time.sleep(0.5)

    with pytest.raises(submitit.core.utils.UncompletedJobError, match="has not produced any output"):
        job.result()


def test_a_second_start_reuses_the_running_cluster(slurm_partition):
    again = slurm_cluster.start(owner="another run")

    assert again.started is False and again.partition == slurm_partition
    assert (slurm_cluster.STATE / "owner").read_text() != "another run"  # still stopped by the run that began it


def test_where_slurm_is_missing_the_reason_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    reason = slurm_cluster.cannot_start_reason()

    assert reason is not None and "slurmctld" in reason
    assert "apt-get install slurm-wlm munge slurmdbd mariadb-server" in reason
