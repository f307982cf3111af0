"""Analysis epochs (`--where`, `--around`) through the real CLI on small real DuckDB files: which bins
train, rank and validate read, what they store and say, and one-line refusals that change nothing.

The recording: 40 trials of 30 bins (0.1 s): bins 0–9 of a trial are 'iti', 10–19 'go', 20–29 'move';
`go_cue` is 1 on bin 10 of each trial (a per-bin event), `move_time` the time of bin 20.3 (a trial-level
event time). Unit 7 fires only in 'iti' bins: an epoch of go and move bins must never show it to training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from tests.conftest import run_cli
from tests.spike_cases import assert_refused, make_session, write_spike_table

TRIALS, LENGTH, BIN_S = 40, 30, 0.1
MARKER = 7
"""The unit that fires only outside the go/move epoch."""
GO_MOVE = "phase in ('go', 'move')"
SMALL = ("--d-sae", "16", "--k", "2", "--batch-size", "4096")
"""One SAE, one step per epoch (the batch holds every selected train bin)."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def write_recording(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    n = TRIALS * LENGTH
    trial = np.repeat(np.arange(TRIALS), LENGTH)
    pos = np.tile(np.arange(LENGTH), TRIALS)
    phase = np.where(pos < 10, "iti", np.where(pos < 20, "go", "move"))
    rates = np.full((n, 8), 0.5)
    rates[:, 0] += (phase == "go") * 3
    rates[:, 1] += (phase == "move") * 3
    rates[:, MARKER] = np.where(phase == "iti", 20.0, 0.0)
    np.save(folder / "counts.npy", rng.poisson(rates).astype(np.float32))
    pl.DataFrame({
        "trial": trial, "time_s": np.arange(n) * BIN_S, "phase": phase,
        "speed": np.where(pos < 10, 0.0, np.where(pos < 20, 2.0, 10.0)) + rng.random(n) * 0.5,
        "go_cue": (pos == 10).astype(np.int8), "move_time": (trial * LENGTH + 20.3) * BIN_S,
    }).write_parquet(folder / "meta.parquet")
    return folder / "counts.npy", folder / "meta.parquet"


