"""Quality checks of a trained SAE on one split, from NumPy arrays only (no torch, no database).

Per split: how sparse the codes are (L0, feature density, dead features), how well the input is
reconstructed (FVU, R² and cosine per unit and per example, R² of the summed count), and the FVU that
PCA and NMF reach with as many components as the SAE's mean L0 — an SAE that does no better than a
linear method with the same budget has not earned its features. Units the SAE reconstructs badly
(R² ≤ 0.1) are flagged, because features cannot say anything about a unit they do not model.

Everything is accumulated in float64 over row chunks, so a 100k × 1000 float32 split never needs a
float64 copy of the whole matrix.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

BAD_UNIT_R2 = 0.1
"""A unit with R² at or below this is flagged: the SAE explains (almost) none of its variance."""

DENSITY_EDGES = np.arange(-6.0, 0.01, 0.5)
"""log10 feature-density bin edges, fixed so that histograms of different SAEs line up."""

CHUNK_ROWS = 8192
"""Rows per float64 chunk: bounds the extra memory to CHUNK_ROWS × d × 8 bytes a few times over."""

NMF_MAX_FIT_ROWS = 20_000
"""NMF is fitted on at most this many train rows (a seeded subsample): the factors of spike counts
settle long before 20k rows, and fitting on all 42k+ rows would double the time for nothing."""

NMF_MAX_ITER = 200
"""Iteration cap for NMF fit and transform; with nndsvda init, coordinate descent converges well before."""

NMF_TOL = 1e-3
"""NMF stopping tolerance (relative change). On 20k × 120 Poisson counts with 8 components 1e-3 stops
after ~40 iterations (~2 s) with an FVU within 0.5% of 1e-4's, which needs ~200 iterations (~5 s)."""


@dataclass
class SplitQC:
    """Quality of one SAE on one split. Undefined ratios (zero variance, nothing to average) are NaN."""

    split: str
    """Split name: train, val or test."""
    n_examples: int
    """Number of examples (rows) in the split."""
    l0_mean: float
    """Mean number of active features per example."""
    l0_std: float
    """Population standard deviation (ddof 0) of the number of active features per example."""
    l0_histogram: list[tuple[int, int]]
    """(number of active features, number of examples), for every L0 value seen, ascending."""
    density_histogram: list[tuple[float, float, int]]
    """(log10 lower edge, log10 upper edge, number of features) over features with density > 0, on
    fixed edges -6 … 0 in steps of 0.5; densities below 1e-6 count in the first bin."""
    dead_fraction: float
    """Fraction of features never active on this split."""
    fvu: float
    """Fraction of variance unexplained: sum((x - x̂)²) / sum((x - mean_x)²), unit means over this split."""
    r2: float
    """1 - fvu."""
    cosine_mean: float
    """Mean over examples of cos(x, x̂), skipping examples where either vector is all zero."""
    cosine_skipped: int
    """How many examples cosine_mean skipped (x or x̂ all zero)."""
    summed_count_r2: float
    """R² of the total count per example: x.sum(1) against x̂.sum(1)."""
    unit_r2: np.ndarray
    """[d] R² per unit over this split; NaN for a unit with zero variance on this split."""
    unit_cosine: np.ndarray
    """[d] cosine between x[:, j] and x̂[:, j]; NaN where either column is all zero."""
    example_r2_median: float
    """Median over examples of the per-example R² (variance across units), skipping zero-variance examples."""
    example_r2_skipped: int
    """How many examples example_r2_median skipped (x constant across units)."""
    bad_units: list[int]
    """Units with unit_r2 <= BAD_UNIT_R2; NaN units are not flagged."""
    pca_fvu: float | None = None
    """FVU of PCA with baseline_components components (fitted on train); None when not computed."""
    nmf_fvu: float | None = None
    """FVU of NMF with baseline_components components (fitted on train); None for data that can be negative."""
    baseline_components: int | None = None
    """Components used by the PCA/NMF baselines: max(1, round(mean L0)) clipped to [1, d]."""
    ridge_fvu: float | None = None
    """Transcoders: target FVU of a ridge regression from the inputs (fitted on train, alpha chosen on val)."""
    ridge_alpha: float | None = None
    """Transcoders: the ridge penalty chosen on val."""


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _chunks(n: int):
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n))


