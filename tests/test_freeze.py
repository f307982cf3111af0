"""Freezing a run's labels and blind runs (preregistration), end to end through the real CLI on real
DuckDB files: a blind run refuses validation until its labels are frozen, a frozen run refuses every
label change, and the report says when the labels were fixed."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from engine.analysis.rank import rank_run
from engine.demo import auto_accept_top
from engine.errors import InputError
from engine.ingest.importer import ImportOptions, import_files
from engine.pipeline import train_run
from engine.validation.freezes import blind_run, freeze_labels, report_paragraph
from engine.validation.labels import label_feature, undo_label
from engine.validation.validate import ValidateConfig
from engine.validation.validate_run import validate_label, validate_run
from sample_data import generate
from store import Store
from store.freezes import freeze_state
from store.migrations import MIGRATIONS
from store.runs import delete_run
from tests.app_data import APP_RUN, APP_SAMPLE
from tests.conftest import run_cli
from tui.labelling import label_job

QUICK = ValidateConfig(n_bootstrap=50, n_shifts=19, n_random_subsets=10, cv_folds=2)
N_LABELS = 3
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """Run 1 trained and ranked on the app's small sample, the first suggestion of its top 3 features
    accepted, nothing validated yet."""
    folder = tmp_path_factory.mktemp("freeze")
    counts, meta = generate(APP_SAMPLE).write(folder / "data")
    with Store.open(folder / "labelled.duckdb") as db:
        import_files(db, counts, meta, ImportOptions(name="sample", bin_size_s=APP_SAMPLE.bin_size_s))
        run_id = train_run(db, APP_RUN).run_id
        rank_run(db, run_id)
        assert auto_accept_top(db, run_id, N_LABELS) == N_LABELS
    return folder / "labelled.duckdb"


@pytest.fixture
def db_path(labelled: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(labelled, tmp_path / "run.duckdb"))


def mini(db_path: Path, *args: str):
    return run_cli(*args, "--db", str(db_path), cwd=db_path.parent)


def count(db_path: Path, sql: str) -> int:
    with Store.open(db_path, read_only=True) as db:
        return int(db.scalar(sql))


def refused(result, *words: str) -> str:
    """The one-line refusal of a CLI call (exit 2), checked to hold `words`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("mini: error: ") and result.stderr.count("\n") == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def a_labelled_feature(db_path: Path) -> int:
    with Store.open(db_path, read_only=True) as db:
        return int(db.scalar("SELECT min(feature_id) FROM current_labels WHERE sae_id = 1"))


def test_blind_validate_refused_freeze_then_validate_and_the_report_says_so(db_path, tmp_path):
    blinded = mini(db_path, "blind", "--run", "1")
    assert blinded.returncode == 0, blinded.stderr
    assert re.match(rf"run 1 is blind since {TIME}: ", blinded.stdout)

    before = {table: count(db_path, f"SELECT count(*) FROM {table}")
              for table in ("validations", "signatures", "analysis_epochs", "labels")}
    stderr = refused(mini(db_path, "validate", "--run", "1", "--jobs", "1"), "run 1 is blind",
                     "`mini freeze --run 1`")
    assert stderr == ("mini: error: run 1 is blind: its labels must be frozen before the test split is read "
                      "(`mini freeze --run 1`)\n")
    assert {table: count(db_path, f"SELECT count(*) FROM {table}") for table in before} == before
    assert before["validations"] == 0
    info = mini(db_path, "info")
    assert re.search(rf"^run 1: blind since {TIME}: test results hidden until the labels are frozen$", info.stdout,
                     flags=re.M), info.stdout

    frozen = mini(db_path, "freeze", "--run", "1")
    assert frozen.returncode == 0, frozen.stderr
    assert re.fullmatch(rf"run 1: labels frozen at {TIME}, before any test result was seen; they can no longer "
                        r"change\n", frozen.stdout), frozen.stdout

    feature = a_labelled_feature(db_path)
    labels = count(db_path, "SELECT count(*) FROM labels")
    refused(mini(db_path, "label", "--run", "1", "--feature", str(feature), "--reject"),
            "run 1's labels were frozen at", "they can no longer change")
    refused(mini(db_path, "label", "--run", "1", "--feature", str(feature), "--name", "x", "--note", "n"),
            "they can no longer change")
    assert count(db_path, "SELECT count(*) FROM labels") == labels

    validated = mini(db_path, "validate", "--run", "1", "--jobs", "1", "--max-draws", "20")  # no verdict checked
    assert validated.returncode == 0, validated.stderr
    assert count(db_path, "SELECT count(*) FROM validations") == N_LABELS

    report = tmp_path / "report.md"
    assert mini(db_path, "report", "--run", "1", "--out", str(report)).returncode == 0
    text = report.read_text()
    section = text[text.index("## Validations"):]
    assert re.search(rf"^Labels frozen at {TIME} before any test result was seen \(blind since {TIME}\)\.$",
                     section, flags=re.M), section[:400]
    info = mini(db_path, "info")
    assert re.search(rf"^run 1: labels frozen at {TIME}, before any test result was seen$", info.stdout, flags=re.M)


