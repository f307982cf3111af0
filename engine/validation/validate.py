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

Two verdicts answer two questions (``verdicts``): does the label *generalise* to held-out trials (1), and
are its signature units *specific* to it (3)? In a dense code (every CA1 cell a place cell) random units
decode the label about as well as the signature: such a label generalises without a specific signature.

The co-occurrence null is the ranking's (engine.analysis.nulls), so one rule decides what "could be chance" before
and after labelling. Every decoder is standardised inside its cross-validation folds, and the random-subset
null is tuned on random subsets of its own size, never with the signature's penalty.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from sklearn.metrics import r2_score, roc_auc_score

from engine.analysis.nulls import Member, Trials, group_members, monte_carlo_p, null_exceedances, trial_codes
from engine.options import check_integer
from engine.validation.cross_validation import (
    Folds,
    best_param,
    decoder_model,
    standardize,
)

CHANCE = {"balanced_accuracy": 0.5, "r2": 0.0}
"""What each decoding score is by chance: balanced accuracy 0.5 whatever the class balance, R² 0."""
MAX_THRESHOLD_CANDIDATES = 1000
"""Past this many distinct activations, thresholds are tried at quantiles only: MCC changes smoothly."""
BOOTSTRAP_CHUNK_BYTES = 64 * 1024 ** 2
"""Largest block of bootstrap picks (int64, resamples × test trials) drawn at once."""


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of one validation run."""

    signature_share: float = 0.8
    """Share of the decoder row's squared norm that the signature units must hold."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of whole test trials for the 95 % confidence intervals."""
    n_shifts: int = 1000
    """Null draws for the co-occurrence p-value (engine.analysis.nulls: shifts within test trials, or whole trials
    swapped for a predicate constant within trials); its floor is 1 / (1 + n_shifts)."""
    min_shift_fraction: float = 0.1
    """A shift moves a trial by at least this share of its length: the ranking's rule (AssociationConfig)."""
    n_random_subsets: int = 100
    """Random unit subsets of the signature's size: the null distribution of signature decoding."""
    n_tuning_subsets: int = 5
    """Random subsets (the null's first ones) whose cross-validation curves, averaged, choose the penalty of
    every random subset of that size: tuned like the signature, on subsets like them, not borrowed."""
    cv_folds: int = 5
    """GroupKFold folds (grouped by trial) for choosing the decoder's regularisation on train + val."""
    seed: int = 0
    """Seed of every random draw here (bootstrap, shifts, subsets, row subsample)."""
    alpha: float = 0.05
    """Significance level for the FDR-corrected co-occurrence q-value in the verdict."""
    n_ablation_null: int = 100
    """Null draws of each ablation (engine.validation.ablation): random features of the nearest train density,
    and random unit subsets of the signature's size; the exact p's floor is 1 / (1 + n_ablation_null)."""
    max_fit_rows: int = 20_000
    """Decoders train on at most this many train + val rows (uniform seeded subsample): past ~10⁴ rows
    scores barely move while every one of the ~100 fits gets proportionally slower."""


MIN_DRAWS = 20
"""Fewest draws --max-draws allows: a 95th percentile of the random subsets needs about 20."""


def validate_config(max_draws: int | None) -> ValidateConfig:
    """The validation settings with --max-draws checked: each kind of random draw (bootstrap resamples, shifts,
    random unit subsets, ablation nulls) capped at max_draws (None: the defaults, as the app validates)."""
    config = ValidateConfig()
    if max_draws is None:
        return config
    most = max(config.n_bootstrap, config.n_shifts, config.n_random_subsets, config.n_ablation_null)
    check_integer("--max-draws", max_draws, MIN_DRAWS, most, "the defaults draw at most "
                  f"{most:,} of a kind; a 95th percentile needs about {MIN_DRAWS}")
    return replace(config, n_bootstrap=min(config.n_bootstrap, max_draws), n_shifts=min(config.n_shifts, max_draws),
                   n_random_subsets=min(config.n_random_subsets, max_draws),
                   n_ablation_null=min(config.n_ablation_null, max_draws))


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
    # A feature that is never (or always) on while the predicate varies carries no information about it:
    # MCC 0, the usual convention, not undefined. Undefined stays for a predicate that never varies.
    mcc = np.where((denom == 0) & (tp + fn > 0) & (tn + fp > 0), 0.0, mcc)
    # 0/0 gives NaN already; x/0 with x ≠ 0 cannot happen for these ratios, but inf must never leak out.
    with np.errstate(divide="ignore", invalid="ignore"):
        balanced = (recall + specificity) / 2
    out = dict(precision=precision, recall=recall, specificity=specificity, f1=f1, mcc=mcc,
               balanced_accuracy=balanced)
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


