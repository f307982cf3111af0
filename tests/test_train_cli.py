"""`mini train` run as a separate process: what a run stores, each architecture and loss, one-line
errors for bad settings, kill -9 and ctrl+c in the middle of training, and resuming.

The trainer holds the database for the whole run, so nothing here reads the file while it trains:
progress is followed on stderr, where `mini train` prints one line per epoch when stderr is not a
terminal. The line for epoch N is printed just before epoch N's checkpoint is committed, so once
"epoch N+1:" is on stderr the checkpoint of epoch N is in the file.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import absent_device, run_cli

SMALL_UNITS = 40
SMALL_BINS = 6000
TINY_BATCH = 1024  # tiny's train split is a little over 1,024 examples: one step per epoch


@pytest.fixture(autouse=True)
def one_thread_per_trainer(monkeypatch):
    """Each `mini train` here computes on one thread: tests run two at a time on small machines, and
    OpenBLAS's threads (the QC baselines) next to torch's OpenMP ones make a run several times slower
    when cores are shared. Subprocesses inherit the setting."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    """A database with two imported datasets: 'small' (6,000 × 40) and 'tiny' (1,500 × 10)."""
    from sample_data.generator import SampleConfig, generate

    folder = tmp_path_factory.mktemp("train_cli")
    for name, config in (("small", SampleConfig(n_bins=SMALL_BINS, n_units=SMALL_UNITS)),
                         ("tiny", SampleConfig(n_bins=1500, n_units=10))):
        counts, meta = generate(config).write(folder / name)
        result = run_cli("import", str(counts), "--meta", str(meta), "--name", name, "--db", "base.duckdb",
                         cwd=folder)
        assert result.returncode == 0, result.stderr
    return folder / "base.duckdb"


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    """This test's own copy of the base database."""
    path = tmp_path / "mini.duckdb"
    shutil.copy(base_db, path)
    return path


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Read the file the way a person's script does; closed again at once (the CLI needs the lock)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def one(path: Path, sql: str, params: list | None = None):
    rows = query(path, sql, params)
    assert len(rows) == 1, rows
    return rows[0][0] if len(rows[0]) == 1 else rows[0]


