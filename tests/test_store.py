"""The store: migrations, refusals with one clear sentence, the lock message, atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import polars as pl
import pytest

from store import Store, StoreError, StoreLockedError
from store.migrate import schema_version
from store.migrations import MIGRATIONS, Migration

LATEST = MIGRATIONS[-1].version
NEXT = Migration(LATEST + 1, "test: extra table", "CREATE TABLE extra (a INTEGER); INSERT INTO extra VALUES (7)")


def table_counts(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return {n: con.execute(f'SELECT count(*) FROM "{n}"').fetchall()[0][0] for n in names}
    finally:
        con.close()


def test_new_file_gets_the_latest_schema(tmp_path):
    with Store.open(tmp_path / "new.duckdb") as db:
        assert schema_version(db.con) == MIGRATIONS[-1].version
        tables = set(db.frame("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"datasets", "units", "trials", "examples", "counts", "natural_variables", "natural_values",
            "ground_truth_latents", "ground_truth_loadings", "activations", "schema_version"} <= tables


def test_old_file_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.duckdb"
    with Store.open(path, migrations=MIGRATIONS[:1]) as db:  # a file from the first release
        db.con.execute("INSERT INTO activations VALUES (1, 2, 3, 0.5)")
    with Store.open(path, migrations=(*MIGRATIONS, NEXT)) as db:
        assert schema_version(db.con) == LATEST + 1
        assert db.scalar("SELECT a FROM extra") == 7
        assert db.scalar("SELECT count(*) FROM runs") == 0  # the real later migrations ran too
        assert db.scalar("SELECT value FROM activations WHERE sae_id = 1") == 0.5
        versions = db.frame("SELECT version, description FROM schema_version ORDER BY version")
    # Every known version and the new one (a branch may hold 15 before 14 is merged: gaps are allowed).
    assert versions["version"].to_list() == [*(m.version for m in MIGRATIONS), LATEST + 1]


def test_failed_migration_rolls_back_whole(tmp_path):
    path = tmp_path / "old.duckdb"
    Store.open(path, migrations=MIGRATIONS[:1]).close()
    broken = Migration(2, "broken", "CREATE TABLE half (a INTEGER); CREATE TABLE oops (a NOSUCHTYPE)")
    with pytest.raises(StoreError, match="migration to schema version 2 failed and was rolled back"):
        Store.open(path, migrations=(*MIGRATIONS[:1], broken))
    with Store.open(path, migrations=MIGRATIONS[:1]) as db:
        assert schema_version(db.con) == 1
        assert db.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'half'") == 0


def test_file_from_a_newer_mini_is_refused(tmp_path):
    path = tmp_path / "newer.duckdb"
    Store.open(path, migrations=(*MIGRATIONS, NEXT)).close()
    with pytest.raises(StoreError, match="made by a newer mini"):
        Store.open(path, migrations=MIGRATIONS)


def test_read_only_open_of_an_old_file_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "old.duckdb"
    Store.open(path, migrations=MIGRATIONS[:1]).close()
    with pytest.raises(StoreError, match="older than this mini"):
        Store.open(path, read_only=True, migrations=MIGRATIONS)


def test_a_migration_merged_out_of_order_is_applied_later(tmp_path):
    """Versions are developed side by side: a file can hold 11 without 10. A read-only open names what is
    missing; the next read-write open applies it and keeps the data."""
    path = tmp_path / "gap.duckdb"
    without_10 = tuple(m for m in MIGRATIONS if m.version != 10)
    columns = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'associations' AND column_name = " \
              "'n_shuffles'"
    with Store.open(path, migrations=without_10) as db:
        db.con.execute("INSERT INTO activations VALUES (1, 2, 3, 0.5)")
        assert db.scalar(columns) == 0
    with pytest.raises(StoreError, match="lacks schema migration 10; open it once read-write"):
        Store.open(path, read_only=True)
    with Store.open(path) as db:
        assert db.scalar(columns) == 1
        assert db.scalar("SELECT value FROM activations WHERE sae_id = 1") == 0.5
        assert sorted(db.frame("SELECT version FROM schema_version")["version"]) == [m.version for m in MIGRATIONS]


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "no such database"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"this is not a database" * 100), "cannot open as a DuckDB database"),
])
def test_unopenable_paths_get_one_sentence(tmp_path, setup, message):
    path = tmp_path / "x.duckdb"
    setup(path)
    with pytest.raises(StoreError, match=message) as info:
        Store.open(path, read_only=True)
    assert "\n" not in str(info.value)


def test_a_duckdb_file_that_is_not_minis_is_left_alone(tmp_path):
    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE theirs (a INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not mini's"):
        Store.open(path)
    assert table_counts(path) == {"theirs": 0}


def test_read_only_store_refuses_writes(tmp_path):
    path = tmp_path / "db.duckdb"
    Store.open(path).close()
    with Store.open(path, read_only=True) as db, pytest.raises(StoreError, match="read-only"), db.transaction():
        pass


def test_transaction_is_all_or_nothing(tmp_path):
    with Store.open(tmp_path / "db.duckdb") as db:
        with pytest.raises(RuntimeError), db.transaction():
            db.insert_frame("activations", pl.DataFrame({"sae_id": [1], "example_id": [0], "feature_id": [0],
                                                         "value": [1.0]}))
            raise RuntimeError("fail after the first write")
        assert db.scalar("SELECT count(*) FROM activations") == 0


HOLDER = textwrap.dedent("""
    import sys, time
    from store import Store
    db = Store.open(sys.argv[1])
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def held_database(tmp_path):
    """A database held read-write by another process, as the app holds it."""
    path = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield path, holder.pid
    holder.kill()
    holder.wait()


