"""Causal ablation: is a labelled feature *necessary* for reading its predicate from the SAE's reconstruction?

The two verdicts of engine.validation.validate ask whether a label generalises and whether its signature units
are specific. Neither says the feature carries the information: a label can generalise on a feature that a
dozen others duplicate. Ablation asks that directly, on the test split only:

1. feature ablation: reconstruct the test bins from the SAE's code (activations × decoder rows), once whole and
   once with the feature's code zeroed, and read whether the predicate holds from each with one logistic
   regression fitted on train + val reconstructions (its C chosen by trial-grouped CV, as decode_scores does).
   The drop in balanced accuracy (whole − ablated) is compared with the drops of random features of the
   nearest train density (dead ones excluded): a feature that is needed drops more than features like it.
2. signature-unit ablation: zero the feature's signature units in the test input, encode it with the run's
   'final' SAE, reconstruct and read as above; compared with random unit subsets of the signature's size.

The decoder bias is left out of the reconstruction: a constant column shift, which standardising removes.
The fitted readout is linear in the reconstruction, so ablating feature j moves every test score by
−a_j · (decoder row j · readout weights): each null draw is one multiply over the test bins, never a refit.
One readout per (SAE, predicate) serves both ablations and every label there.

Signature-unit ablation runs once every readout is fitted (engine.validation.validate_run): the SAE's test bins
are encoded once (TestEncoding, in the parent process, the only one that imports torch), and the labels of one
SAE whose signatures have one size share their null's unit subsets: each subset is encoded once and read by all
their readouts in one product. Only bins where a zeroed unit fired are encoded again, by updating their
pre-activations. The necessity figure is a third, separate one: it never changes the two verdicts.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from scipy import sparse
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from engine.validation.cross_validation import Folds, best_param, column_scale, decoder_model
from engine.validation.validate import ValidateConfig

ENCODE_CHUNK_VALUES = 8_000_000
"""Most pre-activations (bins × d_sae, float32) selected in one block."""


@dataclass
class SAEMaterial:
    """What ablation needs of one SAE, read once per validation and shared by its labels."""

    code: sparse.csr_matrix
    """[examples × d_sae] float32: every example's stored activations (the sparse code)."""
    decoder: np.ndarray
    """[d_sae × units] float32: the stored decoder rows, in count units."""
    density: np.ndarray
    """[d_sae] share of train bins where each feature is active."""
    dead: np.ndarray
    """[d_sae] bool: never active on train; never drawn for the null."""


class Readout(NamedTuple):
    """A logistic regression on standardised reconstructions, folded back into raw reconstruction units."""

    weights: np.ndarray
    """[units] coefficient / column SD: score = reconstruction · weights + intercept."""
    intercept: float
    """The fitted intercept less mean / SD · coefficient."""
    param: float
    """C, chosen by trial-grouped CV on the fit rows."""
    coef: np.ndarray
    """The fitted coefficients on standardised columns (as the model holds them)."""

    def score(self, reconstruction: np.ndarray) -> np.ndarray:
        return np.asarray(reconstruction, dtype=np.float64) @ self.weights + self.intercept


class Ablation(NamedTuple):
    """One ablation's figures (NaN where they cannot be computed)."""

    drop: float
    """Balanced accuracy on test from the whole reconstruction minus that from the ablated one."""
    null_p95: float
    """95th percentile of the null draws' drops."""
    p: float
    """(1 + #null drops ≥ drop) / (1 + draws): exact Monte-Carlo p."""
    n_null: int
    """Null draws behind null_p95 and p."""

    @property
    def necessary(self) -> bool:
        return bool(self.drop > self.null_p95)


NO_ABLATION = Ablation(float("nan"), float("nan"), float("nan"), 0)


def reconstruct(code: sparse.csr_matrix, decoder: np.ndarray) -> np.ndarray:
    """[rows × units] float32: the code times the decoder rows (no bias: a constant a standardised readout ignores)."""
    return np.asarray(code @ decoder, dtype=np.float32)


def fit_readout(reconstruction_fit: np.ndarray, present_fit: np.ndarray, groups_fit: np.ndarray,
                config: ValidateConfig) -> Readout:
    """Logistic regression of the predicate on train + val reconstructions: C by GroupKFold CV (scaled inside
    each fold, as decode_scores does), then fitted on every fit row. The test split is never passed in."""
    y = np.asarray(present_fit, dtype=bool)
    folds = Folds(reconstruction_fit, np.asarray(groups_fit), config.cv_folds)
    param = best_param(folds.loss_curve(y, "binary"), "binary")
    x = np.asarray(reconstruction_fit, dtype=np.float64)
    mean, sd = column_scale(x)
    xf = (x - mean) / sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data; the fit is still valid
        model = decoder_model("binary", param).fit(xf, y)
    coef = model.coef_[0].astype(np.float64)
    weights = coef / sd
    return Readout(weights, float(model.intercept_[0] - mean @ weights), param, coef)