def expected_examples(path: Path, dataset: str, epochs: int, batch: int) -> int:
    """Examples a full run sees: every full batch of the train split, each epoch (the partial one is dropped)."""
    n_train = one(path, "SELECT count(*) FROM examples JOIN datasets USING (dataset_id) "
                        "WHERE name = ? AND split = 'train'", [dataset])
    size = min(batch, n_train)
    return epochs * max(1, n_train // size) * size


def train(db: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_cli("train", *args, "--db", str(db), cwd=db.parent, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mini: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


# -- a full run and everything it stores ----------------------------------------------------------------
def test_a_run_stores_every_table_and_can_be_inspected(db, cli):
    epochs, d_sae, batch = 2, 64, 1024
    result = train(db, "--dataset", "small", "--epochs", str(epochs), "--d-sae", str(d_sae), "--k", "4,8",
                   "--instances", "2", "--batch-size", str(batch))
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout.strip().splitlines()[-1])
    assert run_id == 1
    assert "epoch 2:" in result.stderr  # one progress line per epoch when stderr is not a terminal

    status, examples_seen, message, seconds = one(
        db, "SELECT status, examples_seen, message, seconds FROM runs WHERE run_id = ?", [run_id])
    assert (status, message) == ("finished", None) and seconds > 0
    assert examples_seen == expected_examples(db, "small", epochs, batch) == epochs * (3928 // batch) * batch
    config = json.loads(one(db, "SELECT config FROM runs WHERE run_id = ?", [run_id]))
    assert config["dataset"] == "small" and config["ks"] == [4, 8] and config["instances"] == 2

    saes = query(db, "SELECT sae_id, instance, k, seed, architecture, d_sae, d_in, loss FROM saes "
                     "WHERE run_id = ? ORDER BY instance", [run_id])
    assert [(s[1], s[2], s[3]) for s in saes] == [(0, 4, 0), (1, 4, 1), (2, 8, 0), (3, 8, 1)]
    assert {s[4:] for s in saes} == {("batchtopk", d_sae, SMALL_UNITS, "mse")}
    sae_ids = [s[0] for s in saes]
    n_saes = len(sae_ids)

    # features: one row per latent of each SAE, densities are shares of train examples
    assert one(db, "SELECT count(*) FROM features") == n_saes * d_sae
    assert query(db, "SELECT sae_id, count(DISTINCT feature_id) FROM features GROUP BY 1 ORDER BY 1") == [
        (s, d_sae) for s in sae_ids]
    low, high = one(db, "SELECT min(density), max(density) FROM features")
    assert 0 <= low <= high <= 1 and high > 0
    # dead means never active on train, so a live feature has a density and a mean activation
    assert one(db, "SELECT count(*) FROM features WHERE dead <> (density = 0)") == 0
    assert one(db, "SELECT count(*) FROM features WHERE NOT dead AND mean_act IS NULL") == 0

    assert one(db, "SELECT count(*) FROM decoder") == n_saes * d_sae * SMALL_UNITS
    assert one(db, "SELECT count(*) FROM (SELECT DISTINCT sae_id, feature_id, unit_id FROM decoder)") == (
        n_saes * d_sae * SMALL_UNITS)

    # activations: every split is encoded, not only train. BatchTopK encodes with its inference
    # threshold, so a quiet example may have no active latent at all (and no rows); the qc table's
    # mean L0 per split must count those examples as zeros.
    splits = dict(query(db, "SELECT split, count(*) FROM examples JOIN datasets USING (dataset_id) "
                            "WHERE name = 'small' GROUP BY 1"))
    assert sum(splits.values()) == SMALL_BINS
    per_split = query(db, """
        SELECT a.sae_id, e.split, count(*) AS n_active, count(DISTINCT a.example_id) AS n_examples
        FROM activations a JOIN examples e ON e.example_id = a.example_id
             AND e.dataset_id = (SELECT dataset_id FROM datasets WHERE name = 'small')
        GROUP BY ALL ORDER BY ALL""")
    assert {(r[0], r[1]) for r in per_split} == {(s, split) for s in sae_ids for split in splits}
    assert one(db, "SELECT min(example_id), max(example_id) < ? FROM activations", [SMALL_BINS]) == (0, True)
    assert one(db, "SELECT count(*) FROM (SELECT DISTINCT sae_id, example_id, feature_id FROM activations)") == (
        one(db, "SELECT count(*) FROM activations"))
    assert one(db, "SELECT count(*) FROM activations WHERE value <= 0") == 0
    l0 = {(r[0], r[1]): r[2] / splits[r[1]] for r in per_split}
    distinct = {(r[0], r[1]): r[3] for r in per_split}
    assert all(distinct[key] > 0.5 * splits[key[1]] for key in distinct)

    qc = query(db, "SELECT sae_id, split, n_examples, l0_mean, fvu, pca_fvu, nmf_fvu, baseline_components "
                   "FROM qc ORDER BY sae_id, split")
    assert [(q[0], q[1]) for q in qc] == [(s, split) for s in sae_ids for split in ("test", "train", "val")]
    for sae_id, split, n, l0_mean, fvu, pca_fvu, nmf_fvu, components in qc:
        assert n == splits[split]
        assert l0_mean == pytest.approx(l0[(sae_id, split)])
        assert None not in (fvu, pca_fvu, nmf_fvu), (sae_id, split)  # spike counts get an NMF baseline too
        assert 0 < fvu < 1.5 and components >= 1
    assert one(db, "SELECT count(*) FROM unit_qc") == n_saes * 3 * SMALL_UNITS
    assert one(db, "SELECT count(*) FROM (SELECT DISTINCT sae_id, split, unit_id FROM unit_qc)") == (
        n_saes * 3 * SMALL_UNITS)

    # train_log: per SAE, rows in step order with growing examples_seen, ending where the run ended
    for sae_id in sae_ids:
        log = query(db, "SELECT step, epoch, examples_seen, val_loss FROM train_log WHERE sae_id = ? "
                        "ORDER BY step, val_loss NULLS FIRST", [sae_id])
        assert log, sae_id
        seen = [row[2] for row in log]
        assert seen == sorted(seen) and seen[0] > 0 and seen[-1] == examples_seen
        assert [row[1] for row in log if row[3] is not None] == list(range(1, epochs + 1))

    checkpoints = dict(query(db, "SELECT kind, epoch FROM checkpoints WHERE run_id = ?", [run_id]))
    assert checkpoints == {"latest": epochs, "final": epochs}
    assert one(db, "SELECT min(octet_length(state)) FROM checkpoints") > 1000

    # mini info lists the run; mini sql joins features with their decoder rows
    info = cli("info", "--db", str(db))
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["run_id"])
    for column in ("run_id", "dataset", "status", "architecture"):
        assert column in lines[header].split()
    row = lines[header + 2].split()
    assert row[:4] == [str(run_id), "small", "finished", "batchtopk"]
    assert lines[header + 3] == "(1 row)"

    joined = cli("sql", "--db", str(db), "--format", "json",
                 "SELECT f.sae_id, f.feature_id, f.density, count(*) AS n_units, sum(d.weight * d.weight) AS norm2 "
                 "FROM features f JOIN decoder d USING (sae_id, feature_id) GROUP BY ALL ORDER BY 1, 2")
    assert joined.returncode == 0, joined.stderr
    rows = json.loads(joined.stdout)
    assert len(rows) == n_saes * d_sae
    assert {r["n_units"] for r in rows} == {SMALL_UNITS}
    assert all(r["norm2"] > 0 for r in rows)

    # a finished run cannot be resumed; saying so changes nothing
    again = train(db, "--resume", str(run_id))
    assert_one_line_error(again, f"run {run_id}", "already finished")
    assert query(db, "SELECT run_id, status FROM runs") == [(run_id, "finished")]


# -- every architecture and loss --------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "loss"), [("batchtopk", "poisson"), ("topk", "msle"),
                                            ("matryoshka", "poisson"), ("relu", "msle")])
