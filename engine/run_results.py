"""What mini keeps of a trained stack: every example encoded, QC per split against its baselines, the decoder,
the training log, as the frames store.runs writes (RunResults). Computed by `engine.pipeline.train_run` after
training and by a sweep's workers (engine.sweep.worker) on the same matrix, so both store the same figures.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping

import numpy as np
import polars as pl
import torch

from engine.quality_flags import RAW_COUNTS, FlagContext, SplitFigures, flags_frame, sae_flags
from engine.sae.history import lag_norms
from engine.sae.model import SAEStack
from engine.sae.qc import baseline_fvus, qc_table_rows, ridge_baseline, split_qc
from engine.sae.train import TrainOutcome
from store.runs import RunResults

SPLITS = ("train", "val", "test")


class QuitRequested(Exception):
    """The caller is quitting while the results are computed: they are dropped, and the run is marked
    cancelled at its last epoch checkpoint."""


def stop_if_quitting(quitting: threading.Event | None) -> None:
    if quitting is not None and quitting.is_set():
        raise QuitRequested("quitting")


@torch.no_grad()
def encode_all(stack: SAEStack, counts: np.ndarray, batch: int | None = None, quitting: threading.Event | None = None
               ) -> tuple[pl.DataFrame, np.ndarray]:
    """Sparse activations of every example for every SAE, and reconstructions [n, N, d_out] (float32), in batches
    of `batch` examples (default SAEStack.chunk_rows).

    BatchTopK-style SAEs use their inference threshold, so an example's code does not depend on
    which other examples share its batch. `quitting` set stops it between batches (QuitRequested).
    """
    stack.eval()
    device = next(stack.parameters()).device
    use_threshold = stack.config.architecture in ("batchtopk", "matryoshka")
    parts, recon = [], np.empty((stack.n, counts.shape[0], stack.d_out), dtype=np.float32)
    batch = batch or stack.chunk_rows()
    for start in range(0, counts.shape[0], batch):
        stop_if_quitting(quitting)
        x = torch.from_numpy(counts[start: start + batch]).to(device)
        code = stack.encode(x, use_threshold=use_threshold)
        recon[:, start: start + x.shape[0]] = stack.decode(code, x.shape[0]).float().cpu().numpy()
        rows = code.row.cpu().numpy()
        parts.append(pl.DataFrame({
            "sae_id": (rows // x.shape[0]).astype(np.int32),
            "example_id": (rows % x.shape[0] + start).astype(np.int32),
            "feature_id": code.latent.cpu().numpy().astype(np.int32),
            "value": code.value.float().cpu().numpy(),
        }))
    stack.train()
    activations = pl.concat(parts).sort("sae_id", "example_id", "feature_id")
    return activations, recon


def _unit_error_share(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Each unit's share of the summed squared reconstruction error."""
    error = ((x.astype(np.float64) - x_hat) ** 2).sum(axis=0)
    total = error.sum()
    return error / total if total > 0 else np.zeros(len(error))