@pytest.fixture(scope="module")
def base_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("epochs")
    counts, meta = write_recording(folder)
    done = run_cli("import", str(counts), "--meta", str(meta), "--name", "t", "--db", "base.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "base.duckdb"


@pytest.fixture
def db(base_db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(base_db, tmp_path / "mini.duckdb"))


def mini(*args: str, db: Path, timeout: float = 300):
    return run_cli(*args, "--db", str(db), cwd=db.parent, timeout=timeout)


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def split_of(path: Path) -> np.ndarray:
    return np.array([row[0] for row in query(path, "SELECT split FROM examples ORDER BY example_id")])


def expected(path: Path, positions: set[int]) -> dict[str, int]:
    """Bins per split whose position within their trial is in `positions` (the layout is known)."""
    splits = split_of(path)
    chosen = np.isin(np.arange(len(splits)) % LENGTH, sorted(positions))
    return {s: int(np.count_nonzero(chosen & (splits == s))) for s in ("train", "val", "test")}


def epoch_rows(path: Path) -> dict[tuple[int, str], tuple]:
    rows = query(path, "SELECT run_id, step, where_sql, around, n_train, n_val, n_test FROM analysis_epochs")
    return {(r[0], r[1]): r[2:] for r in rows}


def state(path: Path) -> tuple:
    """What a command could write: runs, epochs, rankings, validations, labels."""
    return (query(path, "SELECT run_id, status, config FROM runs ORDER BY run_id"),
            sorted(epoch_rows(path).items()),
            query(path, "SELECT count(*), sum(hash(sae_id, feature_id, rank, score)) FROM rankings"),
            query(path, "SELECT count(*), sum(hash(label_id, mcc, tp, fp)) FROM validations"),
            query(path, "SELECT count(*) FROM tuning_curves"))


# -- training ------------------------------------------------------------------------------------------
def test_where_trains_and_scores_only_the_selected_bins(db: Path) -> None:
    done = mini("train", "--dataset", "t", *SMALL, "--epochs", "2", "--where", GO_MOVE, db=db)
    assert done.returncode == 0, done.stderr
    want = expected(db, set(range(10, 30)))
    assert epoch_rows(db) == {(1, "train"): (GO_MOVE, None, want["train"], want["val"], want["test"])}
    assert f"train: epoch: {GO_MOVE}; bins train {want['train']:,} · val {want['val']:,}" in done.stderr
    # One step per epoch over every selected train bin, and QC scored on the selected bins of each split.
    assert query(db, "SELECT examples_seen FROM runs")[0][0] == 2 * want["train"]
    assert dict(query(db, "SELECT split, n_examples FROM qc")) == want
    # The marker unit never fires in the epoch: QC finds it constant there (R² undefined) on every split.
    assert query(db, "SELECT count(*) FROM unit_qc WHERE unit_id = ? AND r2 IS NULL", [MARKER])[0][0] == 3
    # Every bin is still encoded, so a ranking or validation may read another epoch.
    assert query(db, "SELECT count(DISTINCT example_id) FROM activations WHERE example_id % 30 < 10")[0][0] > 0
    config = json.loads(query(db, "SELECT config FROM runs")[0][0])
    assert config["epoch"] == {"where": GO_MOVE, "around": None}
    info = mini("info", db=db)
    assert info.returncode == 0 and GO_MOVE in info.stdout
    assert f"run 1: trained on {GO_MOVE} (train {want['train']:,} · val {want['val']:,} bins)" in info.stdout


def test_training_never_sees_a_bin_outside_the_epoch(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tensors the trainer is handed are exactly the epoch's train and val rows."""
    import engine.pipeline
    from engine.epochs import Epoch
    from engine.pipeline import RunSpec, dataset_matrix, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from store import Store

    handed: dict[str, np.ndarray] = {}

    class Watched(engine.pipeline.Trainer):
        def __init__(self, stack, data, *args, **kwargs):
            handed["train"], handed["val"] = data.train.cpu().numpy(), data.val.cpu().numpy()
            super().__init__(stack, data, *args, **kwargs)

    monkeypatch.setattr(engine.pipeline, "Trainer", Watched)
    spec = RunSpec(dataset="t", sae=SAEConfig(d_sae=16), train=TrainConfig(epochs=1, device="cpu"), ks=(2,),
                   epoch=Epoch(where=GO_MOVE))
    with Store.open(db) as store:
        train_run(store, spec)
        counts, examples = dataset_matrix(store, 1, TRIALS * LENGTH, 8)
    splits = examples["split"].to_numpy()
    in_epoch = np.arange(len(splits)) % LENGTH >= 10
    for split in ("train", "val"):
        np.testing.assert_array_equal(handed[split], counts[in_epoch & (splits == split)])
        assert not handed[split][:, MARKER].any()
    assert counts[~in_epoch, MARKER].mean() > 10  # the marker is loud where the epoch is not


@pytest.mark.parametrize(("options", "positions"), [
    (("--around", "go_cue:-0.25,0.35"), set(range(8, 14))),  # per-bin event: go cue at bin 10
    (("--around", "move_time:-0.25,0.25"), set(range(18, 23))),  # trial-level time: 2.03 s into the trial
    (("--around", "move_time:-0.25,0.25", "--where", "phase = 'move'"), {20, 21, 22}),  # both must hold
], ids=["per-bin-event", "trial-level-time", "with-where"])
def test_around_selects_bins_whose_centre_is_in_the_window(db: Path, options: tuple[str, ...],
                                                           positions: set[int]) -> None:
    done = mini("train", "--dataset", "t", *SMALL, "--epochs", "1", *options, db=db)
    assert done.returncode == 0, done.stderr
    want = expected(db, positions)
    (row,) = epoch_rows(db).values()
    assert row[2:] == (want["train"], want["val"], want["test"])
    assert row[1] == options[1] and row[0] == (options[3] if len(options) > 2 else None)
    assert dict(query(db, "SELECT split, n_examples FROM qc")) == want


def test_around_uses_bin_centres_of_a_spike_import(tmp_path: Path) -> None:
    """import-spikes stores each bin's start; windows are matched at its centre (start + half a bin), for a
    trial-level time from the trials table and for counted events, across trial edges too."""
    session = make_session()
    write_spike_table(tmp_path / "s.csv", session)
    session.behaviour.write_csv(tmp_path / "b.csv")
    session.trials.with_columns(mid=pl.col("start") + 1.5).write_csv(tmp_path / "trials.csv")
    pl.DataFrame({"time": session.rewards, "event": "reward"}).write_csv(tmp_path / "e.csv")
    path = tmp_path / "s.duckdb"
    done = mini("import-spikes", "s.csv", "--behaviour", "b.csv", "--trials", "trials.csv", "--events", "e.csv",
                "--bin-size", "0.5", "--time-range", "10,90", "--outside-trials", "keep", db=path)
    assert done.returncode == 0, done.stderr
    centres = 10 + 0.5 * np.arange(160) + 0.25  # bins start at 10 s, every 0.5 s
    mids = session.trials["start"].to_numpy() + 1.5
    reward_bins = np.floor((session.rewards - 10) / 0.5).astype(int)
    def within(onsets: np.ndarray, start: float, stop: float) -> np.ndarray:
        return ((centres[:, None] >= onsets + start) & (centres[:, None] <= onsets + stop)).any(axis=1)

    windows = {"mid:-0.3,0.3": within(mids, -0.3, 0.3), "reward:-0.6,0.3": within(centres[reward_bins], -0.6, 0.3)}
    splits = split_of(path)
    for run_id, (around, keep) in enumerate(windows.items(), start=1):
        done = mini("train", "--dataset", "s", "--d-sae", "8", "--k", "1", "--epochs", "1", "--around", around,
                    db=path)
        assert done.returncode == 0, done.stderr
        row = epoch_rows(path)[(run_id, "train")]
        assert row[2:] == tuple(int(np.count_nonzero(keep & (splits == s))) for s in ("train", "val", "test"))
    assert int(windows["mid:-0.3,0.3"].sum()) == 2 * session.trials.height  # 2 centres per trial, not 1


# -- refusals --------------------------------------------------------------------------------------------
BAD_TRAIN = [
    (("--where", "spd > 5"), ("unknown column 'spd'", "speed number", "phase text")),
    (("--where", "phase > 5"), ("wrong type", "phase text")),
    (("--where", "trial = 'a'"), ("wrong type",)),
    (("--where", "speed >"), ("syntax error",)),
    (("--where", "speed + 1"), ("not true or false",)),
    (("--where", "speed > 1; DROP TABLE runs"), ("without ';'",)),
    (("--where", "true) AS keep FROM bins UNION SELECT 1, (true"), ("one expression",)),
    (("--where", "speed > (SELECT avg(speed) FROM bins)"), ("subquery",)),
    (("--where", "avg(speed) > 1"), ("avg() is an aggregate",)),
    (("--where", "random() < 0.5"), ("random() is not allowed",)),
    (("--where", "read_csv('/etc/passwd') IS NULL"), ("table function",)),
    (("--where", " "), ("--where is empty",)),
    (("--where", "speed > 1e9"), ("selects no bins (of 1,200)",)),
    (("--where", "trial < 2"), ("selects no val bins",)),
    (("--where", "trial_id = 0 OR phase = 'go' AND trial_id % 7 = 1"), ("of only 1 trial",)),
    (("--around", "nope:-1,1"), ("no variable 'nope'", "go_cue, move_time, phase, speed")),
    (("--around", "speed:-1,1"), ("changes within trials",)),
    (("--around", "phase:-1,1"), ("is text",)),
    (("--around", "go_cue:0.5,-0.5"), ("START 0.5 is after STOP -0.5",)),
    (("--around", "go_cue:nan,1"), ("finite",)),
    (("--around", "go_cue:-inf,1"), ("finite",)),
    (("--around", "go_cue:0.25"), ("expected EVENT:START,STOP",)),
    (("--around", "go_cue:a,b"), ("must be numbers",)),
    (("--around", "go_cue:0.01,0.02"), ("selects no bins",)),
    (("--resume", "1", "--where", "speed > 5"), ("resumed run keeps the epoch",)),
]


@pytest.mark.parametrize(("options", "words"), BAD_TRAIN, ids=[" ".join(o) for o, _ in BAD_TRAIN])
def test_bad_epochs_are_refused_in_one_line_before_the_run_row(db: Path, options: tuple[str, ...],
                                                               words: tuple[str, ...]) -> None:
    before = state(db)
    dataset = () if "--resume" in options else ("--dataset", "t")
    assert_refused(mini("train", *dataset, *SMALL, "--epochs", "1", *options, db=db), words)
    assert state(db) == before


def test_a_trial_with_gaps_stays_one_trial_for_the_nulls() -> None:
    """engine/epochs.py's choice: a trial's selected bins are one sequence however many gaps they have."""
    from engine.analysis.nulls import Trials

    trial = np.repeat(np.arange(4), 10)
    selected = np.tile(np.r_[np.ones(3), np.zeros(3), np.ones(4)].astype(bool), 4)  # a gap in every trial
    trials = Trials.from_ids(trial[selected])
    assert trials.n_trials == 4 and trials.lengths.tolist() == [7, 7, 7, 7]


# -- ranking and validation --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranked_db(base_db: Path, tmp_path_factory) -> Path:
    """A run trained on the go/move epoch, ranked (the run's epoch), one label, validated."""
    path = tmp_path_factory.mktemp("ranked") / "mini.duckdb"
    shutil.copy(base_db, path)
    for args in (("train", "--dataset", "t", *SMALL, "--epochs", "2", "--where", GO_MOVE),
                 ("rank", "--run", "1", "--max-shuffles", "1000"),  # bins are checked here, not p-values
                 ("label", "--run", "1", "--feature", "0", "--name", "fast", "--predicate", "speed in [5, 20)"),
                 ("validate", "--run", "1", "--jobs", "1")):
        done = mini(*args, db=path)
        assert done.returncode == 0, (args, done.stderr)
        (path.parent / f"{args[0]}.stderr").write_text(done.stderr)
    return path


@pytest.fixture
def ranked(ranked_db: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(ranked_db, tmp_path / "mini.duckdb"))


def test_rank_and_validate_use_the_run_epoch_by_default(ranked_db: Path) -> None:
    want = expected(ranked_db, set(range(10, 30)))
    row = (GO_MOVE, None, want["train"], want["val"], want["test"])
    assert epoch_rows(ranked_db) == {(1, "train"): row, (1, "rank"): row, (1, "validate"): row}
    rank_err = (ranked_db.parent / "rank.stderr").read_text()
    assert f"rank: epoch: {GO_MOVE} (the run's); bins train {want['train']:,} · val {want['val']:,}" in rank_err
    validate_err = (ranked_db.parent / "validate.stderr").read_text()
    assert f"validate: epoch: {GO_MOVE} (the ranking's); bins test {want['test']:,}" in validate_err
    # Ranking read the epoch's train + val bins: every tuning curve over speed counts exactly those.
    sums = query(ranked_db, "SELECT DISTINCT sum(n) FROM tuning_curves WHERE variable = 'speed'"
                            " GROUP BY sae_id, feature_id")
    assert sums == [(want["train"] + want["val"],)]
    # Validation scored the epoch's test bins only.
    assert query(ranked_db, "SELECT tp + fp + fn + tn FROM current_validations")[0][0] == want["test"]


def test_an_explicit_epoch_overrides_with_a_note(ranked: Path, tmp_path: Path) -> None:
    done = mini("rank", "--run", "1", "--where", "speed > 5", "--max-shuffles", "1000", db=ranked)
    assert done.returncode == 0, done.stderr
    fast = expected(ranked, set(range(20, 30)))
    assert f'rank: note: --where "speed > 5" replaces the run\'s epoch ({GO_MOVE})' in done.stderr
    assert epoch_rows(ranked)[(1, "rank")] == ("speed > 5", None, fast["train"], fast["val"], fast["test"])
    sums = query(ranked, "SELECT DISTINCT sum(n) FROM tuning_curves WHERE variable = 'speed'"
                         " GROUP BY sae_id, feature_id")
    assert sums == [(fast["train"] + fast["val"],)]
    # validate now defaults to the ranking's new epoch; an explicit one overrides it with a note.
    done = mini("validate", "--run", "1", "--jobs", "1", db=ranked)
    assert done.returncode == 0, done.stderr
    assert "validate: epoch: speed > 5 (the ranking's)" in done.stderr
    # Every test bin of this epoch has speed > 5, and the label's speed in [5, 20) holds on each: nothing can be
    # scored, and the reason counts exactly the epoch's test bins.
    testable, reason = query(ranked, "SELECT testable, reason FROM current_validations")[0]
    assert not testable and reason == (f"not testable: speed in [5, 20) holds on every test row where it is"
                                       f" measured ({fast['test']})"), reason
    done = mini("validate", "--run", "1", "--jobs", "1", "--around", "go_cue:-0.25,0.35", db=ranked)
    assert done.returncode == 0, done.stderr
    cue = expected(ranked, set(range(8, 14)))
    assert "validate: note: --around go_cue:-0.25,0.35 replaces the ranking's epoch (speed > 5)" in done.stderr
    assert epoch_rows(ranked)[(1, "validate")] == (None, "go_cue:-0.25,0.35", cue["train"], cue["val"], cue["test"])
    info = mini("info", db=ranked).stdout
    assert ("run 1: trained on phase in ('go', 'move')" in info and "ranked on speed > 5" in info
            and "validated on around go_cue:-0.25,0.35" in info)
    report = mini("report", "--run", "1", "--out", str(tmp_path / "r.md"), db=ranked)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.md").read_text()
    assert f"- trained on `{GO_MOVE}`" in text and "- ranked on `speed > 5`" in text
    assert "- validated on `around go_cue:-0.25,0.35`" in text
    assert pl.read_csv(tmp_path / "r_tables" / "analysis_epochs.csv").height == 3


@pytest.mark.parametrize(("command", "options", "words"), [
    ("rank", ("--where", "spd > 5"), ("unknown column 'spd'",)),
    ("rank", ("--where", "trial < 2"), ("selects no val bins", "mini rank reads val")),
    ("rank", ("--around", "go_cue:1,0"), ("START 1 is after STOP 0",)),
    ("validate", ("--where", "phase = 3"), ("wrong type",)),
    ("validate", ("--where", "trial < 0"), ("selects no bins",)),
    ("validate", ("--around", "nope:0,1"), ("no variable 'nope'",)),
], ids=["rank-unknown", "rank-no-val", "rank-window", "validate-type", "validate-empty", "validate-event"])
def test_rank_and_validate_refuse_bad_epochs_and_keep_what_is_stored(ranked: Path, command: str,
                                                                     options: tuple[str, ...],
                                                                     words: tuple[str, ...]) -> None:
    before = state(ranked)
    assert_refused(mini(command, "--run", "1", *options, db=ranked), words)
    assert state(ranked) == before


def test_validate_refuses_an_epoch_without_test_bins_or_with_one_test_trial(ranked: Path) -> None:
    trials = query(ranked, "SELECT split, list(trial_id ORDER BY trial_id) FROM trials GROUP BY split")
    by_split = dict(trials)
    before = state(ranked)
    no_test = f"trial_id IN ({', '.join(map(str, by_split['train'] + by_split['val']))})"
    assert_refused(mini("validate", "--run", "1", "--where", no_test, db=ranked),
                   ("selects no test bins", "mini validate reads test"))
    one_test = f"trial_id IN ({', '.join(map(str, by_split['train'] + by_split['val'] + by_split['test'][:1]))})"
    assert_refused(mini("validate", "--run", "1", "--where", one_test, db=ranked),
                   ("test bins of only 1 trial", "at least 2 test trials"))
    assert state(ranked) == before


def test_one_label_validated_later_keeps_the_stored_validations_epoch(ranked: Path) -> None:
    """The app's `v` (validate_label) scores on the epoch the run's validations were stored with."""
    from engine.validation.validate import ValidateConfig
    from engine.validation.validate_run import validate_label
    from store import Store

    before = epoch_rows(ranked)
    with Store.open(ranked) as db:
        row = validate_label(db, 1, 1, ValidateConfig(n_bootstrap=50, n_shifts=20, n_random_subsets=10))
    want = expected(ranked, set(range(10, 30)))
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == want["test"]
    assert epoch_rows(ranked) == before
