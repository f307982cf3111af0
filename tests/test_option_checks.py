"""Options refused before the database is touched (issue 16), and a training run that diverges.

Each bad option runs through the real `mini` in a subprocess against a database that holds a dataset and a
trained run: exit status 2, one line naming the option, no traceback, and the database file byte-identical.
Import options are also tried against a database path that does not exist yet: no file may appear.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
from spike_cases import make_session, write_spike_table

from tests.conftest import run_cli

HUGE_SEED = str(2**80)
IMPORT = ("import", "tiny/counts.npz", "--meta", "tiny/metadata.parquet", "--name", "again")
SPIKES = ("import-spikes", "s.csv", "--behaviour", "b.csv", "--name", "spikes")
TRAIN = ("train", "--dataset", "tiny")

CASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # name: (arguments without --db, words the one line must hold)
    "import_seed_negative": ((*IMPORT, "--seed", "-5"), ("--seed -5", "2**32")),
    "import_seed_huge": ((*IMPORT, "--seed", HUGE_SEED), (f"--seed {HUGE_SEED}", "2**32")),
    "import_split_nan": ((*IMPORT, "--split", "nan,0.5,0.5"), ("--split nan,0.5,0.5", "finite")),
    "import_split_inf": ((*IMPORT, "--split", "inf,0.5,0.5"), ("--split inf,0.5,0.5", "finite")),
    "import_blocks_zero": ((*IMPORT, "--blocks", "0"), ("--blocks 0", "at least 3")),
    "import_blocks_negative": ((*IMPORT, "--blocks", "-1"), ("--blocks -1", "at least 3")),
    "import_blocks_one": ((*IMPORT, "--blocks", "1"), ("--blocks 1", "at least 3")),
    "spikes_min_rate_negative": ((*SPIKES, "--min-rate", "-1"), ("--min-rate -1", "0 Hz or more")),
    "spikes_min_rate_nan": ((*SPIKES, "--min-rate", "nan"), ("--min-rate nan",)),
    "spikes_isi_nan": ((*SPIKES, "--max-isi-violations", "nan"), ("--max-isi-violations nan", "between 0 and 1")),
    "spikes_isi_above_one": ((*SPIKES, "--max-isi-violations", "1.5"), ("--max-isi-violations 1.5",)),
    "spikes_seed_huge": ((*SPIKES, "--seed", HUGE_SEED), (f"--seed {HUGE_SEED}",)),
    "train_seed_huge": ((*TRAIN, "--seed", HUGE_SEED), (f"--seed {HUGE_SEED}", "2**32")),
    "train_seed_negative": ((*TRAIN, "--seed", "-1"), ("--seed -1", "2**32")),
    "train_seeds_overflow": ((*TRAIN, "--seed", str(2**32 - 1), "--instances", "2"),
                             (f"--seed {2**32 - 1}", "--instances 2")),
    "train_lr_inf": ((*TRAIN, "--lr", "inf"), ("--lr inf", "finite")),
    "train_lr_nan": ((*TRAIN, "--lr", "nan"), ("--lr nan", "finite")),
    "train_lr_zero": ((*TRAIN, "--lr", "0"), ("--lr 0", "above 0")),
    "train_lr_huge": ((*TRAIN, "--lr", "1e30"), ("--lr 1e+30", "at most 1", "Adam")),
    "train_d_sae_huge": ((*TRAIN, "--d-sae", "4000000000", "--k", "8"), ("--d-sae 4,000,000,000", "GiB",
                                                                        "this machine has")),
    "train_instances_huge": ((*TRAIN, "--instances", "1000000000"), ("--instances 1,000,000,000", "GiB",
                                                                     "this machine has")),
    "train_instances_zero": ((*TRAIN, "--instances", "0"), ("--instances 0", "at least 1")),
    "label_feature_missing": (("label", "--run", "1", "--feature", "9999", "--reject"),
                              ("--feature 9999", "has 20", "0 to 19")),
    "label_feature_one_past": (("label", "--run", "1", "--feature", "20", "--name", "x"), ("--feature 20",)),
    "label_feature_negative": (("label", "--run", "1", "--feature", "-1", "--unsure"), ("--feature -1",)),
    "label_reject_with_predicate": (("label", "--run", "1", "--feature", "1", "--reject", "--predicate",
                                     "speed in [1, 2)"), ("--predicate", "--name")),
    "label_unsure_with_predicate": (("label", "--run", "1", "--feature", "1", "--unsure", "--predicate",
                                     "speed in [1, 2)"), ("--predicate", "--name")),
}


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(done, words: tuple[str, ...]) -> str:
    """The one line of a refusal: exit status 2, `mini: error: …` holding every word, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mini: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder with the tiny recording's files, a spike session's files and a database holding the tiny
    dataset and one trained run (SAE 1, 20 features)."""
    from sample_data.generator import SampleConfig, generate

    folder = tmp_path_factory.mktemp("option_checks")
    generate(SampleConfig(n_bins=1500, n_units=10)).write(folder / "tiny")
    session = make_session()
    write_spike_table(folder / "s.csv", session)
    session.behaviour.write_csv(folder / "b.csv")
    env_free = {"cwd": folder}
    done = run_cli("import", "tiny/counts.npz", "--meta", "tiny/metadata.parquet", "--name", "tiny",
                   "--db", "base.duckdb", **env_free)
    assert done.returncode == 0, done.stderr
    done = run_cli(*TRAIN, "--epochs", "2", "--d-sae", "20", "--k", "2", "--batch-size", "256", "--device", "cpu",
                   "--db", "base.duckdb", **env_free)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    return folder


@pytest.fixture
def folder(base: Path, tmp_path: Path) -> Path:
    """This test's own copy of the files and the database (mini.duckdb)."""
    work = tmp_path / "work"
    shutil.copytree(base, work)
    (work / "base.duckdb").rename(work / "mini.duckdb")
    return work