def collect_results(stack: SAEStack, counts: np.ndarray, splits: np.ndarray, outcome: TrainOutcome,
                    kind: str, unit_names: list[str] | None = None,
                    context: FlagContext = RAW_COUNTS, quitting: threading.Event | None = None,
                    baselines: MutableMapping[tuple[str, int], tuple[float, float | None]] | None = None,
                    target_units: np.ndarray | None = None, input_units: np.ndarray | None = None,
                    history: int = 1) -> RunResults:
    """Everything the store keeps about a trained stack, as frames (sae_id = instance index).

    `quitting` set stops it between batches and between SAEs' QC splits (QuitRequested). `baselines` holds the
    PCA and NMF FVU of each (split, components) already fitted on these counts and splits (most of this
    function's time on a small stack): a sweep's stacks share them; new ones are added to it.

    A transcoder's `counts` are model_examples (inputs, then targets): QC is on the targets, against a ridge
    regression from the inputs (PCA and NMF, which reconstruct a matrix from itself, are left out), and its
    decoder and unit_qc rows name the targets' unit ids, `target_units`. With `history` > 1 its encoder's weight
    norm per feature and lag (and the input unit, of `input_units`, that weighs most there) go to encoder_lags."""
    activations, recon = encode_all(stack, counts, quitting=quitting)
    n, D, d = stack.n, stack.config.d_sae, stack.d_out
    inputs, counts = stack.split_example(counts)  # counts: what is reconstructed from here on
    unit_ids = np.arange(d) if target_units is None else np.asarray(target_units)
    weights = stack.folded_weights()
    sizes, _, _ = stack.config.levels()
    level_of = np.searchsorted(np.asarray(sizes), np.arange(D), side="right").astype(np.int32)
    act_sae = activations["sae_id"].to_numpy()
    act_example = activations["example_id"].to_numpy()
    act_feature = activations["feature_id"].to_numpy()
    act_value = activations["value"].to_numpy()
    train_mask = splits == "train"
    baselines = {} if baselines is None else baselines
    qc_frames, unit_frames, feature_frames, flags = [], [], [], []
    names = unit_names or [str(u) for u in range(int(unit_ids.max()) + 1)]
    names = [names[u] for u in unit_ids]
    val = splits == "val"
    ridge = None
    # PCA and NMF reconstruct the targets from themselves: a baseline for an SAE, and for a transcoder whose inputs
    # hold its targets (an SAE with --history, where the ridge, which can copy them, is no baseline at all).
    self_baselines = not stack.transcoder or (
        input_units is not None and target_units is not None and bool(np.isin(target_units, input_units).all()))
    if stack.transcoder:
        stop_if_quitting(quitting)
        ridge = ridge_baseline((inputs[train_mask], counts[train_mask]),
                               {s: (inputs[splits == s], counts[splits == s]) for s in SPLITS})
    for i in range(n):
        mine = act_sae == i
        examples, features, values = act_example[mine], act_feature[mine], act_value[mine]
        l0 = np.bincount(examples, minlength=counts.shape[0])
        on_train = train_mask[examples]
        density = np.bincount(features[on_train], minlength=D) / max(1, int(train_mask.sum()))
        sums = np.bincount(features[on_train], weights=values[on_train], minlength=D)
        active = np.bincount(features[on_train], minlength=D)
        max_act = np.zeros(D)
        np.maximum.at(max_act, features[on_train], values[on_train])
        feature_frames.append(pl.DataFrame({
            "sae_id": np.full(D, i, np.int32), "feature_id": np.arange(D, dtype=np.int32), "level": level_of,
            "density": density, "mean_act": np.where(active > 0, sums / np.maximum(active, 1), np.nan),
            "max_act": np.where(active > 0, max_act, np.nan), "dead": active == 0,
            "encoder_bias": weights["b_enc"][i].cpu().numpy().astype(np.float64),
        }).with_columns(pl.col("mean_act", "max_act").fill_nan(None)))
        qcs = []
        components = max(1, round(float(l0[train_mask].mean())))
        missing = [split for split in SPLITS if (splits == split).any() and (split, components) not in baselines
                   and self_baselines]
        if missing:  # one fit for every split that needs it: seconds on a large recording
            stop_if_quitting(quitting)
            fitted = baseline_fvus(counts[train_mask], {split: counts[splits == split] for split in missing},
                                   components, nonnegative=kind == "spike_counts")
            for split, figures in fitted.items():
                baselines[(split, components)] = figures
        for split in SPLITS:
            stop_if_quitting(quitting)
            in_split = splits == split
            if not in_split.any():
                continue
            split_examples = in_split[examples]
            report = split_qc(split, counts[in_split], recon[i][in_split], l0[in_split],
                              np.bincount(features[split_examples], minlength=D))
            if self_baselines:
                report.pca_fvu, report.nmf_fvu = baselines[(split, components)]
                report.baseline_components = components
            if ridge is not None:
                report.ridge_fvu, report.ridge_alpha = ridge.fvu.get(split), ridge.alpha
            qcs.append(report)
        figures = {r.split: SplitFigures(r.split, r.fvu, r.pca_fvu, r.baseline_components, r.dead_fraction,
                                         r.l0_histogram, r.ridge_fvu) for r in qcs}
        share = _unit_error_share(counts[val], recon[i][val]) if val.any() else None
        flags += sae_flags(i, figures, int(stack.config.ks[i]), D, share, names, context)
        qc_frame, unit_frame = qc_table_rows(i, qcs)
        if target_units is not None:
            unit_frame = unit_frame.with_columns(unit_id=pl.Series(unit_ids[unit_frame["unit_id"].to_numpy()],
                                                                   dtype=pl.Int64))
        qc_frames.append(qc_frame)
        unit_frames.append(unit_frame)
    W_dec = weights["W_dec"].cpu().numpy()  # [n, D, d] in count units
    sae_index, feature_index, unit_index = np.meshgrid(np.arange(n), np.arange(D), np.arange(d), indexing="ij")
    config = stack.config
    saes = pl.DataFrame({
        "sae_id": np.arange(n, dtype=np.int32), "instance": np.arange(n, dtype=np.int32),
        "architecture": [config.architecture] * n, "d_in": [d] * n, "d_sae": [D] * n,
        "k": list(config.ks), "seed": list(stack.seeds), "loss": [config.loss] * n,
        "threshold": weights["threshold"].cpu().numpy().astype(np.float64),
        "best_epoch": outcome.best_epoch, "val_loss": [float(v) for v in outcome.best_val_loss],
    })
    log = pl.DataFrame(outcome.log, schema={"sae": pl.Int32, "step": pl.Int32, "epoch": pl.Int32,
                                            "examples_seen": pl.Int64, "loss": pl.Float64,
                                            "reconstruction_loss": pl.Float64, "auxiliary_loss": pl.Float64,
                                            "l0": pl.Float64,
                                            "dead_fraction": pl.Float64, "lr": pl.Float64,
                                            "val_loss": pl.Float64}).rename({"sae": "sae_id"})
    lags = None
    if history > 1:
        w_enc = weights["W_enc"].cpu().numpy()
        norms = lag_norms(w_enc, history)  # [n, D, L]
        per_lag = np.abs(w_enc.reshape(n, D, history, -1))
        top = np.asarray(input_units)[per_lag.argmax(axis=-1)]
        sae_i, feature_i, lag_i = np.meshgrid(np.arange(n), np.arange(D), np.arange(history), indexing="ij")
        lags = pl.DataFrame({"sae_id": sae_i.ravel().astype(np.int32), "feature_id": feature_i.ravel().astype(np.int32),
                             "lag": lag_i.ravel().astype(np.int32), "norm": norms.ravel().astype(np.float64),
                             "top_unit_id": top.ravel().astype(np.int32)})
    return RunResults(
        encoder_lags=lags,
        saes=saes,
        features=pl.concat(feature_frames),
        decoder=pl.DataFrame({"sae_id": sae_index.ravel().astype(np.int32),
                              "feature_id": feature_index.ravel().astype(np.int32),
                              "unit_id": unit_ids[unit_index.ravel()].astype(np.int32),
                              "weight": W_dec.ravel().astype(np.float32)}),
        activations=activations.to_arrow(),
        qc=pl.concat(qc_frames, how="vertical_relaxed"),
        unit_qc=pl.concat(unit_frames, how="vertical_relaxed"),
        train_log=log,
        flags=flags_frame(flags),
    )