def balanced_accuracy(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Balanced accuracy of (score > 0) against present, per column of ``scores`` ([bins] or [bins × draws])."""
    predicted = np.asarray(scores) > 0
    y = np.asarray(present, dtype=bool)
    return (predicted[y].mean(axis=0) + (~predicted[~y]).mean(axis=0)) / 2


def _compare(drop: float, null: np.ndarray) -> Ablation:
    null = null[np.isfinite(null)]
    if not np.isfinite(drop) or not len(null):
        return NO_ABLATION
    p = (1 + np.count_nonzero(null >= drop)) / (1 + len(null))
    return Ablation(float(drop), float(np.percentile(null, 95)), float(p), len(null))


def null_features(feature: int, density: np.ndarray, dead: np.ndarray, n: int) -> np.ndarray:
    """The n live features whose train density is closest to ``feature``'s (itself excluded; ties by index)."""
    candidates = np.flatnonzero(~dead)
    candidates = candidates[candidates != feature]
    order = np.argsort(np.abs(density[candidates] - density[feature]), kind="stable")
    return candidates[order[:n]]


def feature_ablation(material: SAEMaterial, feature: int, readout: Readout, whole_scores: np.ndarray,
                     test_rows: np.ndarray, present_test: np.ndarray, config: ValidateConfig) -> Ablation:
    """Drop in test balanced accuracy when the feature's code is zeroed, against features of equal density."""
    drawn = np.r_[feature, null_features(feature, material.density, material.dead, config.n_ablation_null)]
    effect = material.decoder[drawn].astype(np.float64) @ readout.weights  # score shift per unit of activation
    activation = material.code[test_rows][:, drawn].toarray()
    ablated = whole_scores[:, None] - activation * effect[None, :]
    drops = balanced_accuracy(whole_scores, present_test) - balanced_accuracy(ablated, present_test)
    return _compare(float(drops[0]), drops[1:])


# --------------------------------------------------------------------------- signature units


class TestEncoding(NamedTuple):
    """One SAE's encoder on the epoch's test bins, from the run's 'final' checkpoint, as plain arrays: what
    signature-unit ablation needs, built once per SAE in the parent (the only place torch is imported) and shared
    by every label of the SAE."""

    rows: np.ndarray
    """[bins] example ids of the epoch's test bins, ascending."""
    counts: np.ndarray
    """[bins × units] float32: their input."""
    pre: np.ndarray
    """[bins × d_sae] float32: their encoder pre-activations, from SAEStack.pre_activations."""
    unit_weights: np.ndarray
    """[units × d_sae] float32: a count's share of each pre-activation (W_enc / scale): zeroing units subtracts it."""
    floor: float | None
    """Elementwise selection at inference (relu: 0; BatchTopK and Matryoshka: the running threshold): a latent is
    active where its pre-activation exceeds it. None: top-k per bin."""
    k: int
    """Top-k's k (used where floor is None)."""


def load_final(checkpoint: bytes) -> dict[str, Any]:
    """A run's 'final' checkpoint as saved: {"model": state_dict of its whole stack, "config": ...}."""
    import torch

    return torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)


def final_stack_state(saved: dict[str, Any], instance: int) -> tuple[dict[str, Any] | None, str | None]:
    """The one SAE ``instance`` of a loaded 'final' checkpoint (load_final) as {"model", "sae"}, or None and why
    not."""
    model, config = saved["model"], saved["config"]
    if "input_scale" in model:  # a transcoder's buffers (--inputs/--targets or --history)
        return None, ("the run is a transcoder or has temporal context: its signature units are target units, not "
                      "the inputs its code is computed from")
    n = int(model["W_dec"].shape[0])
    if not 0 <= instance < n:
        return None, f"the run's 'final' checkpoint holds {n} SAE(s), not instance {instance}"
    one = {name: tensor[instance: instance + 1] if tensor.dim() and tensor.shape[0] == n and name != "scale"
           else tensor for name, tensor in model.items()}
    sae = {k: tuple(v) if isinstance(v, list) else v for k, v in config["sae"].items()}
    return {"model": one, "sae": sae}, None