@pytest.mark.parametrize("name", list(CASES))
def test_bad_option_is_refused_before_the_database_changes(name: str, folder: Path) -> None:
    args, words = CASES[name]
    db = folder / "mini.duckdb"
    before = _hash(db)
    _refused(run_cli(*args, "--db", db.name, cwd=folder), words)
    assert _hash(db) == before, "a refused command changed the database file"
    if args[0].startswith("import"):
        _refused(run_cli(*args, "--db", "new.duckdb", cwd=folder), words)
        assert not list(folder.glob("new.duckdb*")), "a refused import left a database file behind"


def test_a_diverging_run_is_stored_failed_and_rank_refuses_it(folder: Path) -> None:
    """Activations of about 3e18 (float32 holds them) square past float32's range: the first loss is inf."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    np.save(folder / "big.npy", (rng.normal(size=(600, 8)) * 3e18).astype(np.float32))
    pl.DataFrame({"trial": np.repeat(np.arange(30), 20), "time_s": np.arange(600) * 0.05,
                  "speed": rng.normal(size=600)}).write_csv(folder / "big.csv")
    done = run_cli("import", "big.npy", "--meta", "big.csv", "--kind", "activations", "--name", "big",
                   "--db", "mini.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    done = run_cli("train", "--dataset", "big", "--epochs", "3", "--d-sae", "16", "--k", "2", "--batch-size", "64",
                   "--device", "cpu", "--db", "mini.duckdb", cwd=folder)
    line = _refused(done, ("run 2 failed at epoch 1 of 3", "non-finite", "--lr lower than 0.002", "extreme values"))
    assert done.stdout == ""
    with duckdb.connect(str(folder / "mini.duckdb"), read_only=True) as con:
        status, message = con.execute("SELECT status, message FROM runs WHERE run_id = 2").fetchone()
        assert con.execute("SELECT count(*) FROM saes WHERE run_id = 2").fetchone()[0] == 0
    assert status == "failed"
    assert message.startswith("at epoch 1 of 3, step ") and message in line

    before = _hash(folder / "mini.duckdb")
    rank = run_cli("rank", "--run", "2", "--db", "mini.duckdb", cwd=folder)
    _refused(rank, ("run 2 failed at epoch 1 of 3", "train again"))
    assert _hash(folder / "mini.duckdb") == before