def _mcc_statistic(table: np.ndarray, code_rows: np.ndarray) -> np.ndarray:
    """MCC per feature from the null's table: on-rows summed by code (0 predicate false, 1 true, 2 missing,
    never used: unmeasured rows were dropped) and rows per code."""
    tp, fp = table[:, 1], table[:, 0]
    return _metrics(tp, fp, code_rows[1] - tp, code_rows[0] - fp)["mcc"]


def shift_p_value(on: np.ndarray, present: np.ndarray, trial: np.ndarray, config: ValidateConfig) -> float:
    """Monte-Carlo p-value of the on/present MCC under the ranking's null (engine.analysis.nulls.null_exceedances).

    Rows are grouped by trial (a stable sort keeps time order within a trial). A predicate that varies within
    trials is shifted circularly within each trial, by at least min_shift_fraction of it, through the hub
    that keeps the p-value exact; one constant within every trial where it has a value (condition, choice)
    would not move under a shift, so whole trials swap values. Trials too short to shift swap as blocks.
    """
    order = np.argsort(trial, kind="stable")
    on, present, trial = on[order], present[order].astype(np.int64), trial[order]
    trials = Trials.from_ids(trial)
    by_trial, absent = trial_codes(present, 2, trials)
    member = Member(0, 3, present, by_trial, _mcc_statistic, absent=absent)
    rows = np.flatnonzero(on).astype(np.int64)
    result = null_exceedances(group_members([member]), rows, np.array([0, len(rows)], np.int32),
                              np.ones(len(rows)), trials, range(config.n_shifts), config.min_shift_fraction,
                              config.seed + 1, n_threads=1)
    observed, reached = result[0]
    if np.isnan(observed[0]):
        return float("nan")
    return float(monte_carlo_p(reached, config.n_shifts)[0])