def test_blind_is_refused_once_test_results_were_seen(db_path, tmp_path):
    with Store.open(db_path) as db:
        validate_run(db, 1, QUICK, n_jobs=1)
        attempts = int(db.scalar("SELECT count(*) FROM validations"))
    refused(mini(db_path, "blind", "--run", "1"),
            f"run 1's test results have been seen already ({attempts} attempts): blinding now would hide nothing")
    assert count(db_path, "SELECT count(*) FROM label_freezes") == 0

    # Frozen afterwards, the run says how many attempts had been seen, and so does its report.
    assert mini(db_path, "freeze", "--run", "1").returncode == 0
    with Store.open(db_path, read_only=True) as db:
        assert freeze_state(db, 1).n_attempts_seen == attempts
        assert re.fullmatch(rf"Labels frozen at {TIME} after {attempts} validation attempts had been seen\.",
                            report_paragraph(db, 1))
    refused(mini(db_path, "blind", "--run", "1"), "run 1's labels are frozen already")


def test_a_run_seen_and_never_frozen_says_so_in_its_report(db_path):
    with Store.open(db_path) as db:
        assert report_paragraph(db, 1).startswith("Labels not frozen, and no test result has been stored yet")
        validate_run(db, 1, QUICK, n_jobs=1)
        seen = int(db.scalar("SELECT count(*) FROM validations"))
        assert report_paragraph(db, 1) == (f"Labels not frozen: test results were seen while labelling "
                                           f"({seen} attempts).")


def test_freezing_twice_or_without_accepted_labels_is_refused(db_path, labelled):
    assert mini(db_path, "freeze", "--run", "1").returncode == 0
    first = count(db_path, "SELECT epoch_us(frozen_at) FROM label_freezes WHERE run_id = 1")
    refused(mini(db_path, "freeze", "--run", "1"), "run 1's labels were frozen already, at", "a freeze is final")
    assert count(db_path, "SELECT epoch_us(frozen_at) FROM label_freezes WHERE run_id = 1") == first

    other = db_path.with_name("rejected.duckdb")
    shutil.copy(labelled, other)
    with Store.open(other) as db:
        for (feature_id,) in db.con.execute("SELECT feature_id FROM current_labels").fetchall():
            label_feature(db, 1, feature_id, sae_id=1, verdict="reject")
    refused(mini(other, "freeze", "--run", "1"), "run 1 has no accepted labels to freeze")
    assert count(other, "SELECT count(*) FROM label_freezes") == 0


@pytest.mark.parametrize("run", ["7", "-1", "0"])
@pytest.mark.parametrize("command", ["blind", "freeze"])
def test_a_run_that_is_not_there_is_one_line(db_path, command, run):
    refused(mini(db_path, command, "--run", run), f"no run {run} (runs: 1)")
    assert count(db_path, "SELECT count(*) FROM label_freezes") == 0