def test_second_process_gets_one_sentence_naming_the_holder(held_database):
    path, pid = held_database
    with pytest.raises(StoreLockedError) as info:
        Store.open(path, read_only=True)
    message = str(info.value)
    assert f"PID {pid}" in message and str(path) in message
    assert "-c" in message or "python" in message  # the holder's command line
    assert "close that app or wait" in message and "\n" not in message


def test_cli_on_a_locked_database_exits_2_with_one_line(held_database, cli):
    path, pid = held_database
    result = cli("sql", "--db", str(path), "SELECT 1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mini: error: ") and f"PID {pid}" in lines[0]
    assert "Traceback" not in result.stderr


KILLED_MID_WRITE = textwrap.dedent("""
    import sys, time
    import numpy as np, polars as pl
    from store import Store
    from store.datasets import add_dataset
    from engine.ingest.importer import ImportOptions, prepare_dataset
    from engine.ingest.readers import CountMatrix

    db = Store.open(sys.argv[1])
    original = db.insert_frame
    def slow_insert(table, frame):
        rows = original(table, frame)
        if table == "examples":  # datasets, units and trials are written: now wait to be killed
            print("half-written", flush=True)
            time.sleep(60)
        return rows
    db.insert_frame = slow_insert
    counts = CountMatrix(np.ones((60, 3), dtype=np.int32), ["a", "b", "c"], "counts.npy")
    meta = pl.DataFrame({"trial": np.repeat(np.arange(6), 10), "speed": np.linspace(0, 1, 60)})
    new, _ = prepare_dataset(counts, meta, ImportOptions(name="killed"), meta_label="meta.csv", source="test")
    add_dataset(db, new)
""")


def test_kill_9_in_the_middle_of_an_import_leaves_a_clean_database(tmp_path):
    path = tmp_path / "db.duckdb"
    Store.open(path).close()
    before = table_counts(path)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(path)], stdout=subprocess.PIPE,
                              text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "half-written"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with Store.open(path) as db:  # opens, replays or discards the write-ahead log
        assert db.scalar("SELECT count(*) FROM datasets") == 0
    assert table_counts(path) == before


def test_validations_stored_before_attempts_become_numbered_attempts_with_both_verdicts(tmp_path):
    """Migration 11 keeps the rows validations held: attempt 1, 2, … per feature in label order, the two
    verdicts from their stored figures, 200 shifts behind each p-value, and the epoch they were scored on."""
    path = tmp_path / "old.duckdb"
    upto_10 = tuple(m for m in MIGRATIONS if m.version <= 10)
    with Store.open(path, migrations=upto_10) as db:
        db.con.execute("INSERT INTO saes (sae_id, run_id, instance, architecture, d_in, d_sae, k, seed, loss)"
                       " VALUES (1, 1, 0, 'topk', 4, 8, 2, 0, 'mse')")
        db.con.execute("INSERT INTO analysis_epochs VALUES (1, 'validate', 'speed > 5', NULL, 10, 5, 5,"
                       " current_timestamp)")
        for label_id, feature, low, q, sig, p95 in ((3, 0, 0.2, 0.01, 0.7, 0.8), (5, 0, 0.3, 0.01, 0.9, 0.8),
                                                    (4, 1, -0.1, 0.3, 0.9, 0.8)):
            db.con.execute("INSERT INTO validations (label_id, sae_id, feature_id, predicate, testable, mcc_ci_low,"
                           " p_value, q_value, decode_signature, decode_random_p95, validated) VALUES"
                           " (?, 1, ?, 'x = 1', true, ?, 0.005, ?, ?, ?, ?)",
                           [label_id, feature, low, q, sig, p95, low > 0 and q < 0.05 and sig > p95])
        db.con.execute("INSERT INTO validations (label_id, sae_id, feature_id, testable, reason)"
                       " VALUES (6, 1, 2, false, 'no predicate: not testable')")
    with Store.open(path) as db:
        rows = db.frame("SELECT label_id, attempt, generalises, signature_specific, validated, n_shifts, where_sql"
                        " FROM validations ORDER BY label_id").rows()
        assert rows == [(3, 1, True, False, False, 200, "speed > 5"), (4, 1, False, True, False, 200, "speed > 5"),
                        (5, 2, True, True, True, 200, "speed > 5"), (6, 1, None, None, None, None, "speed > 5")]
        assert db.frame("SELECT label_id FROM current_validations ORDER BY label_id")["label_id"].to_list() == \
            [3, 4, 5, 6]
        db.con.execute("INSERT INTO validations (attempt, label_id, sae_id, feature_id, testable)"
                       " VALUES (3, 5, 1, 0, true)")  # the sequence carries on past the migrated rows
        assert db.scalar("SELECT count(DISTINCT validation_id) FROM validations") == 5
