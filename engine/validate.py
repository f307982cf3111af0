"""Validation of a labelled SAE feature on the held-out TEST split.

A label says "feature k means predicate P" (``condition = 3``, ``speed in [20, 35)``). This module
tests that claim on data the labeller never saw, three ways:

1. co-occurrence: feature on (activation above a threshold fitted on train + val, never on test) vs P
   present, with confidence intervals by bootstrapping whole test trials (examples inside a trial are
   autocorrelated, so resampling single examples would give intervals that are far too narrow) and a
   p-value from a within-trial circular shift of the activation (keeps both series' autocorrelation);
2. neural signature: the few units that carry most of the feature's decoder weight, and how each unit
   behaves while the feature is on;
3. decoding: is P readable from the signature units alone about as well as from all units, and better
   than from random unit subsets of the same size?

``verdict`` combines these into one stated rule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold

C_GRID = np.logspace(-3, 2, 6)
"""Inverse regularisation strengths tried for logistic regression (features standardised)."""
ALPHA_GRID = np.logspace(-2, 4, 7)
"""Ridge penalties tried; with standardised features and ~10⁴ rows the useful range is wide."""
MAX_THRESHOLD_CANDIDATES = 1000
"""Past this many distinct activations, thresholds are tried at quantiles only: MCC changes smoothly."""


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of one validation run."""

    signature_share: float = 0.8
    """Share of the decoder row's squared norm that the signature units must hold."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of whole test trials for the 95 % confidence intervals."""
    n_shifts: int = 200
    """Within-trial circular shifts of the activation for the co-occurrence p-value."""
    n_random_subsets: int = 100
    """Random unit subsets of the signature's size: the null distribution of signature decoding."""
    cv_folds: int = 5
    """GroupKFold folds (grouped by trial) for choosing the decoder's regularisation on train + val."""
    seed: int = 0
    """Seed of every random draw here (bootstrap, shifts, subsets, row subsample)."""
    alpha: float = 0.05
    """Significance level for the FDR-corrected co-occurrence q-value in the verdict."""
    max_fit_rows: int = 20_000
    """Decoders train on at most this many train + val rows (uniform seeded subsample): past ~10⁴ rows
    scores barely move while every one of the ~100 fits gets proportionally slower."""


# --------------------------------------------------------------------------- co-occurrence


