"""kill -9 in the middle of labelling, training, importing, ranking and validating.

Each test runs `mini` in its own process and kills it with SIGKILL at a moment the test chooses, then
checks that the file reads read-only and opens read-write (`reopened`), that every row committed before
the kill is there byte for byte (`snapshot`: each table's rows as their repr, sorted), that what was in
flight is there whole or not at all, and that the interrupted work can be done again (a resumed run
finishes, a rerun stores).

The moment is one of:
- a line on stderr: training's `epoch N:` (epoch N-1's checkpoint is committed by then), ranking's
  `rank: SAE …`, or a line the labelling loop prints after each commit;
- a pause point: `mini` run through PAUSED_MINI, which is the CLI's `main` with one place wrapped to say
  `paused: …` on stderr and wait there to be killed: just before the COMMIT of the first transaction a
  named function opens (its writes all made, none committed), just after that COMMIT (the function not
  yet returned, so a write split over several transactions shows half done there), or just before a
  named function runs.

Nothing sleeps for a fixed time; every wait has a timeout. Two more kill -9 tests sit beside what they
test: tests/test_train_cli.py (killed mid-training: what `mini info` shows and which open marks the run
interrupted) and tests/test_store.py (killed in the middle of the store's import transaction).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from store.rankings import RANKING_TABLES
from tests.conftest import run_cli

WAIT_S = 120
"""Longest wait for any line; far above what each step takes on two busy cores."""
D_SAE = 24
"""Latents of run 1's one SAE in the base database."""
TRAIN_ARGS = ("--dataset", "first", "--d-sae", "16", "--k", "2", "--epochs", "30", "--batch-size", "256")
"""A second run on the base dataset: 30 short epochs (8 steps each), a checkpoint after every one."""
RANK_SHUFFLES = "1000"
"""`--max-shuffles` of every ranking here: enough for suggestions on this recording, 25 times fewer than the
default."""
TRAINING_TABLES = {"runs", "checkpoints", "analysis_epochs", "saes", "features", "decoder", "activations", "qc",
                   "unit_qc", "train_log", "quality_flags"}
"""The tables a training run adds rows to; every other table must not change while one trains."""

PAUSED_MINI = textwrap.dedent("""
    import contextlib, importlib, sys, time

    kind, where, *args = sys.argv[1:]

    def wait_to_be_killed():
        print(f"paused: {kind} {where}", file=sys.stderr, flush=True)
        time.sleep(300)
        sys.exit("paused: nobody killed this process")

    if kind in ("commit", "committed"):  # just before / just after the COMMIT of the first transaction that
        from store.db import Store      # the function `where` opens

        transaction = Store.transaction

        @contextlib.contextmanager
        def paused_before_commit(inner):
            with inner:
                yield
                wait_to_be_killed()  # the block ran (it raised nothing): its writes are made, not committed

        @contextlib.contextmanager
        def paused_after_commit(inner):
            with inner:
                yield
            wait_to_be_killed()  # committed; `where` has not returned, the file is not closed

        def opened_by(self):
            inner = transaction(self)
            if sys._getframe(1).f_code.co_name != where:
                return inner
            return (paused_before_commit if kind == "commit" else paused_after_commit)(inner)

        Store.transaction = opened_by
    elif kind == "call":  # just before `module:attribute` runs
        module_name, _, path = where.partition(":")
        owner = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)

        def paused_call(*a, **k):
            wait_to_be_killed()

        setattr(owner, name, paused_call)
    else:
        sys.exit(f"unknown pause {kind}")

    from tui.cli import main

    sys.exit(main(args))
""")

LABELLER = textwrap.dedent("""
    import sys
    from engine.validation.labels import label_feature
    from store import Store

    path, n_features = sys.argv[1], int(sys.argv[2])
    db = Store.open(path)
    print("open", flush=True)
    for i in range(1_000_000):  # labels until it is killed, through what `mini label` and the app call
        label_id = label_feature(db, 1, i % n_features, name=f"kill-9 label {i}", note=f"written {i}")
        print(i, label_id, flush=True)  # label i is committed
""")


