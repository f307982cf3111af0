"""The sample recording: deterministic, the planted structure is what the issue asks for, and real."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sample_data import SampleConfig, generate


@pytest.fixture(scope="module")
def recording():
    return generate(SampleConfig(seed=0))


def test_default_size_and_types(recording):
    assert recording.counts.shape == (60_000, 120)
    assert recording.counts.dtype == np.int32 and recording.counts.min() >= 0
    assert recording.metadata.height == 60_000
    assert recording.metadata["trial"].n_unique() > 300


def test_same_seed_same_recording_other_seed_differs():
    small = SampleConfig(n_bins=3000, n_units=40)
    a, b = generate(small), generate(small)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.metadata.equals(b.metadata) and a.loadings.equals(b.loadings)
    c = generate(SampleConfig(n_bins=3000, n_units=40, seed=1))
    assert not np.array_equal(a.counts, c.counts)


def test_natural_features_have_the_kinds_the_issue_asks_for(recording):
    meta = recording.metadata
    assert sorted(meta["condition"].drop_nulls().unique().to_list()) == list(range(8))
    # The cued condition is in force from cue to outcome; the ITI has none.
    assert meta.filter(pl.col("phase") == "iti")["condition"].null_count() == (meta["phase"] == "iti").sum()
    assert meta.filter(pl.col("phase") != "iti")["condition"].null_count() == 0
    assert set(meta["phase"].unique().to_list()) == {"cue", "run", "outcome", "iti"}
    assert set(meta["reward"].unique().to_list()) == {0, 1}
    position = meta["position"].drop_nulls()
    assert position.min() >= 0 and position.max() <= 1
    assert meta["speed"].drop_nulls().min() >= 0 and meta["speed"].max() > 30
    # Position is missing off the track (the ITI), never invented.
    assert meta.filter(pl.col("phase") == "iti")["position"].null_count() == (meta["phase"] == "iti").sum()


def test_ensembles_are_sparse_and_overlapping(recording):
    per_unit = np.bincount(recording.loadings["unit_id"].to_numpy(), minlength=120)
    assert per_unit.max() <= 3
    assert (per_unit == 0).sum() >= 10, "noise units that no latent drives"
    assert (per_unit >= 2).sum() >= 20, "superposition: units in several ensembles"
    per_latent = recording.loadings.group_by("latent_id").len()["len"]
    assert per_latent.min() >= 5


def test_ground_truth_names_a_natural_feature_value_per_latent(recording):
    latents = recording.latents
    variables = set(latents["variable"])
    assert variables == {"condition", "phase", "reward", "position", "speed"}
    assert latents.filter(pl.col("variable") == "condition").height == 8
    roles = dict(recording.variable_roles.iter_rows())
    assert all(roles[v] == "encoded" for v in variables)
    assert {v for v, r in roles.items() if r == "distractor"} == {"distractor", "house_light"}


def test_planted_latents_really_drive_their_units(recording):
    """An ensemble's units fire more when its latent is on: the structure is in the counts."""
    counts = recording.counts.astype(float)
    activity = recording.activity
    for latent_id in (0, 9, 12):  # condition 0, reward, a place field
        on = np.zeros(len(counts), bool)
        strong = activity.filter((pl.col("latent_id") == latent_id) & (pl.col("value") > 0.5))
        on[strong["example_id"].to_numpy()] = True
        members = recording.loadings.filter(pl.col("latent_id") == latent_id)["unit_id"].to_numpy()
        assert counts[on][:, members].mean() > 2 * counts[~on][:, members].mean()


def _max_abs_correlation(centred_counts: np.ndarray, signal: np.ndarray) -> float:
    z = (signal - signal.mean()) / signal.std()
    return float(np.abs(centred_counts.T @ z).max() / len(z))


def test_no_unit_encodes_the_distractor_beyond_its_circular_shift_null(recording):
    """The slow distractor correlates with counts by chance only: no more than its shifted copies do.

    A naive correlation test would be fooled (the distractor is a slow random walk, so chance
    correlations are large); the null keeps its autocorrelation by shifting it in time.
    """
    counts = recording.counts.astype(float)
    centred = (counts - counts.mean(0)) / (counts.std(0) + 1e-9)
    distractor = recording.metadata["distractor"].to_numpy()
    observed = _max_abs_correlation(centred, distractor)
    shifts = np.random.default_rng(0).integers(2000, len(distractor) - 2000, size=100)
    null = np.array([_max_abs_correlation(centred, np.roll(distractor, s)) for s in shifts])
    assert (null >= observed).mean() > 0.05
    speed = recording.metadata["speed"].fill_null(0).to_numpy()
    assert _max_abs_correlation(centred, speed) > np.quantile(null, 0.99) * 3, "an encoded variable stands out"