@pytest.mark.parametrize("run", ["abc", "1.5", "nan", ""])
def test_a_run_that_is_not_a_number_is_one_line(db_path, run):
    refused(mini(db_path, "freeze", "--run", run), "--run", "invalid int value")


def test_undo_and_every_review_write_are_refused_after_the_freeze(db_path):
    feature = a_labelled_feature(db_path)
    with Store.open(db_path) as db:
        label_id = label_feature(db, 1, feature, sae_id=1, verdict="unsure")  # before the freeze: allowed
        freeze_labels(db, 1)
        before = db.con.execute("SELECT count(*) FROM labels").fetchall(), db.con.execute(
            "SELECT count(*) FROM label_undos").fetchall()
        with pytest.raises(InputError, match=r"^run 1's labels were frozen at .*; they can no longer change$"):
            undo_label(db, label_id)
        # What Review's keys run (accept, label box, reject/unsure, note, undo), through the label writer's jobs.
        for kind, what in (("accept", {"accept": 1}), ("name", {"name": "mine", "predicate": None}),
                           ("reject", {"verdict": "reject"}), ("note", {"verdict": "unsure", "note": "n"}),
                           ("undo", {"undo": label_id})):
            with pytest.raises(InputError, match="they can no longer change"):
                label_job(1, 1, feature, kind, what, None)(db)
        after = db.con.execute("SELECT count(*) FROM labels").fetchall(), db.con.execute(
            "SELECT count(*) FROM label_undos").fetchall()
        assert after == before


def test_review_v_on_a_blind_run_is_refused_and_stores_nothing(db_path):
    with Store.open(db_path) as db:
        blind_run(db, 1)
        label_id = int(db.scalar("SELECT min(label_id) FROM current_labels WHERE verdict = 'accept'"))
        with pytest.raises(InputError, match=r"^run 1 is blind: its labels must be frozen before the test split"):
            validate_label(db, 1, label_id, QUICK)
        assert db.scalar("SELECT count(*) FROM validations") == 0
        freeze_labels(db, 1)
        row = validate_label(db, 1, label_id, QUICK)
        assert row["label_id"] == label_id and db.scalar("SELECT count(*) FROM validations") == 1


def test_deleting_a_run_deletes_its_freeze(db_path):
    with Store.open(db_path) as db:
        freeze_labels(db, 1)
        assert delete_run(db, 1)["label_freezes"] == 1
        assert db.scalar("SELECT count(*) FROM label_freezes") == 0


def test_a_database_at_version_11_gets_the_table_and_keeps_its_data(tmp_path):
    path = tmp_path / "v11.duckdb"
    at_11 = tuple(m for m in MIGRATIONS if m.version <= 11)
    assert at_11[-1].version == 11
    with Store.open(path, migrations=at_11) as db:
        db.con.execute("INSERT INTO activations VALUES (1, 2, 3, 0.5)")
        assert db.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'label_freezes'") == 0
    with Store.open(path) as db:
        assert db.scalar("SELECT max(version) FROM schema_version") == MIGRATIONS[-1].version
        assert db.scalar("SELECT value FROM activations WHERE sae_id = 1") == 0.5
        columns = db.con.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                                 " WHERE table_name = 'label_freezes' ORDER BY ordinal_position").fetchall()
        assert freeze_state(db, 1) == (None, None, 0)
    assert columns == [("run_id", "INTEGER", "NO"), ("blind_since", "TIMESTAMP", "YES"),
                       ("frozen_at", "TIMESTAMP", "YES"), ("n_attempts_seen", "INTEGER", "NO")]


def test_help_lists_blind_and_freeze(tmp_path):
    listed = run_cli("--help", cwd=tmp_path)
    assert listed.returncode == 0
    assert re.search(r"^\s+blind\s+hide a run's test results", listed.stdout, flags=re.M), listed.stdout
    assert re.search(r"^\s+freeze\s+freeze a run's labels", listed.stdout, flags=re.M), listed.stdout
