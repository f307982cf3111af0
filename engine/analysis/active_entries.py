"""The active (nonzero) entries of a sparse activation matrix in feature-major order, with what ranking
them needs: every association statistic and every null in engine.analysis.associations is a sum over these entries,
never over a dense examples × features array."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from engine.analysis.nulls import feature_code_table


@dataclass
class ActiveEntries:
    """The active (nonzero) entries in feature-major order (CSC), with what ranking them needs."""

    n_rows: int
    n_features: int
    rows: np.ndarray
    feature: np.ndarray
    values: np.ndarray
    indptr: np.ndarray
    matrix: sp.csc_matrix

    @classmethod
    def build(cls, activations) -> ActiveEntries:
        matrix = sp.csc_matrix(activations, dtype=np.float64, copy=True)  # copy: the fixes below are in place
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        if matrix.data.size and (matrix.data.min() < 0 or not np.isfinite(matrix.data).all()):
            raise ValueError("activations must be finite and nonnegative")
        n_rows, n_features = matrix.shape
        feature = np.repeat(np.arange(n_features, dtype=np.int64), np.diff(matrix.indptr))
        # int64 rows: np.take would otherwise convert 8M indices on every shuffle; int32 offsets (when
        # they fit) so that the per-shuffle sparse tables need no index conversion either
        offsets = matrix.indptr.astype(np.int32 if matrix.nnz < 2**31 else np.int64)
        return cls(n_rows, n_features, matrix.indices.astype(np.int64), feature, matrix.data, offsets, matrix)

    def subset(self, features: np.ndarray) -> ActiveEntries:
        """The entries of some features only (renumbered 0 … len(features)-1)."""
        return ActiveEntries.build(self.matrix[:, features])

    @cached_property
    def per_feature(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.float64)

    @cached_property
    def _ties(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Entries sorted by (feature, value); per sorted entry: first and last position of its tie group,
        and the first position of its feature."""
        # One sort of feature + value / (2 max) is twice as fast as two; it can only misorder values that
        # round to the same key, which the check below catches (then: exact two-pass sort).
        top = 2 * self.values.max() if len(self.values) else 1.0
        order = np.argsort(self.feature + self.values / top)
        feature, values, position = self.feature[order], self.values[order], np.arange(len(order))
        if np.any((values[1:] < values[:-1]) & (feature[1:] == feature[:-1])):
            by_value = np.argsort(self.values)
            narrow = np.int16 if self.n_features <= 2**15 else np.int64  # int16: numpy's stable sort is radix
            order = by_value[np.argsort(self.feature[by_value].astype(narrow), kind="stable")]
            feature, values = self.feature[order], self.values[order]
        new = np.r_[True, (feature[1:] != feature[:-1]) | (values[1:] != values[:-1])]
        start = np.maximum.accumulate(np.where(new, position, 0))
        last = np.r_[new[1:], True]
        end = np.minimum.accumulate(np.where(last, position, len(order))[::-1])[::-1]
        return order, start, end, self.indptr[feature]

    @cached_property
    def global_ranks(self) -> np.ndarray:
        return self.midranks(None)

    def midranks(self, mask: np.ndarray | None) -> np.ndarray:
        """Per entry: midrank (1 …) among its feature's nonzero entries that `mask` keeps (None: all).
        Entries outside the mask get a meaningless number."""
        order, start, end, feature_start = self._ties
        if mask is None:
            ranks_sorted = (start + end) / 2 - feature_start + 1
        else:
            kept = mask[order].astype(np.int64)
            through = np.cumsum(kept)
            before = through - kept
            ranks_sorted = (before[start] - before[feature_start]) + (through[end] - before[start] + 1) / 2
        ranks = np.empty(len(order))
        ranks[order] = ranks_sorted
        return ranks

    def codes_at(self, codes: np.ndarray) -> np.ndarray:
        """The code of each active entry's row, in the index dtype the sparse tables want."""
        return np.take(codes.astype(self.indptr.dtype), self.rows, mode="clip")

    def table(self, entry_codes: np.ndarray, n_codes: int, weights: np.ndarray | None = None) -> np.ndarray:
        """[features, n_codes]: sum of weights (count if None) of the active entries by code."""
        data = np.ones(len(entry_codes)) if weights is None else weights
        return feature_code_table(self.indptr, entry_codes, data, n_codes)
