"""The scikit-learn way of validating labels: bench/validate.py's baseline, on equal terms with mini.

For one pairing (a labelled feature and its predicate) it computes the figures `engine.validation.validate_run` stores,
the way a user would with scikit-learn: the on-threshold and co-occurrence statistics with mini's own
functions (no library offers them, so both sides do the same work there), the coactivation profile, and
every decoder as ``GridSearchCV(Pipeline(StandardScaler, LogisticRegression), C grid, GroupKFold by trial,
log loss)``: the signature units, all units, the feature's activation, and the random-subset null (the
penalty chosen on the first ``n_tuning_subsets`` subsets' cross-validation curves averaged, then every subset
fitted with it), over the same rows, seeds and subsets as mini.

Two ways, one code path (so their figures are identical, and the bench checks it):

- **shared**: what does not depend on the feature is computed once per predicate, as mini does it: the
  target and its rows, the all-unit decoder, the random-subset null of each signature size; and once per run
  the fit rows' means and SDs of the profile.
- **unshared**: everything recomputed for every pairing (what a user who validates one label at a time
  writes).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from engine.analysis.predicates import parse_predicate
from engine.validation.cross_validation import C_GRID
from engine.validation.validate import (
    ValidateConfig,
    above_chance_ratio,
    choose_threshold,
    cooccurrence,
    fit_rows,
    signature_units,
)
from engine.validation.validate_run import predicate_target


class Recording(NamedTuple):
    """What every pairing reads: the dataset as validation sees it."""

    counts: np.ndarray
    """[examples × units] float32."""
    trials: np.ndarray
    fit: np.ndarray
    """train + val rows (bool)."""
    test: np.ndarray
    """test rows (bool)."""
    values: pl.DataFrame
    """Natural values in long form."""
    kinds: dict[str, str]


class Pairing(NamedTuple):
    """The figures of one pairing, named as mini stores them (validations columns)."""

    threshold: float
    mcc: float
    mcc_ci_low: float
    p_value: float
    decode_signature: float
    decode_all: float
    decode_feature: float
    decode_random_p95: float
    signature_over_all: float
    n_signature_units: int
    profile: np.ndarray
    """Per unit: mean z-scored count (by the fit rows' mean and SD) over the fit rows where the feature is on."""


COMPARED = ("threshold", "mcc", "mcc_ci_low", "p_value", "decode_signature", "decode_all", "decode_feature",
            "decode_random_p95", "signature_over_all")
"""The figures compared with mini's stored ones."""


def _pipeline(c: float = 1.0) -> Pipeline:
    return Pipeline([("scale", StandardScaler()),
                     ("lr", LogisticRegression(C=c, class_weight="balanced", max_iter=1000))])


def _search(x, y, groups, config: ValidateConfig, refit: bool = True) -> GridSearchCV:
    search = GridSearchCV(_pipeline(), {"lr__C": C_GRID}, cv=GroupKFold(config.cv_folds), scoring="neg_log_loss",
                          refit=refit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data, as in mini
        return search.fit(x, y, groups=groups)


def _scores(model, x_test, y_test) -> tuple[float, float]:
    """Balanced accuracy and AUROC on test (mini computes both for the signature, all units and the feature)."""
    return (float(balanced_accuracy_score(y_test, model.predict(x_test))),
            float(roc_auc_score(y_test, model.decision_function(x_test))))


def _tuned(x_fit, y_fit, groups, x_test, y_test, config: ValidateConfig) -> float:
    """Balanced accuracy on test of the decoder tuned by cross-validation on the fit rows."""
    return _scores(_search(x_fit, y_fit, groups, config).best_estimator_, x_test, y_test)[0]


class _Predicate(NamedTuple):
    target: np.ndarray
    fit: np.ndarray
    test: np.ndarray
    rows: np.ndarray
    """The decoders' fit rows (mini's seeded sample of at most max_fit_rows)."""


def _predicate(recording: Recording, text: str, config: ValidateConfig) -> _Predicate | None:
    """The predicate's target and rows; None when it cannot be tested (never or always true on the fit or
    the test rows where it is measured: nothing to tune or to score, mini's "not testable")."""
    present, measured = predicate_target(parse_predicate(text, recording.kinds), recording.values, recording.kinds,
                                         len(recording.trials))
    fit, test = recording.fit & measured, recording.test & measured
    if any(not 0 < np.count_nonzero(present[rows]) < np.count_nonzero(rows) for rows in (fit, test)):
        return None
    rows = np.flatnonzero(fit)[fit_rows(int(fit.sum()), config)]
    return _Predicate(present, fit, test, rows)


def _random_null(x_fit, y_fit, groups, x_test, y_test, size: int, config: ValidateConfig) -> float:
    """95th percentile of the random subsets' balanced accuracy, the subsets drawn as mini draws them."""
    rng = np.random.default_rng([config.seed, 3, size])
    subsets = [np.sort(rng.choice(x_fit.shape[1], size, replace=False)) for _ in range(config.n_random_subsets)]
    curves = [_search(x_fit[:, units], y_fit, groups, config, refit=False).cv_results_["mean_test_score"]
              for units in subsets[:config.n_tuning_subsets]]
    c = float(C_GRID[int(np.argmax(np.mean(curves, axis=0)))])
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for units in subsets:
            model = _pipeline(c).fit(x_fit[:, units], y_fit)
            scores.append(balanced_accuracy_score(y_test, model.predict(x_test[:, units])))
    return float(np.percentile(scores, 95))


def validate_pairing(recording: Recording, predicate: str, activation: np.ndarray, weights: np.ndarray,
                     config: ValidateConfig, run_cache: dict, predicate_cache: dict) -> Pairing | None:
    """One pairing's figures (None: not testable). The caches hold what does not depend on the feature: pass
    one ``run_cache`` for the run and one ``predicate_cache`` per predicate to share it, or fresh dicts to
    recompute everything."""
    if "scaler" not in run_cache:
        run_cache["scaler"] = StandardScaler().fit(recording.counts[recording.fit])
    scaler: StandardScaler = run_cache["scaler"]
    if "predicate" not in predicate_cache:
        p = _predicate(recording, predicate, config)
        predicate_cache["predicate"] = p
        if p is not None:
            predicate_cache["x"] = (recording.counts[p.rows], recording.counts[p.test])
    p = predicate_cache["predicate"]
    if p is None:
        return None
    x_fit, x_test = predicate_cache["x"]
    y_fit, y_test, groups = p.target[p.rows], p.target[p.test], recording.trials[p.rows]

    threshold = choose_threshold(activation[p.fit], p.target[p.fit])
    co = cooccurrence(activation[p.test], p.target[p.test], recording.trials[p.test], threshold, config)
    signature = signature_units(weights, config.signature_share)
    on = p.fit & (activation > threshold)
    profile = ((recording.counts[on].mean(axis=0) - scaler.mean_) / scaler.scale_ if on.any()
               else np.full(recording.counts.shape[1], np.nan))

    decode_signature = _tuned(x_fit[:, signature], y_fit, groups, x_test[:, signature], y_test, config)
    if "all" not in predicate_cache:
        predicate_cache["all"] = _tuned(x_fit, y_fit, groups, x_test, y_test, config)
    decode_all = predicate_cache["all"]
    decode_feature = _tuned(activation[p.rows, None], y_fit, groups, activation[p.test, None], y_test, config)
    key = ("random", len(signature))
    if key not in predicate_cache:
        predicate_cache[key] = _random_null(x_fit, y_fit, groups, x_test, y_test, len(signature), config)
    return Pairing(threshold, co["mcc"], co["mcc_ci_low"], co["p_value"], decode_signature, decode_all,
                   decode_feature, predicate_cache[key],
                   above_chance_ratio(decode_signature, decode_all, "balanced_accuracy"), len(signature), profile)


def validate_pairings(recording: Recording, labels: list[dict], activations: dict, weights: dict,
                      config: ValidateConfig, shared: bool) -> dict[int, Pairing | None]:
    """label_id → figures (None: not testable) of each label (dicts with label_id, sae_id, feature_id, predicate), one after another:
    ``shared``, what may be shared is computed once (per run, per predicate as mini groups them: by what the
    text means); otherwise everything is recomputed for every pairing."""
    run_cache: dict = {}
    predicate_caches: dict = {}
    out = {}
    for label in labels:
        key = (label["sae_id"], label["feature_id"])
        if shared:
            caches = run_cache, predicate_caches.setdefault(
                parse_predicate(label["predicate"], recording.kinds).target, {})
        else:
            caches = {}, {}
        out[label["label_id"]] = validate_pairing(recording, label["predicate"], activations[key], weights[key],
                                                  config, *caches)
    return out


def differences(a: Pairing, b: dict) -> dict[str, float]:
    """|a − b| per compared figure (b: a stored validations row); NaN on both sides counts as equal."""
    out = {}
    for name in COMPARED:
        x, y = getattr(a, name), b[name]
        x, y = float("nan") if x is None else float(x), float("nan") if y is None else float(y)
        out[name] = 0.0 if np.isnan(x) and np.isnan(y) else abs(x - y)
    return out
