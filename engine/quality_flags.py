"""Quality flags: what is wrong with a recording or a trained SAE, in one line each, with what to try next.

QC's numbers (engine.sae.qc) are all there, but a person reading `val FVU 0.28` does not see that PCA does
better on test, or that half the latents never fire outside training. Each flag is a check against a
stated threshold, computed from train + val + test QC that is already stored (the test split plays no
part in training or in choosing any setting: a flag only reports). Flags are stored in `quality_flags`
and shown by `mini train`, `mini info`, Home, the QC screen and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

DEAD_ON_VAL = 0.05
"""Share of latents that never fire on val above which a run is flagged."""
TRAIN_VAL_GAP = 0.15
"""val FVU − train FVU above this (and val FVU above 1.5 × train FVU) is flagged as overfitting."""
L0_TAIL_RATIO = 4.0
"""The 99th percentile of inference L0 above this × k is flagged. BatchTopK lets L0 vary by design (the
sample's cue and reward bins, where many planted ensembles fire at once, reach 3 × k); far above it, as
on the linear track trained with 512 latents (up to 120 active at k 8), the threshold is off."""
DOMINANT_SHARE = 0.5
"""One unit holding more than this share of the variance (or of the SAE's error) is flagged."""
UNPREDICTABLE_RIDGE_FVU = 0.95
"""A transcoder whose ridge baseline explains less than 5 % of the targets' variance (FVU above this): the inputs carry
(almost) no linear information about the targets, and no setting of the SAE is the thing to change."""
LINE_SHARE = 0.9
"""A tracked position whose principal axis explains less of the 2-D movement than this is not a line."""


class QualityFlag(NamedTuple):
    """One finding, stored as a row of `quality_flags`."""

    flag: str
    """A short code: fvu_above_pca, fvu_above_ridge, fvu_above_one, train_val_gap, dead_on_val, l0_tail,
    unit_dominates_variance, unit_dominates_error, track_not_a_line."""
    message: str
    """What is wrong, in one line with the figures."""
    suggestion: str
    """What to try next, as a command or option where there is one."""
    value: float
    threshold: float
    split: str | None = None
    sae_index: int | None = None
    """Instance index within the run (0..n-1); None for a dataset's flags."""
    unit_id: int | None = None


class SplitFigures(NamedTuple):
    """The QC figures of one SAE on one split that the checks read."""

    split: str
    fvu: float
    pca_fvu: float | None
    baseline_components: int | None
    dead_fraction: float
    l0_histogram: Sequence[tuple[int, int]]
    ridge_fvu: float | None = None
    """Transcoders: the ridge regression's target FVU on this split (the baseline in place of PCA)."""


class FlagContext(NamedTuple):
    """How the run was trained, so that a suggestion never asks for what was already done."""

    normalized: bool = False
    """Units were scaled by their train std while training (mini train --normalize)."""
    raw_counts: bool = True
    """The dataset holds whole spike counts, not smoothed rates or activations (smoothing is worth a try)."""


RAW_COUNTS = FlagContext()
"""The context when nothing is known: whole counts, units not scaled."""


def _l0_quantile(histogram: Sequence[tuple[int, int]], q: float) -> float:
    if not histogram:
        return 0.0
    values = np.array([v for v, _ in histogram], dtype=float)
    counts = np.array([c for _, c in histogram], dtype=float)
    cumulative = np.cumsum(counts) / counts.sum()
    return float(values[min(len(values) - 1, int(np.searchsorted(cumulative, q)))])


def _unpredictable(ridge_fvu: float) -> str:
    return (f"the inputs predict almost none of the targets linearly either (ridge FVU {ridge_fvu:.3f}): pick "
            "--inputs that carry information about the --targets, or train a plain SAE on the targets")


def _smaller(d_sae: int) -> int:
    return max(8, d_sae // 2 // 8 * 8)


def sae_flags(index: int, figures: dict[str, SplitFigures], k: int, d_sae: int,
              unit_error_share: np.ndarray | None, unit_names: Sequence[str],
              context: FlagContext = RAW_COUNTS) -> list[QualityFlag]:
    """Every flag of one SAE, from its QC per split and each unit's share of its val error."""
    flags: list[QualityFlag] = []
    smooth = ", or smooth the counts at import (--smooth 0.1)" if context.raw_counts else ""
    # FVU weighs units by their variance; a normalised SAE weighs them equally, so against PCA it loses
    # on the loud units by design.
    scaled = ("; with --normalize every unit weighs the same in training but not in FVU: compare without it"
              if context.normalized else "")
    for split in ("val", "test"):
        f = figures.get(split)
        if f is None or not np.isfinite(f.fvu):
            continue
        unpredictable = f.ridge_fvu is not None and f.ridge_fvu > UNPREDICTABLE_RIDGE_FVU
        if f.fvu > 1:
            flags.append(QualityFlag(
                "fvu_above_one", f"{split} FVU {f.fvu:.2f} is above 1: worse than each unit's mean",
                _unpredictable(f.ridge_fvu) if unpredictable else
                f"train with the settings chosen from the recording (leave out --d-sae, --k, --epochs) or a "
                f"smaller --d-sae such as {_smaller(d_sae)}", f.fvu, 1.0, split, index))
        elif f.ridge_fvu is not None and np.isfinite(f.ridge_fvu) and f.fvu > f.ridge_fvu:
            flags.append(QualityFlag(
                "fvu_above_ridge", f"{split} FVU {f.fvu:.3f} is above the ridge regression's {f.ridge_fvu:.3f} from "
                "the same inputs",
                _unpredictable(f.ridge_fvu) if unpredictable else
                f"a linear map predicts the targets better: a larger --k or --d-sae than {d_sae}, or train longer "
                "(leave out --epochs)", f.fvu, f.ridge_fvu, split, index))
        elif f.pca_fvu is not None and np.isfinite(f.pca_fvu) and f.fvu > f.pca_fvu:
            flags.append(QualityFlag(
                "fvu_above_pca", f"{split} FVU {f.fvu:.3f} is above PCA's {f.pca_fvu:.3f} with "
                f"{f.baseline_components} component{'' if f.baseline_components == 1 else 's'}",
                f"a smaller --d-sae (such as {_smaller(d_sae)}) or --k{smooth}{scaled}", f.fvu, f.pca_fvu, split,
                index))
    train, val = figures.get("train"), figures.get("val")
    if train is not None and val is not None and np.isfinite(train.fvu) and np.isfinite(val.fvu):
        gap = val.fvu - train.fvu
        if gap > TRAIN_VAL_GAP and val.fvu > 1.5 * train.fvu:
            flags.append(QualityFlag(
                "train_val_gap", f"val FVU {val.fvu:.3f} against train {train.fvu:.3f}: it fits the "
                "training bins far better than unseen ones (overfitting)",
                f"a smaller --d-sae (such as {_smaller(d_sae)}) or early stopping (leave out --epochs){smooth}",
                gap, TRAIN_VAL_GAP, "val", index))
    if val is not None and val.dead_fraction > DEAD_ON_VAL:
        alive = max(8, int(np.ceil(d_sae * (1 - val.dead_fraction) / 8)) * 8)
        flags.append(QualityFlag(
            "dead_on_val", f"{val.dead_fraction:.0%} of {d_sae} latents never fire on val",
            f"fewer latents: --d-sae {alive if alive < d_sae else _smaller(d_sae)}",
            val.dead_fraction, DEAD_ON_VAL, "val", index))
    for split in ("train", "val", "test"):
        f = figures.get(split)
        if f is None:
            continue
        p99 = _l0_quantile(f.l0_histogram, 0.99)
        if p99 > L0_TAIL_RATIO * k:
            flags.append(QualityFlag(
                "l0_tail", f"1% of {split} bins have {p99:.0f} or more active latents (k {k})",
                "the inference threshold lets bursts through: train longer (leave out --epochs) or use "
                "--arch topk for exactly k per bin", p99, L0_TAIL_RATIO * k, split, index))
            break
    if unit_error_share is not None and len(unit_error_share):
        unit = int(np.argmax(unit_error_share))
        share = float(unit_error_share[unit])
        if share > DOMINANT_SHARE:
            flags.append(QualityFlag(
                "unit_dominates_error", f"unit {unit_names[unit]} holds {share:.0%} of the val error",
                "leave the unit out of the recording (it is scaled already)" if context.normalized else
                "scale the units while training (mini train --normalize) or leave the unit out of the recording",
                share, DOMINANT_SHARE, "val", index, unit))
    return flags


def flags_frame(flags: Sequence[QualityFlag]) -> pl.DataFrame:
    """The rows of `quality_flags` (sae_id is the instance index, as in the run's other result frames)."""
    return pl.DataFrame(
        {"sae_id": [f.sae_index for f in flags], "split": [f.split for f in flags],
         "unit_id": [f.unit_id for f in flags], "flag": [f.flag for f in flags],
         "value": [float(f.value) for f in flags], "threshold": [float(f.threshold) for f in flags],
         "message": [f.message for f in flags], "suggestion": [f.suggestion for f in flags]},
        schema={"sae_id": pl.Int32, "split": pl.String, "unit_id": pl.Int32, "flag": pl.String,
                "value": pl.Float64, "threshold": pl.Float64, "message": pl.String, "suggestion": pl.String})


def variance_flags(train: np.ndarray, unit_names: Sequence[str]) -> list[QualityFlag]:
    """A unit that holds most of the training split's variance decides every FVU on its own."""
    if train.shape[0] < 2 or train.shape[1] < 2:
        return []
    variance = train.var(axis=0, dtype=np.float64)
    total = float(variance.sum())
    if total <= 0:
        return []
    unit = int(np.argmax(variance))
    share = float(variance[unit]) / total
    if share <= DOMINANT_SHARE:
        return []
    return [QualityFlag(
        "unit_dominates_variance", f"unit {unit_names[unit]} holds {share:.0%} of the variance (its mean "
        f"{float(train[:, unit].mean()):.3g} per bin): FVU and PCA figures mostly measure this one unit",
        "scale the units (mini train --normalize) or leave the unit out (likely multi-unit activity or noise)",
        share, DOMINANT_SHARE, "train", None, unit)]


def track_flag(label: str, axis_share: float) -> QualityFlag | None:
    """A position projected on the principal axis of 2-D tracking is only a position on a linear track."""
    if not np.isfinite(axis_share) or axis_share >= LINE_SHARE:
        return None
    return QualityFlag(
        "track_not_a_line", f"{label}: the track's principal axis explains {axis_share:.0%} of the 2-D "
        "movement: the maze is not a line, and 'position' folds its arms together",
        "treat position as a coarse projection; laps and runs (--trials laps|runs) assume a linear track",
        axis_share, LINE_SHARE)
