"""A feature that is never active (a dead latent, common when a small recording meets a wide SAE) has no
best range of a continuous variable: ranking must neither store a range row without a value nor
suggest it (the linear-track session hit both)."""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from engine.analysis.associations import AssociationConfig, Variable, associate
from engine.analysis.rank import RankConfig, _suggestions, _with_range


def test_a_dead_feature_gets_no_range_row_and_no_suggestion():
    rng = np.random.default_rng(0)
    n = 400
    position = rng.uniform(0, 1, n)
    active = np.where(position > 0.7, rng.uniform(1, 2, n), 0.0)
    matrix = sp.csc_matrix(np.c_[active, np.zeros(n)])  # feature 1 never fires
    trials = np.repeat(np.arange(20), n // 20)
    raw = associate(matrix, trials, [Variable("position", "continuous", position)], AssociationConfig(n_shuffles=20))
    assert raw.filter(raw["feature_id"] == 1)["value"].null_count() == 1  # what the store refuses
    assoc = _with_range(raw)
    assert assoc["feature_id"].to_list() == [0] and assoc["value"].null_count() == 0
    suggestions = _suggestions(1, assoc, pl.Series([1], dtype=pl.Int32), RankConfig())
    assert suggestions["feature_id"].to_list() == [0]
    first = suggestions.row(0, named=True)
    assert first["predicate"].startswith("position in [") and 0.6 <= first["low"] <= 0.8 and first["high"] > 0.99
