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
The necessity figure is a third, separate one: it never changes the two verdicts.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from scipy import sparse

from engine.validation.validate import Folds, ValidateConfig, _model, _scale, best_param

ENCODE_CHUNK_VALUES = 8_000_000
"""Most pre-activations (bins × d_sae, float32) selected in one call: null draws are stacked up to this."""


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
    stack_state: dict[str, Any] | None
    """The SAE's slice of the run's 'final' checkpoint ({"model": state_dict of a one-SAE stack, "sae": SAEConfig
    fields}); None when there is none (then ``no_stack_reason``)."""
    no_stack_reason: str | None = None
    """Why signature-unit ablation cannot run (no 'final' checkpoint, or one that does not hold this SAE)."""


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
    mean, sd = _scale(x)
    xf = (x - mean) / sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-separable data; the fit is still valid
        model = _model("binary", param).fit(xf, y)
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


def final_stack_state(checkpoint: bytes, instance: int) -> tuple[dict[str, Any] | None, str | None]:
    """The one SAE ``instance`` of a run's 'final' checkpoint as {"model", "sae"}, or None and why not."""
    import torch

    saved = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)
    model, config = saved["model"], saved["config"]
    n = int(model["W_dec"].shape[0])
    if not 0 <= instance < n:
        return None, f"the run's 'final' checkpoint holds {n} SAE(s), not instance {instance}"
    one = {name: tensor[instance: instance + 1] if tensor.dim() and tensor.shape[0] == n and name != "scale"
           else tensor for name, tensor in model.items()}
    sae = {k: tuple(v) if isinstance(v, list) else v for k, v in config["sae"].items()}
    return {"model": one, "sae": sae}, None