def _metrics(tp, fp, fn, tn) -> dict:
    """Confusion-matrix scores, elementwise over arrays of counts; undefined (0/0) scores are NaN."""
    tp, fp, fn, tn = (np.asarray(x, dtype=float) for x in (tp, fp, fn, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        specificity = tn / (tn + fp)
        f1 = 2 * tp / (2 * tp + fp + fn)
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = (tp * tn - fp * fn) / denom
    # 0/0 gives NaN already; x/0 with x ≠ 0 cannot happen for these ratios, but inf must never leak out.
    out = dict(precision=precision, recall=recall, specificity=specificity, f1=f1, mcc=mcc,
               balanced_accuracy=(recall + specificity) / 2)
    return {k: np.where(np.isfinite(v), v, np.nan) for k, v in out.items()}


def choose_threshold(activation_fit: np.ndarray, present_fit: np.ndarray) -> float:
    """Threshold t on train + val maximising the MCC of (activation > t) vs present.

    Candidates are 0 and the distinct activation values (quantiles of them when there are more than
    MAX_THRESHOLD_CANDIDATES). Ties go to the lowest t. Where MCC is undefined for every candidate (P
    never or always present), 0 is returned: "on whenever active".
    """
    a = np.asarray(activation_fit, dtype=float)
    y = np.asarray(present_fit, dtype=bool)
    cand = np.unique(np.r_[0.0, a])
    if len(cand) > MAX_THRESHOLD_CANDIDATES:
        cand = np.unique(np.r_[0.0, np.quantile(cand, np.linspace(0, 1, MAX_THRESHOLD_CANDIDATES))])
    pos, neg = np.sort(a[y]), np.sort(a[~y])
    # Rows above t among positives / negatives, for every candidate at once via binary search.
    tp = len(pos) - np.searchsorted(pos, cand, side="right")
    fp = len(neg) - np.searchsorted(neg, cand, side="right")
    mcc = _metrics(tp, fp, len(pos) - tp, len(neg) - fp)["mcc"]
    if not np.isfinite(mcc).any():
        return 0.0
    return float(cand[np.nanargmax(mcc)])


def _shift_null(on: np.ndarray, present: np.ndarray, trial: np.ndarray, config: ValidateConfig) -> np.ndarray:
    """Null MCCs of the co-occurrence, one per shift.

    Rows are grouped by trial (stable sort keeps time order within a trial). Each shift rotates the on/off
    series of every trial by its own offset in [1, L − 1]. A predicate constant within every trial
    (condition, choice) would not move under any within-trial shift of a trial-level feature (p = 1 for
    a perfect label), so then whole trials swap predicate values instead, as in engine.nulls.
    """
    rng = np.random.default_rng(config.seed + 1)
    order = np.argsort(trial, kind="stable")
    on, present, tr = on[order], present[order], trial[order]
    starts = np.flatnonzero(np.r_[True, tr[1:] != tr[:-1]])
    lengths = np.diff(np.r_[starts, len(tr)])
    trial_of_row = np.repeat(np.arange(len(starts)), lengths)
    pos = np.arange(len(tr)) - starts[trial_of_row]
    constant = bool(np.all(present == present[starts][trial_of_row]))
    null = np.empty(config.n_shifts)
    for s in range(config.n_shifts):
        if constant:
            shuffled = present[starts][rng.permutation(len(starts))][trial_of_row]
            o, p = on, shuffled
        else:
            off = rng.integers(1, np.maximum(lengths, 2))  # length-1 trials: offset 1 ≡ 0, stays put
            o = on[starts[trial_of_row] + (pos + off[trial_of_row]) % lengths[trial_of_row]]
            p = present
        tp = np.count_nonzero(o & p)
        fp = np.count_nonzero(o) - tp
        fn = np.count_nonzero(p) - tp
        null[s] = _metrics(tp, fp, fn, len(o) - tp - fp - fn)["mcc"]
    return null


def cooccurrence(activation_test: np.ndarray, present_test: np.ndarray, trial_test: np.ndarray,
                 threshold: float, config: ValidateConfig) -> dict:
    """Confusion matrix and scores of (activation > threshold) vs present on test.

    Keys: tp, fp, fn, tn, precision, recall, specificity, f1, mcc, balanced_accuracy; ``<m>_ci_low`` /
    ``<m>_ci_high`` for m in mcc, f1, balanced_accuracy, precision, recall (2.5 / 97.5 percentiles of
    whole test trials resampled with replacement; resamples where m is undefined are left out); p_value
    of the MCC, (1 + #null ≥ observed) / (1 + n_shifts), from ``_shift_null``. Undefined values are NaN.
    """
    on = np.asarray(activation_test, dtype=float) > threshold
    present = np.asarray(present_test, dtype=bool)
    trial = np.asarray(trial_test)
    tp = int(np.count_nonzero(on & present))
    fp = int(np.count_nonzero(on & ~present))
    fn = int(np.count_nonzero(~on & present))
    tn = len(on) - tp - fp - fn
    out: dict = dict(tp=tp, fp=fp, fn=fn, tn=tn)
    out.update({k: float(v) for k, v in _metrics(tp, fp, fn, tn).items()})

    # Bootstrap: per-trial confusion counts, then a multinomial draw of how often each trial is picked
    # is exactly resampling trials with replacement, and one matrix product sums all resamples.
    _, inv = np.unique(trial, return_inverse=True)
    cells = np.stack([on & present, on & ~present, ~on & present, ~on & ~present], axis=1)
    per_trial = np.stack([np.bincount(inv, c, minlength=inv.max() + 1) for c in cells.T], axis=1)
    rng = np.random.default_rng(config.seed)
    n_trials = len(per_trial)
    picks = rng.multinomial(n_trials, np.full(n_trials, 1 / n_trials), size=config.n_bootstrap)
    boot = _metrics(*(picks @ per_trial).T)
    for name in ("mcc", "f1", "balanced_accuracy", "precision", "recall"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: the CI is undefined, NaN is right
            lo, hi = np.nanpercentile(boot[name], [2.5, 97.5])
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(lo), float(hi)

    if np.isnan(out["mcc"]):
        out["p_value"] = float("nan")
    else:
        null = _shift_null(on, present, trial, config)
        # NaN nulls (a shift cannot make MCC undefined, but a trial swap can) count as not reaching it.
        reached = np.count_nonzero(np.nan_to_num(null, nan=-np.inf) >= out["mcc"] - 1e-12)
        out["p_value"] = (1 + reached) / (1 + config.n_shifts)
    return out


# --------------------------------------------------------------------------- neural signature


def signature_units(decoder_row: np.ndarray, share: float) -> np.ndarray:
    """Unit ids by |weight| descending: the smallest prefix whose squared weights reach ``share`` of
    the row's squared norm (squared, because the decoder's contribution to reconstruction energy is).
    An all-zero row has no signature (empty array)."""
    w2 = np.asarray(decoder_row, dtype=float) ** 2
    total = w2.sum()
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-w2, kind="stable")
    # Small tolerance so that float rounding of the running sum never asks for one unit too many.
    k = int(np.searchsorted(np.cumsum(w2[order]), share * total * (1 - 1e-12))) + 1
    return order[: min(k, len(order))].astype(np.int64)


def coactivation_profile(counts: np.ndarray, activation: np.ndarray, threshold: float) -> np.ndarray:
    """Per unit: mean z-scored count over the examples where activation > threshold.

    Counts are z-scored over the given examples (all of them, on or off), so 0 means "as usual" and
    the profile reads in standard deviations. Units that never vary score 0; no on-examples → NaN.
    """
    x = np.asarray(counts, dtype=float)
    on = np.asarray(activation, dtype=float) > threshold
    if not on.any():
        return np.full(x.shape[1], np.nan)
    sd = x.std(axis=0)
    z = (x[on] - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return z.mean(axis=0)


# --------------------------------------------------------------------------- decoding


def _model(kind: str, param: float):
    """The decoder on standardised columns (``standardize`` runs first, once, for every subset)."""
    if kind == "binary":
        return LogisticRegression(C=param, class_weight="balanced", max_iter=1000)
    if kind == "continuous":
        return Ridge(alpha=param)
    raise ValueError(f"kind must be 'binary' or 'continuous', not {kind!r}")


def standardize(x_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices z-scored by the fit rows' mean and SD per column (float64; constant columns → 0).

    Column-wise, so any subset of a standardised matrix's columns is that subset standardised: the
    whole matrix is done once and every random unit subset reuses it. Only fit rows set the scale.
    """
    xf = np.asarray(x_fit, dtype=np.float64)
    mean, sd = xf.mean(axis=0), xf.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (xf - mean) / sd, (np.asarray(x_test, dtype=np.float64) - mean) / sd


def trial_folds(groups: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of each cross-validation fold, whole trials to one side: at most
    n_folds, fewer when there are fewer trials, none for a single trial."""
    groups = np.asarray(groups)
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        return []
    return list(GroupKFold(n_folds).split(np.zeros((len(groups), 1)), groups=groups))


def _choose_param(x, y, groups, kind: str, config: ValidateConfig) -> float:
    """Regularisation by GroupKFold CV on the fit rows: folds never split a trial, so autocorrelated
    neighbours cannot leak between training and validation."""
    splits = trial_folds(groups, config.cv_folds)
    if not splits:
        return 1.0  # one trial, nothing to cross-validate over: C = 1 / alpha = 1, sklearn's defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # folds missing a class warn; their NaN scores are dropped below
        if kind == "binary":
            # LogisticRegressionCV walks the C path with warm starts: ~3× faster than a grid search.
            # Log loss, not balanced accuracy, picks C: accuracy ties across most Cs (the boundary barely
            # moves as weights shrink) and would then always pick the strongest penalty.
            # Columns were standardised on all fit rows before the split: a mean and SD leak no labels.
            try:
                # l1_ratios=(0,) is plain L2, spelled as sklearn ≥ 1.10 requires; ravel reads C_ both as
                # the legacy per-class array and as the newer scalar.
                cv = LogisticRegressionCV(Cs=C_GRID, cv=splits, class_weight="balanced", l1_ratios=(0,),
                                          scoring="neg_log_loss", max_iter=1000)
                return float(np.ravel(cv.fit(x, y).C_)[0])
            except ValueError:  # a training fold with one class: fall back to the default
                return 1.0
        search = GridSearchCV(_model(kind, 1.0), {"alpha": ALPHA_GRID}, cv=splits, scoring="r2",
                              refit=False, error_score=np.nan).fit(x, y)
    scores = np.nan_to_num(search.cv_results_["mean_test_score"], nan=-np.inf)
    return float(search.cv_results_["params"][int(np.argmax(scores))]["alpha"])


def decode_scores(counts_fit, target_fit, groups_fit, counts_test, target_test, kind: str,
                  config: ValidateConfig, units: np.ndarray | None = None, param: float | None = None,
                  auroc: bool = True, standardized: bool = False) -> dict:
    """Fit on train + val (columns ``units``, all if None), score on test.

    Binary: standardised logistic regression with balanced class weights → balanced_accuracy, auroc.
    Continuous: standardised ridge → r2. ``param`` (C or alpha) skips the CV when given. The returned
    dict also holds ``param``. Scores that are undefined (one class in fit or test) are NaN.
    ``auroc=False`` skips the AUROC (the random-subset null needs balanced accuracy only).
    ``standardized=True``: the columns were already z-scored on these fit rows (``standardize``), so any
    subset of them is too; the ~100 random subsets per label skip redoing it on every test row.
    """
    xf, xt = np.asarray(counts_fit), np.asarray(counts_test)
    if units is not None:
        xf, xt = xf[:, units], xt[:, units]
    if not standardized:
        xf, xt = standardize(xf, xt)
    yf, yt = np.asarray(target_fit), np.asarray(target_test)
    if kind == "binary":
        yf, yt = yf.astype(bool), yt.astype(bool)
        nan = dict(balanced_accuracy=float("nan"), auroc=float("nan"), param=float("nan"))
        if len(np.unique(yf)) < 2:
            return nan
    else:
        yf, yt = yf.astype(float), yt.astype(float)
    if param is None:
        param = _choose_param(xf, yf, np.asarray(groups_fit), kind, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data; scores still valid
        model = _model(kind, param).fit(xf, yf)
    if kind == "continuous":
        r2 = r2_score(yt, model.predict(xt)) if len(yt) > 1 and yt.var() > 0 else np.nan
        return dict(r2=float(r2), param=param)
    if len(np.unique(yt)) < 2:
        return dict(balanced_accuracy=float("nan"), auroc=float("nan"), param=param)
    score = model.decision_function(xt)
    predicted = score > 0
    # Balanced accuracy = mean recall of the two classes (sklearn's balanced_accuracy_score, without its
    # input checks: this runs ~100 times per label).
    balanced = (np.mean(predicted[yt]) + np.mean(~predicted[~yt])) / 2
    return dict(balanced_accuracy=float(balanced),
                auroc=float(roc_auc_score(yt, score)) if auroc else float("nan"), param=param)


def decode(counts_fit, target_fit, groups_fit, counts_test, target_test, kind: str,
           config: ValidateConfig, units: np.ndarray | None = None) -> float:
    """Main decoding score on test: balanced accuracy (binary) or R² (continuous)."""
    s = decode_scores(counts_fit, target_fit, groups_fit, counts_test, target_test, kind, config, units)
    return s["balanced_accuracy" if kind == "binary" else "r2"]


def fit_rows(n_rows: int, config: ValidateConfig) -> np.ndarray:
    """Indices of the fit rows the decoders train on: all, or a seeded uniform sample of max_fit_rows."""
    if n_rows <= config.max_fit_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(config.seed + 2).choice(n_rows, config.max_fit_rows, replace=False))


def decoding_report(counts_fit, target_fit, groups_fit, counts_test, target_test, activation_fit,
                    activation_test, kind: str, signature: np.ndarray, config: ValidateConfig,
                    memo: dict | None = None) -> dict:
    """Decoding of the natural feature from the signature, all units, random subsets and the feature.

    Keys: score_name; signature_score, all_score, feature_score (+ ``*_auroc`` for binary);
    random_scores (array), random_p95, signature_over_all, signature_percentile (share of random
    subsets scoring strictly below the signature, ×100), signature_param.

    For speed the random subsets reuse the regularisation CV-chosen for the signature (same number of
    units, so the same penalty is a fair comparison) and are fitted once each, without CV. Subsets are
    drawn from all units, without replacement within a subset, by a generator seeded with the subset
    size, so the null depends only on (target, size, penalty). Fit rows are capped at max_fit_rows.

    ``memo``: one dict per target (the same fit and test rows and the same predicate), shared by the
    labels that test that predicate: the all-unit decoding and each (size, penalty) null are computed
    once for all of them, with exactly the result a fresh call would give.
    """
    memo = {} if memo is None else memo
    keep = fit_rows(len(counts_fit), config)
    xf, xt = standardize(np.asarray(counts_fit)[keep], counts_test)
    yf, gf = np.asarray(target_fit)[keep], np.asarray(groups_fit)[keep]
    af = np.asarray(activation_fit, dtype=float)[keep]
    sig = np.asarray(signature, dtype=np.int64)
    name = "balanced_accuracy" if kind == "binary" else "r2"

    def run(x_fit, x_test, units=None, param=None, auroc=True, standardized=True):
        return decode_scores(x_fit, yf, gf, x_test, target_test, kind, config, units, param, auroc,
                             standardized)

    s_sig = run(xf, xt, sig)
    if "all" not in memo:
        memo["all"] = run(xf, xt)
    s_all = memo["all"]
    s_feat = run(af[:, None], np.asarray(activation_test, dtype=float)[:, None], standardized=False)
    n_units = xf.shape[1]
    key = ("random", len(sig), s_sig["param"])
    if key not in memo:
        rng = np.random.default_rng([config.seed, 3, len(sig)])
        memo[key] = np.array([
            run(xf, xt, np.sort(rng.choice(n_units, len(sig), replace=False)), s_sig["param"], False)[name]
            for _ in range(config.n_random_subsets)
        ]) if len(sig) else np.zeros(0)
    random_scores = memo[key]
    sig_score, all_score = s_sig[name], s_all[name]
    finite = random_scores[np.isfinite(random_scores)]
    out = dict(
        score_name=name, signature_score=sig_score, all_score=all_score, feature_score=s_feat[name],
        random_scores=random_scores,
        random_p95=float(np.percentile(finite, 95)) if len(finite) else float("nan"),
        signature_over_all=float(sig_score / all_score) if all_score else float("nan"),
        signature_percentile=float(100 * np.mean(finite < sig_score)) if len(finite) else float("nan"),
        signature_param=s_sig["param"],
    )
    if kind == "binary":
        out.update(signature_auroc=s_sig["auroc"], all_auroc=s_all["auroc"], feature_auroc=s_feat["auroc"])
    return out


# --------------------------------------------------------------------------- verdict


def verdict(row: dict, q_value: float, config: ValidateConfig) -> tuple[bool, str]:
    """The rule: validated iff the MCC's 95 % CI lies above 0, the co-occurrence q-value (p-value after
    Benjamini–Hochberg over the labels tested together) is below alpha, and signature decoding beats
    the 95th percentile of random subsets. NaN fails its condition. Returns (validated, reason)."""
    mcc_lo = row.get("mcc_ci_low", float("nan"))
    sig, p95 = row.get("signature_score", float("nan")), row.get("random_p95", float("nan"))
    failed = []
    if not mcc_lo > 0:
        failed.append(f"MCC 95% CI low {mcc_lo:.3g} is not above 0")
    if not q_value < config.alpha:
        failed.append(f"q = {q_value:.3g} is not below {config.alpha:g}")
    if not sig > p95:
        failed.append(f"signature decoding {sig:.3g} is not above the random 95th percentile {p95:.3g}")
    if failed:
        return False, "not validated: " + "; ".join(failed)
    return True, (f"validated: MCC CI low {mcc_lo:.3g} > 0, q = {q_value:.3g} < {config.alpha:g}, "
                  f"signature {sig:.3g} > random 95th percentile {p95:.3g}")