def cooccurrence(activation_test: np.ndarray, present_test: np.ndarray, trial_test: np.ndarray,
                 threshold: float, config: ValidateConfig) -> dict:
    """Confusion matrix and scores of (activation > threshold) vs present on test.

    Keys: tp, fp, fn, tn, precision, recall, specificity, f1, mcc, balanced_accuracy; ``<m>_ci_low`` /
    ``<m>_ci_high`` for m in mcc, f1, balanced_accuracy, precision, recall (2.5 / 97.5 percentiles of
    whole test trials resampled with replacement; resamples where m is undefined are left out);
    n_test_trials behind them; p_value of the MCC, (1 + #null ≥ observed) / (1 + n_shifts), from
    ``shift_p_value``, and n_shifts. Undefined values are NaN.
    """
    on = np.asarray(activation_test, dtype=float) > threshold
    present = np.asarray(present_test, dtype=bool)
    trial = np.asarray(trial_test)
    tp = int(np.count_nonzero(on & present))
    fp = int(np.count_nonzero(on & ~present))
    fn = int(np.count_nonzero(~on & present))
    tn = len(on) - tp - fp - fn
    out: dict = dict(tp=tp, fp=fp, fn=fn, tn=tn, n_shifts=config.n_shifts)
    out.update({k: float(v) for k, v in _metrics(tp, fp, fn, tn).items()})

    # Bootstrap: per-trial confusion counts, then a multinomial draw of how often each trial is picked
    # is exactly resampling trials with replacement, and one matrix product sums all resamples.
    _, inv = np.unique(trial, return_inverse=True)
    cells = np.stack([on & present, on & ~present, ~on & present, ~on & ~present], axis=1)
    per_trial = np.stack([np.bincount(inv, c, minlength=inv.max() + 1) for c in cells.T], axis=1)
    rng = np.random.default_rng(config.seed)
    n_trials = len(per_trial)
    out["n_test_trials"] = n_trials
    # In chunks of resamples: [n_bootstrap × n_trials] picks at once would be 8 GB for a million test trials.
    # Rows are drawn one after another from the same generator, so the chunks draw exactly what one call would.
    chunk = max(1, BOOTSTRAP_CHUNK_BYTES // (8 * n_trials))
    sums = np.concatenate([rng.multinomial(n_trials, np.full(n_trials, 1 / n_trials),
                                           size=min(chunk, config.n_bootstrap - start)) @ per_trial
                           for start in range(0, config.n_bootstrap, chunk)])
    boot = _metrics(*sums.T)
    for name in ("mcc", "f1", "balanced_accuracy", "precision", "recall"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: the CI is undefined, NaN is right
            lo, hi = np.nanpercentile(boot[name], [2.5, 97.5])
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(lo), float(hi)

    out["p_value"] = float("nan") if np.isnan(out["mcc"]) else shift_p_value(on, present, trial, config)
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


# --------------------------------------------------------------------------- decoding


def decode_scores(counts_fit, target_fit, groups_fit, counts_test, target_test, kind: str,
                  config: ValidateConfig, units: np.ndarray | None = None, param: float | None = None,
                  auroc: bool = True, standardized: bool = False, folds: Folds | None = None) -> dict:
    """Fit on train + val (columns ``units``, all if None), score on test.

    Binary: standardised logistic regression with balanced class weights → balanced_accuracy, auroc.
    Continuous: standardised ridge → r2. ``param`` (C or alpha) skips the CV when given; otherwise it is
    chosen by GroupKFold CV on the fit rows, scaled inside each fold (``folds``: built once by the caller
    from the *unscaled* fit rows). The returned dict also holds ``param``. Scores that are undefined (one
    class in fit or test) are NaN. ``auroc=False`` skips the AUROC. ``standardized=True``: the columns were
    already z-scored on these fit rows (``standardize``), so any subset of them is too.
    """
    xf, xt = np.asarray(counts_fit), np.asarray(counts_test)
    yf, yt = np.asarray(target_fit), np.asarray(target_test)
    if kind == "binary":
        yf, yt = yf.astype(bool), yt.astype(bool)
        if len(np.unique(yf)) < 2:
            return dict(balanced_accuracy=float("nan"), auroc=float("nan"), param=float("nan"))
    else:
        yf, yt = yf.astype(float), yt.astype(float)
    if param is None:
        if folds is None:
            if standardized:
                raise ValueError("choosing the penalty needs the unscaled fit rows (folds=Folds(...))")
            folds = Folds(xf, np.asarray(groups_fit), config.cv_folds)
        param = best_param(folds.loss_curve(yf, kind, units), kind)
    if units is not None:
        xf, xt = xf[:, units], xt[:, units]
    if not standardized:
        xf, xt = standardize(xf, xt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data; scores still valid
        model = decoder_model(kind, param).fit(xf, yf)
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


def fit_rows(n_rows: int, config: ValidateConfig) -> np.ndarray:
    """Indices of the fit rows the decoders train on: all, or a seeded uniform sample of max_fit_rows."""
    if n_rows <= config.max_fit_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(config.seed + 2).choice(n_rows, config.max_fit_rows, replace=False))


def above_chance_ratio(signature: float, all_units: float, name: str) -> float:
    """The signature's decoding above chance as a share of all units' above chance: 1 means the signature
    reads the label as well as every unit. NaN when all units are not above chance (no share to take)."""
    chance = CHANCE[name]
    if not all_units > chance or not np.isfinite(signature):
        return float("nan")
    return float((signature - chance) / (all_units - chance))


def decoding_report(counts_fit, target_fit, groups_fit, counts_test, target_test, activation_fit,
                    activation_test, kind: str, signature: np.ndarray, config: ValidateConfig,
                    memo: dict | None = None) -> dict:
    """Decoding of the natural feature from the signature, all units, random subsets and the feature.

    Keys: score_name; signature_score, all_score, feature_score (+ ``*_auroc`` for binary);
    random_scores (array), random_p95, random_param, signature_over_all (above chance, see
    above_chance_ratio), signature_percentile (share of random subsets scoring strictly below the
    signature, ×100), signature_param.

    Random subsets of the signature's size are drawn from all units, without replacement within a subset,
    by a generator seeded with the size. Their penalty is chosen once per size by the same cross-validation
    the signature gets, on the loss curves of the first n_tuning_subsets of them averaged: the null is tuned
    as well as the signature, never handed the signature's penalty (which would make it easier to beat).
    Then each subset is fitted once. Fit rows are capped at max_fit_rows.

    ``memo``: one dict per target (the same fit and test rows and the same predicate), shared by the
    labels that test that predicate: the all-unit decoding and each size's null are computed once for all
    of them, with exactly the result a fresh call would give.
    """
    memo = {} if memo is None else memo
    keep = fit_rows(len(counts_fit), config)
    raw = np.asarray(counts_fit)[keep]
    xf, xt = standardize(raw, counts_test)
    yf, gf = np.asarray(target_fit)[keep], np.asarray(groups_fit)[keep]
    af = np.asarray(activation_fit, dtype=float)[keep]
    sig = np.asarray(signature, dtype=np.int64)
    name = "balanced_accuracy" if kind == "binary" else "r2"
    if "folds" not in memo:
        memo["folds"] = Folds(raw, gf, config.cv_folds)
    folds: Folds = memo["folds"]
    y_cv = yf.astype(bool) if kind == "binary" else yf.astype(float)

    def run(x_fit, x_test, units=None, param=None, auroc=True, standardized=True, own_folds=folds):
        return decode_scores(x_fit, yf, gf, x_test, target_test, kind, config, units, param, auroc,
                             standardized, own_folds)

    s_sig = run(xf, xt, sig)
    if "all" not in memo:
        memo["all"] = run(xf, xt)
    s_all = memo["all"]
    s_feat = run(af[:, None], np.asarray(activation_test, dtype=float)[:, None], standardized=False,
                 own_folds=Folds(af[:, None], gf, config.cv_folds))
    n_units = xf.shape[1]
    key = ("random", len(sig))
    if key not in memo:
        rng = np.random.default_rng([config.seed, 3, len(sig)])
        subsets = [np.sort(rng.choice(n_units, len(sig), replace=False)) for _ in range(config.n_random_subsets)]
        if not len(sig) or not subsets or (kind == "binary" and len(np.unique(y_cv)) < 2):
            memo[key] = (np.full(len(subsets) if len(sig) else 0, np.nan), float("nan"))
        else:
            curves = [folds.loss_curve(y_cv, kind, units) for units in subsets[:config.n_tuning_subsets]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: best_param falls back
                param = best_param(np.nanmean(curves, axis=0), kind)
            memo[key] = (np.array([run(xf, xt, units, param, False)[name] for units in subsets]), param)
    random_scores, random_param = memo[key]
    sig_score, all_score = s_sig[name], s_all[name]
    finite = random_scores[np.isfinite(random_scores)]
    out = dict(
        score_name=name, signature_score=sig_score, all_score=all_score, feature_score=s_feat[name],
        random_scores=random_scores, random_param=random_param,
        random_p95=float(np.percentile(finite, 95)) if len(finite) else float("nan"),
        signature_over_all=above_chance_ratio(sig_score, all_score, name),
        signature_percentile=float(100 * np.mean(finite < sig_score)) if len(finite) else float("nan"),
        signature_param=s_sig["param"],
    )
    if kind == "binary":
        out.update(signature_auroc=s_sig["auroc"], all_auroc=s_all["auroc"], feature_auroc=s_feat["auroc"])
    return out


# --------------------------------------------------------------------------- verdicts


class Verdicts(NamedTuple):
    generalises: bool
    """The label holds on held-out trials: MCC's 95 % interval above 0 and q below alpha."""
    signature_specific: bool
    """The signature units carry it more than chance units: signature decoding above the random 95th
    percentile."""
    reason: str
    """Both verdicts in words with the figures behind them."""

    @property
    def validated(self) -> bool:
        """Both: the label generalises and its signature is specific."""
        return self.generalises and self.signature_specific


def verdicts(row: dict, q_value: float | None, config: ValidateConfig) -> Verdicts:
    """The two verdicts of a tested label. A missing figure (absent, None as stored, or NaN) fails its
    condition. ``row`` holds mcc, mcc_ci_low/high, n_test_trials, p_value, n_shifts, signature_score and
    random_p95."""
    from engine.validation.validation_text import p_text, q_text, trials_text

    def figure(name: str) -> float:
        value = row.get(name)
        return float("nan") if value is None else float(value)

    mcc, lo, hi, sig, p95 = map(figure, ("mcc", "mcc_ci_low", "mcc_ci_high", "signature_score", "random_p95"))
    q_value = float("nan") if q_value is None else q_value
    p, n_null = row.get("p_value"), row.get("n_shifts")
    interval = f"MCC {mcc:.2f} [{lo:.2f}, {hi:.2f}] over {trials_text(row.get('n_test_trials'))}"
    q = f"q {q_text(q_value, p, n_null)} (p {p_text(p, n_null)})"
    generalise_fails = []
    if not lo > 0:
        generalise_fails.append("interval not above 0" if np.isfinite(lo) else "no interval")
    if not q_value < config.alpha:
        generalise_fails.append(f"q not below {config.alpha:g}")
    general = (f"generalises: {interval}, {q}" if not generalise_fails else
               f"does not generalise ({', '.join(generalise_fails)}): {interval}, {q}")
    specific = sig > p95
    decoding = f"signature decodes {sig:.3g} {'>' if specific else 'vs'} random subsets' 95th percentile {p95:.3g}"
    specificity = f"signature-specific: {decoding}" if specific else f"signature not specific: {decoding}"
    return Verdicts(not generalise_fails, bool(specific), f"{general}; {specificity}")