def test_each_architecture_and_loss_trains(db, arch, loss):
    d_sae, k = 32, 4
    result = train(db, "--dataset", "small", "--arch", arch, "--loss", loss, "--epochs", "1",
                   "--d-sae", str(d_sae), "--k", str(k), "--batch-size", "512")
    assert result.returncode == 0, result.stderr
    run_id = int(result.stdout.strip().splitlines()[-1])
    assert one(db, "SELECT status, examples_seen FROM runs WHERE run_id = ?", [run_id]) == (
        "finished", expected_examples(db, "small", 1, 512))
    sae_id, architecture, saved_loss = one(db, "SELECT sae_id, architecture, loss FROM saes WHERE run_id = ?",
                                           [run_id])
    assert (architecture, saved_loss) == (arch, loss)
    assert one(db, "SELECT count(*) FROM features WHERE sae_id = ?", [sae_id]) == d_sae
    assert one(db, "SELECT count(*) FROM decoder WHERE sae_id = ?", [sae_id]) == d_sae * SMALL_UNITS
    assert one(db, "SELECT count(*) FROM qc WHERE sae_id = ? AND fvu IS NOT NULL AND pca_fvu IS NOT NULL "
                   "AND nmf_fvu IS NOT NULL", [sae_id]) == 3
    assert one(db, "SELECT count(*) FROM activations WHERE sae_id = ?", [sae_id]) > 0
    if arch == "topk":  # exactly k per example, for every example of every split
        assert one(db, "SELECT min(n), max(n), count(*) FROM (SELECT example_id, count(*) AS n FROM activations "
                       "WHERE sae_id = ? GROUP BY example_id)", [sae_id]) == (k, k, SMALL_BINS)
    if arch == "matryoshka":  # nested prefixes: latents carry their level
        assert one(db, "SELECT count(DISTINCT level) FROM features WHERE sae_id = ?", [sae_id]) > 1
    else:
        assert one(db, "SELECT max(level) FROM features WHERE sae_id = ?", [sae_id]) == 0


# -- bad settings: one line, status 2, no run -------------------------------------------------------------
ABSENT = "<absent device>"
"""Stands for tests.conftest.absent_device() in the cases below (torch is imported only when they run)."""


