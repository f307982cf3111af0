"""Settings chosen from the recording, early stopping, the split training log, and the quality flags:
the rule on its own, each flag on figures that trigger it and figures that do not, and the whole path
through the real `mini import` and `mini train` on small real database files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.quality_flags import FlagContext, SplitFigures, sae_flags, track_flag, variance_flags
from engine.sae.train_defaults import RecordingShape, choose_settings
from store import Store
from tests.conftest import run_cli, shared_file


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# -- the rule ------------------------------------------------------------------------------------------------
def test_a_small_session_gets_a_narrow_dictionary_and_small_batches() -> None:
    """31 units, 2,298 training bins (the linear track at 100 ms): 2 steps per epoch and 512 latents before."""
    chosen = choose_settings(RecordingShape(n_units=31, n_train=2298, active_units_per_bin=12.0))
    assert (chosen.d_sae, chosen.k, chosen.batch_size) == (32, 4, 128)
    assert 2298 // chosen.batch_size >= 16 and chosen.patience == 10 and 30 <= chosen.max_epochs <= 300
    assert chosen.dead_after_examples == 2298  # one pass over the training split, not 50,000 bins
    assert chosen.reasons["d_sae"] == "32 (31 units)" and chosen.reasons["k"] == "4 (31 units / 8)"


def test_a_large_session_gets_four_latents_per_unit() -> None:
    chosen = choose_settings(RecordingShape(n_units=120, n_train=42_000, active_units_per_bin=30.0))
    assert (chosen.d_sae, chosen.k, chosen.batch_size) == (480, 8, 1024)
    assert chosen.reasons["d_sae"] == "480 (4 × 120 units)" and chosen.dead_after_examples == 42_000
    middle = choose_settings(RecordingShape(n_units=35, n_train=7_500, active_units_per_bin=5.0))
    assert middle.d_sae == 104 and "one latent per 75" in middle.reasons["d_sae"]  # 7,500 / 75 = 100 → 104


def test_sparse_bins_limit_k_and_a_handful_of_units_gets_k_1() -> None:
    sparse = choose_settings(RecordingShape(n_units=48, n_train=4500, active_units_per_bin=2.2))
    assert sparse.k == 2 and "2.2 units active per training bin" in sparse.reasons["k"]
    few = choose_settings(RecordingShape(n_units=3, n_train=20_000, active_units_per_bin=1.5))
    assert few.d_sae == 16 and few.k == 1  # 4 × 3 units → 12 → a multiple of 8


# -- each flag -----------------------------------------------------------------------------------------------
def figures(split: str, fvu: float, pca: float = 0.5, dead: float = 0.0,
            l0: tuple[tuple[int, int], ...] = ((4, 100),)) -> SplitFigures:
    return SplitFigures(split, fvu, pca, 4, dead, l0)


def codes(flags) -> set[tuple[str, str | None]]:
    return {(f.flag, f.split) for f in flags}


def test_a_healthy_sae_has_no_flags() -> None:
    good = {"train": figures("train", 0.20), "val": figures("val", 0.25), "test": figures("test", 0.26)}
    share = np.array([0.3, 0.3, 0.4])
    assert sae_flags(0, good, k=4, d_sae=32, unit_error_share=share, unit_names=["a", "b", "c"]) == []


@pytest.mark.parametrize(("changes", "expected"), [
    ({"test": figures("test", 0.60, pca=0.31)}, {("fvu_above_pca", "test")}),
    ({"val": figures("val", 1.65), "test": figures("test", 1.2)}, {("fvu_above_one", "val"), ("fvu_above_one", "test"),
                                                                  ("train_val_gap", "val")}),
    ({"val": figures("val", 0.45)}, {("train_val_gap", "val")}),
    ({"val": figures("val", 0.25, dead=0.17)}, {("dead_on_val", "val")}),
    ({"train": figures("train", 0.20, l0=((4, 90), (20, 10)))}, {("l0_tail", "train")}),
])
def test_each_flag_fires_on_its_figures(changes: dict, expected: set) -> None:
    split_figures = {"train": figures("train", 0.20), "val": figures("val", 0.25), "test": figures("test", 0.26)}
    flags = sae_flags(1, split_figures | changes, k=4, d_sae=64, unit_error_share=None, unit_names=[])
    assert codes(flags) == expected
    for flag in flags:  # one line each, with something to try
        assert "\n" not in flag.message and flag.suggestion and flag.sae_index == 1


def test_thresholds_are_not_crossed_by_a_hair() -> None:
    near = {"train": figures("train", 0.20), "val": figures("val", 0.34, dead=0.05),
            "test": figures("test", 0.49, pca=0.5, l0=((4, 99), (12, 1)))}
    assert sae_flags(0, near, k=4, d_sae=64, unit_error_share=None, unit_names=[]) == []


def test_suggestions_never_ask_for_what_was_done_already() -> None:
    split_figures = {"train": figures("train", 0.2), "val": figures("val", 0.45),
                     "test": figures("test", 0.6, pca=0.3)}
    share = np.array([0.9, 0.1])
    plain = {f.flag: f.suggestion for f in sae_flags(0, split_figures, 4, 64, share, ["a", "b"])}
    assert "--smooth" in plain["fvu_above_pca"] and "--smooth" in plain["train_val_gap"]
    assert "--normalize" in plain["unit_dominates_error"]
    done = FlagContext(normalized=True, raw_counts=False)  # smoothed at import, trained with --normalize
    tried = {f.flag: f.suggestion for f in sae_flags(0, split_figures, 4, 64, share, ["a", "b"], done)}
    assert set(tried) == set(plain)
    assert not any("--smooth" in text for text in tried.values())
    assert "mini train --normalize" not in tried["unit_dominates_error"]
    assert "compare without it" in tried["fvu_above_pca"]


def test_a_unit_that_holds_the_error_or_the_variance_is_named() -> None:
    split_figures = {"train": figures("train", 0.2), "val": figures("val", 0.25)}
    flags = sae_flags(0, split_figures, k=4, d_sae=32, unit_error_share=np.array([0.1, 0.8, 0.1]),
                      unit_names=["u0", "noisy", "u2"])
    assert [(f.flag, f.unit_id) for f in flags] == [("unit_dominates_error", 1)] and "noisy" in flags[0].message
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, (1000, 10)).astype(float)
    assert variance_flags(counts, [str(i) for i in range(10)]) == []
    counts[:, 7] = rng.poisson(10.0, 1000)
    [flag] = variance_flags(counts, [f"unit{i}" for i in range(10)])
    assert flag.flag == "unit_dominates_variance" and flag.unit_id == 7 and "unit7" in flag.message
    assert "--normalize" in flag.suggestion


def test_a_track_that_is_not_a_line() -> None:
    assert track_flag("maze.videoPositionTracking", 0.99) is None
    flag = track_flag("maze.videoPositionTracking", 0.62)
    assert flag is not None and flag.flag == "track_not_a_line" and "62%" in flag.message


# -- through the CLI -----------------------------------------------------------------------------------------
def write_recording(folder: Path, n_bins: int, n_units: int, *, loud_unit: bool = False, seed: int = 0
                    ) -> tuple[Path, Path]:
    """Poisson counts driven by a few latent patterns, 20-bin trials; optionally one unit at 100× the rate."""
    rng = np.random.default_rng(seed)
    patterns = rng.random((4, n_units)) * (rng.random((4, n_units)) < 0.3)
    latent = rng.random((n_bins, 4)) < 0.2
    counts = rng.poisson(0.05 + latent @ patterns).astype(np.float32)
    if loud_unit:
        counts[:, 0] = rng.poisson(12.0, n_bins)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "counts.npy", counts)
    pl.DataFrame({"trial": np.arange(n_bins) // 20, "x": rng.random(n_bins)}).write_parquet(folder / "meta.parquet")
    return folder / "counts.npy", folder / "meta.parquet"


def test_train_without_settings_chooses_them_stops_early_and_logs_both_losses(tmp_path: Path) -> None:
    counts, meta = write_recording(tmp_path / "rec", 3000, 24)
    assert run_cli("import", str(counts), "--meta", str(meta), "--name", "rec", cwd=tmp_path).returncode == 0
    done = run_cli("train", "--dataset", "rec", "--device", "cpu", "--patience", "2", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert ("chosen from the recording: d_sae 32 (one latent per 75 of 2,080 training bins), k 3 (24 units / 8), "
            "batch_size 128 (16 steps per epoch over 2,080 training bins), epochs early stopping on val (patience 2)"
            ) in done.stderr
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        config = json.loads(db.scalar("SELECT config FROM runs"))
        sae = db.records("SELECT d_sae, k, best_epoch FROM saes")[0]
        log = db.frame("SELECT epoch, loss, reconstruction_loss, auxiliary_loss FROM train_log")
    assert (sae["d_sae"], sae["k"], config["train"]["batch_size"]) == (32, 3, 128)
    assert set(config["chosen"]) == {"d_sae", "k", "batch_size", "epochs"} and config["train"]["patience"] == 2
    last_epoch = int(log["epoch"].max())
    # Early stopping: two epochs past the best one, long before the cap on epochs.
    assert last_epoch == sae["best_epoch"] + 2 < config["train"]["epochs"]
    assert f"stopped early after epoch {last_epoch}" in done.stderr
    # The logged loss is its two parts; the auxiliary one is 0 until latents count as dead.
    assert np.allclose(log["loss"], log["reconstruction_loss"] + log["auxiliary_loss"])
    assert float(log["auxiliary_loss"][0]) == 0.0


def test_given_settings_are_kept_and_trained_for_every_epoch(tmp_path: Path) -> None:
    counts, meta = write_recording(tmp_path / "rec", 1500, 12)
    assert run_cli("import", str(counts), "--meta", str(meta), "--name", "rec", cwd=tmp_path).returncode == 0
    done = run_cli("train", "--dataset", "rec", "--device", "cpu", "--d-sae", "40", "--k", "2", "--epochs", "3",
                   "--batch-size", "256", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "chosen from the recording" not in done.stderr and "stopped early" not in done.stderr
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        config = json.loads(db.scalar("SELECT config FROM runs"))
        assert db.scalar("SELECT max(epoch) FROM train_log") == 3
    assert config["chosen"] == {} and config["sae"]["d_sae"] == 40 and config["train"]["patience"] is None


def test_a_given_k_too_large_for_the_chosen_width_is_refused_in_one_line(tmp_path: Path) -> None:
    counts, meta = write_recording(tmp_path / "rec", 600, 8)
    assert run_cli("import", str(counts), "--meta", str(meta), "--name", "rec", cwd=tmp_path).returncode == 0
    done = run_cli("train", "--dataset", "rec", "--k", "6", cwd=tmp_path)  # 8 units, ~420 training bins: d_sae 8
    assert done.returncode == 2
    assert done.stderr.strip() == ("mini: error: --k 6: the d_sae chosen from the recording is 8, too few latents to "
                                   "choose 6 from; give --d-sae too (at least 12) or a smaller --k")
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM runs") == 0


@pytest.mark.parametrize("patience", ["0", "-3"])
def test_a_bad_patience_is_refused_before_anything_is_written(tmp_path: Path, patience: str) -> None:
    counts, meta = write_recording(tmp_path / "rec", 600, 8)
    assert run_cli("import", str(counts), "--meta", str(meta), "--name", "rec", cwd=tmp_path).returncode == 0
    done = run_cli("train", "--dataset", "rec", "--patience", patience, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == f"mini: error: --patience {patience}: must be at least 1 epoch"
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM runs") == 0


def test_flags_are_printed_and_stored_at_import_and_after_training(tmp_path: Path) -> None:
    counts, meta = write_recording(tmp_path / "rec", 2000, 16, loud_unit=True)
    imported = run_cli("import", str(counts), "--meta", str(meta), "--name", "loud", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "flag: unit unit_0 holds" in imported.stderr and "mini train --normalize" in imported.stderr
    # A dictionary far too wide for 1,400 training bins, trained too long: flagged, with what to try.
    done = run_cli("train", "--dataset", "loud", "--device", "cpu", "--d-sae", "512", "--k", "8", "--epochs", "40",
                   "--batch-size", "1024", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    flag_lines = [line for line in done.stderr.splitlines() if line.startswith("flag: SAE 1: ")]
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        stored = db.records("SELECT run_id, sae_id, flag, message, suggestion FROM quality_flags ORDER BY run_id")
    at_import = [f for f in stored if f["run_id"] is None]
    after_training = [f for f in stored if f["run_id"] == 1]
    assert [f["flag"] for f in at_import] == ["unit_dominates_variance"]
    assert "dead_on_val" in {f["flag"] for f in after_training}
    assert len(flag_lines) == len(after_training) and all(" — try: " in line for line in flag_lines)
    assert all(f["sae_id"] == 1 for f in after_training)


def test_the_real_w_maze_is_flagged_at_import_and_the_linear_track_is_not(tmp_path: Path) -> None:
    """On the real recordings (shared/data): the W-maze's tracking is not a line and one unit (likely
    multi-unit activity) holds most of its variance; the linear track has neither."""
    data = shared_file(Path("shared", "data", "nelpy-example-data", "w-maze", "spikes.mat")).parents[1]
    for name, extra in (("w-maze", []), ("linear-track", ["--trials", "runs"])):
        done = run_cli("import-spikes", str(data / name / "spikes.mat"), "--behaviour",
                       str(data / name / "trajectory.videoPositionTracking"), "--bin-size", "0.1", *extra,
                       "--name", name, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "mini.duckdb", read_only=True) as db:
        flags = db.records("SELECT d.name, f.flag, f.value, f.message FROM quality_flags f JOIN datasets d "
                           "USING (dataset_id) ORDER BY d.name, f.flag")
    by_dataset = {(f["name"], f["flag"]): f for f in flags}
    assert set(by_dataset) == {("w-maze", "track_not_a_line"), ("w-maze", "unit_dominates_variance")}
    assert 0.5 < by_dataset[("w-maze", "track_not_a_line")]["value"] < 0.8
    assert by_dataset[("w-maze", "track_not_a_line")]["message"].startswith("trajectory.videoPositionTracking: ")
    assert by_dataset[("w-maze", "unit_dominates_variance")]["value"] > 0.9


def test_a_transcoder_is_judged_against_its_ridge_baseline() -> None:
    def transcoder(split: str, fvu: float, ridge: float) -> SplitFigures:
        return SplitFigures(split, fvu, None, None, 0.0, ((4, 100),), ridge)

    healthy = {"train": transcoder("train", 0.70, 0.77), "val": transcoder("val", 0.73, 0.78),
               "test": transcoder("test", 0.73, 0.77)}
    assert sae_flags(0, healthy, k=4, d_sae=64, unit_error_share=None, unit_names=[]) == []
    worse = healthy | {"test": transcoder("test", 0.80, 0.77)}
    flags = sae_flags(0, worse, k=4, d_sae=64, unit_error_share=None, unit_names=[])
    assert codes(flags) == {("fvu_above_ridge", "test")}
    assert "0.770" in flags[0].message and "--k" in flags[0].suggestion and flags[0].threshold == 0.77
    # The inputs say almost nothing about the targets (the human recording's amygdala → hippocampus at 50 ms):
    # no SAE setting is the thing to change, and the suggestion says so instead.
    hopeless = {"train": transcoder("train", 0.987, 0.995), "val": transcoder("val", 0.998, 0.995),
                "test": transcoder("test", 1.001, 0.996)}
    flags = {f.split: f for f in sae_flags(0, hopeless, k=3, d_sae=104, unit_error_share=None, unit_names=[])}
    assert (flags["test"].flag, flags["val"].flag) == ("fvu_above_one", "fvu_above_ridge")
    for flag in flags.values():
        assert "--inputs" in flag.suggestion and "0.99" in flag.suggestion and "--d-sae" not in flag.suggestion