@pytest.fixture(autouse=True)
def one_thread_per_process(monkeypatch):
    """Each `mini` here computes on one thread (tests share two cores); subprocesses inherit it."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MINI_DB", raising=False)


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    """A database with committed work of every kind: dataset 'first' (3,000 bins × 16 units), run 1 (one
    SAE of 24 latents) ranked, 3 accepted labels, a rejected one and a named one, the accepted ones
    validated once (attempt 1)."""
    from engine.analysis.rank import rank_config, rank_run
    from engine.ingest.importer import ImportOptions, import_files
    from engine.pipeline import RunSpec, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from engine.validation.labels import label_feature
    from engine.validation.validate import ValidateConfig
    from engine.validation.validate_run import validate_run
    from sample_data import SampleConfig, generate
    from store import Store

    folder = tmp_path_factory.mktemp("kill_9")
    counts, meta = generate(SampleConfig(n_bins=3000, n_units=16, n_conditions=4, seed=1)).write(folder / "first")
    path = folder / "base.duckdb"
    with Store.open(path) as db:
        import_files(db, counts, meta, ImportOptions(name="first"))
        spec = RunSpec(dataset="first", sae=SAEConfig(d_sae=D_SAE), ks=(3,), train=TrainConfig(epochs=3, batch_size=256))
        run_id = train_run(db, spec).run_id
        rank_run(db, run_id, rank_config(int(RANK_SHUFFLES)))
        suggested = db.frame("SELECT DISTINCT feature_id FROM suggestions WHERE position = 1 ORDER BY feature_id")
        features = suggested["feature_id"].to_list()
        assert len(features) >= 3, features
        for feature in features[:3]:
            label_feature(db, run_id, feature, accept=1)
        others = [f for f in range(D_SAE) if f not in features[:3]]
        label_feature(db, run_id, others[0], verdict="reject")
        label_feature(db, run_id, others[1], name="ünïcode ‘place’ 🐭", note="kept\nwith its newline")
        validate_run(db, run_id, ValidateConfig(n_bootstrap=100, n_shifts=49, n_random_subsets=10, cv_folds=3),
                     n_jobs=1)
    return path


@pytest.fixture
def db(base_db, tmp_path) -> Path:
    path = tmp_path / "mini.duckdb"
    shutil.copy(base_db, path)
    return path


# -- reading the file ----------------------------------------------------------------------------------
def snapshot(path: Path) -> dict[str, list[str]]:
    """Every table's rows, each as its repr (floats exactly, NaN included), sorted: equal snapshots hold
    the same rows byte for byte."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            " AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        return {t: sorted(repr(row) for row in con.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables}


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def assert_kept(before: dict[str, list[str]], after: dict[str, list[str]], *, unchanged: set[str],
                replaced: frozenset[str] = frozenset()) -> None:
    """Every row of `before` is in `after`, but in the tables a rerun replaces by design (`replaced`); the
    tables in `unchanged` hold nothing else."""
    assert after.keys() == before.keys()
    for table, rows in before.items():
        if table in replaced:
            continue
        missing = Counter(rows) - Counter(after[table])
        assert not missing, f"{table}: rows committed before the kill are gone: {list(missing)[:3]}"
        if table in unchanged:
            assert after[table] == rows, f"{table}: rows added: {list(Counter(after[table]) - Counter(rows))[:3]}"


def reopened(path: Path) -> dict[str, list[str]]:
    """The file after a kill, read first read-only (as `mini info` reads it: the write-ahead log replayed in
    memory), then opened read-write as every writing command opens it (the log replayed into the file, or
    discarded); both see the same rows, but for a run left 'running', which the read-write open marks
    interrupted. Returns what the second read sees."""
    from store import Store

    seen = snapshot(path)
    with Store.open(path, create=False) as store:
        assert store.scalar("SELECT count(*) FROM datasets") >= 1
    after = snapshot(path)
    assert {t: rows for t, rows in after.items() if t != "runs"} == {t: rows for t, rows in seen.items() if t != "runs"}
    return after


# -- processes to kill -----------------------------------------------------------------------------------
class Background:
    """A process whose stdout and stderr are read line by line as they come, to be killed mid-way."""

    def __init__(self, argv: list[str], cwd: Path):
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(name,), daemon=True) for name in self.lines]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str) -> None:
        stream = getattr(self.proc, name)
        for line in stream:
            self.lines[name].append(line)
            self._queue.put((name, line))
        self._queue.put((name, None))

    def wait_for(self, pattern: str, stream: str = "stderr", count: int = 1) -> None:
        """Until `count` lines of `stream` have matched `pattern` (re.match), within WAIT_S."""
        deadline, seen, ended = time.monotonic() + WAIT_S, 0, set()
        while seen < count:
            try:
                name, line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                pytest.fail(f"no line matching {pattern!r} within {WAIT_S} s; {self.output()}")
            if line is None:
                ended.add(name)
                if len(ended) == 2:
                    pytest.fail(f"it ended (status {self.proc.wait()}) before {pattern!r}: {self.output()}")
            elif name == stream and re.match(pattern, line):
                seen += 1

    def kill_9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL  # killed, not finished by itself
        for reader in self._readers:
            reader.join(timeout=10)

    def output(self) -> str:
        return f"stdout: {''.join(self.lines['stdout'])!r}; stderr: {''.join(self.lines['stderr'])!r}"


