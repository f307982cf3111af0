"""Memory guards: every step that sizes a large array from its input estimates the bytes first and refuses in
one line with the numbers (exit 2, nothing written), while normal sizes pass.

Huge inputs are crafted cheaply (a .npy whose header declares 10^12 rows is a few bytes on disk); for steps
whose sizes come from a stored dataset, MINI_MEMORY_LIMIT makes a small one too big, in the real CLI."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from numpy.lib import format as npy

import engine.memory
import engine.validation.validate
from engine.errors import InputError
from engine.memory import check_fits, human_bytes
from engine.validation.validate import ValidateConfig, cooccurrence
from tests.conftest import run_cli, shared_file
from tests.spike_cases import assert_refused, make_session, run_mini, write_kilosort


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_header_only(handle, shape: tuple[int, ...], descr: str = "<f8") -> None:
    """A .npy header declaring `shape` followed by a few bytes: the file is tiny, the declared array huge."""
    npy.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
    handle.write(b"\0" * 16)


@pytest.fixture
def small_db(tmp_path: Path) -> Path:
    """A database holding one small imported dataset: a refused command must leave it byte for byte."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "small.npy", rng.poisson(1.0, (200, 6)))
    pl.DataFrame({"trial": np.repeat(np.arange(20), 10), "speed": rng.random(200)}).write_csv(tmp_path / "meta.csv")
    done = run_cli("import", "small.npy", "--meta", "meta.csv", "--db", "lab.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "lab.duckdb"


def limited(limit: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "MINI_DB"}, "MINI_MEMORY_LIMIT": limit}


def refused(done, words: tuple[str, ...]) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mini: error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_npy_declaring_a_trillion_rows_is_refused_from_its_header(small_db: Path) -> None:
    folder = small_db.parent
    with open(folder / "huge.npy", "wb") as handle:
        write_header_only(handle, (10 ** 12, 31))
    assert (folder / "huge.npy").stat().st_size < 200
    before = digest(small_db)
    done = run_cli("import", "huge.npy", "--meta", "meta.csv", "--db", "lab.duckdb", cwd=folder)
    refused(done, ("huge.npy", "1,000,000,000,000 × 31 float64", "451 TiB", "available"))
    assert digest(small_db) == before


def test_npz_counts_declaring_a_huge_array_is_refused(small_db: Path) -> None:
    folder = small_db.parent
    with zipfile.ZipFile(folder / "huge.npz", "w") as archive, archive.open("counts.npy", "w") as handle:
        write_header_only(handle, (10 ** 11, 31), "<f4")
    before = digest(small_db)
    done = run_cli("import", "huge.npz", "--meta", "meta.csv", "--db", "lab.duckdb", cwd=folder)
    refused(done, ("huge.npz: array 'counts'", "100,000,000,000 × 31 float32", "22.6 TiB"))
    assert digest(small_db) == before


@pytest.mark.parametrize("suffix, words", [
    (".parquet", ("200 rows × 6 columns", "18.8 KiB", "MINI_MEMORY_LIMIT allows 1 KiB")),
    (".csv", ("up to", "values", "MINI_MEMORY_LIMIT allows 1 KiB")),
])
def test_table_counts_are_sized_before_they_are_read(small_db: Path, suffix: str, words: tuple[str, ...]) -> None:
    folder = small_db.parent
    frame = pl.DataFrame(np.load(folder / "small.npy"), schema=[f"u{i}" for i in range(6)])
    path = folder / f"counts{suffix}"
    frame.write_parquet(path) if suffix == ".parquet" else frame.write_csv(path)
    before = digest(small_db)
    done = run_cli("import", path.name, "--meta", "meta.csv", "--db", "lab.duckdb", cwd=folder,
                   env=limited("1KiB"))
    refused(done, (path.name, *words))
    assert digest(small_db) == before


def test_kilosort_spike_times_declaring_a_huge_vector_are_refused(tmp_path: Path) -> None:
    session = make_session()
    folder = write_kilosort(tmp_path / "ks", session)
    with open(folder / "spike_times.npy", "wb") as handle:
        write_header_only(handle, (10 ** 13,), "<u8")
    session.behaviour.write_csv(tmp_path / "b.csv")
    done = run_mini("import-spikes", "ks", "--behaviour", "b.csv", "--db", "k.duckdb", cwd=tmp_path)
    assert_refused(done, ("spike_times.npy", "10,000,000,000,000 uint64", "2 working copies", "TiB"))
    assert not (tmp_path / "k.duckdb").exists()


def test_train_refuses_dense_counts_that_do_not_fit_before_a_run_row(small_db: Path) -> None:
    before = digest(small_db)
    done = run_cli("train", "--dataset", "small", "--epochs", "1", "--db", "lab.duckdb", cwd=small_db.parent,
                   env=limited("2KiB"))
    refused(done, ("the dataset's counts", "200 examples × 6 units", "MINI_MEMORY_LIMIT allows 2 KiB"))
    assert digest(small_db) == before


def test_rank_refuses_before_reading_activations(app_db: Path) -> None:
    before = digest(app_db)
    done = run_cli("rank", "--run", "1", "--db", str(app_db), cwd=app_db.parent, env=limited("64KiB"))
    refused(done, ("run 1: ranking", "bins needs", "metadata embedding", "columns over", "per SAE",
                   "MINI_MEMORY_LIMIT allows 64 KiB"))
    assert digest(app_db) == before