def encode_test(state: dict[str, Any], rows: np.ndarray, counts: np.ndarray) -> TestEncoding:
    """Load the SAE's checkpoint slice into an SAEStack and take the test bins' pre-activations as
    engine.run_results.encode_all does (its batches, one thread: the same sums whatever the worker count).
    Selection is left to select_values, which applies the stack's inference rule to any pre-activations."""
    import torch

    from engine.sae.model import SAEConfig, SAEStack

    model = state["model"]
    config = replace(SAEConfig(**state["sae"]), ks=tuple(int(k) for k in model["ks"].tolist()))
    stack = SAEStack(config, int(model["W_dec"].shape[2]), (0,), input_scale=model["scale"])
    stack.load_state_dict(model)
    stack.eval()
    x = np.ascontiguousarray(counts, dtype=np.float32)
    pre = np.empty((len(x), config.d_sae), dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, len(x), 8192):
            pre[start: start + 8192] = stack.pre_activations(torch.from_numpy(x[start: start + 8192]))[0].numpy()
    finally:
        torch.set_num_threads(threads)  # the caller's setting (the app trains in this process) is kept
    arch = config.architecture
    floor = 0.0 if arch == "relu" else float(stack.threshold[0]) if arch in ("batchtopk", "matryoshka") else None
    unit_weights = (stack.W_enc[0] / stack.scale).detach().numpy().T.astype(np.float32)
    return TestEncoding(np.asarray(rows), x, pre, np.ascontiguousarray(unit_weights), floor, int(stack.ks[0]))


def select_values(pre: np.ndarray, floor: float | None, k: int, *, overwrite: bool = False) -> np.ndarray:
    """[bins × d_sae] float32 code values SAEStack.encode selects from pre-activations at inference (the rule of
    SAEStack._select, elementwise or top-k per bin, then ReLU), dense. ``overwrite``: pre is a scratch copy, to
    be written over (the null draws' ablated pre-activations; no new array of bins × d_sae)."""
    if floor is not None:
        values = pre if overwrite else pre.copy()
        np.multiply(values, values > floor, out=values)
        if floor < 0:
            np.maximum(values, 0, out=values)
        return values
    k = min(k, pre.shape[1])
    top = np.argpartition(pre, pre.shape[1] - k, axis=1)[:, -k:]
    out = np.zeros_like(pre)
    np.put_along_axis(out, top, np.maximum(np.take_along_axis(pre, top, axis=1), 0), axis=1)
    return out


class SignatureTask(NamedTuple):
    """One label's part in its SAE's signature-unit ablation."""

    signature: np.ndarray
    """The feature's signature units."""
    effect: np.ndarray
    """[d_sae] readout score per unit of each feature's activation (decoder rows · readout weights)."""
    intercept: float
    """The readout's intercept in reconstruction units."""
    positions: np.ndarray
    """The label's test bins (measured ones) as positions in TestEncoding.rows."""
    present: np.ndarray
    """[positions] whether the predicate holds there."""


