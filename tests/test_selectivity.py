"""Selectivity statistics: readable bins, half-height fields, the sparsity-robust index, conjunctions,
and p-values that are exact Monte-Carlo counts, calibrated on slow and sparse data, with more shuffles
where an FDR decision needs them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from engine.analysis.associations import AssociationConfig, Variable, associate
from engine.analysis.nulls import family_q_values
from engine.analysis.rank import RankConfig, _suggestions, _with_range, rank_config
from engine.analysis.selectivity import Binning, continuous_edges, field_mask, nice_step
from engine.errors import InputError
from tests.test_associations import ar1


def test_readable_steps_and_edges():
    assert [nice_step(x) for x in (0.07, 0.12, 0.3, 0.9, 4.2, 24)] == [0.1, 0.2, 0.5, 1.0, 5.0, 25.0]
    rng = np.random.default_rng(0)
    position = rng.uniform(0.0, 1.6, 3000)  # 3000 examples / 150 per bin = 20 bins → step 0.1 (16 bins)
    edges = continuous_edges(position, Binning())
    assert [repr(float(e)) for e in edges] == [repr(round(0.1 * i, 1)) for i in range(17)]  # 0.0, 0.1, … 1.6
    speed = rng.exponential(10.0, 3000)  # a long tail: the 1 % beyond the 99th percentile joins the last bin
    edges = continuous_edges(speed, Binning())
    assert edges[0] == 0.0 and edges[-1] == np.inf and np.allclose(np.diff(edges[:-1]), 2.5)


def test_field_is_the_run_above_half_height_around_the_peak():
    means = np.array([[0, 1, 3, 4, 2.5, 1, 0, 3.5],   # half height 2: bins 2-4; bin 7 is above but apart
                      [4, 1, 0, 0, 0, 0, 0, 3],       # circular: the field wraps 7 → 0
                      [1, 1, 1, 1, 1, 1, 1, 1]], float)  # flat: no field
    assert field_mask(means, circular=False)[0].nonzero()[0].tolist() == [2, 3, 4]
    assert field_mask(means, circular=True)[1].nonzero()[0].tolist() == [0, 7]
    assert field_mask(means, circular=False)[1].nonzero()[0].tolist() == [0]  # on a line no wrap
    assert not field_mask(means, circular=False)[2].any()


def test_a_sparse_feature_is_scored_by_its_selectivity_not_its_density():
    # Active in 20 of 3000 bins, all in one stretch of the track: an AUROC over all bins barely moves
    # (every zero ties), the selectivity index is 1 and the field is found, with a small exact p.
    rng = np.random.default_rng(1)
    n = 3000
    position = np.tile(np.linspace(0.0, 1.6, 60), n // 60)
    activation = np.zeros(n)
    inside = np.flatnonzero((position >= 0.4) & (position < 0.6))
    activation[rng.choice(inside, 20, replace=False)] = rng.uniform(1, 2, 20)
    noise = (rng.random((n, 30)) < 0.05) * rng.random((n, 30))
    out = associate(sp.csc_matrix(np.c_[activation, noise]), np.arange(n) // 60,
                    [Variable("position", "continuous", position)], AssociationConfig())
    row = out.filter(pl.col("feature_id") == 0).row(0, named=True)
    assert row["effect_size"] < 0.1 and row["statistic"] == 1.0
    assert row["low"] >= 0.3 and row["high"] <= 0.7 and row["q_value"] < 0.05
    assert row["p_value"] < 1 / 201 and row["n_shuffles"] > 200  # more shuffles where the decision needed them


def test_discrete_circular_variable_uses_its_levels():
    rng = np.random.default_rng(2)
    n = 4000
    target = rng.choice(np.arange(0, 360, 45), n).astype(float)  # 8 reach targets, declared circular
    activation = np.where(target == 90, rng.uniform(1, 2, n), 0.0)
    out = associate(sp.csc_matrix(activation[:, None]), np.arange(n) // 40,
                    [Variable("target", "circular", target, period=360.0)], AssociationConfig(max_shuffles=200))
    row = out.row(0, named=True)
    assert (row["value"], row["low"], row["high"]) == ("in [90, 135)", 90.0, 135.0)
    assert row["statistic"] == 1.0 and row["q_value"] < 0.05


def place_recording(rng: np.random.Generator, n_laps: int = 80):
    """Laps along a 1.6 m track, out (left) and back (right), one trial each; feature 0 is a field that
    fires running left only, feature 1 the same field in both directions, the rest noise."""
    lap = np.r_[np.linspace(0, 1.6, 40), np.linspace(1.6, 0, 40)]
    position = np.tile(lap, n_laps)
    side = np.tile(np.r_[np.zeros(40), np.ones(40)], n_laps)
    field = (position >= 0.6) & (position < 0.9)
    n = len(position)
    acts = np.c_[np.where(field & (side == 0), rng.uniform(1, 2, n), 0.0),
                 np.where(field, rng.uniform(1, 2, n), 0.0),
                 (rng.random((n, 20)) < 0.05) * rng.random((n, 20))]
    return sp.csc_matrix(acts), np.arange(n) // 80, [
        Variable("position", "continuous", position),
        Variable("side", "categorical", categories=side.astype(np.int64), labels=["left", "right"])]


def test_a_planted_conjunction_is_suggested_as_one_and_its_parts_are_not_preferred():
    acts, trials, variables = place_recording(np.random.default_rng(3))
    assoc = _with_range(associate(acts, trials, variables, AssociationConfig()))
    first = _suggestions(1, assoc, pl.Series([], dtype=pl.Int32), RankConfig()).filter(pl.col("position") == 1)
    by_feature = {r["feature_id"]: r for r in first.to_dicts()}
    conjunctive = by_feature[0]
    assert conjunctive["variable"] == "position and side"
    assert conjunctive["predicate"].endswith("and side = left") and conjunctive["predicate"].startswith("position in [")
    assert conjunctive["value"] is None and conjunctive["low"] is None  # the text is the target
    # Both directions: the conjunction does not beat the field, so the field comes first
    assert by_feature[1]["variable"] == "position"
    both = assoc.filter((pl.col("feature_id") == 1) & (pl.col("kind") == "conjunction"))
    assert both.is_empty() or both["q_value"].fill_null(1.0).min() >= 0.05


def test_p_values_are_calibrated_under_the_null_for_slow_and_sparse_data():
    # Slow features active ~3 % of the time, independent of a slow variable, a within-trial phase and a
    # trial-level condition: every p-value (fields and conjunctions found by search, values, with the
    # extra shuffles some of them get) must be uniform or conservative.
    rng = np.random.default_rng(4)
    n_trials, length = 60, 100
    acts = sp.csc_matrix(np.maximum(ar1(rng, n_trials, length, 200, 0.95) - 1.9, 0.0))
    n = n_trials * length
    variables = [Variable("slow", "continuous", ar1(rng, n_trials, length, 1, 0.99)[:, 0]),
                 Variable("phase", "categorical", categories=(np.arange(n) % length) * 3 // length),
                 Variable("condition", "categorical", categories=np.repeat(rng.integers(0, 2, n_trials), length))]
    out = associate(acts, np.repeat(np.arange(n_trials), length), variables, AssociationConfig(seed=5))
    for kind in ("continuous", "categorical"):
        p = out.filter(pl.col("kind") == kind)["p_value"].drop_nulls().to_numpy()
        assert len(p) >= 200, kind
        assert 0.02 <= (p < 0.05).mean() <= 0.08 and 0.14 <= (p < 0.2).mean() <= 0.26, kind
        assert 0.4 <= (p < 0.5).mean() <= 0.6, kind
    assert (out["q_value"].drop_nulls() < 0.05).sum() <= 2


def test_conjunction_tests_are_calibrated_when_only_one_part_matters():
    # Slow sparse features with a field on a slow x and nothing to do with v (a condition per trial): the
    # test "v = c beats the field" is null for all of them. Forced onto every feature (ranking tests only
    # features with both parts significant), its p-values must be uniform or conservative.
    rng = np.random.default_rng(6)
    n_trials, length = 60, 100
    n = n_trials * length
    x = ar1(rng, n_trials, length, 1, 0.99)[:, 0]
    drive = np.exp(-0.5 * ((x[:, None] - rng.normal(0, 1, 150)[None, :]) / 0.4) ** 2)
    acts = np.maximum(drive + 0.3 * ar1(rng, n_trials, length, 150, 0.9) - 0.8, 0.0)
    condition = np.repeat(rng.integers(0, 2, n_trials), length)
    trials = np.repeat(np.arange(n_trials), length)
    from engine.analysis.active_entries import ActiveEntries
    from engine.analysis.associations import (  # the forced test needs the internals
        _conjunction_p_values,
        _tests,
    )
    from engine.analysis.nulls import Trials
    from engine.analysis.selectivity import encode
    config = AssociationConfig(seed=7)
    coded = [encode(v, n, config.binning) for v in (Variable("x", "continuous", x), Variable(
        "condition", "categorical", categories=condition))]
    pair = next(t for t in _tests(coded, Trials.from_ids(trials), config) if t.partner is not None)
    everyone = pl.DataFrame({"feature_id": list(range(150)) * 2, "variable": ["x"] * 150 + ["condition"] * 150})
    result = _conjunction_p_values(ActiveEntries.build(sp.csc_matrix(acts)), Trials.from_ids(trials), pair, everyone,
                                   config, n_families=1)
    field_test, level_test = (result[m.key][1] for m in pair.members)
    p = np.maximum(field_test, level_test)
    p = p[~np.isnan(p)]
    assert len(p) >= 140
    assert (level_test[~np.isnan(level_test)] < 0.05).mean() <= 0.09  # the null part: no excess
    assert (p < 0.05).mean() <= 0.09 and (p < 0.2).mean() <= 0.27


def test_one_family_is_bh_within_each_variable_times_their_number():
    # a: p 0.01, 0.04 → BH 0.02, 0.04; b: 0.01, 0.5 → 0.02, 0.5; two sub-families → × 2, capped at 1
    q = family_q_values(np.array([0.01, 0.04, 0.01, 0.5, np.nan]), np.array(["a", "a", "b", "b", "c"]))
    assert q[:4] == pytest.approx([0.04, 0.08, 0.04, 1.0]) and np.isnan(q[4])


def test_max_shuffles_is_checked():
    assert rank_config(None).associations.max_shuffles == 25_000
    assert rank_config(20_000).associations.max_shuffles == 20_000
    for bad in (0, 199, -5, 10**7):
        with pytest.raises(InputError, match="--max-shuffles"):
            rank_config(bad)


def test_a_trial_condition_blank_between_trials_is_tested_by_swapping_trials():
    # The condition is recorded from cue to outcome and blank in the inter-trial interval: still one value
    # per trial, so whole trials swap it. Shifting it within the trial would keep it on the same trials, and
    # a feature that fires in condition-1 trials would look like chance (it did in the sample recording).
    rng = np.random.default_rng(8)
    n_trials, length = 120, 30
    condition = np.repeat(rng.integers(0, 4, n_trials), length)
    interval = np.tile(np.arange(length) >= 22, n_trials)
    codes = np.where(interval, -1, condition)
    activation = np.where((condition == 1) & ~interval, rng.uniform(1, 2, n_trials * length), 0.0)
    out = associate(sp.csc_matrix(activation[:, None]), np.repeat(np.arange(n_trials), length),
                    [Variable("condition", "categorical", categories=codes)], AssociationConfig(max_shuffles=200))
    row = out.filter(pl.col("value") == "1").row(0, named=True)
    assert row["statistic"] == 1.0 and row["p_value"] == pytest.approx(1 / 201) and row["q_value"] < 0.05
