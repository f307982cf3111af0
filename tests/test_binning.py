"""The pieces of a spike import on their own: binning, alignment across gaps, circular interpolation,
laps, trial assignment, smoothing that stays within trials, and the tracking reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from spike_cases import write_tracking

from engine.errors import InputError
from engine.ingest.behaviour import BehaviourSource, align_source
from engine.ingest.preprocess import smooth_within_trials, zscore_within_trials
from engine.ingest.spikes import bin_edges, bin_spikes, isi_violation_fraction
from engine.ingest.tracking import frozen_samples, principal_axis, read_position_tracking
from engine.ingest.trials import LapOptions, Trials, assign_bins, check_trials, find_laps


def test_bins_are_half_open_and_edges_do_not_drift():
    edges = bin_edges((100.0, 101.0), 0.1)
    assert len(edges) == 11 and edges[-1] == pytest.approx(101.0)
    counts = bin_spikes([np.array([100.0, 100.1, 100.15, 100.999, 101.0])], edges)
    assert counts[:, 0].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]  # 101.0 is past the last bin
    long = bin_edges((0.0, 3600.0), 0.001)
    assert long[1_800_000] == 1800.0  # start + k·bin, not a running sum
    with pytest.raises(InputError, match="holds no whole bin"):
        bin_edges((0.0, 0.05), 0.1)


def test_isi_violations_count_short_intervals():
    assert isi_violation_fraction(np.array([0.0, 0.001, 0.1, 0.2, 0.2005]), 0.0015) == pytest.approx(0.5)
    assert math.isnan(isi_violation_fraction(np.array([1.0]), 0.0015))


def _source(times, **columns) -> BehaviourSource:
    return BehaviourSource("b.csv", np.asarray(times, dtype=float), pl.DataFrame(columns))


def test_alignment_bridges_one_missing_sample_but_not_two():
    times = np.r_[np.arange(0, 1, 0.1), np.arange(1.1, 2.05, 0.1), np.arange(2.3, 3.01, 0.1)]  # 1.0, 2.1, 2.2 gone
    source = _source(times, x=times * 10)
    centres = np.arange(0.05, 3.0, 0.1)
    aligned, record = align_source(source, centres, {}, max_gap_s=0.25)
    x = aligned["x"].to_numpy()
    assert record["methods"] == {"x": "interpolate"}
    missing = centres[np.isnan(x)]
    np.testing.assert_allclose(missing, [2.05, 2.15, 2.25])  # the 0.3 s gap; the 0.2 s one is bridged
    np.testing.assert_allclose(x[~np.isnan(x)], centres[~np.isnan(x)] * 10)


def test_categorical_holds_the_last_value_and_circular_goes_the_short_way_round():
    times = np.arange(0, 1.0, 0.1)
    heading = np.array([3.0, 3.1, -3.1, -3.0, -2.9, 2.9, 3.0, 3.1, -3.1, -3.0])  # crosses ±π back and forth
    source = _source(times, state=["a"] * 5 + ["b"] * 5, heading=heading)
    centres = np.array([0.45, 0.5, 0.55, 0.15])
    aligned, record = align_source(source, centres, {"heading": "circular"}, max_gap_s=None)
    assert record["methods"] == {"state": "last", "heading": "circular"}
    assert aligned["state"].to_list() == ["a", "b", "b", "a"]
    # Halfway between 3.1 and −3.1 is π (not 0): the interpolation goes through the short side.
    h = aligned["heading"].to_numpy()
    assert abs(abs(h[3]) - math.pi) < 0.02
    assert all(-math.pi <= v < math.pi for v in h)


def test_a_source_that_does_not_reach_the_bins_is_refused():
    source = _source(np.arange(5.0, 10.0, 0.02), x=np.zeros(250))
    with pytest.raises(InputError, match=r"b\.csv: covers 5\.000-9\.980 s .* --time-range 5\.000,9\.950"):
        align_source(source, np.arange(0.05, 10.0, 0.1), {}, None)


def test_laps_tile_runs_skip_the_ends_and_tracking_loss_breaks_a_lap():
    t = np.arange(0, 40, 0.05)
    phase = t % 8  # run up 0-3 s, wait 3-4, run down 4-7, wait 7-8
    position = np.interp(phase, [0, 3, 4, 7, 8], [0, 100, 100, 0, 0])
    laps = find_laps(t, position)
    assert laps.names == [f"lap {i}" for i in range(1, 11)] and laps.variables["direction"][:2].to_list() == [
        "increasing", "decreasing"]
    assert (laps.start[1:] == laps.stop[:-1]).all()  # no holes between laps
    runs = find_laps(t, position, LapOptions(with_ends=False))
    assert runs.names[0] == "run 1" and len(runs.names) == 10 and np.allclose(runs.stop - runs.start, 3 * 0.7, atol=0.1)
    lost = position.copy()
    lost[(t > 9) & (t < 11)] = np.nan  # 2 s without position, in the middle of a run
    broken = find_laps(t, lost)
    assert len(broken.names) == 9 and not ((broken.start < 10) & (broken.stop > 10)).any()


def test_trials_are_checked_and_bins_go_to_the_trial_holding_their_centre():
    trials = check_trials(Trials("t.csv", np.array([2.0, 0.0]), np.array([3.0, 1.0]), ["b", "a"], pl.DataFrame(
        {"v": [2, 1]})))
    assert trials.names == ["a", "b"] and trials.variables["v"].to_list() == [1, 2]  # sorted by start
    assert assign_bins(np.array([-0.5, 0.0, 0.99, 1.0, 2.5, 3.0]), trials).tolist() == [-1, 0, 0, -1, 1, -1]
    with pytest.raises(InputError, match=r"t\.csv: trial 'a' appears more than once"):
        check_trials(Trials("t.csv", np.array([0.0, 2.0]), np.array([1.0, 3.0]), ["a", "a"], pl.DataFrame()))


def test_smoothing_never_crosses_a_trial_boundary():
    counts = np.zeros((20, 2))
    counts[9, 0] = 10  # the last bin of trial 0
    counts[:, 1] = 3
    trial_of = np.repeat([0, 1], 10)
    smooth = smooth_within_trials(counts, trial_of, sigma_bins=2.0)
    assert (smooth[10:, 0] == 0).all()  # nothing leaks into trial 1
    assert smooth[7:10, 0].sum() > 0 and smooth[9, 0] > smooth[8, 0]
    np.testing.assert_allclose(smooth[:, 1], 3.0)  # renormalised at the edges: a constant stays constant
    z = zscore_within_trials(counts, trial_of)
    np.testing.assert_allclose(z[:10, 0].mean(), 0, atol=1e-12)
    assert (z[10:, 0] == 0).all() and (z[:, 1] == 0).all()  # no variance: 0, not NaN


def test_tracking_reader_finds_the_track_and_drops_frozen_samples(tmp_path: Path):
    t = np.arange(0, 60, 1 / 60)
    along = 50 + 100 * (1 - np.cos(2 * np.pi * t / 10)) / 2  # back and forth, 10 s period
    x, y = 100 + 0.8 * along, 300 - 0.6 * along
    frozen = t > 45
    x[frozen], y[frozen] = 600, 5
    write_tracking(tmp_path / "a.videoPositionTracking", 1000 + t, np.round(x), np.round(y))
    source = read_position_tracking(tmp_path / "a.videoPositionTracking")
    assert source.details["n_frozen_samples"] == int(frozen.sum())
    position = source.columns["position"].to_numpy()
    assert np.isnan(position[frozen]).all()
    assert np.corrcoef(position[~frozen], along[~frozen])[0, 1] > 0.999
    np.testing.assert_allclose(source.details["axis"], [0.8, -0.6], atol=0.01)
    assert source.times[0] == pytest.approx(1000.0)  # ticks / 30 kHz, no offset
    speed = source.columns["speed"].to_numpy()[~frozen]
    true_speed = np.abs(np.gradient(along, t))[~frozen]
    assert np.median(np.abs(speed - true_speed)) < 5  # px/s, after 0.1 s smoothing of 1 px steps
    assert frozen_samples(np.arange(5.0), np.zeros(5), np.zeros(5), 0).sum() == 0
    centre, axis, share = principal_axis(np.array([0.0, 1, 2, 3]), np.array([0.0, 0, 0, 0.1]))
    assert axis[0] > 0.99 and centre[0] == pytest.approx(1.5) and share > 0.99  # a line
    # An L-shaped path (two arms at right angles): no axis holds most of its movement.
    arm = np.linspace(0, 10, 50)
    _, _, l_share = principal_axis(np.r_[arm, np.zeros(50)], np.r_[np.zeros(50), arm])
    assert 0.4 < l_share < 0.9