def code_scores(encoding: TestEncoding, pre: np.ndarray, effects: np.ndarray, intercepts: np.ndarray, *,
                overwrite: bool = False) -> np.ndarray:
    """[len(pre) × readouts] readout scores of the codes selected from pre-activations [bins × d_sae]: code ·
    effects + intercepts, in blocks of at most ENCODE_CHUNK_VALUES pre-activations (``overwrite``: pre is
    scratch, see select_values)."""
    budget = max(1, ENCODE_CHUNK_VALUES // encoding.pre.shape[1])
    out = np.empty((len(pre), effects.shape[1]))
    for start in range(0, len(pre), budget):
        block = select_values(pre[start: start + budget], encoding.floor, encoding.k, overwrite=overwrite)
        out[start: start + budget] = block @ effects
    return out + intercepts


def ablated_scores(encoding: TestEncoding, units: np.ndarray, effects: np.ndarray, intercepts: np.ndarray,
                   whole: np.ndarray) -> np.ndarray:
    """[bins × readouts] readout scores of the test input with ``units`` zeroed, encoded and reconstructed.

    A bin where every zeroed unit is already 0 keeps its code, and its score (``whole``, code_scores of the
    unablated pre-activations); only the others are encoded again, their pre-activations updated by the zeroed
    units' share: exactly what a fresh encode computes, without its matmul over every unit."""
    changed = np.flatnonzero((encoding.counts[:, units] != 0).any(axis=1))
    pre = encoding.pre[changed]  # a copy, written over from here on
    if len(changed):  # pre -= counts · unit weights, in one pass over pre (BLAS's C = αAB + βC on pre's transpose)
        blas.sgemm(-1.0, encoding.unit_weights[units].T, encoding.counts[np.ix_(changed, units)].T, 1.0, pre.T,
                   overwrite_c=True)
    out = whole.copy()
    out[changed] = code_scores(encoding, pre, effects, intercepts, overwrite=True)
    return out


def signature_ablations(encoding: TestEncoding, tasks: list[SignatureTask], config: ValidateConfig
                        ) -> list[Ablation]:
    """Signature-unit ablation of labels of one SAE whose signatures have one size: each signature's units zeroed
    in the test input, encoded, reconstructed and read by the label's readout (ablated_scores), against the same
    n_ablation_null random unit subsets of that size (seeded by the size). Every label here shares them: each
    subset is encoded once and read by every label's readout in one product."""
    with threadpool_limits(1):  # as every decoder here: no threads spinning on small products, one summing order
        return _shared_null(encoding, tasks, config)


def _shared_null(encoding: TestEncoding, tasks: list[SignatureTask], config: ValidateConfig) -> list[Ablation]:
    size = len(tasks[0].signature)
    if not size or any(len(task.signature) != size for task in tasks):
        raise ValueError("signature_ablations takes labels whose signatures have one size, not 0")
    effects = np.stack([task.effect for task in tasks], axis=1).astype(np.float32)
    intercepts = np.array([task.intercept for task in tasks])
    whole = code_scores(encoding, encoding.pre, effects, intercepts)
    whole_accuracy = [balanced_accuracy(whole[task.positions, i], task.present) for i, task in enumerate(tasks)]

    def drops(units: np.ndarray) -> np.ndarray:
        """[labels] each label's drop in balanced accuracy on its own test bins with ``units`` zeroed."""
        ablated = ablated_scores(encoding, units, effects, intercepts, whole)
        return np.array([whole_accuracy[i] - balanced_accuracy(ablated[task.positions, i], task.present)
                         for i, task in enumerate(tasks)])

    rng = np.random.default_rng([config.seed, 5, size])
    null = np.array([drops(np.sort(rng.choice(encoding.counts.shape[1], size, replace=False)))
                     for _ in range(config.n_ablation_null)]).reshape(config.n_ablation_null, len(tasks))
    return [_compare(float(drops(task.signature)[i]), null[:, i]) for i, task in enumerate(tasks)]


# --------------------------------------------------------------------------- one label


class LabelReadout(NamedTuple):
    """What one label's signature-unit ablation needs from its group (engine.validation.validate_run's phase 2)."""

    effect: np.ndarray
    """[d_sae] decoder rows · readout weights."""
    intercept: float
    test_rows: np.ndarray
    """Example ids of the label's test bins (test and measured)."""
    present: np.ndarray
    """[test_rows] whether the predicate holds there."""


def necessity(material: SAEMaterial, feature: int, fit_rows: np.ndarray, test: np.ndarray, present: np.ndarray,
              trials: np.ndarray, config: ValidateConfig, memo: dict) -> tuple[dict[str, Any], LabelReadout]:
    """Feature ablation of one label, as validations columns, and its readout for the signature-unit ablation
    that follows once every group is done. ``memo``: one dict per (SAE, predicate target), holding the readout
    and its whole-reconstruction scores, which every label there shares."""
    test_rows = np.flatnonzero(test)
    if "readout" not in memo:
        memo["readout"] = fit_readout(reconstruct(material.code[fit_rows], material.decoder), present[fit_rows],
                                      trials[fit_rows], config)
        memo["whole_scores"] = memo["readout"].score(reconstruct(material.code[test_rows], material.decoder))
        memo["effect"] = material.decoder.astype(np.float64) @ memo["readout"].weights
    readout: Readout = memo["readout"]
    whole = memo["whole_scores"]
    present_test = present[test_rows].astype(bool)
    by_feature = feature_ablation(material, feature, readout, whole, test_rows, present_test, config)
    columns = {
        "reconstruction_decode": float(balanced_accuracy(whole, present_test)),
        "necessity_drop": by_feature.drop, "necessity_null_p95": by_feature.null_p95,
        "necessity_p": by_feature.p, "n_ablation_null": by_feature.n_null or None,
        "necessary": by_feature.necessary if np.isfinite(by_feature.drop) else None,
    }
    return columns, LabelReadout(memo["effect"], readout.intercept, test_rows, present_test)


def signature_columns(ablation: Ablation | None, note: str | None) -> dict[str, Any]:
    """The signature-unit ablation's validations columns (NULL, with the note, where it could not run)."""
    by_units = ablation or NO_ABLATION
    return {
        "signature_ablation_drop": by_units.drop, "signature_ablation_null_p95": by_units.null_p95,
        "signature_ablation_p": by_units.p, "n_signature_ablation_null": by_units.n_null or None,
        "signature_necessary": by_units.necessary if np.isfinite(by_units.drop) else None,
        "ablation_note": note,
    }