def test_validate_refuses_dense_counts_that_do_not_fit(app_db: Path) -> None:
    before = digest(app_db)
    done = run_cli("validate", "--run", "1", "--db", str(app_db), cwd=app_db.parent, env=limited("4KiB"))
    refused(done, ("the dataset's counts", "examples ×", "MINI_MEMORY_LIMIT allows 4 KiB"))
    assert digest(app_db) == before


def test_nwb_spike_times_are_sized_before_they_are_read(tmp_path: Path) -> None:
    nwb = shared_file("shared/data/pynapple-nwb/sub-4_ses-4_ecephys+image.nwb")
    done = run_cli("import-nwb", str(nwb), "--db", "n.duckdb", cwd=tmp_path, env=limited("1MiB"))
    refused(done, ("Units table holds 214,278 spike times of 35 units", "4.9 MiB", "MINI_MEMORY_LIMIT allows 1 MiB"))
    assert not (tmp_path / "n.duckdb").exists()


@pytest.mark.parametrize("value", ["lots", "-5GiB", "0", "3 parsecs", "1e400"])
def test_a_bad_memory_limit_is_one_line(small_db: Path, value: str) -> None:
    before = digest(small_db)
    done = run_cli("import", "small.npy", "--meta", "meta.csv", "--name", "again", "--db", "lab.duckdb",
                   cwd=small_db.parent, env=limited(value))
    refused(done, ("MINI_MEMORY_LIMIT=",))
    assert digest(small_db) == before


def test_normal_sizes_pass_under_a_generous_limit(small_db: Path) -> None:
    folder = small_db.parent
    done = run_cli("import", "small.npy", "--meta", "meta.csv", "--name", "again", "--db", "lab.duckdb", cwd=folder,
                   env=limited("2GiB"))
    assert done.returncode == 0, done.stderr
    done = run_cli("train", "--dataset", "again", "--epochs", "2", "--db", "lab.duckdb", cwd=folder,
                   env=limited("2GiB"))
    assert done.returncode == 0, done.stderr


def test_the_machine_share_applies_without_a_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINI_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(engine.memory, "available_bytes", lambda: 1000 * 1024 ** 2)
    check_fits("800 MiB of bins", 800 * 1024 ** 2)  # exactly the usable share: allowed
    with pytest.raises(InputError) as refusal:
        check_fits("801 MiB of bins", 801 * 1024 ** 2, "use bigger bins")
    assert str(refusal.value) == "801 MiB of bins: 801 MiB; this machine has 1e+03 MiB available: use bigger bins"
    assert human_bytes(146 * 1024 ** 4) == "146 TiB"


def test_spike_binning_refusal_reads_like_the_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.ingest.spikes import bin_edges

    monkeypatch.delenv("MINI_MEMORY_LIMIT", raising=False)
    monkeypatch.setattr(engine.memory, "available_bytes", lambda: 24 * 1024 ** 3)
    with pytest.raises(InputError) as refusal:
        bin_edges((0.0, 4400.0), 1e-9, n_units=31)
    assert "--bin-size 1e-09 over 4,400 s is 4.4e+12 bins × 31 units" in str(refusal.value)
    assert "this machine has 24 GiB available" in str(refusal.value)


def test_bootstrap_in_chunks_draws_what_one_block_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    trial = np.repeat(np.arange(60), 20)
    present = rng.random(len(trial)) < 0.3
    activation = present * rng.random(len(trial)) + rng.random(len(trial)) * 0.5
    config = ValidateConfig(n_bootstrap=500, n_shifts=20)
    whole = cooccurrence(activation, present, trial, 0.6, config)
    monkeypatch.setattr(engine.validation.validate, "BOOTSTRAP_CHUNK_BYTES", 8 * 60 * 7)  # 7 resamples a chunk
    chunked = cooccurrence(activation, present, trial, 0.6, config)
    assert chunked == whole
    assert whole["mcc_ci_low"] < whole["mcc"] < whole["mcc_ci_high"]


def test_validate_sizes_the_labelled_features_activations(tmp_path: Path) -> None:
    """Many labelled features of a recording of few units: their activations, not the counts, are the big part."""
    from engine.ingest.importer import ImportOptions, import_files
    from engine.pipeline import RunSpec, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from engine.validation.labels import label_feature
    from store import Store

    rng = np.random.default_rng(1)
    np.save(tmp_path / "two.npy", rng.poisson(2.0, (2000, 2)))
    pl.DataFrame({"trial": np.repeat(np.arange(40), 50), "speed": rng.random(2000)}).write_csv(tmp_path / "m.csv")
    path = tmp_path / "two.duckdb"
    with Store.open(path) as db:
        import_files(db, tmp_path / "two.npy", tmp_path / "m.csv", ImportOptions(name="two"))
        run_id = train_run(db, RunSpec(dataset="two", sae=SAEConfig(architecture="relu", d_sae=40), ks=(1,),
                                       train=TrainConfig(epochs=1, batch_size=256, device="cpu"))).run_id
        for feature in range(40):
            label_feature(db, run_id, feature, name="fast", predicate="speed in [0.5, 1)")
    before = digest(path)
    done = run_cli("validate", "--run", "1", "--jobs", "1", "--db", str(path), cwd=tmp_path, env=limited("1MiB"))
    refused(done, ("run 1: validating 40 labelled feature(s) over 2,000 bins", "1.53 MiB",
                   "MINI_MEMORY_LIMIT allows 1 MiB", "fewer labels"))
    assert digest(path) == before
