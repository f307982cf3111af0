"""`mini sweep` with the local executor, end to end through the real CLI: trials trained by worker processes
that never open the database, ingested by the owner, resumed after a worker or the owner is killed, and a
trial promoted to a run that ranks like any other."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.sweep.grid import parse_grid
from engine.sweep.summary import pareto_front
from tests.app_data import copy_database
from tests.conftest import absent_device, run_cli
from tests.spike_cases import assert_refused
from tests.sweep_data import folder_of, rows, sweep, trials

GRID = "d_sae=16,32 k=2,4"
"""Two packs of two k each; with --seeds 2, eight trials."""


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    return copy_database(small_db, tmp_path, "sweep.duckdb")


def test_a_local_sweep_trains_every_trial_like_mini_train_and_a_promoted_trial_ranks(db):
    done = sweep(db, "--dataset", "small", "--grid", GRID, "--seeds", "2", "--epochs", "2", "--max-parallel", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1"
    stored = trials(db)
    assert len(stored) == 8 and {t["status"] for t in stored.values()} == {"finished"}
    assert {(t["d_sae"], t["k"], t["seed"]) for t in stored.values()} == {
        (d, k, s) for d in (16, 32) for k in (2, 4) for s in (0, 1)}
    for t in stored.values():
        assert 0 < t["val_fvu"] < 1.5 and t["val_l0"] > 0 and t["stability"] is not None
        assert t["host"] and t["job_id"].startswith("local worker") and t["device"] == "cpu"
        assert json.loads(t["config"])["epochs"] == 2 and len(t["config_hash"]) == 16
    assert len({t["pack_id"] for t in stored.values()}) == 2  # k and seed share a stack

    # The same settings through `mini train`: the same val FVU, to float precision, whichever process trained it.
    trained = run_cli("train", "--dataset", "small", "--d-sae", "32", "--k", "2,4", "--instances", "2",
                      "--epochs", "2", "--db", str(db), cwd=db.parent, timeout=300)
    assert trained.returncode == 0, trained.stderr
    train_fvu = rows(db, "SELECT s.k, s.seed, q.fvu FROM qc q JOIN saes s USING (sae_id) WHERE s.run_id = 1 "
                         "AND q.split = 'val'")
    assert len(train_fvu) == 4
    for k, seed, fvu in train_fvu:
        twin = next(t for t in stored.values() if (t["d_sae"], t["k"], t["seed"]) == (32, k, seed))
        assert abs(twin["val_fvu"] - fvu) <= 1e-6, (k, seed, twin["val_fvu"], fvu)
    # QC's PCA and NMF baselines, fitted once for the whole sweep and shared by its stacks, are mini train's.
    import polars as pl

    pack_32 = next(t["pack_id"] for t in stored.values() if t["d_sae"] == 32)
    swept_qc = pl.read_parquet(folder_of(db) / "packs" / pack_32 / "result" / "qc.parquet")
    trained_qc = rows(db, "SELECT s.instance, q.split, q.pca_fvu, q.nmf_fvu, q.baseline_components FROM qc q "
                          "JOIN saes s USING (sae_id) WHERE s.run_id = 1 ORDER BY s.instance, q.split")
    assert [(r["sae_id"], r["split"], r["pca_fvu"], r["nmf_fvu"], r["baseline_components"])
            for r in swept_qc.sort("sae_id", "split").to_dicts()] == trained_qc
    assert len(list((folder_of(db) / "baselines").glob("*.json"))) >= 3

    # `show` marks the Pareto front of the finished trials: the same points pareto_front finds.
    shown = sweep(db, "show", "1")
    assert shown.returncode == 0, shown.stderr
    cells = [line.split() for line in shown.stdout.splitlines()]
    marked = {int(c[0]) for c in cells if len(c) > 1 and c[0].isdigit() and c[1] == "★"}
    ordered = sorted(stored)
    front = pareto_front([stored[i]["val_l0"] for i in ordered], [stored[i]["val_fvu"] for i in ordered])
    assert marked == {i for i, on in zip(ordered, front, strict=True) if on} and marked

    promoted = sweep(db, "promote", "1", "3")
    assert promoted.returncode == 0, promoted.stderr
    run_id = int(promoted.stdout.strip())
    assert run_id == 2
    k_of_3 = stored[3]["k"]
    assert rows(db, f"SELECT status, config->>'$.sweep.sweep_id' FROM runs WHERE run_id = {run_id}") == [
        ("finished", "1")]
    assert sorted(rows(db, f"SELECT k, seed FROM saes WHERE run_id = {run_id}")) == [(k_of_3, 0), (k_of_3, 1)]
    assert sorted(r[0] for r in rows(db, "SELECT trial_id FROM sweep_trials WHERE run_id = 2")) == sorted(
        i for i, t in stored.items() if t["pack_id"] == stored[3]["pack_id"] and t["k"] == k_of_3)
    # Its 'final' checkpoint holds just its SAEs, as `mini train` stores one: the decoder rows stored for them.
    import io

    import numpy as np
    import torch

    (state,) = rows(db, f"SELECT state FROM checkpoints WHERE run_id = {run_id} AND kind = 'final'")[0]
    model = torch.load(io.BytesIO(state), weights_only=False)["model"]
    stored_decoder = np.array([r[0] for r in rows(db, "SELECT weight FROM decoder JOIN saes USING (sae_id) WHERE "
                                                      f"run_id = {run_id} ORDER BY sae_id, feature_id, unit_id")])
    assert model["W_dec"].shape == (2, stored[3]["d_sae"], 24) and model["ks"].tolist() == [k_of_3, k_of_3]
    assert np.allclose(model["W_dec"].numpy().ravel(), stored_decoder, atol=1e-6)
    again = sweep(db, "promote", "1", "3")
    assert_refused(again, ("trial 3", "already run 2"))
    ranked = run_cli("rank", "--run", str(run_id), "--max-shuffles", "1000", "--db", str(db), cwd=db.parent,
                     timeout=300)  # that it ranks like any run; its p-values are tested elsewhere
    assert ranked.returncode == 0, ranked.stderr
    assert rows(db, f"SELECT count(*) FROM rankings JOIN saes USING (sae_id) WHERE run_id = {run_id}")[0][0] > 0


def test_bad_options_are_refused_in_one_line_and_write_nothing(db, capsys, monkeypatch):
    cases = [
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--seeds", "0"], ("--seeds 0",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--max-parallel", "-1"], ("--max-parallel -1",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--epochs", "0"], ("--epochs 0",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--slurm-partition", "gpu"], ("--executor slurm",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--ray-gpus-per-task", "nan"], ("--ray-gpus-per-task",)),
        (["--dataset", "small", "--grid", "width=16"], ("unknown key 'width'",)),
        (["--dataset", "small", "--grid", "lr=inf"], ("lr=inf", "finite")),
        (["--dataset", "small", "--grid", "d_sae=16,16"], ("listed twice",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=32"], ("k=32", "at most d_sae")),
        (["--dataset", "small", "--grid", "loss=poisson,huber"], ("loss=huber", "unknown")),
        (["--dataset", "nope", "--grid", "d_sae=16"], ("no dataset named 'nope'",)),
        (["--dataset", "small", "--grid", "d_sae=100000000 k=2"], ("--d-sae", "needs")),
        (["--grid", "d_sae=16"], ("--dataset",)),
        (["--resume", "7"], ("no sweep 7",)),
        (["show", "x"], ("SWEEP 'x'",)),
        (["promote", "1"], ("promote SWEEP TRIAL",)),
        (["frobnicate"], ("unknown action 'frobnicate'",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--executor", "slurm"], ("sbatch is not on PATH",)),
        (["--dataset", "small", "--grid", "d_sae=16 k=2", "--device", absent_device()], ("--device",)),
    ]
    monkeypatch.setenv("PATH", str(db.parent))  # no sbatch on it; the interpreter is called by its full path
    from tui.cli import main

    for i, (args, words) in enumerate(cases):
        if i % 6 == 0:  # some through the real command line; the rest in this process, where each costs ms
            assert_refused(sweep(db, *args), words)
            continue
        capsys.readouterr()
        status = main(["sweep", *args, "--db", str(db)])
        captured = capsys.readouterr()
        assert_refused(subprocess.CompletedProcess(args, status, captured.out, captured.err), words)
    assert rows(db, "SELECT count(*) FROM sweeps")[0][0] == 0
    assert not folder_of(db).parent.exists()


def test_parse_grid_checks_every_value():
    grid = parse_grid("arch=topk,matryoshka d_sae=8,16 k=2 lr=0.001 loss=mse output=linear batch_size=64")
    assert grid.n_combinations == 4 and grid.values["lr"] == (0.001,)
    for text, words in [("", "empty"), ("d_sae", "KEY=VALUE"), ("d_sae=-3", "at least 1"),
                        ("d_sae=1.5", "not an integer"), ("lr=nan", "finite"), ("lr=1e308", "below 1"),
                        ("k=1 k=2", "given twice"), ("arch=dense", "unknown"),
                        ("d_sae=" + ",".join(map(str, range(1, 200))) + " k=" + ",".join(map(str, range(1, 60))),
                         "combinations")]:
        with pytest.raises(InputError, match=words):
            parse_grid(text)


def test_pareto_front_keeps_only_points_no_other_beats_on_both():
    assert pareto_front([1, 2, 3, 2, None], [0.5, 0.4, 0.1, 0.45, 0.01]) == [True, True, True, False, False]
    assert pareto_front([1, 1], [0.3, 0.3]) == [True, True]  # equal points do not beat each other


def _wait_for(predicate, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _started_pids(folder: Path) -> list[int]:
    found = []
    for started in folder.glob("packs/*/attempts/*/started.json"):
        try:
            found.append(json.loads(started.read_text())["pid"])
        except (ValueError, KeyError):
            continue
    return found


def test_a_killed_worker_loses_its_pack_only_and_resume_trains_it_again(db):
    # One worker: the first pack trains long enough to be killed in the middle; the second has not started.
    args = ["--dataset", "small", "--grid", "d_sae=16,32 k=2", "--epochs", "30", "--max-parallel", "1"]
    owner = subprocess.Popen([sys.executable, "-m", "tui.cli", "sweep", *args, "--db", str(db)], cwd=db.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (folder_of(db) / "sweep.json").is_file() and _started_pids(folder_of(db)),
                  what="a worker to start")
        victim = _started_pids(folder_of(db))[0]
        os.kill(victim, signal.SIGKILL)
        _, err = owner.communicate(timeout=600)
    finally:
        owner.kill()
    assert owner.returncode == 1, err
    assert "lost: its worker process died" in err
    first = trials(db)
    assert sorted(t["status"] for t in first.values()) == ["finished", "lost"], first
    lost = next(t for t in first.values() if t["status"] == "lost")
    assert "worker process died" in lost["error"]
    kept = next(t for t in first.values() if t["status"] == "finished")
    kept_result = folder_of(db) / "packs" / kept["pack_id"] / "result" / "metrics.json"
    kept_bytes = kept_result.read_bytes()

    resumed = sweep(db, "--resume", "1", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 trial(s) already finished" in resumed.stderr
    after = trials(db)
    assert {t["status"] for t in after.values()} == {"finished"}
    assert after[lost["trial_id"]]["attempts"] == 2 and after[lost["trial_id"]]["error"] is None
    assert after[kept["trial_id"]] == kept | {"run_id": None}  # not trained again, and its row unchanged
    assert kept_result.read_bytes() == kept_bytes


def test_killing_the_owner_loses_no_finished_trial(db):
    args = ["--dataset", "small", "--grid", "d_sae=16,24,32 k=2", "--epochs", "8", "--max-parallel", "1"]
    owner = subprocess.Popen([sys.executable, "-m", "tui.cli", "sweep", *args, "--db", str(db)], cwd=db.parent,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: list(folder_of(db).glob("packs/*/result/metrics.json")), what="a pack to finish")
        owner.send_signal(signal.SIGKILL)  # the owner only: its worker is orphaned and may finish its pack
        owner.wait(timeout=30)
    finally:
        os.killpg(owner.pid, signal.SIGKILL) if owner.poll() is None else None
    finished_before = {p.parent.parent.name for p in folder_of(db).glob("packs/*/result/metrics.json")}
    resumed = sweep(db, "--resume", "1", timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = trials(db)
    assert len(after) == 3 and {t["status"] for t in after.values()} == {"finished"}
    for t in after.values():  # a pack that had finished was not trained again
        if t["pack_id"] in finished_before:
            assert t["attempts"] == 1
    for pid in _started_pids(folder_of(db)):  # no worker is left behind
        _wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=60, what=f"worker {pid} to exit")


def test_workers_never_open_the_database_and_a_second_driver_is_refused(db):
    done = sweep(db, "--dataset", "small", "--grid", "d_sae=16,32 k=2", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    folder = folder_of(db)
    untrained = sorted((folder / "packs").iterdir())[0]
    shutil.rmtree(untrained / "result")  # as if its job had been lost

    from store import Store

    with Store.open(db) as holder:  # this process owns the database read-write, as the app would
        resumed = sweep(db, "--resume", "1")
        assert resumed.returncode == 0, resumed.stderr
        assert "held by another process" in resumed.stderr
        assert (untrained / "result" / "metrics.json").is_file()  # trained without the database
        assert holder.scalar("SELECT count(*) FROM sweep_trials WHERE status = 'finished'") == 2  # not yet seen

        from engine.sweep.folder import SweepFolder

        with SweepFolder(folder).owned():  # a sweep has one driver at a time
            refused = sweep(db, "--resume", str(folder))
            assert_refused(refused, ("being driven by PID", str(os.getpid())))
    again = sweep(db, "--resume", "1")  # nothing to train; the owner ingests what the folder holds
    assert again.returncode == 0, again.stderr
    assert "2 trial(s) already finished" in again.stderr or "training 0 pack" in again.stderr
    assert {t["status"] for t in trials(db).values()} == {"finished"}
    assert {t["attempts"] for t in trials(db).values()} == {1, 2}


def test_a_failing_trial_records_why(db):
    done = sweep(db, "--dataset", "small", "--grid", "d_sae=16 k=2", "--epochs", "2")
    assert done.returncode == 0, done.stderr
    folder = folder_of(db)
    pack = next((folder / "packs").iterdir())
    shutil.rmtree(pack / "result")
    (folder / "inputs" / "counts.npy").write_bytes(b"not an array")  # what a broken shared disk might leave
    failed = sweep(db, "--resume", "1")
    assert failed.returncode == 1
    assert "failed or lost" in failed.stderr
    (trial,) = trials(db).values()
    assert trial["status"] == "failed" and trial["error"], trial
    assert "pickle" in trial["error"] or "counts.npy" in trial["error"], trial["error"]
    attempt = sorted((pack / "attempts").iterdir())[-1]
    assert "Traceback" in json.loads((attempt / "failed.json").read_text())["traceback"]



def test_ctrl_c_stops_the_workers_and_keeps_what_finished(db):
    args = ["--dataset", "small", "--grid", "d_sae=16,24,32 k=2", "--epochs", "300", "--max-parallel", "2"]
    owner = subprocess.Popen([sys.executable, "-m", "tui.cli", "sweep", *args, "--db", str(db)], cwd=db.parent,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: (folder_of(db) / "sweep.json").is_file() and _started_pids(folder_of(db)),
                  what="a worker to start")
        os.killpg(owner.pid, signal.SIGINT)  # what ctrl+c in a terminal does: the whole foreground group
        _, err = owner.communicate(timeout=60)
    finally:
        owner.kill()
    assert owner.returncode == 130, err
    assert "interrupted; mini sweep --resume 1 trains what is left" in err and "Traceback" not in err
    stopped = trials(db)
    assert {t["status"] for t in stopped.values()} <= {"lost", "pending", "finished"}
    assert any(t["status"] == "lost" and t["error"].startswith("interrupted (ctrl+c)") for t in stopped.values())
    for pid in _started_pids(folder_of(db)):
        _wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=30, what=f"worker {pid} to exit")