@pytest.mark.parametrize(("args", "needles"), [
    (["--dataset", "small", "--k", "100", "--d-sae", "64"], ["--k 100", "--d-sae (64)"]),
    (["--dataset", "small", "--d-sae", "0"], ["--d-sae 0"]),
    (["--dataset", "nope"], ["'nope'", "small", "tiny"]),
    (["--dataset", "small", "--k", "abc"], ["--k abc"]),
    (["--dataset", "small", "--instances", "0"], ["--instances 0"]),
    (["--dataset", "small", "--epochs", "0"], ["--epochs 0"]),
    (["--dataset", "small", "--batch-size", "0"], ["--batch-size 0"]),
    (["--dataset", "small", "--lr", "-1"], ["--lr -1"]),
    (["--dataset", "small", "--arch", "sparse"], ["--arch", "sparse"]),
    (["--dataset", "small", "--device", ABSENT], [f"--device {ABSENT}"]),
    (["--resume", "99"], ["no run 99", "none yet"]),
    ([], ["--dataset"]),
], ids=["k-above-d-sae", "d-sae-0", "unknown-dataset", "k-not-a-number", "instances-0",
        "epochs-0", "batch-size-0", "negative-lr", "unknown-arch", "absent-device", "no-such-run", "no-dataset"])
def test_bad_settings_fail_in_one_line_and_store_nothing(db, args, needles):
    if ABSENT in args:
        device = absent_device()
        args = [device if a == ABSENT else a for a in args]
        needles = [n.replace(ABSENT, device) for n in needles]
    result = train(db, *args, "--epochs" if "--epochs" not in args else "--seed", "1")
    assert_one_line_error(result, *needles)
    assert one(db, "SELECT count(*) FROM runs") == 0
    assert one(db, "SELECT count(*) FROM checkpoints") == 0


def test_missing_database_is_one_line(tmp_path):
    result = train(tmp_path / "absent.duckdb", "--dataset", "small")
    assert_one_line_error(result, "absent.duckdb", "no such database")
    assert not (tmp_path / "absent.duckdb").exists()


