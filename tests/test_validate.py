"""Validation of labels on test: hand-computed co-occurrence, signature, calibrated p-values, decoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.validation.cross_validation import binary_log_loss
from engine.validation.validate import (
    ValidateConfig,
    choose_threshold,
    cooccurrence,
    decode_scores,
    decoding_report,
    signature_units,
    validate_config,
    verdicts,
)


def slow_binary(rng, n_trials: int, length: int, mean_run: float = 8.0) -> np.ndarray:
    """On/off runs of geometric length inside each trial: slow, varying within trials."""
    out = []
    for _ in range(n_trials):
        state, row = bool(rng.integers(2)), []
        while len(row) < length:
            row += [state] * int(rng.geometric(1 / mean_run))
            state = not state
        out.append(row[:length])
    return np.array(out).ravel()


def test_choose_threshold_hand_case():
    # Positives have 1, 2, 3; negatives 0, 0, 0.5. Candidates 0, 0.5, 1, 2, 3:
    # t = 0 → on {0.5, 1, 2, 3}: one FP; t = 0.5 → on {1, 2, 3}: perfect, MCC 1; t = 1 → misses 1.
    a = np.array([0, 0, 1, 2, 3, 0.5])
    present = np.array([0, 0, 1, 1, 1, 0], bool)
    assert choose_threshold(a, present) == 0.5
    # P never present: MCC is undefined for every threshold → 0, "on whenever active".
    assert choose_threshold(np.array([0.0, 0.0, 5.0]), np.array([0, 0, 0], bool)) == 0.0  # MCC undefined


def test_cooccurrence_hand_case():
    # on:      1 1 1 0 0 0 0 1 0 0
    # present: 1 1 0 1 0 0 0 0 0 0
    # → TP 2, FP 2, FN 1, TN 5
    a = np.array([2, 3, 1, 0, 0, 0, 0, 4, 0, 0], float)
    present = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], bool)
    trial = np.repeat([0, 1], 5)
    out = cooccurrence(a, present, trial, 0.5, ValidateConfig(n_bootstrap=50, n_shifts=20))
    assert (out["tp"], out["fp"], out["fn"], out["tn"]) == (2, 2, 1, 5)
    assert out["precision"] == pytest.approx(2 / 4)  # TP / (TP + FP)
    assert out["recall"] == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert out["specificity"] == pytest.approx(5 / 7)  # TN / (TN + FP)
    assert out["f1"] == pytest.approx(4 / 7)  # 2TP / (2TP + FP + FN) = 4 / 7
    # MCC = (2·5 − 2·1) / sqrt(4 · 3 · 7 · 6) = 8 / sqrt(504)
    assert out["mcc"] == pytest.approx(8 / math.sqrt(504))
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 5 / 7) / 2)
    assert out["n_test_trials"] == 2 and out["n_shifts"] == 20
    # Never on while the predicate varies: precision is 0/0 → NaN, but the feature says nothing about the
    # predicate, so MCC is 0 (the usual convention) and no null draw can do worse: p = 1.
    none = cooccurrence(np.zeros(10), present, trial, 0.5, ValidateConfig(n_bootstrap=20, n_shifts=5))
    assert math.isnan(none["precision"]) and none["mcc"] == 0 and none["p_value"] == 1
    assert none["recall"] == 0
    # A predicate that never holds: MCC is undefined, and so is its p-value.
    never = cooccurrence(a, np.zeros(10, bool), trial, 0.5, ValidateConfig(n_bootstrap=20, n_shifts=5))
    assert math.isnan(never["mcc"]) and math.isnan(never["p_value"])


def test_bootstrap_ci_contains_estimate_and_is_narrow_for_a_perfect_feature():
    rng = np.random.default_rng(1)
    present = slow_binary(rng, 40, 50)
    trial = np.repeat(np.arange(40), 50)
    noisy = np.where(rng.random(len(present)) < 0.8, present, ~present).astype(float)
    out = cooccurrence(noisy, present, trial, 0.5, ValidateConfig(n_bootstrap=400, n_shifts=20))
    for m in ("mcc", "f1", "balanced_accuracy", "precision", "recall"):
        assert out[f"{m}_ci_low"] <= out[m] <= out[f"{m}_ci_high"], m
    assert out["mcc_ci_high"] - out["mcc_ci_low"] > 0.02
    # Agreement decided per trial (14 trials right, 6 inverted): only 20 independent units of evidence, so
    # the trial bootstrap is wide; resampling the 1,000 single rows gives a CI only ~0.11 wide.
    flip = np.repeat(np.arange(20) < 6, 50)
    per_trial = cooccurrence(np.where(flip, ~present[:1000], present[:1000]).astype(float), present[:1000],
                             trial[:1000], 0.5, ValidateConfig(n_bootstrap=400, n_shifts=5))
    assert per_trial["mcc_ci_high"] - per_trial["mcc_ci_low"] > 0.3
    perfect = cooccurrence(present.astype(float), present, trial, 0.5, ValidateConfig(n_bootstrap=400, n_shifts=20))
    assert perfect["mcc"] == 1 and perfect["mcc_ci_low"] == 1 and perfect["mcc_ci_high"] == 1


def test_p_value_floor_for_identical_feature_and_large_for_independent_slow_one():
    rng = np.random.default_rng(2)
    trial = np.repeat(np.arange(40), 50)
    present = slow_binary(rng, 40, 50)
    cfg = ValidateConfig(n_bootstrap=20, n_shifts=199)
    assert cooccurrence(present.astype(float), present, trial, 0.5, cfg)["p_value"] == pytest.approx(1 / 200)
    # Trial-level predicate (condition): shifts cannot move it, so trials swap; a perfect label still wins.
    cond = np.repeat(rng.integers(2, size=40).astype(bool), 50)
    assert cooccurrence(cond.astype(float), cond, trial, 0.5, cfg)["p_value"] < 0.02
    # Independent slow feature: p-values are calibrated, not piled up near 0 as a per-row shuffle would give.
    # Very slow series (runs of ~25) so that a per-row permutation null would give p < 0.05 ~40 % of the time.
    trial, present = np.repeat(np.arange(40), 100), slow_binary(rng, 40, 100, 25)
    ps = [cooccurrence(slow_binary(rng, 40, 100, 25).astype(float), present, trial, 0.5,
                       ValidateConfig(n_bootstrap=20, n_shifts=99, seed=s))["p_value"] for s in range(30)]
    assert 0.3 < np.mean(ps) < 0.7
    assert np.mean(np.array(ps) < 0.05) <= 0.15


def test_signature_units_squared_norm_share():
    # Squared norm 9 + 4 + 1 + 0.01 = 14.01; unit 0 holds 9/14.01 = 0.64 < 0.8, units 0–1 13/14.01 = 0.93.
    np.testing.assert_array_equal(signature_units(np.array([3, 2, 1, 0.1]), 0.8), [0, 1])
    # Sign does not matter, order is by |weight|.
    np.testing.assert_array_equal(signature_units(np.array([0.1, -1, 2, -3]), 0.8), [3, 2])
    np.testing.assert_array_equal(signature_units(np.array([3, 2, 1, 0.1]), 1.0), [0, 1, 2, 3])
    # Squared, not absolute: [2, 1, 1, 1] → 4/7 = 0.57 ≥ 0.5 gives [0]; |w| would give 2/5 = 0.4 → [0, 1].
    np.testing.assert_array_equal(signature_units(np.array([2, 1, 1, 1]), 0.5), [0])
    assert len(signature_units(np.zeros(4), 0.8)) == 0


def synthetic(rng, n_trials: int, length: int, n_units: int = 50, n_sig: int = 5):
    """Counts where units 0..n_sig−1 carry the target (binary and continuous), the rest are noise."""
    n = n_trials * length
    speed = np.repeat(rng.normal(size=n_trials), length) + np.convolve(rng.normal(size=n), np.ones(10) / 3, "same")
    present = speed > 0
    rates = np.full((n, n_units), 2.0)
    rates[:, :n_sig] = np.exp(0.6 * speed)[:, None] * 2
    return rng.poisson(rates).astype(float), present, speed, np.repeat(np.arange(n_trials), length)


def test_decoding_signature_beats_random_subsets_and_shuffled_target_fails():
    rng = np.random.default_rng(3)
    xf, pf, sf, gf = synthetic(rng, 60, 50)
    xt, pt, st, _ = synthetic(rng, 20, 50)
    cfg = ValidateConfig(n_random_subsets=30, cv_folds=3)
    sig = np.arange(5)
    act_f, act_t = xf[:, :5].sum(1), xt[:, :5].sum(1)
    rep = decoding_report(xf, pf, gf, xt, pt, act_f, act_t, "binary", sig, cfg)
    assert rep["score_name"] == "balanced_accuracy" and len(rep["random_scores"]) == 30
    assert rep["signature_score"] > 0.75
    # Above chance, the signature reads the label about as well as all 50 units.
    assert rep["signature_over_all"] == pytest.approx(
        (rep["signature_score"] - 0.5) / (rep["all_score"] - 0.5)) and rep["signature_over_all"] > 0.85
    # Random 5-of-50 subsets that catch one signature unit (~40 % of them) reach ~0.82, the rest chance.
    assert rep["signature_score"] > rep["random_p95"]
    assert np.percentile(rep["random_scores"], 25) < 0.6
    assert rep["signature_percentile"] == 100
    assert rep["signature_auroc"] > 0.85 and rep["feature_score"] > 0.7
    # Continuous: ridge from the signature units recovers speed.
    assert decode_scores(xf, sf, gf, xt, st, "continuous", cfg, sig)["r2"] > 0.5
    assert decode_scores(xf, sf, gf, xt, st, "continuous", cfg, np.arange(5, 10))["r2"] < 0.1
    # A wrong target (trial labels shuffled away from the counts): chance on every route, verdict False.
    wrong_f, wrong_t = rng.permutation(pf), rng.permutation(pt)
    bad = decoding_report(xf, wrong_f, gf, xt, wrong_t, act_f, act_t, "binary", sig, cfg)
    assert abs(bad["signature_score"] - 0.5) < 0.06 and abs(bad["all_score"] - 0.5) < 0.06
    co = cooccurrence(act_t, wrong_t, np.repeat(np.arange(20), 50), choose_threshold(act_f, wrong_f),
                      ValidateConfig(n_bootstrap=200, n_shifts=99))
    bad_verdicts = verdicts({**co, **bad}, co["p_value"], cfg)
    assert not bad_verdicts.generalises and not bad_verdicts.signature_specific and not bad_verdicts.validated
    assert "does not generalise" in bad_verdicts.reason and "signature not specific" in bad_verdicts.reason
    good = verdicts({"mcc": 0.5, "mcc_ci_low": 0.3, "mcc_ci_high": 0.6, **rep}, 0.001, cfg)
    assert good.generalises and good.signature_specific and good.validated, good.reason


def test_verdicts_name_each_failed_condition_separately():
    cfg = ValidateConfig()
    row = {"mcc": 0.1, "mcc_ci_low": -0.1, "mcc_ci_high": 0.3, "n_test_trials": 6, "p_value": 0.2,
           "n_shifts": 200, "signature_score": 0.6, "random_p95": 0.7}
    v = verdicts(row, 0.2, cfg)
    assert (v.generalises, v.signature_specific) == (False, False)
    assert "interval not above 0" in v.reason and "q not below 0.05" in v.reason
    assert "6 test trials (too few for a reliable interval)" in v.reason and "0.7" in v.reason
    # Generalises (interval above 0, q small) while random units decode it as well: a dense code.
    dense = verdicts({**row, "mcc_ci_low": 0.2, "p_value": 1 / 201, "signature_score": 0.9,
                      "random_p95": 0.91}, 0.01, cfg)
    assert dense.generalises and not dense.signature_specific and not dense.validated
    assert dense.reason.startswith("generalises") and "(p < 0.005)" in dense.reason
    assert "signature not specific" in dense.reason
    # Specific but not generalising: q above alpha alone fails generalisation.
    specific = verdicts({**row, "mcc_ci_low": 0.2, "signature_score": 0.8}, 0.2, cfg)
    assert not specific.generalises and specific.signature_specific and "q not below" in specific.reason
    # A NaN signature score is not specific; a NaN interval does not generalise.
    nan = verdicts({**row, "mcc_ci_low": float("nan"), "signature_score": float("nan")}, 0.01, cfg)
    assert not nan.generalises and not nan.signature_specific and "no interval" in nan.reason


def test_cross_validation_folds_keep_trials_whole(monkeypatch):
    import engine.validation.cross_validation as cross_validation

    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(17), rng.integers(3, 30, 17))
    folds = cross_validation.trial_folds(groups, 5)
    assert len(folds) == 5
    for train, held_out in folds:
        assert not set(groups[train]) & set(groups[held_out])  # no trial on both sides
        assert len(train) + len(held_out) == len(groups)
    assert cross_validation.trial_folds(np.zeros(10), 5) == []  # one trial: nothing to cross-validate over
    assert len(cross_validation.trial_folds(np.repeat([0, 1, 2], 4), 5)) == 3  # never more folds than trials
    # decode_scores chooses its penalty through exactly these folds.
    seen = []
    real = cross_validation.trial_folds
    monkeypatch.setattr(cross_validation, "trial_folds", lambda g, n: seen.append(np.asarray(g)) or real(g, n))
    x = rng.poisson(2.0, (len(groups), 6)).astype(float)
    y = x[:, 0] + rng.normal(0, 1, len(groups)) > 2
    out = decode_scores(x, y, groups, x, y, "binary", ValidateConfig(cv_folds=4))
    assert len(seen) == 1 and np.array_equal(seen[0], groups) and out["param"] in cross_validation.C_GRID


def test_a_dense_code_generalises_without_a_specific_signature():
    """Every unit carries the target (CA1, where every cell is a place cell): the feature's label holds on test,
    but random units decode it as well as the signature, so the two verdicts part."""
    rng = np.random.default_rng(5)
    xf, pf, _, gf = synthetic(rng, 60, 50, n_units=30, n_sig=30)
    xt, pt, _, gt = synthetic(rng, 20, 50, n_units=30, n_sig=30)
    cfg = ValidateConfig(n_random_subsets=30, cv_folds=3, n_bootstrap=200, n_shifts=200)
    act_f, act_t = xf[:, :5].sum(1), xt[:, :5].sum(1)
    rep = decoding_report(xf, pf, gf, xt, pt, act_f, act_t, "binary", np.arange(5), cfg)
    co = cooccurrence(act_t, pt, gt, choose_threshold(act_f, pf), cfg)
    v = verdicts({**co, **rep}, co["p_value"], cfg)
    assert co["mcc_ci_low"] > 0.2 and co["p_value"] < 0.01
    assert rep["signature_score"] <= rep["random_p95"] + 0.01  # any 5 units read it about as well
    assert v.generalises and not v.signature_specific and not v.validated, v.reason


def test_random_subsets_get_their_own_penalty_per_size():
    """The null's penalty is chosen by cross-validation on random subsets of the signature's size (the first
    n_tuning_subsets of the null's own draws), not borrowed from the signature."""
    from engine.validation.cross_validation import Folds, best_param

    rng = np.random.default_rng(6)
    xf, pf, _, gf = synthetic(rng, 60, 50, n_units=60, n_sig=3)
    xt, pt, _, _ = synthetic(rng, 20, 50, n_units=60, n_sig=3)
    cfg = ValidateConfig(n_random_subsets=20, n_tuning_subsets=4, cv_folds=3)
    act_f, act_t = xf[:, :3].sum(1), xt[:, :3].sum(1)
    memo: dict = {}
    rep = decoding_report(xf, pf, gf, xt, pt, act_f, act_t, "binary", np.arange(3), cfg, memo)
    # The same draws, tuned by hand: the generator is seeded with the size.
    draw = np.random.default_rng([cfg.seed, 3, 3])
    subsets = [np.sort(draw.choice(60, 3, replace=False)) for _ in range(cfg.n_random_subsets)]
    folds = Folds(xf, gf, cfg.cv_folds)
    expected = best_param(np.mean([folds.loss_curve(pf, "binary", s) for s in subsets[:4]], axis=0), "binary")
    assert rep["random_param"] == expected
    # Noise units want a strong penalty, the three carrying units a weak one: borrowing would have helped the null.
    assert rep["random_param"] < rep["signature_param"]
    # Another signature of the same size reuses the null; another size gets its own.
    again = decoding_report(xf, pf, gf, xt, pt, act_f, act_t, "binary", np.array([0, 1, 5]), cfg, memo)
    assert np.array_equal(again["random_scores"], rep["random_scores"], equal_nan=True)
    bigger = decoding_report(xf, pf, gf, xt, pt, act_f, act_t, "binary", np.arange(6), cfg, memo)
    assert ("random", 6) in memo and len(bigger["random_scores"]) == 20


def test_cross_validation_scales_each_fold_by_its_own_training_rows():
    from engine.validation.cross_validation import Folds

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    x[-10:] += 1000  # the last trial is an outlier: it must not set the scale of the folds it validates
    groups = np.repeat(np.arange(30), 10)
    folds = Folds(x, groups, 3)
    for (train, val), (mean, sd) in zip(folds.splits, folds.scales, strict=True):
        np.testing.assert_allclose(mean, x[train].mean(axis=0))
        np.testing.assert_allclose(sd, x[train].std(axis=0))
        if 299 in val:
            assert np.all(np.abs(mean) < 1)  # scaled without the outlier it is validated on


def test_p_at_the_null_floor_reads_as_a_bound():
    from engine.validation.validation_text import p_text, q_text, trials_text

    assert p_text(1 / 201, 200) == "< 0.005" and p_text(1 / 1001, 1000) == "< 0.001"
    assert p_text(2 / 201, 200) == "0.01" and p_text(0.0123, 1000) == "0.012" and p_text(0.25, 200) == "0.25"
    assert p_text(None) == "–" and p_text(float("nan"), 200) == "–"
    assert q_text(8 / 1001, 1 / 1001, 1000) == "≤ 0.008" and q_text(0.04, 0.01, 1000) == "0.04"
    assert trials_text(6) == "6 test trials (too few for a reliable interval)" and trials_text(12) == "12 test trials"
    # A shift null that no draw reaches gives exactly the floor, and prints so.
    rng = np.random.default_rng(8)
    present = slow_binary(rng, 30, 60)
    out = cooccurrence(present.astype(float), present, np.repeat(np.arange(30), 60), 0.5,
                       ValidateConfig(n_bootstrap=20, n_shifts=200))
    assert out["p_value"] == 1 / 201 and p_text(out["p_value"], out["n_shifts"]) == "< 0.005"


def test_a_predicate_constant_within_trials_swaps_whole_trials():
    """condition-like predicates do not move under shifts within trials; the null swaps trials instead, so a
    perfect trial-level label gets a small p and an unrelated one does not."""
    rng = np.random.default_rng(9)
    trial = np.repeat(np.arange(40), 25)
    present = np.repeat(rng.random(40) < 0.5, 25)
    cfg = ValidateConfig(n_bootstrap=20, n_shifts=300)
    assert cooccurrence(present.astype(float), present, trial, 0.5, cfg)["p_value"] < 0.01
    other = np.repeat(rng.random(40) < 0.5, 25)
    assert cooccurrence(other.astype(float), present, trial, 0.5, cfg)["p_value"] > 0.01


def test_binary_log_loss_is_scikit_learns_to_the_last_bit():
    """The cross-validation's loss, written out for speed: the same float as sklearn's log_loss on every kind of
    prediction (spread, saturated at 0 and 1 where the clipping decides, exactly 0 and 1), or a decoder's
    penalty could change."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    for draw in range(600):
        n = int(rng.integers(2, 300))
        present = rng.random(n) < rng.random()
        spread = [rng.random(n), 1 / (1 + np.exp(-rng.normal(0, 40, n))), (rng.random(n) < 0.5).astype(float)]
        p = spread[draw % 3]
        assert binary_log_loss(present, p) == log_loss(present, p, labels=[False, True]), draw


def test_max_draws_caps_every_kind_of_draw_and_is_checked():
    from engine.errors import InputError

    assert validate_config(None) == ValidateConfig()
    capped = validate_config(50)
    assert (capped.n_bootstrap, capped.n_shifts, capped.n_random_subsets, capped.n_ablation_null) == (50, 50, 50, 50)
    assert validate_config(500).n_random_subsets == 100 and validate_config(500).n_shifts == 500  # never raised
    assert validate_config(1000) == ValidateConfig()
    for bad in (19, 1001, 0, -5):
        with pytest.raises(InputError, match=rf"^--max-draws {bad}: must be between 20 and 1,000"):
            validate_config(bad)