@pytest.fixture
def start(tmp_path) -> Iterator:
    """start(argv) → a Background in tmp_path; any still running at the end is killed."""
    started: list[Background] = []

    def launch(*argv: str) -> Background:
        started.append(Background(list(argv), tmp_path))
        return started[-1]

    yield launch
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def mini(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "tui.cli", *args)


def paused_mini(kind: str, where: str, *args: str) -> tuple[str, ...]:
    """`mini ARGS` that stops at a pause point (see PAUSED_MINI) and says `paused: …` on stderr."""
    return (sys.executable, "-c", PAUSED_MINI, kind, where, *args)


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--db", str(path), cwd=path.parent)


# -- labelling -------------------------------------------------------------------------------------------
def test_labelling_killed_mid_write_keeps_every_committed_label_and_goes_on(db, start):
    """A process labels in a loop (through engine.validation.labels, as `mini label` and the app do) and is killed
    after its 25th commit, somewhere in the middle of writing the 26th."""
    before = snapshot(db)
    first_new = max(int(r[0]) for r in query(db, "SELECT label_id FROM labels")) + 1
    labeller = start(sys.executable, "-c", LABELLER, str(db), str(D_SAE))
    labeller.wait_for(r"\d+ \d+$", stream="stdout", count=25)
    labeller.kill_9()
    committed = {int(label_id): int(i) for i, label_id in
                 (line.split() for line in labeller.lines["stdout"] if line[0].isdigit())}
    assert len(committed) >= 25

    after = reopened(db)
    assert_kept(before, after, unchanged=set(before) - {"labels"})
    rows = query(db, "SELECT label_id, sae_id, feature_id, verdict, name, predicate, source, note FROM labels"
                     " WHERE label_id >= ? ORDER BY label_id", [first_new])
    # Every label it reported is there, whole; the one in flight is there whole or not at all.
    assert len(committed) <= len(rows) <= len(committed) + 1, (len(committed), rows[-3:])
    for label_id, sae_id, feature_id, verdict, name, predicate, source, note in rows:
        i = committed.get(label_id, len(committed))
        assert (sae_id, feature_id, verdict, name, predicate, source, note) == (
            1, i % D_SAE, "accept", f"kill-9 label {i}", None, "person", f"written {i}")
    assert {r[0] for r in rows} >= committed.keys()

    done = cli(db, "label", "--run", "1", "--feature", "5", "--unsure", "--note", "after the kill")
    assert done.returncode == 0, done.stderr
    label_id = int(done.stdout.split()[1].rstrip(":"))
    assert label_id > max(r[0] for r in rows)
    assert query(db, "SELECT label_id, verdict, note FROM current_labels WHERE sae_id = 1 AND feature_id = 5") == [
        (label_id, "unsure", "after the kill")]