def _density_histogram(feature_active_examples: np.ndarray, n: int) -> list[tuple[float, float, int]]:
    density = np.asarray(feature_active_examples, dtype=np.float64) / n
    logs = np.log10(density[density > 0])
    # Clip so a density under 1e-6 still counts (first bin) and density 1 sits in the closed last bin.
    counts, _ = np.histogram(np.clip(logs, DENSITY_EDGES[0], DENSITY_EDGES[-1]), bins=DENSITY_EDGES)
    return [(float(lo), float(hi), int(c)) for lo, hi, c in zip(DENSITY_EDGES[:-1], DENSITY_EDGES[1:], counts,
                                                                 strict=True)]


def split_qc(split: str, x: np.ndarray, x_hat: np.ndarray, active_counts: np.ndarray,
             feature_active_examples: np.ndarray) -> SplitQC:
    """QC of one split. x, x_hat: [n, d]; active_counts: [n] L0 per example; feature_active_examples:
    [d_sae] on how many of these n examples each feature was active. Baselines are left None (see
    baseline_fvu, which needs the train split)."""
    if x.shape != x_hat.shape or x.ndim != 2:
        raise ValueError(f"x {x.shape} and x_hat {x_hat.shape} must be the same [n, d] shape")
    n, d = x.shape
    if n == 0:
        raise ValueError(f"split '{split}' has no examples")
    if len(active_counts) != n:
        raise ValueError(f"active_counts has {len(active_counts)} entries for {n} examples")

    # Pass 1: unit means, needed to centre before summing squares (sum(x²) - n·mean² loses precision).
    unit_mean = np.sum(x, axis=0, dtype=np.float64) / n
    # Pass 2: per-unit sums and per-example values, chunk by chunk in float64.
    unit_sse, unit_sst = np.zeros(d), np.zeros(d)
    unit_dot, unit_xx, unit_hh = np.zeros(d), np.zeros(d), np.zeros(d)
    ex_dot, ex_xx, ex_hh = np.empty(n), np.empty(n), np.empty(n)
    ex_sse, ex_sst = np.empty(n), np.empty(n)
    sum_x, sum_h = np.empty(n), np.empty(n)
    for rows in _chunks(n):
        xc = np.asarray(x[rows], dtype=np.float64)
        hc = np.asarray(x_hat[rows], dtype=np.float64)
        err2 = (xc - hc) ** 2
        xh, xx, hh = xc * hc, xc * xc, hc * hc
        unit_sse += err2.sum(0)
        unit_sst += ((xc - unit_mean) ** 2).sum(0)
        unit_dot += xh.sum(0)
        unit_xx += xx.sum(0)
        unit_hh += hh.sum(0)
        ex_dot[rows], ex_xx[rows], ex_hh[rows] = xh.sum(1), xx.sum(1), hh.sum(1)
        ex_sse[rows] = err2.sum(1)
        ex_sst[rows] = ((xc - xc.mean(1, keepdims=True)) ** 2).sum(1)
        sum_x[rows], sum_h[rows] = xc.sum(1), hc.sum(1)

    fvu = _ratio(unit_sse.sum(), unit_sst.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        unit_r2 = np.where(unit_sst > 0, 1.0 - unit_sse / unit_sst, np.nan)
        unit_norms = np.sqrt(unit_xx * unit_hh)
        unit_cosine = np.where(unit_norms > 0, unit_dot / unit_norms, np.nan)
        cos_ok = (ex_xx > 0) & (ex_hh > 0)
        ex_cos = ex_dot[cos_ok] / np.sqrt(ex_xx[cos_ok] * ex_hh[cos_ok])
        r2_ok = ex_sst > 0
        ex_r2 = 1.0 - ex_sse[r2_ok] / ex_sst[r2_ok]
    summed_sst = float(((sum_x - sum_x.mean()) ** 2).sum())
    summed_r2 = 1.0 - _ratio(float(((sum_x - sum_h) ** 2).sum()), summed_sst)

    l0 = np.asarray(active_counts, dtype=np.int64)
    values, counts = np.unique(l0, return_counts=True)
    fae = np.asarray(feature_active_examples)
    return SplitQC(
        split=split, n_examples=n,
        l0_mean=float(l0.mean()), l0_std=float(l0.std()),
        l0_histogram=[(int(v), int(c)) for v, c in zip(values, counts, strict=True)],
        density_histogram=_density_histogram(fae, n),
        dead_fraction=float(np.mean(fae == 0)) if fae.size else float("nan"),
        fvu=fvu, r2=1.0 - fvu,
        cosine_mean=float(ex_cos.mean()) if ex_cos.size else float("nan"),
        cosine_skipped=int(n - cos_ok.sum()),
        summed_count_r2=summed_r2,
        unit_r2=unit_r2, unit_cosine=unit_cosine,
        example_r2_median=float(np.median(ex_r2)) if ex_r2.size else float("nan"),
        example_r2_skipped=int(n - r2_ok.sum()),
        bad_units=[int(j) for j in np.flatnonzero(unit_r2 <= BAD_UNIT_R2)],  # NaN compares False
    )


def _fvu(x: np.ndarray, reconstruct: Callable[[slice], np.ndarray]) -> float:
    """FVU of x against reconstruct(rows), a float64 [rows, d] block, centred on x's own unit means."""
    n = x.shape[0]
    mean = np.sum(x, axis=0, dtype=np.float64) / n
    sse = sst = 0.0
    for rows in _chunks(n):
        xc = np.asarray(x[rows], dtype=np.float64)
        sse += float(((xc - reconstruct(rows)) ** 2).sum())
        sst += float(((xc - mean) ** 2).sum())
    return _ratio(sse, sst)


def _pca_basis(train_x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Train mean [d] and the top-k principal axes [k, d], from the d × d covariance (cheap for n ≫ d)."""
    n = train_x.shape[0]
    mean = np.sum(train_x, axis=0, dtype=np.float64) / n
    scatter = np.zeros((train_x.shape[1],) * 2)
    for rows in _chunks(n):
        centred = np.asarray(train_x[rows], dtype=np.float64) - mean
        scatter += centred.T @ centred
    _, vectors = np.linalg.eigh(scatter)  # ascending eigenvalues
    return mean, vectors[:, ::-1][:, :k].T


def baseline_fvu(train_x: np.ndarray, eval_x: np.ndarray, n_components: int, *, nonnegative: bool,
                 seed: int = 0) -> tuple[float, float | None]:
    """(PCA FVU, NMF FVU or None) of eval_x with n_components components fitted on train_x.

    PCA is centred on the train mean. NMF runs only when nonnegative (spike counts); it is fitted on at
    most NMF_MAX_FIT_ROWS seeded train rows, then eval_x is transformed with the fitted components.
    FVU is against eval_x's own unit means, as in split_qc, so the numbers compare with the SAE's.
    """
    return baseline_fvus(train_x, {"eval": eval_x}, n_components, nonnegative=nonnegative, seed=seed)["eval"]


def baseline_fvus(train_x: np.ndarray, evals: dict[str, np.ndarray], n_components: int, *, nonnegative: bool,
                  seed: int = 0) -> dict[str, tuple[float, float | None]]:
    """baseline_fvu of each of several arrays (the splits) from one fit on train_x: the fit, NMF's above all,
    is most of the cost, and it does not depend on what is evaluated."""
    for eval_x in evals.values():
        if train_x.ndim != 2 or eval_x.ndim != 2 or train_x.shape[1] != eval_x.shape[1]:
            raise ValueError(f"train_x {train_x.shape} and eval_x {eval_x.shape} must be [n, d] with the same d")
    # These matrices are small (d × d, n × k): BLAS threads only fight PyTorch's still-spinning
    # threads after training (measured: a small run took 13.7 s with them, 7.3 s without).
    with threadpool_limits(limits=1, user_api="blas"):
        return _baseline_fvus(train_x, evals, n_components, nonnegative=nonnegative, seed=seed)


def _baseline_fvus(train_x: np.ndarray, evals: dict[str, np.ndarray], n_components: int, *, nonnegative: bool,
                   seed: int) -> dict[str, tuple[float, float | None]]:
    d = train_x.shape[1]
    k = int(np.clip(n_components, 1, d))

    mean, axes = _pca_basis(train_x, k)
    pcas = {name: _fvu(x, lambda rows, x=x: (np.asarray(x[rows], np.float64) - mean) @ axes.T @ axes + mean)
            for name, x in evals.items()}
    if not nonnegative:
        return {name: (pca, None) for name, pca in pcas.items()}

    rng = np.random.default_rng(seed)
    n_train = train_x.shape[0]
    fit_rows = np.sort(rng.choice(n_train, NMF_MAX_FIT_ROWS, replace=False)) \
        if n_train > NMF_MAX_FIT_ROWS else slice(None)
    fit_x = np.asarray(train_x[fit_rows], dtype=np.float64)
    # Imported here: scikit-learn takes seconds to import, and training imports this module before its
    # first step while NMF is needed only once training has ended.
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    # nndsvda needs k <= min(n, d); nndsvda + coordinate descent is the fast, deterministic pair.
    model = NMF(n_components=min(k, fit_x.shape[0]), init="nndsvda", solver="cd", max_iter=NMF_MAX_ITER,
                tol=NMF_TOL, random_state=seed)
    # A baseline that stopped at max_iter is still a fair (slightly pessimistic) number: no warning.
    out = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(fit_x)
        for name, x in evals.items():
            codes = model.transform(np.asarray(x, dtype=np.float64))
            out[name] = (pcas[name], _fvu(x, lambda rows, codes=codes: codes[rows] @ model.components_))
    return out


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
"""The ridge penalties tried, a log grid; the one with the lowest val FVU is kept."""


class RidgeBaseline(NamedTuple):
    """A transcoder's linear baseline: its penalty and its target FVU per split."""

    alpha: float
    """Chosen on val (the grid's middle, 10, when there is no val split)."""
    fvu: dict[str, float]
    """Split name -> FVU of the targets predicted from the inputs."""


def ridge_baseline(train: tuple[np.ndarray, np.ndarray], evals: dict[str, tuple[np.ndarray, np.ndarray]]
                   ) -> RidgeBaseline:
    """Ridge regression from inputs to targets: fitted on train, its penalty chosen on `evals['val']` (never
    test), then scored on every split of `evals` — the linear map a transcoder's sparse code has to beat."""
    from sklearn.linear_model import Ridge  # imported late: scikit-learn is slow to import

    x_train, y_train = (np.asarray(a, np.float64) for a in train)

    def fit(alpha: float) -> Ridge:
        return Ridge(alpha=alpha).fit(x_train, y_train)

    def score(model: Ridge, x: np.ndarray, y: np.ndarray) -> float:
        predicted = model.predict(np.asarray(x, np.float64))
        return _fvu(y, lambda rows: predicted[rows])

    with threadpool_limits(limits=1, user_api="blas"):
        if "val" in evals and len(evals["val"][0]):
            scored = [(score(fit(alpha), *evals["val"]), alpha) for alpha in RIDGE_ALPHAS]
            alpha = min(scored, key=lambda pair: (np.nan_to_num(pair[0], nan=np.inf), pair[1]))[1]
        else:
            alpha = 10.0
        model = fit(alpha)
        return RidgeBaseline(alpha, {name: score(model, x, y) for name, (x, y) in evals.items() if len(x)})


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def qc_table_rows(sae_id: int, qcs: list[SplitQC]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`qc` rows, one per split; `unit_qc` rows, one per split × unit) for the store.

    NaN becomes null so that SQL aggregates skip undefined values instead of turning NaN.
    Histograms are JSON text: l0 as [[l0, n_examples], …], density as [[lo, hi, n_features], …].
    """
    qc = pl.DataFrame(
        [{
            "sae_id": sae_id, "split": q.split, "n_examples": q.n_examples,
            "l0_mean": _nan_to_none(q.l0_mean), "l0_std": _nan_to_none(q.l0_std),
            "dead_fraction": _nan_to_none(q.dead_fraction), "fvu": _nan_to_none(q.fvu),
            "r2": _nan_to_none(q.r2), "cosine_mean": _nan_to_none(q.cosine_mean),
            "summed_count_r2": _nan_to_none(q.summed_count_r2),
            "example_r2_median": _nan_to_none(q.example_r2_median),
            "pca_fvu": _nan_to_none(q.pca_fvu), "nmf_fvu": _nan_to_none(q.nmf_fvu),
            "baseline_components": q.baseline_components, "n_bad_units": len(q.bad_units),
            "ridge_fvu": _nan_to_none(q.ridge_fvu), "ridge_alpha": q.ridge_alpha,
            "l0_histogram": json.dumps([list(b) for b in q.l0_histogram]),
            "density_histogram": json.dumps([list(b) for b in q.density_histogram]),
        } for q in qcs],
        schema={"sae_id": pl.Int64, "split": pl.String, "n_examples": pl.Int64, "l0_mean": pl.Float64,
                "l0_std": pl.Float64, "dead_fraction": pl.Float64, "fvu": pl.Float64, "r2": pl.Float64,
                "cosine_mean": pl.Float64, "summed_count_r2": pl.Float64, "example_r2_median": pl.Float64,
                "pca_fvu": pl.Float64, "nmf_fvu": pl.Float64, "baseline_components": pl.Int64,
                "n_bad_units": pl.Int64, "ridge_fvu": pl.Float64, "ridge_alpha": pl.Float64,
                "l0_histogram": pl.String, "density_histogram": pl.String},
    )
    unit_frames = []
    for q in qcs:
        d = len(q.unit_r2)
        bad = np.zeros(d, dtype=bool)
        bad[q.bad_units] = True
        unit_frames.append(pl.DataFrame({
            "sae_id": pl.Series([sae_id] * d, dtype=pl.Int64),
            "split": pl.Series([q.split] * d, dtype=pl.String),
            "unit_id": pl.Series(np.arange(d), dtype=pl.Int64),
            "r2": pl.Series(q.unit_r2, dtype=pl.Float64).fill_nan(None),
            "cosine": pl.Series(q.unit_cosine, dtype=pl.Float64).fill_nan(None),
            "bad": pl.Series(bad, dtype=pl.Boolean),
        }))
    unit_qc = pl.concat(unit_frames) if unit_frames else pl.DataFrame(
        schema={"sae_id": pl.Int64, "split": pl.String, "unit_id": pl.Int64, "r2": pl.Float64,
                "cosine": pl.Float64, "bad": pl.Boolean})
    return qc, unit_qc


def add_baselines(qc: SplitQC, train_x: np.ndarray, eval_x: np.ndarray, *, nonnegative: bool,
                  seed: int = 0) -> SplitQC:
    """Fill qc's PCA/NMF fields with as many components as its mean L0: max(1, round(l0_mean)), ≤ d."""
    k = int(np.clip(max(1, round(qc.l0_mean)), 1, eval_x.shape[1]))
    qc.pca_fvu, qc.nmf_fvu = baseline_fvu(train_x, eval_x, k, nonnegative=nonnegative, seed=seed)
    qc.baseline_components = k
    return qc
