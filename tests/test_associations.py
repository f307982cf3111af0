"""Associations of features with natural variables: hand-computed scores, calibrated nulls, BH, missing values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.signal import lfilter

from engine.analysis.associations import AssociationConfig, Variable, associate, tuning_curves
from engine.analysis.nulls import benjamini_hochberg
from engine.analysis.selectivity import Binning


def rows_of(frame, **where) -> dict:
    """The single row matching column == value for every keyword, as a dict."""
    for name, value in where.items():
        frame = frame.filter(frame[name] == value)
    assert frame.height == 1, frame
    return frame.row(0, named=True)


def test_selectivity_auroc_contrast_on_a_ten_example_toy():
    # feature 0 over 10 examples; feature 1 never fires. Value A on examples 0-4, B on 5-9.
    #   in A: 0 2 0 1 3   (3 active of 5, activation sum 6)
    #   in B: 0 0 1 0 0   (1 active of 5, activation sum 1)
    a = np.array([0, 2, 0, 1, 3, 0, 0, 1, 0, 0], dtype=float)
    acts = sp.csr_matrix(np.c_[a, np.zeros(10)])
    cond = Variable("cond", "categorical", categories=np.array([0] * 5 + [1] * 5), labels=["A", "B"])
    out = associate(acts, np.zeros(10, int), [cond], AssociationConfig(n_shuffles=20))
    assert out.height == 4  # 2 features × 2 values
    row = rows_of(out, feature_id=0, value="A")
    # selectivity: f_during = 3/5, f_outside = 1/5 → 0.6 / (0.6 + 0.2) = 0.75
    assert row["selectivity"] == pytest.approx(0.75)
    # AUROC over the 25 (in, out) pairs, out = {0,0,1,0,0}: in 0 → 4 ties = 2; in 2 → 5; in 0 → 2;
    # in 1 → 4 below + 1 tie = 4.5; in 3 → 5. (2 + 5 + 2 + 4.5 + 5) / 25 = 0.74
    assert row["auroc"] == pytest.approx(0.74)
    # selectivity index of mean activations: (6/5 − 1/5) / (6/5 + 1/5) = 5/7; what the null is computed for
    assert row["statistic"] == pytest.approx(5 / 7)
    assert row["effect_size"] == pytest.approx(0.48)  # 2 · 0.74 − 1
    # contrast: (6/5 − 1/5) / (7/10 + eps) = 1 / 0.7
    assert row["contrast"] == pytest.approx(1 / 0.7)
    assert row["n_on"] == 3
    # MI of on/off with the value: cells on-A .3, off-A .2, on-B .1, off-B .4; p(on) .4, p(A) .5
    mi = 0.3 * math.log2(0.3 / 0.2) + 0.2 * math.log2(0.2 / 0.3) + 0.1 * math.log2(0.1 / 0.2) \
        + 0.4 * math.log2(0.4 / 0.3)
    assert row["mutual_information"] == pytest.approx(mi)  # 0.1245 bits
    assert row["low"] is None and row["high"] is None
    other = rows_of(out, feature_id=0, value="B")
    # B is the mirror image: 0.2 / 0.8, 1 − 0.74, −1 / 0.7
    assert (other["selectivity"], other["auroc"], other["contrast"], other["n_on"]) == pytest.approx(
        (0.25, 0.26, -1 / 0.7, 1))
    dead = rows_of(out, feature_id=1, value="A")
    # never active: selectivity 0/0 is undefined, all ties give AUROC ½, and there is nothing to test
    assert dead["selectivity"] is None and dead["auroc"] == 0.5 and dead["contrast"] == 0.0
    assert dead["statistic"] is None and dead["p_value"] is None and dead["q_value"] is None


def test_mutual_information_of_a_perfectly_informative_feature_is_one_bit():
    n = 100
    flag = np.arange(n) % 2  # 0 1 0 1 …
    exact = np.where(flag == 1, 1.0 + np.arange(n) / n, 0.0)  # active exactly when flag = 1
    half = np.where((np.arange(n) // 2) % 2 == 0, 1.0, 0.0)  # active on half the 0s and half the 1s
    upper = np.where(np.arange(n) >= n // 2, 2.0, 0.0)  # active exactly in the upper half of x
    acts = sp.csc_matrix(np.c_[exact, half, upper])
    variables = [Variable("flag", "binary", values=flag.astype(float)),
                 Variable("x", "continuous", values=np.arange(n, dtype=float))]
    out = associate(acts, np.repeat(np.arange(4), 25), variables, AssociationConfig(binning=Binning(n_bins=2), n_shuffles=50))
    # H(on) = 1 bit and on determines the flag: I = 1 bit, on both value rows
    assert rows_of(out, feature_id=0, variable="flag", value="1")["mutual_information"] == pytest.approx(1.0)
    assert rows_of(out, feature_id=0, variable="flag", value="0")["mutual_information"] == pytest.approx(1.0)
    # on/off independent of the flag (25 of 50 in each): I = 0 exactly
    assert rows_of(out, feature_id=1, variable="flag", value="1")["mutual_information"] == pytest.approx(0.0)
    # two readable bins of x (step 50), active exactly in the upper one: 1 bit, and that bin is the field
    row = rows_of(out, feature_id=2, variable="x")
    assert row["mutual_information"] == pytest.approx(1.0) and row["statistic"] == pytest.approx(1.0)
    assert (row["low"], row["high"], row["value"]) == (50.0, 100.0, "in [50, 100)")
    assert row["selectivity"] == 1.0 and row["auroc"] == 1.0 and row["n_on"] == 50


def test_tuning_curve_bins_means_and_sem():
    # x = 0 … 3, 10 … 13 and one missing; 2 bins of the readable width 10: {0,1,2,3} and {10,…,13}
    x = np.r_[np.arange(4.0), np.arange(10.0, 14.0), np.nan]
    a = np.array([0, 1, 0, 1, 2, 4, 0, 2, 100.0])  # the 100 sits on the missing x: must not count
    curves = tuning_curves(sp.csr_matrix(a[:, None]), [Variable("x", "continuous", values=x)],
                           AssociationConfig(binning=Binning(n_bins=2))).sort("bin")
    assert curves["bin"].to_list() == [0, 1]
    assert curves["low"].to_list() == [0.0, 10.0] and curves["high"].to_list() == [10.0, 20.0]
    assert curves["n"].to_list() == [4, 4]
    # bin 0: 0 1 0 1 → mean 0.5, sample variance (4 · 0.25) / 3 = 1/3, SEM √(1/3 / 4) = √(1/12)
    # bin 1: 2 4 0 2 → mean 2, sample variance (0 + 4 + 4 + 0) / 3 = 8/3, SEM √(8/3 / 4) = √(2/3)
    assert curves["mean"].to_list() == pytest.approx([0.5, 2.0])
    assert curves["sem"].to_list() == pytest.approx([math.sqrt(1 / 12), math.sqrt(2 / 3)])


def random_sparse(rng: np.random.Generator, n: int, n_features: int, density: float) -> sp.csc_matrix:
    return sp.random(n, n_features, density=density, random_state=rng, format="csc",
                     data_rvs=lambda k: rng.exponential(size=k))


def test_null_gives_uniform_p_values_for_independent_features():
    rng = np.random.default_rng(1)
    n, trial_length = 10_000, 200
    acts = random_sparse(rng, n, 400, 0.05)
    position = np.arange(n) % trial_length
    variables = [Variable("cat", "categorical", categories=rng.integers(0, 3, n)),
                 # marks the quarters of each trial: shifted copies of it overlap each other more than
                 # they overlap the original, which made p-values too small before nulls went via a hub
                 Variable("quarter", "categorical", categories=position * 4 // trial_length)]
    out = associate(acts, np.arange(n) // trial_length, variables, AssociationConfig(n_shuffles=200, seed=3))
    for name, n_tests in (("cat", 1200), ("quarter", 1600)):
        p = out.filter(out["variable"] == name)["p_value"].to_numpy()
        assert len(p) == n_tests
        assert 0.02 <= (p < 0.05).mean() <= 0.07, name
        assert 0.4 <= (p < 0.5).mean() <= 0.6, name
        # exact Monte-Carlo p-values: never below 1 / (1 + max_shuffles), and no excess in the far tail
        # that the extra shuffles reach
        assert p.min() >= 1 / 25_001 and (p < 0.002).mean() <= 0.006, name


def test_planted_feature_reaches_the_p_floor_and_survives_fdr():
    rng = np.random.default_rng(2)
    n = 3000
    category = rng.integers(0, 3, n)
    planted = np.where(category == 0, 1.0 + rng.random(n), 0.0)  # fires exactly on category 0
    acts = sp.hstack([sp.csc_matrix(planted[:, None]), random_sparse(rng, n, 2, 0.1)]).tocsc()
    out = associate(acts, np.arange(n) // 100, [Variable("cat", "categorical", categories=category)],
                    AssociationConfig(n_shuffles=200))
    row = rows_of(out, feature_id=0, value="0")
    # No shuffle reaches it: the exact floor 1/201 already passes the FDR in a family of 9 tests
    assert row["p_value"] == pytest.approx(1 / 201) and row["n_shuffles"] == 200
    assert row["q_value"] < 0.05
    assert row["selectivity"] == 1.0 and row["auroc"] == 1.0


def ar1(rng: np.random.Generator, n_trials: int, length: int, k: int, rho: float) -> np.ndarray:
    """k independent stationary AR(1) series (unit variance) per trial, stacked trial by trial."""
    noise = rng.normal(size=(n_trials, length, k)) * math.sqrt(1 - rho**2)
    noise[:, 0, :] = rng.normal(size=(n_trials, k))
    return lfilter([1.0], [1.0, -rho], noise, axis=1).reshape(n_trials * length, k)


def test_circular_shift_null_controls_false_positives_for_slow_series():
    # A slow random walk (the distractor) against slow features that are independent of it. Pooled over
    # trials, two slow series line up by chance; shifting within trials keeps that in the null.
    rng = np.random.default_rng(0)
    n_trials, length = 40, 400
    acts = sp.csr_matrix(np.maximum(ar1(rng, n_trials, length, 300, 0.98) - 1.0, 0.0))
    walk = np.cumsum(rng.normal(size=(n_trials, length)), axis=1).ravel()
    variables = [Variable("walk", "continuous", values=walk)]
    config = AssociationConfig(n_shuffles=200)
    shifted = associate(acts, np.repeat(np.arange(n_trials), length), variables, config)
    # the contrast: one-example "trials" turn the null into a per-example permutation
    naive = associate(acts, np.arange(n_trials * length), variables, config)
    assert (shifted["p_value"] < 0.05).mean() <= 0.12
    assert (naive["p_value"] < 0.05).mean() >= 0.5


def test_circular_best_range_wraps_through_zero():
    rng = np.random.default_rng(4)
    n = 2000
    angle = rng.uniform(0, 2 * np.pi, n)
    near_zero = (angle < 0.4) | (angle > 2 * np.pi - 0.4)
    acts = sp.csr_matrix(np.where(near_zero, 1.0 + rng.random(n), 0.0)[:, None])
    out = associate(acts, np.arange(n) // 100,
                    [Variable("heading", "circular", values=angle, period=2 * np.pi),
                     Variable("heading_linear", "continuous", values=angle)],
                    AssociationConfig(binning=Binning(n_bins=10)))
    row = rows_of(out, variable="heading")
    # 10 bins of width 2π/10: the tuning sits in the last bin and the first; the field runs 9 → 0
    assert row["low"] == pytest.approx(0.9 * 2 * np.pi) and row["high"] == pytest.approx(0.1 * 2 * np.pi)
    assert row["value"] == "in [5.65487, 0.628319)"
    assert row["selectivity"] > 0.95 and row["p_value"] <= 1 / 201
    linear = rows_of(out, variable="heading_linear")
    assert linear["low"] < linear["high"]  # a continuous variable has no wrap: one side only


def test_benjamini_hochberg_by_hand():
    # sorted p: .01 .03 .04 .20, m = 4 → p·m/rank: .04 .06 .0533 .20; running min from the top:
    # .04 .0533 .0533 .20, back in the input order
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.20]))
    assert q == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert benjamini_hochberg(np.array([0.5, 0.9])) == pytest.approx([0.9, 0.9])
    # An undefined p (a test that could not be made) stays undefined and does not count in m.
    with_nan = benjamini_hochberg(np.array([0.01, np.nan, 0.04, 0.03, 0.20]))
    assert np.isnan(with_nan[1])
    assert with_nan[[0, 2, 3, 4]] == pytest.approx(q)
    assert np.isnan(benjamini_hochberg(np.array([np.nan, np.nan]))).all()


def test_missing_values_are_left_out_not_a_value():
    # examples 4 and 5 are missing, active, and one ranks below the present activations: counting them
    # would change f_out, the means and the ranks of the 1s among the nonzeros
    a = np.array([1, 0, 0, 0, 0.5, 5, 1, 0], dtype=float)
    cats = np.array([0, 0, 1, 1, -1, -1, 0, 1])
    flags = np.array([1, 1, 0, 0, np.nan, np.nan, 1, 0])
    variables = [Variable("cat", "categorical", categories=cats, labels=["a", "b"]),
                 Variable("flag", "binary", values=flags)]
    out = associate(sp.csr_matrix(a[:, None]), np.zeros(8, int), variables, AssociationConfig(n_shuffles=20))
    assert sorted(out.filter(out["variable"] == "cat")["value"].to_list()) == ["a", "b"]
    assert sorted(out.filter(out["variable"] == "flag")["value"].to_list()) == ["0", "1"]
    for variable, value in (("cat", "a"), ("flag", "1")):
        row = rows_of(out, variable=variable, value=value)
        # over the 6 present examples: in = {1, 0, 1}, out = {0, 0, 0}
        assert row["n_on"] == 2
        assert row["selectivity"] == 1.0  # f_out = 0 / 3
        assert row["auroc"] == pytest.approx(7.5 / 9)  # 1s beat 3 each (6), the 0 ties 3 (1.5)
        assert row["contrast"] == pytest.approx(2.0)  # (2/3 − 0) / (2/6)
        # on/off × value over 6: H(on) = h(1/3), H(on | value) = ½ h(2/3) → I = ½ h(1/3) = 0.459 bits
        h = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
        assert row["mutual_information"] == pytest.approx(h / 2)
    # continuous: the NaN examples fall in no bin; 2 bins split at the median 2.5 of the 6 present x:
    # x 0 1 2 → a 1 0 0 and x 3 4 5 → a 0 1 0
    x = np.array([0, 1, 2, 3, np.nan, np.nan, 4, 5])
    curves = tuning_curves(sp.csr_matrix(a[:, None]), [Variable("x", "continuous", values=x)],
                           AssociationConfig(binning=Binning(n_bins=2))).sort("bin")
    assert curves["n"].to_list() == [3, 3] and curves["mean"].to_list() == pytest.approx([1 / 3, 1 / 3])


def test_trial_level_variable_is_tested_by_swapping_trials():
    # a condition that is constant within each trial does not move under shifts within trials;
    # the null swaps whole trials' conditions instead
    rng = np.random.default_rng(5)
    n_trials, length = 30, 20
    condition = np.repeat(np.arange(n_trials) % 2, length)
    acts = sp.csc_matrix(np.c_[np.where(condition == 1, rng.exponential(size=n_trials * length), 0.0),
                               rng.exponential(size=n_trials * length) * (rng.random(n_trials * length) < 0.2)])
    out = associate(acts, np.repeat(np.arange(n_trials), length),
                    [Variable("condition", "categorical", categories=condition)], AssociationConfig())
    assert rows_of(out, feature_id=0, value="1")["p_value"] <= 1 / 201
    assert rows_of(out, feature_id=1, value="1")["p_value"] > 0.01


def test_short_trials_fall_back_to_block_permutation():
    rng = np.random.default_rng(6)
    n = 900
    category = rng.integers(0, 2, n)
    acts = sp.csr_matrix(np.where(category == 1, 1.0, 0.0)[:, None])
    out = associate(acts, np.arange(n) // 3, [Variable("c", "categorical", categories=category)],
                    AssociationConfig())
    assert rows_of(out, value="1")["p_value"] <= 1 / 201


def test_results_do_not_depend_on_the_number_of_threads():
    rng = np.random.default_rng(7)
    n = 1000
    acts = random_sparse(rng, n, 20, 0.1)
    variables = [Variable("c", "categorical", categories=rng.integers(0, 3, n)),
                 Variable("x", "continuous", values=rng.normal(size=n))]
    one = associate(acts, np.arange(n) // 50, variables, AssociationConfig(n_shuffles=30, n_threads=1))
    three = associate(acts, np.arange(n) // 50, variables, AssociationConfig(n_shuffles=30, n_threads=3))
    assert one.equals(three)