@pytest.mark.parametrize(("kind", "where", "stored"), [
    ("commit", "add_label", False),  # the INSERT made, not committed
    ("committed", "add_label", True),  # committed, the file not yet closed (the log not checkpointed)
], ids=["before-commit", "after-commit"])
def test_mini_label_killed_at_its_commit_stores_the_label_whole_or_not_at_all(db, start, kind, where, stored):
    before = snapshot(db)
    args = ("label", "--run", "1", "--feature", "2", "--name", "speed ramp ✓", "--predicate", "speed in [10, 40)",
            "--note", "in flight")
    labeller = start(*paused_mini(kind, where, *args, "--db", str(db)))
    labeller.wait_for("paused: ")
    labeller.kill_9()

    after = reopened(db)
    assert_kept(before, after, unchanged=set(before) - {"labels"})
    in_flight = "SELECT name, predicate, note FROM labels WHERE note = 'in flight'"
    assert query(db, in_flight) == ([("speed ramp ✓", "speed in [10, 40)", "in flight")] if stored else [])
    assert len(after["labels"]) == len(before["labels"]) + stored

    done = cli(db, *args)  # labelling goes on: the same label again
    assert done.returncode == 0, done.stderr
    assert query(db, in_flight) == [("speed ramp ✓", "speed in [10, 40)", "in flight")] * (1 + stored)
    assert_kept(before, snapshot(db), unchanged=set(before) - {"labels"})


# -- training --------------------------------------------------------------------------------------------
def assert_interrupted(db: Path, checkpoint: str) -> None:
    """Opened read-write after the kill, run 2 is marked interrupted and has no results; `checkpoint` says
    which epoch its latest checkpoint holds: 'none', 'some' (after epoch 2 or later) or 'last' (30)."""
    reopened(db)
    (status, message), = query(db, "SELECT status, message FROM runs WHERE run_id = 2")
    assert status == "interrupted" and "mini train --resume 2" in message
    epochs = [e for (e,) in query(db, "SELECT epoch FROM checkpoints WHERE run_id = 2 AND kind = 'latest'")]
    assert {"none": epochs == [], "some": len(epochs) == 1 and epochs[0] >= 2, "last": epochs == [30]}[checkpoint], (
        checkpoint, epochs)
    assert query(db, "SELECT count(*) FROM saes WHERE run_id = 2") == [(0,)]  # no half-stored results


