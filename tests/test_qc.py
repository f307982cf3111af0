"""engine/sae/qc.py against small cases computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import engine.sae.qc as qc
from engine.sae.qc import add_baselines, baseline_fvu, qc_table_rows, split_qc


def _qc(x, x_hat, active_counts=None, feature_active_examples=None, split="train"):
    x, x_hat = np.asarray(x, dtype=np.float64), np.asarray(x_hat, dtype=np.float64)
    n = len(x)
    active = np.ones(n, dtype=int) if active_counts is None else np.asarray(active_counts)
    fae = np.array([n, 0]) if feature_active_examples is None else np.asarray(feature_active_examples)
    return split_qc(split, x, x_hat, active, fae)


def test_perfect_reconstruction():
    x = np.array([[1.0, 0.0, 3.0], [2.0, 5.0, 1.0], [0.0, 1.0, 4.0], [7.0, 2.0, 2.0]])
    q = _qc(x, x.copy())
    assert q.fvu == 0.0 and q.r2 == 1.0
    assert q.cosine_mean == pytest.approx(1.0)
    np.testing.assert_allclose(q.unit_r2, 1.0)
    np.testing.assert_allclose(q.unit_cosine, 1.0)
    assert q.summed_count_r2 == 1.0 and q.example_r2_median == 1.0
    assert q.bad_units == []


def test_mean_reconstruction_has_fvu_exactly_one():
    x = np.array([[1.0, 4.0], [3.0, 0.0], [5.0, 2.0]])  # unit means 3 and 2, exact in binary
    q = _qc(x, np.tile(x.mean(0), (3, 1)))
    assert q.fvu == 1.0 and q.r2 == 0.0
    np.testing.assert_array_equal(q.unit_r2, [0.0, 0.0])
    assert q.bad_units == [0, 1]  # R² 0 ≤ 0.1


def test_hand_computed_three_by_two():
    x = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]])
    x_hat = np.array([[1.0, 1.0], [2.0, 2.0], [2.0, 4.0]])
    q = _qc(x, x_hat)
    # Unit means (2, 2). SST: unit 0 = 1 + 0 + 1 = 2, unit 1 = 4 + 0 + 4 = 8, total 10.
    # Errors (0, -1), (0, 0), (1, 0): SSE unit 0 = 1, unit 1 = 1, total 2. FVU = 2 / 10.
    assert q.fvu == pytest.approx(0.2) and q.r2 == pytest.approx(0.8)
    np.testing.assert_allclose(q.unit_r2, [1 - 1 / 2, 1 - 1 / 8])
    # Unit 0: x (1, 2, 3), x̂ (1, 2, 2): dot 11, norms √14 and 3. Unit 1: x (0, 2, 4), x̂ (1, 2, 4): dot 20.
    np.testing.assert_allclose(q.unit_cosine, [11 / (3 * math.sqrt(14)), 20 / (math.sqrt(20) * math.sqrt(21))])
    # Rows: cos((1,0),(1,1)) = 1/√2; cos((2,2),(2,2)) = 1; cos((3,4),(2,4)) = 22 / (5 √20).
    assert q.cosine_mean == pytest.approx((1 / math.sqrt(2) + 1 + 22 / (5 * math.sqrt(20))) / 3)
    assert q.cosine_skipped == 0
    # Summed counts (1, 4, 7) vs (2, 4, 6): mean 4, SST 9 + 0 + 9 = 18, SSE 1 + 0 + 1 = 2 → 1 - 2/18.
    assert q.summed_count_r2 == pytest.approx(8 / 9)
    # Per example: row 0 SST 0.5 (mean 0.5), SSE 1 → -1; row 1 constant → skipped; row 2 SST 0.5, SSE 1 → -1.
    assert q.example_r2_median == pytest.approx(-1.0) and q.example_r2_skipped == 1
    assert q.bad_units == []


def test_bad_unit_threshold_is_inclusive(monkeypatch):
    # Same case as above: unit 0 has R² exactly 1 - 1/2 = 0.5, unit 1 has 0.875.
    monkeypatch.setattr(qc, "BAD_UNIT_R2", 0.5)
    q = _qc([[1.0, 0.0], [2.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [2.0, 2.0], [2.0, 4.0]])
    assert q.bad_units == [0]


def test_zero_unit_is_bad_and_constant_unit_is_nan_and_not_flagged():
    x = np.array([[1.0, 3.0, 5.0], [2.0, 1.0, 5.0], [3.0, 2.0, 5.0]])
    x_hat = x.copy()
    x_hat[:, 1] = 0.0  # unit 1 reconstructed as zeros: R² = 1 - (9+1+4)/(1+1+0) = -6
    x_hat[:, 2] = 4.0  # unit 2 is constant in x: zero variance → NaN, whatever x̂ does
    q = _qc(x, x_hat)
    assert q.unit_r2[0] == 1.0 and q.unit_r2[1] == pytest.approx(-6.0) and math.isnan(q.unit_r2[2])
    assert math.isnan(q.unit_cosine[1])  # x̂ column all zero
    assert q.bad_units == [1]


def test_cosine_skips_all_zero_examples():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    x_hat = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    q = _qc(x, x_hat)
    assert q.cosine_skipped == 2 and q.cosine_mean == pytest.approx(1.0)


def test_l0_histogram_mean_std():
    x = np.zeros((4, 2))
    q = _qc(x, x, active_counts=[2, 0, 5, 2])
    assert q.l0_histogram == [(0, 1), (2, 2), (5, 1)]
    assert q.l0_mean == 2.25
    # Deviations -2.25, -0.25, -0.25, 2.75 → squares sum 12.75, / 4 = 3.1875 (population std).
    assert q.l0_std == pytest.approx(math.sqrt(3.1875))


def test_dead_fraction_and_density_histogram():
    n = 1000
    x = np.zeros((n, 2))
    # Densities 0, 0.003, 0.03, 0.5, 1.0, 0 → log10 -2.52, -1.52, -0.30, 0 (the two zeros are dead).
    q = _qc(x, x, feature_active_examples=[0, 3, 30, 500, 1000, 0])
    assert q.dead_fraction == pytest.approx(2 / 6)
    edges = [(lo, hi) for lo, hi, _ in q.density_histogram]
    assert len(edges) == 12 and edges[0] == (-6.0, -5.5) and edges[-1] == (-0.5, 0.0)
    counts = {(lo, hi): c for lo, hi, c in q.density_histogram}
    assert counts[(-3.0, -2.5)] == 1
    assert counts[(-2.0, -1.5)] == 1
    assert counts[(-0.5, 0.0)] == 2  # 0.5 and 1.0 (the last bin is closed on the right)
    assert sum(counts.values()) == 4  # dead features are not in the histogram


def test_chunked_accumulation_matches_one_chunk(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.poisson(2.0, size=(50, 7)).astype(np.float32)
    x_hat = (x + rng.normal(0, 0.5, x.shape)).astype(np.float32)
    active, fae = rng.integers(0, 4, 50), rng.integers(0, 50, 20)
    whole = split_qc("val", x, x_hat, active, fae)
    monkeypatch.setattr(qc, "CHUNK_ROWS", 8)
    chunked = split_qc("val", x, x_hat, active, fae)
    assert chunked.fvu == pytest.approx(whole.fvu, rel=1e-12)
    np.testing.assert_allclose(chunked.unit_r2, whole.unit_r2, rtol=1e-12)
    assert chunked.cosine_mean == pytest.approx(whole.cosine_mean, rel=1e-12)
    # And against a direct float64 formula.
    x64, h64 = x.astype(np.float64), x_hat.astype(np.float64)
    direct = ((x64 - h64) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum()
    assert whole.fvu == pytest.approx(direct, rel=1e-12)


def test_pca_baseline_on_rank_two_data():
    rng = np.random.default_rng(0)
    basis, mean = rng.normal(size=(2, 6)), rng.normal(size=6) * 10
    train = rng.normal(size=(200, 2)) @ basis + mean
    held_out = rng.normal(size=(80, 2)) @ basis + mean  # same subspace, rows never seen in the fit
    pca2, nmf = baseline_fvu(train, held_out, 2, nonnegative=False)
    assert pca2 < 1e-10 and nmf is None
    pca1, _ = baseline_fvu(train, held_out, 1, nonnegative=False)
    assert pca1 > 0.01


def test_nmf_baseline_on_nonnegative_rank_two_data():
    rng = np.random.default_rng(0)
    factors = rng.uniform(0, 3, size=(2, 8))
    train = rng.uniform(0, 2, size=(300, 2)) @ factors
    held_out = rng.uniform(0, 2, size=(100, 2)) @ factors
    pca, nmf = baseline_fvu(train, held_out, 2, nonnegative=True)
    assert pca < 1e-10 and nmf is not None and nmf < 0.05
    _, nmf1 = baseline_fvu(train, held_out, 1, nonnegative=True)
    assert nmf1 > nmf


def test_baseline_components_clipped_and_filled():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(40, 3)).astype(np.float64)
    q = add_baselines(_qc(x, x, active_counts=[9] * 40), x, x, nonnegative=True)
    assert q.baseline_components == 3  # round(9) clipped to d = 3
    assert q.pca_fvu == pytest.approx(0.0, abs=1e-10)
    q = add_baselines(_qc(x, x, active_counts=[0] * 40), x, x, nonnegative=False)
    assert q.baseline_components == 1 and q.nmf_fvu is None


def test_qc_table_rows():
    x = np.array([[1.0, 3.0, 5.0], [2.0, 1.0, 5.0], [3.0, 2.0, 5.0]])
    x_hat = x.copy()
    x_hat[:, 1] = 0.0
    train = _qc(x, x_hat, active_counts=[1, 2, 2], split="train")
    val = _qc(x, x, active_counts=[1, 1, 1], split="val")
    train.pca_fvu, train.nmf_fvu, train.baseline_components = 0.25, 0.5, 2
    table, units = qc_table_rows(7, [train, val])
    assert table.columns == ["sae_id", "split", "n_examples", "l0_mean", "l0_std", "dead_fraction", "fvu", "r2",
                             "cosine_mean", "summed_count_r2", "example_r2_median", "pca_fvu", "nmf_fvu",
                             "baseline_components", "n_bad_units", "ridge_fvu", "ridge_alpha", "l0_histogram",
                             "density_histogram"]
    assert table.height == 2 and table["split"].to_list() == ["train", "val"]
    assert table["sae_id"].to_list() == [7, 7] and table["n_bad_units"].to_list() == [1, 0]
    assert table["pca_fvu"].to_list() == [0.25, None] and table["baseline_components"].to_list() == [2, None]
    assert json.loads(table["l0_histogram"][0]) == [[1, 1], [2, 2]]
    density = json.loads(table["density_histogram"][0])
    assert len(density) == 12 and density[-1] == [-0.5, 0.0, 1]  # feature 0 active on all 3 examples

    assert units.columns == ["sae_id", "split", "unit_id", "r2", "cosine", "bad"]
    assert units.height == 6
    train_units = units.filter(units["split"] == "train")
    assert train_units["unit_id"].to_list() == [0, 1, 2]
    assert train_units["bad"].to_list() == [False, True, False]
    assert train_units["r2"][2] is None  # constant unit: NaN stored as null
    assert train_units["r2"][1] == pytest.approx(-6.0)