# -- kill -9 and ctrl+c while training ---------------------------------------------------------------------
class Trainer:
    """`mini train` in the background, its stderr read line by line as it comes."""

    def __init__(self, db: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "train", *args, "--db", str(db)],
                                     cwd=db.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_line(self, prefix: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line starting {prefix!r} within {timeout} s; stderr: {''.join(self.lines)}")
            if line is None:
                pytest.fail(f"mini train ended (status {self.proc.wait()}) before {prefix!r}: {''.join(self.lines)}")
            if line.startswith(prefix):
                return

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.stdout is not None
        stdout = self.proc.stdout.read()  # a few bytes: the pipe never fills
        self._reader.join(timeout=10)  # stderr is the reader's alone: communicate() would race it
        return self.proc.returncode, stdout, "".join(self.lines)


TINY_ARGS = ("--dataset", "tiny", "--epochs", "200", "--d-sae", "16", "--k", "2",
             "--batch-size", str(TINY_BATCH))


def test_kill_9_mid_training_leaves_an_interrupted_run_that_resumes(db, cli):
    total = expected_examples(db, "tiny", 200, TINY_BATCH)
    trainer = Trainer(db, *TINY_ARGS)
    trainer.wait_for_line("epoch 3:")  # so epoch 2's checkpoint is committed
    os.kill(trainer.proc.pid, signal.SIGKILL)
    status, stdout, _ = trainer.finish()
    assert status == -signal.SIGKILL and stdout == ""

    info = cli("info", "--db", str(db))  # read-only: the file opens (the dead process holds no lock)
    assert info.returncode == 0, info.stderr
    # Nobody holds the file, so nothing can be training: info reports the stale 'running' row as interrupted.
    assert any(line.split()[:3] == ["1", "tiny", "interrupted"] for line in info.stdout.splitlines()), info.stdout
    assert one(db, "SELECT status FROM runs WHERE run_id = 1") == "running"  # info wrote nothing

    touch = cli("sql", "--db", str(db), "--write", "SELECT 1")  # the next read-write open marks it
    assert touch.returncode == 0, touch.stderr
    status, message, examples_seen = one(db, "SELECT status, message, examples_seen FROM runs WHERE run_id = 1")
    assert status == "interrupted"
    assert "stopped before it finished" in message and "mini train --resume 1" in message
    assert examples_seen == 0  # it never got to store results
    assert dict(query(db, "SELECT kind, epoch FROM checkpoints WHERE run_id = 1")).keys() == {"latest"}
    assert one(db, "SELECT epoch FROM checkpoints WHERE run_id = 1") >= 2
    assert one(db, "SELECT count(*) FROM saes") == 0
    info = cli("info", "--db", str(db))
    assert any(line.split()[:3] == ["1", "tiny", "interrupted"] for line in info.stdout.splitlines()), info.stdout

    resumed = train(db, "--resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == "1"
    assert "epoch 200:" in resumed.stderr and "epoch 1:" not in resumed.stderr  # continued, not restarted
    saved = one(db, "SELECT epoch FROM checkpoints WHERE run_id = 1 AND kind = 'final'")
    assert "train: run 1 resumes after epoch " in resumed.stderr and saved == 200
    assert one(db, "SELECT status, examples_seen, message FROM runs WHERE run_id = 1") == ("finished", total, None)
    assert one(db, "SELECT count(*) FROM runs") == 1
    sae_id = one(db, "SELECT sae_id FROM saes WHERE run_id = 1")
    assert one(db, "SELECT count(*) FROM features WHERE sae_id = ?", [sae_id]) == 16
    # the log runs through all 200 epochs once, as if the run had never stopped
    assert [r[0] for r in query(db, "SELECT epoch FROM train_log WHERE sae_id = ? AND val_loss IS NOT NULL "
                                    "ORDER BY step", [sae_id])] == list(range(1, 201))
    assert one(db, "SELECT max(examples_seen) FROM train_log WHERE sae_id = ?", [sae_id]) == total
    assert dict(query(db, "SELECT kind, epoch FROM checkpoints WHERE run_id = 1")) == {"latest": 200, "final": 200}


def test_a_run_killed_before_its_first_checkpoint_says_it_starts_again(db, cli):
    """No checkpoint to continue from: the resumed run trains from epoch 1, and says so."""
    from engine.pipeline import RunSpec, spec_to_config
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from store import Store
    from store.runs import start_run

    spec = RunSpec(dataset="tiny", sae=SAEConfig(d_sae=16), ks=(2,), train=TrainConfig(epochs=2, batch_size=TINY_BATCH))
    with Store.open(db) as store:  # what a kill -9 during the first epoch leaves: a 'running' row, no checkpoint
        dataset_id = store.scalar("SELECT dataset_id FROM datasets WHERE name = 'tiny'")
        start_run(store, dataset_id, spec_to_config(spec), "cpu")
    resumed = train(db, "--resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert "train: run 1 stopped before its first checkpoint: training starts again at epoch 1" in resumed.stderr
    assert "epoch 1:" in resumed.stderr
    assert one(db, "SELECT status FROM runs WHERE run_id = 1") == "finished"


def test_ctrl_c_cancels_cleanly_and_resume_completes(db):
    total = expected_examples(db, "tiny", 200, TINY_BATCH)
    trainer = Trainer(db, *TINY_ARGS)
    trainer.wait_for_line("epoch 2:")
    trainer.proc.send_signal(signal.SIGINT)
    status, stdout, stderr = trainer.finish()
    assert status == 0, stderr
    assert stdout.strip().splitlines()[-1] == "1"
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("run 1 cancelled after ") and "mini train --resume 1" in last, stderr
    assert "Traceback" not in stderr

    status, examples_seen = one(db, "SELECT status, examples_seen FROM runs WHERE run_id = 1")
    assert status == "cancelled" and 2 * TINY_BATCH <= examples_seen < total
    assert f"after {examples_seen:,} examples" in last
    sae_id = one(db, "SELECT sae_id FROM saes WHERE run_id = 1")  # its results so far are stored
    assert one(db, "SELECT count(*) FROM features WHERE sae_id = ?", [sae_id]) == 16
    assert one(db, "SELECT count(*) FROM qc WHERE sae_id = ?", [sae_id]) == 3
    assert one(db, "SELECT count(DISTINCT example_id) FROM activations WHERE sae_id = ?", [sae_id]) > 0

    resumed = train(db, "--resume", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == "1"
    assert one(db, "SELECT status, examples_seen FROM runs WHERE run_id = 1") == ("finished", total)
    # the resumed run replaces what the cancelled part stored
    new_sae = one(db, "SELECT sae_id FROM saes WHERE run_id = 1")
    assert one(db, "SELECT count(*) FROM features") == 16
    assert one(db, "SELECT count(DISTINCT sae_id) FROM activations") == 1
    assert one(db, "SELECT DISTINCT sae_id FROM qc") == new_sae
    assert [r[0] for r in query(db, "SELECT epoch FROM train_log WHERE val_loss IS NOT NULL ORDER BY step")] == (
        list(range(1, 201)))
    assert dict(query(db, "SELECT kind, epoch FROM checkpoints WHERE run_id = 1")) == {"latest": 200, "final": 200}