def test_training_killed_at_three_moments_resumes_each_time_and_keeps_everything_committed(db, start):
    """One run killed before its first checkpoint, then (resumed) after a later one, then (resumed again)
    while storing its results; the last resume finishes it as if it had never stopped, and nothing
    committed before (the dataset, run 1, its ranking, labels and validations) changes on the way."""
    before = snapshot(db)
    unchanged = set(before) - TRAINING_TABLES

    # The run row is committed and epoch 1 is over; its checkpoint is about to be written.
    trainer = start(*paused_mini("call", "engine.pipeline:save_checkpoint", "train", *TRAIN_ARGS, "--db", str(db)))
    trainer.wait_for("paused: ")
    trainer.kill_9()
    assert_interrupted(db, "none")
    assert_kept(before, snapshot(db), unchanged=unchanged)

    trainer = start(*mini("train", "--resume", "2", "--db", str(db)))
    trainer.wait_for("train: run 2 stopped before its first checkpoint: training starts again at epoch 1")
    trainer.wait_for("epoch 3:")  # printed before epoch 3's checkpoint, so epoch 2's is committed
    trainer.kill_9()
    assert_interrupted(db, "some")
    assert_kept(before, snapshot(db), unchanged=unchanged)

    # Every epoch done; the results written in their one transaction, not committed.
    trainer = start(*paused_mini("commit", "save_run_results", "train", "--resume", "2", "--db", str(db)))
    trainer.wait_for("train: run 2 resumes after epoch ")
    trainer.wait_for("paused: ")
    trainer.kill_9()
    assert_interrupted(db, "last")
    assert_kept(before, snapshot(db), unchanged=unchanged)

    resumed = cli(db, "train", "--resume", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "train: run 2 resumes after epoch 30 (its last checkpoint)" in resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == "2"
    assert query(db, "SELECT status, message FROM runs WHERE run_id = 2") == [("finished", None)]
    (sae_id,), = query(db, "SELECT sae_id FROM saes WHERE run_id = 2")
    assert query(db, "SELECT count(*) FROM features WHERE sae_id = ?", [sae_id]) == [(16,)]
    epochs = query(db, "SELECT epoch FROM train_log WHERE sae_id = ? AND val_loss IS NOT NULL ORDER BY step",
                   [sae_id])
    assert [e for (e,) in epochs] == list(range(1, 31))  # the log runs through every epoch once
    assert dict(query(db, "SELECT kind, epoch FROM checkpoints WHERE run_id = 2")) == {"latest": 30, "final": 30}
    assert_kept(before, snapshot(db), unchanged=unchanged)


# -- importing a second dataset --------------------------------------------------------------------------
def write_second(folder: Path, command: str) -> tuple[str, ...]:
    """The files of a second recording and the `mini` arguments that import them as 'second'."""
    if command == "import":
        from sample_data import SampleConfig, generate

        counts, meta = generate(SampleConfig(n_bins=2000, n_units=12, seed=4)).write(folder / "second")
        return "import", str(counts), "--meta", str(meta), "--name", "second"
    from tests.spike_cases import make_session, write_kilosort

    session = make_session()
    write_kilosort(folder / "ks", session)
    session.behaviour.write_csv(folder / "behaviour.csv")
    return "import-spikes", str(folder / "ks"), "--behaviour", str(folder / "behaviour.csv"), "--name", "second"


def dataset_rows(path: Path, name: str) -> dict[str, list[str]]:
    """The dataset's rows in every table that has a dataset_id, without its id and creation time."""
    with duckdb.connect(str(path), read_only=True) as con:
        (dataset_id,), = con.execute("SELECT dataset_id FROM datasets WHERE name = ?", [name]).fetchall()
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name) WHERE column_name = 'dataset_id' AND table_type = 'BASE TABLE'"
            " ORDER BY 1").fetchall()]
        rows = {}
        for table in tables:
            drop = "dataset_id, created_at" if table == "datasets" else "dataset_id"
            rows[table] = sorted(repr(r) for r in con.execute(
                f'SELECT * EXCLUDE ({drop}) FROM "{table}" WHERE dataset_id = ?', [dataset_id]).fetchall())
        return rows


