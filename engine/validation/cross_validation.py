"""The decoders' cross-validation for validation: folds of whole trials, standardised inside each fold by its own
training rows, the regularisation path's loss per penalty, and the penalty chosen from it. Only fit rows (train +
val) ever reach it: the test split is scored once, by engine.validation.validate, with the penalty chosen here.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold

C_GRID = np.logspace(-3, 2, 6)
"""Inverse regularisation strengths tried for logistic regression (features standardised)."""
ALPHA_GRID = np.logspace(-2, 4, 7)
"""Ridge penalties tried; with standardised features and ~10⁴ rows the useful range is wide."""

def decoder_model(kind: str, param: float, warm_start: bool = False):
    """The decoder on standardised columns."""
    if kind == "binary":
        return LogisticRegression(C=param, class_weight="balanced", max_iter=1000, warm_start=warm_start)
    if kind == "continuous":
        return Ridge(alpha=param)
    raise ValueError(f"kind must be 'binary' or 'continuous', not {kind!r}")


def standardize(x_fit: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both matrices z-scored by the fit rows' mean and SD per column (float64; constant columns → 0).

    Column-wise, so any subset of a standardised matrix's columns is that subset standardised: the
    whole matrix is done once and every random unit subset reuses it. Only fit rows set the scale.
    """
    xf = np.asarray(x_fit, dtype=np.float64)
    mean, sd = column_scale(xf)
    return (xf - mean) / sd, (np.asarray(x_test, dtype=np.float64) - mean) / sd


def column_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, sd = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(sd > 0, sd, 1.0)


def trial_folds(groups: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of each cross-validation fold, whole trials to one side: at most
    n_folds, fewer when there are fewer trials, none for a single trial."""
    groups = np.asarray(groups)
    n_folds = min(n_folds, len(np.unique(groups)))
    if n_folds < 2:
        return []
    return list(GroupKFold(n_folds).split(np.zeros((len(groups), 1)), groups=groups))


class Folds:
    """Cross-validation folds of the fit rows (whole trials to one side: autocorrelated neighbours cannot
    leak between training and validation), each with its training rows' column means and SDs.

    Every decoder is standardised inside its folds, by the fold's training rows only, so a validation row
    never informs its own scaling. Scaling is per column, so one mean and SD per fold serve every unit
    subset (the signature, ~100 random subsets): computed once, sliced for each."""

    def __init__(self, x_fit: np.ndarray, groups: np.ndarray, n_folds: int):
        self.x = np.asarray(x_fit, dtype=np.float64)
        self.splits = trial_folds(groups, n_folds)
        self.scales = [column_scale(self.x[train]) for train, _ in self.splits]

    def loss_curve(self, y: np.ndarray, kind: str, units: np.ndarray | None = None) -> np.ndarray:
        """Mean validation loss per grid value (C_GRID or ALPHA_GRID): log loss for binary (accuracy ties across
        most Cs, as the boundary barely moves while weights shrink, and would always pick the strongest
        penalty), mean squared error for continuous. NaN where no fold could be scored."""
        grid = C_GRID if kind == "binary" else ALPHA_GRID
        cols = slice(None) if units is None else np.asarray(units)
        x = self.x if units is None else self.x[:, cols]
        losses = []
        for (train, val), (mean, sd) in zip(self.splits, self.scales, strict=True):
            x_train, x_val = (x[train] - mean[cols]) / sd[cols], (x[val] - mean[cols]) / sd[cols]
            y_train, y_val = y[train], y[val]
            if kind == "binary" and (len(np.unique(y_train)) < 2 or len(np.unique(y_val)) < 2):
                continue  # a fold with one class cannot fit or score a decoder
            losses.append(self._path(x_train, y_train, x_val, y_val, kind, grid))
        if not losses:
            return np.full(len(grid), np.nan)
        return np.mean(losses, axis=0)

    @staticmethod
    def _path(x_train, y_train, x_val, y_val, kind: str, grid: np.ndarray) -> np.ndarray:
        out = np.empty(len(grid))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on near-separable data; losses still valid
            if kind == "binary":
                # Weakest penalty last, each fit warm-started from the stronger one before: the regularisation
                # path, as LogisticRegressionCV walks it, ~3x faster than fitting each C from scratch.
                model = decoder_model(kind, grid[0], warm_start=True)
                for i, c in enumerate(grid):
                    model.set_params(C=c).fit(x_train, y_train)
                    out[i] = binary_log_loss(y_val, model.predict_proba(x_val)[:, 1])
            else:
                for i, alpha in enumerate(grid):
                    out[i] = np.mean((Ridge(alpha=alpha).fit(x_train, y_train).predict(x_val) - y_val) ** 2)
        return out


def binary_log_loss(present: np.ndarray, p_present: np.ndarray) -> float:
    """scikit-learn's log_loss(present, p_present, labels=[False, True]), the same float: each row's
    probability of its own class clipped to [eps, 1 - eps], -log of it averaged. Written out because the
    cross-validation curves call it thousands of times per validation and scikit-learn's input checks
    were a third of their time (tests/test_validate.py compares the two)."""
    eps = np.finfo(np.float64).eps
    own = np.where(present, p_present, 1 - p_present)
    return float(np.mean(-np.log(np.clip(own, eps, 1 - eps))))


def best_param(curve: np.ndarray, kind: str) -> float:
    """The grid value with the lowest mean validation loss; 1.0 (sklearn's default C and alpha) when no fold
    could be scored (one trial, or one class in every fold)."""
    grid = C_GRID if kind == "binary" else ALPHA_GRID
    if not np.isfinite(curve).any():
        return 1.0
    return float(grid[int(np.nanargmin(curve))])