class _Encoder:
    """A one-SAE stack loaded from its checkpoint slice, encoding as engine.pipeline.encode_all does, that scores
    codes with a readout directly: score = code · (decoder rows · readout weights) + intercept."""

    def __init__(self, state: dict[str, Any], nonnegative: bool):
        import torch

        from engine.sae.model import SAEConfig, SAEStack

        model = state["model"]
        config = replace(SAEConfig(**state["sae"]), ks=tuple(int(k) for k in model["ks"].tolist()),
                         nonnegative_output=nonnegative)
        self.stack = SAEStack(config, int(model["W_dec"].shape[2]), (0,), input_scale=model["scale"])
        self.stack.load_state_dict(model)
        self.stack.eval()
        self.use_threshold = config.architecture in ("batchtopk", "matryoshka")
        # Zeroing input units moves the pre-activations by minus their share: (x_u / scale_u) · W_enc[:, u].
        self.unit_weights = (self.stack.W_enc[0] / self.stack.scale).detach().numpy().T.astype(np.float32)
        self.torch = torch

    def _single_threaded(self, work):
        # One thread, as every decoder here: the same sums in the same order whatever the worker count, and no
        # spinning threads on these small matrices. The caller's setting (the app trains in this process) is kept.
        threads = self.torch.get_num_threads()
        self.torch.set_num_threads(1)
        try:
            return work()
        finally:
            self.torch.set_num_threads(threads)

    def pre_activations(self, x: np.ndarray) -> np.ndarray:
        """[bins × d_sae] float32 pre-activations of the input x [bins × units]."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self._single_threaded(lambda: self.stack.pre_activations(tensor)[0].numpy())

    def scores(self, pre: np.ndarray, effect: np.ndarray, intercept: float) -> np.ndarray:
        """Readout scores [bins] of the codes the SAE selects from pre-activations [bins × d_sae]."""
        tensor = self.torch.from_numpy(np.ascontiguousarray(pre))
        code = self._single_threaded(lambda: self.stack.select(tensor.unsqueeze(0), use_threshold=self.use_threshold))
        row, latent, value = code.row.numpy(), code.latent.numpy(), code.value.numpy().astype(np.float64)
        return np.bincount(row, weights=value * effect[latent], minlength=len(pre)) + intercept


def _ablated_scores(encoder: _Encoder, effect: np.ndarray, intercept: float, x_test: np.ndarray,
                    pre_test: np.ndarray, whole_scores: np.ndarray, subsets: list[np.ndarray]) -> np.ndarray:
    """[bins × subsets] readout scores of the test input with each subset of units zeroed, encoded and
    reconstructed. A bin where every unit of the subset is already 0 is unchanged, so it keeps its whole score;
    the others' pre-activations lose the zeroed units' share (exactly what a fresh encode computes, without its
    matmul over every unit), and the changed bins of successive draws are selected in one call of up to
    ENCODE_CHUNK_VALUES pre-activations."""
    out = np.repeat(whole_scores[:, None], len(subsets), axis=1)
    budget = max(1, ENCODE_CHUNK_VALUES // pre_test.shape[1])
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (draw, changed rows, their ablated pre-activations)

    def flush() -> None:
        if not pending:
            return
        scores = encoder.scores(np.concatenate([pre for _, _, pre in pending]), effect, intercept)
        offset = 0
        for draw, rows, _ in pending:
            out[rows, draw] = scores[offset: offset + len(rows)]
            offset += len(rows)
        pending.clear()

    n_pending = 0
    for draw, units in enumerate(subsets):
        rows = np.flatnonzero((x_test[:, units] != 0).any(axis=1))
        pending.append((draw, rows, pre_test[rows] - x_test[np.ix_(rows, units)] @ encoder.unit_weights[units]))
        n_pending += len(rows)
        if n_pending >= budget:
            flush()
            n_pending = 0
    flush()
    return out


def signature_ablation(encoder: _Encoder, decoder: np.ndarray, readout: Readout, x_test: np.ndarray,
                       signature: np.ndarray, present_test: np.ndarray, config: ValidateConfig,
                       memo: dict) -> Ablation:
    """Drop in test balanced accuracy when the signature units are zeroed in the input, against random unit
    subsets of the same size (seeded by the size, shared by every label of the memo's SAE and target)."""
    if not len(signature):
        return NO_ABLATION
    if "pre" not in memo:  # the unablated test input through the same encoder: a like-for-like baseline
        memo["pre"] = encoder.pre_activations(x_test)
        memo["effect"] = decoder.astype(np.float64) @ readout.weights
        memo["whole_scores"] = encoder.scores(memo["pre"], memo["effect"], readout.intercept)
    args = (encoder, memo["effect"], readout.intercept, x_test, memo["pre"], memo["whole_scores"])
    whole = balanced_accuracy(memo["whole_scores"], present_test)
    key = ("null", len(signature))
    if key not in memo:
        rng = np.random.default_rng([config.seed, 5, len(signature)])
        subsets = [np.sort(rng.choice(x_test.shape[1], len(signature), replace=False))
                   for _ in range(config.n_ablation_null)]
        memo[key] = whole - balanced_accuracy(_ablated_scores(*args, subsets), present_test)
    ablated = _ablated_scores(*args, [signature])
    return _compare(float(whole - balanced_accuracy(ablated, present_test)[0]), memo[key])


# --------------------------------------------------------------------------- one label


def necessity(material: SAEMaterial, feature: int, signature: np.ndarray, fit_rows: np.ndarray,
              test: np.ndarray, present: np.ndarray, trials: np.ndarray, counts: np.ndarray, nonnegative: bool,
              config: ValidateConfig, memo: dict) -> dict[str, Any]:
    """Both ablations of one label, as validations columns. ``memo``: one dict per (SAE, predicate target),
    holding the readout, its whole-reconstruction scores and the nulls that every label there shares."""
    test_rows = np.flatnonzero(test)
    if "readout" not in memo:
        memo["readout"] = fit_readout(reconstruct(material.code[fit_rows], material.decoder), present[fit_rows],
                                      trials[fit_rows], config)
        memo["whole_scores"] = memo["readout"].score(reconstruct(material.code[test_rows], material.decoder))
    readout: Readout = memo["readout"]
    whole = memo["whole_scores"]
    present_test = present[test_rows].astype(bool)
    by_feature = feature_ablation(material, feature, readout, whole, test_rows, present_test, config)
    notes = []
    if material.stack_state is None:
        by_units = NO_ABLATION
        notes.append(f"no signature-unit ablation: {material.no_stack_reason}")
    else:
        if "encoder" not in memo:
            memo["encoder"] = _Encoder(material.stack_state, nonnegative)
            memo["x_test"] = np.asarray(counts[test_rows], dtype=np.float32)
        by_units = signature_ablation(memo["encoder"], material.decoder, readout, memo["x_test"], signature,
                                      present_test, config, memo.setdefault("signature", {}))
    return {
        "reconstruction_decode": float(balanced_accuracy(whole, present_test)),
        "necessity_drop": by_feature.drop, "necessity_null_p95": by_feature.null_p95,
        "necessity_p": by_feature.p, "n_ablation_null": by_feature.n_null or None,
        "necessary": by_feature.necessary if np.isfinite(by_feature.drop) else None,
        "signature_ablation_drop": by_units.drop, "signature_ablation_null_p95": by_units.null_p95,
        "signature_ablation_p": by_units.p,
        "signature_necessary": by_units.necessary if np.isfinite(by_units.drop) else None,
        "ablation_note": "; ".join(notes) or None,
    }
