"""Stability: does a feature come back when the SAE is trained again from another seed?

A feature whose decoder direction reappears in independently trained instances describes the data,
not the initialisation. For each feature we take its best cosine match in every other instance of
the same settings (same k) and report the mean of those best matches.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def stability(decoders: dict[int, np.ndarray], groups: list[list[int]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per-feature stability, best matches) for SAEs grouped by settings.

    decoders: sae_id -> [d_sae, d_in] decoder rows. groups: lists of sae_ids trained with the same
    settings. Returns frames (sae_id, feature_id, stability) — null where a group has one SAE — and
    (sae_id, feature_id, other_sae_id, other_feature_id, cosine).
    """
    scores, matches = [], []
    for group in groups:
        units = {sae: _unit_rows(decoders[sae]) for sae in group}
        for sae in group:
            n_features = units[sae].shape[0]
            best = []
            for other in group:
                if other == sae:
                    continue
                cosine = units[sae] @ units[other].T
                partner = cosine.argmax(1)
                value = cosine[np.arange(n_features), partner]
                best.append(value)
                matches.append(pl.DataFrame({
                    "sae_id": np.full(n_features, sae, np.int32), "feature_id": np.arange(n_features, dtype=np.int32),
                    "other_sae_id": np.full(n_features, other, np.int32),
                    "other_feature_id": partner.astype(np.int32), "cosine": value.astype(np.float64)}))
            scores.append(pl.DataFrame({
                "sae_id": np.full(n_features, sae, np.int32), "feature_id": np.arange(n_features, dtype=np.int32),
                "stability": np.mean(best, axis=0) if best else np.full(n_features, np.nan)}))
    empty = pl.DataFrame(schema={"sae_id": pl.Int32, "feature_id": pl.Int32, "other_sae_id": pl.Int32,
                                 "other_feature_id": pl.Int32, "cosine": pl.Float64})
    return (pl.concat(scores).with_columns(pl.col("stability").fill_nan(None)),
            pl.concat(matches) if matches else empty)
