"""Boosted trees as flat numpy arrays: trained with scikit-learn, stored as .npy, evaluated with numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIELDS = ("feature", "threshold", "left", "right", "is_leaf", "value", "baseline")


@dataclass
class Forest:
    """All trees of a HistGradientBoostingClassifier, walked together.

    sklearn's per-tree predict costs ~1 ms per call on a busy 2-core box (OpenMP start-up) and one
    query scores ~30 candidates, so walking all trees at once in numpy is ~20× faster; and the arrays
    store as plain .npy, where the estimator itself could only be pickled.
    """

    feature: np.ndarray  # (trees, nodes) int
    threshold: np.ndarray  # (trees, nodes) float64; go left when x <= threshold
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64
    baseline: np.ndarray  # (1,) raw-score offset

    @classmethod
    def from_sklearn(cls, gbm: Any) -> Forest:
        trees = [pred[0].nodes for pred in gbm._predictors]
        width = max(len(t) for t in trees)

        def stack(fieldname: str, dtype: type) -> np.ndarray:
            out = np.zeros((len(trees), width), dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = t[fieldname]
            return out

        return cls(
            feature=stack("feature_idx", np.int32),
            threshold=stack("num_threshold", np.float64),
            left=stack("left", np.int32),
            right=stack("right", np.int32),
            is_leaf=stack("is_leaf", bool)
            | (np.arange(width)[None, :] >= np.asarray([len(t) for t in trees])[:, None]),
            value=stack("value", np.float64),
            baseline=np.asarray(gbm._baseline_prediction, dtype=np.float64).ravel()[:1],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in FIELDS}

    def raw(self, X: np.ndarray) -> np.ndarray:
        """Log-odds for each row of ``X``."""
        X = np.asarray(X, dtype=np.float64)
        n_trees = self.feature.shape[0]
        tree = np.arange(n_trees)[:, None]
        rows = np.arange(len(X))[None, :]
        node = np.zeros((n_trees, len(X)), dtype=np.int64)
        while True:
            leaf = self.is_leaf[tree, node]
            if leaf.all():
                break
            go_left = X[rows, self.feature[tree, node]] <= self.threshold[tree, node]
            node = np.where(leaf, node, np.where(go_left, self.left[tree, node], self.right[tree, node]))
        return self.baseline[0] + self.value[tree, node].sum(axis=0)
