"""Split tuning and peri-event histograms (engine/analysis/tuning.py) on a small recording imported for real: a track
run left or right on alternate trials, a cue flag in each trial, and planted activations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.analysis.dataset_arrays import DatasetArrays
from engine.analysis.review import dataset_arrays
from engine.analysis.tuning import (
    conjunction_parts,
    peri_event,
    split_tuning_lines,
    split_tunings,
    tuned_variable,
    tuning_inputs,
)
from engine.ingest.importer import ImportOptions, import_files
from store import Store
from store.datasets import get_dataset

N_TRIALS, PER_TRIAL, BIN_S = 40, 100, 0.1
CUE_BIN, LAG_BINS = 30, 5
"""The cue goes up at bin 30 of each trial (for three bins); the planted response comes 5 bins (0.5 s) later."""
FIELD = (0.4, 0.5)
EDGES = np.linspace(0.0, 1.0, 11)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, dict, DatasetArrays]:
    folder = tmp_path_factory.mktemp("tuning")
    n = N_TRIALS * PER_TRIAL
    rng = np.random.default_rng(0)
    trial = np.repeat(np.arange(N_TRIALS), PER_TRIAL)
    within = np.tile(np.arange(PER_TRIAL), N_TRIALS)
    cue = ((within >= CUE_BIN) & (within < CUE_BIN + 3)).astype(np.int8)
    np.savez(folder / "counts.npz", counts=rng.poisson(2.0, size=(n, 6)).astype(np.int32))
    pl.DataFrame({"trial": trial, "time_s": np.arange(n) * BIN_S, "position": (within + 0.5) / PER_TRIAL,
                  "side": np.where(trial % 2 == 0, "left", "right"), "cue": cue}).write_csv(folder / "meta.csv")
    path = folder / "tuning.duckdb"
    with Store.open(path) as db:
        import_files(db, folder / "counts.npz", folder / "meta.csv", ImportOptions(name="track", bin_size_s=BIN_S))
        dataset = get_dataset(db, "track")  # options parsed, as the app and the report read it
        data = dataset_arrays(db, dataset)
    return path, dataset, data


def place_activation(data: DatasetArrays) -> np.ndarray:
    """Active at FIELD of the track, and only on left runs."""
    position, left = data.numbers["position"], data.codes["side"] == data.levels["side"].index("left")
    return np.where(left & (position >= FIELD[0]) & (position < FIELD[1]), 1.0, 0.0).astype(np.float32)


def test_the_split_shows_the_field_on_left_runs_only(recording) -> None:
    _, dataset, data = recording
    inputs = tuning_inputs(dataset, data, None)
    assert sorted(inputs.split_variables) == ["cue", "side"]  # a flag has 2 levels: it may split too
    splits = split_tunings(inputs, data, place_activation(data), "position", EDGES)
    by_side = next(s for s in splits if s.split_by == "side")
    left, right = (by_side.means[by_side.levels.index(level)] for level in ("left", "right"))
    assert int(np.argmax(left)) == 4 and left[4] == pytest.approx(1.0)  # [0.4, 0.5)
    assert np.nanmax(right) == 0.0
    assert by_side.separation > 0.4 and splits[0].split_by == "side"
    text = "\n".join(split_tuning_lines(by_side))
    assert "position by side" in text and "[0.4, 0.5)" in text


def test_test_bins_never_move_the_split_or_the_histogram(recording) -> None:
    _, dataset, data = recording
    test = data.split == 2
    assert test.any()
    inputs = tuning_inputs(dataset, data, None)
    activation = place_activation(data) + peri_activation(data)
    before = split_tunings(inputs, data, activation, "position", EDGES)[0]
    peth_before = peri_event(inputs, data, activation, "cue", BIN_S)
    # Scramble the test split: its activations, positions and sides, and its cue flags.
    rng = np.random.default_rng(1)
    changed = replace(data, numbers={**data.numbers, "position": np.where(test, rng.random(len(test)),
                                                                            data.numbers["position"]),
                                     "cue": np.where(test, 1.0, data.numbers["cue"])},
                      codes={**data.codes, "side": np.where(test, 1 - data.codes["side"], data.codes["side"])})
    scrambled = np.where(test, rng.random(len(test)) * 5, activation).astype(np.float32)
    changed_inputs = tuning_inputs(dataset, changed, None)
    after = split_tunings(changed_inputs, changed, scrambled, "position", EDGES)[0]
    peth_after = peri_event(changed_inputs, changed, scrambled, "cue", BIN_S)
    np.testing.assert_array_equal(before.means, after.means)
    np.testing.assert_array_equal(before.n, after.n)
    np.testing.assert_array_equal(peth_before.means, peth_after.means)
    assert peth_before.n_events == peth_after.n_events


def peri_activation(data: DatasetArrays) -> np.ndarray:
    """A response LAG_BINS after each cue onset."""
    within = np.tile(np.arange(PER_TRIAL), N_TRIALS)
    return np.where(within == CUE_BIN + LAG_BINS, 2.0, 0.0).astype(np.float32)


def test_the_peri_event_histogram_peaks_at_the_planted_lag(recording) -> None:
    _, dataset, data = recording
    inputs = tuning_inputs(dataset, data, None)
    assert list(inputs.events) == ["cue"]  # side is text and position changes within trials: no events
    fit_trials = len(np.unique(data.trial[data.fit]))
    assert len(inputs.events["cue"]) == fit_trials  # one onset per train + val trial, not one per flagged bin
    peth = peri_event(inputs, data, peri_activation(data), "cue", BIN_S)
    centres = (peth.offsets[:-1] + peth.offsets[1:]) / 2
    peak = int(np.nanargmax(peth.means))
    assert centres[peak] == pytest.approx(LAG_BINS * BIN_S, abs=BIN_S / 2 + 1e-9)
    assert peth.means[peak] == pytest.approx(2.0) and peth.n_events == fit_trials
    assert np.nansum(peth.means) == pytest.approx(2.0)


def test_the_epoch_limits_the_split_to_the_ranked_bins(recording) -> None:
    _, dataset, data = recording
    first_half = np.flatnonzero(data.fit & (data.numbers["position"] < 0.5))
    inputs = tuning_inputs(dataset, data, first_half)
    split = split_tunings(inputs, data, place_activation(data), "position", EDGES)[0]
    assert split.n[:, 5:].sum() == 0 and split.n[:, :5].sum() == len(first_half)


def test_a_conjunctive_suggestion_names_the_split_variable(recording) -> None:
    _, dataset, data = recording
    conjunction = "position in [0.4, 0.5) and side = left"
    assert conjunction_parts(conjunction) == [("position", None), ("side", "left")]
    suggestions = [{"variable": "position", "predicate": conjunction}]
    assert tuned_variable(suggestions, data, {"position": EDGES}, {}) == ("position", "side")
    inputs = tuning_inputs(dataset, data, None)
    first = split_tunings(inputs, data, place_activation(data), "position", EDGES, preferred="side")[0]
    assert first.split_by == "side" and first.preferred
    # Without a continuous suggestion, the variable whose curve varies most is split.
    assert tuned_variable([{"variable": "side", "predicate": "side = left"}], data, {"position": EDGES},
                          {"position": 0.3}) == ("position", "side")
