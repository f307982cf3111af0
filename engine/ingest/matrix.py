"""A stored dataset as the dense matrix training and validation read: counts [examples × units] in
example order, refused before reading when it would not fit in memory."""

from __future__ import annotations

import numpy as np
import polars as pl

from engine.memory import check_fits
from store import Store
from store.datasets import load_counts_long, load_examples, n_counts


def dense_counts(db: Store, dataset_id: int, n_examples: int, n_units: int) -> np.ndarray:
    """Dense counts [examples × units] (float32) in example order; refused before reading when it would not
    fit (the stored rows read as Arrow: int32 example, int32 unit, float32 value)."""
    stored = n_counts(db, dataset_id)
    check_fits(f"the dataset's counts, {n_examples:,} examples × {n_units:,} units as float32 and {stored:,} "
               "stored rows", n_examples * n_units * 4 + stored * 12, "a smaller recording or a machine with more "
               "memory")
    long = load_counts_long(db, dataset_id)
    counts = np.zeros((n_examples, n_units), dtype=np.float32)
    counts[long["example_id"].to_numpy(), long["unit_id"].to_numpy()] = long["value"].to_numpy()
    return counts


def dataset_matrix(db: Store, dataset_id: int, n_examples: int, n_units: int) -> tuple[np.ndarray, pl.DataFrame]:
    """Dense counts [examples × units] (float32) and the examples (trial_id, split, …) in example order."""
    return dense_counts(db, dataset_id, n_examples, n_units), load_examples(db, dataset_id)
