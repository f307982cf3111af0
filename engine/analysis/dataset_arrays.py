"""A dataset's examples and natural variables as arrays indexed by example_id: what Review's panels
(engine.analysis.review) and tuning (engine.analysis.tuning) read, so both import it from here."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

TEST = 2
"""Split code of the test split in DatasetArrays.split (train 0, val 1)."""
SPLITS = ("train", "val", "test")


@dataclass
class DatasetArrays:
    """A dataset's examples and natural variables as arrays indexed by example_id."""

    dataset_id: int
    name: str
    n_examples: int
    split: np.ndarray
    """int8: 0 train, 1 val, 2 test."""
    trial: np.ndarray
    time_s: np.ndarray
    """float64, NaN where unknown."""
    kinds: dict[str, str]
    numbers: dict[str, np.ndarray]
    """Continuous, circular and binary variables: float64 per example, NaN where missing."""
    codes: dict[str, np.ndarray]
    """Categorical and binary variables: level index per example, -1 where missing."""
    levels: dict[str, list[str]]
    fit_level_counts: dict[str, np.ndarray]
    """Per categorical/binary variable: train + val examples at each level (tuning denominators)."""
    unit_names: list[str]

    @cached_property
    def fit(self) -> np.ndarray:
        """bool per example: train or val (read for every feature: made once)."""
        return self.split != TEST