@pytest.mark.parametrize("command", ["import", "import-spikes"])
def test_import_of_a_second_dataset_killed_before_its_commit_leaves_no_trace_and_reruns(db, start, tmp_path,
                                                                                        command):
    args = write_second(tmp_path, command)
    before = snapshot(db)
    importer = start(*paused_mini("commit", "add_dataset", *args, "--db", str(db)))
    importer.wait_for("paused: ")  # every table of 'second' written, nothing committed
    importer.kill_9()

    assert reopened(db) == before  # the first dataset and its run, labels, validations; no part of the second
    rerun = cli(db, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "imported 'second' (dataset 2)" in rerun.stdout
    assert_kept(before, snapshot(db), unchanged={"runs", "saes", "activations", "rankings", "labels", "validations"})


def test_import_killed_after_its_commit_keeps_the_second_dataset_whole(db, start, tmp_path):
    args = write_second(tmp_path, "import")
    reference = tmp_path / "reference.duckdb"  # the same import, uninterrupted, into an empty file
    done = cli(reference, *args)
    assert done.returncode == 0, done.stderr
    before = snapshot(db)
    importer = start(*paused_mini("committed", "add_dataset", *args, "--db", str(db)))
    importer.wait_for("paused: ")  # committed; the file not closed, so the log not yet checkpointed
    importer.kill_9()

    reopened(db)
    assert [n for (n,) in query(db, "SELECT name FROM datasets ORDER BY dataset_id")] == ["first", "second"]
    assert dataset_rows(db, "second") == dataset_rows(reference, "second")
    assert_kept(before, snapshot(db), unchanged={"runs", "saes", "activations", "rankings", "labels", "validations"})
    rerun = cli(db, *args)  # it is there: a rerun refuses the name, in one line
    assert rerun.returncode == 2 and len(rerun.stderr.splitlines()) == 1, rerun.stderr
    assert "a dataset named 'second' already exists" in rerun.stderr


# -- ranking and validation ------------------------------------------------------------------------------
def ranking(path: Path) -> dict[str, list[str]]:
    """The rows of every ranking table."""
    return {t: rows for t, rows in snapshot(path).items() if t in RANKING_TABLES}


def test_ranking_killed_mid_way_keeps_the_earlier_ranking_and_a_committed_one_whole(db, start):
    """Run 1 ranked on every bin is re-ranked on the epoch `speed > 2` (other rows in every ranking table),
    killed while computing, before its COMMIT, and just after it."""
    before = snapshot(db)
    args = ("rank", "--run", "1", "--max-shuffles", RANK_SHUFFLES, "--where", "speed > 2")
    ranker = start(*mini(*args, "--db", str(db)))
    ranker.wait_for("rank: SAE 1: ")  # computing
    ranker.kill_9()
    assert reopened(db) == before

    ranker = start(*paused_mini("commit", "save_ranking", *args, "--db", str(db)))
    ranker.wait_for("paused: ")  # the earlier ranking deleted and the new one inserted, not committed
    ranker.kill_9()
    assert reopened(db) == before  # the earlier ranking, byte for byte, and nothing else changed

    ranker = start(*paused_mini("committed", "save_ranking", *args, "--db", str(db)))
    ranker.wait_for("paused: ")
    ranker.kill_9()
    committed = reopened(db)
    assert_kept(before, committed, unchanged=set(before) - {*RANKING_TABLES, "analysis_epochs"},
                replaced=frozenset(RANKING_TABLES))
    assert ranking(db) != {t: before[t] for t in RANKING_TABLES}  # the new ranking replaced the earlier one
    assert query(db, "SELECT where_sql FROM analysis_epochs WHERE run_id = 1 AND step = 'rank'") == [("speed > 2",)]

    rerun = cli(db, *args)  # the same ranking again, uninterrupted: the committed one was whole
    assert rerun.returncode == 0, rerun.stderr
    assert "rank: ranked 1 SAE(s) of run 1" in rerun.stderr
    assert ranking(db) == {t: committed[t] for t in RANKING_TABLES}
    assert query(db, "SELECT count(*), count(DISTINCT feature_id) FROM rankings") == [(D_SAE, D_SAE)]


def test_validation_killed_mid_way_keeps_earlier_attempts_and_numbers_the_rerun_next(db, start):
    """Killed with every attempt of a new epoch inserted and judged (the earlier attempts' q-values and
    verdicts updated, the labels' signatures replaced), before the COMMIT; validation writes nothing
    before that transaction, so a kill while it computes leaves less behind (ranking's test kills there)."""
    before = snapshot(db)
    tested = {label_id for (label_id,) in query(db, "SELECT DISTINCT label_id FROM validations")}
    measured = "SELECT validation_id, label_id, attempt, where_sql, mcc, mcc_ci_low, mcc_ci_high, p_value FROM validations"
    first_attempts = sorted(query(db, measured))
    args = ("validate", "--run", "1", "--jobs", "1", "--where", "speed > 2")
    validator = start(*paused_mini("commit", "append_attempts", *args, "--db", str(db)))
    validator.wait_for("paused: ")
    validator.kill_9()
    assert reopened(db) == before

    rerun = cli(db, *args)
    assert rerun.returncode == 0, rerun.stderr
    attempts = query(db, "SELECT label_id, list(attempt ORDER BY attempt), list(where_sql ORDER BY attempt)"
                         " FROM validations GROUP BY label_id ORDER BY label_id")
    assert {label_id for label_id, *_ in attempts} == tested
    for label_id, numbers, wheres in attempts:  # the killed attempt left no number behind
        assert numbers == [1, 2] and wheres[0] is None and "speed > 2" in wheres[1], (label_id, numbers, wheres)
    # Appending re-judges the family (q-values, verdicts) and replaces the labels' signatures; what each
    # earlier attempt measured stays as it was.
    assert sorted(r for r in query(db, measured) if r[2] == 1) == first_attempts
    assert_kept(before, snapshot(db), unchanged={"datasets", "counts", "runs", "saes", "labels", "rankings"},
                replaced=frozenset({"validations", "signatures", "analysis_epochs"}))
