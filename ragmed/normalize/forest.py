"""Boosted trees as flat numpy arrays: trained with LightGBM, stored as .npy, evaluated with numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FIELDS = ("feature", "threshold", "left", "right", "is_leaf", "value", "baseline")


@dataclass
class Forest:
    """All trees of a boosted model, walked together (normalizers saved before the LightGBM ranker
    hold scikit-learn HistGradientBoosting trees in the same arrays, and still load).

    A library's per-tree predict costs ~1 ms per call on a busy 2-core box (OpenMP start-up) and one
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
    def from_lightgbm(cls, booster: Any) -> Forest:
        """The trees of a LightGBM booster (its JSON dump: leaf values already carry the shrinkage).

        ragmed's features are never missing, so a split is just ``x <= threshold`` → left."""
        trees: list[list[dict[str, Any]]] = []
        for info in booster.dump_model()["tree_info"]:
            nodes: list[dict[str, Any]] = []
            _flatten(info["tree_structure"], nodes)
            trees.append(nodes)
        width = max(len(t) for t in trees)

        def stack(name: str, dtype: type, padding: object = 0) -> np.ndarray:
            out = np.full((len(trees), width), padding, dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = [n.get(name, 0) for n in t]
            return out

        return cls(
            feature=stack("feature", np.int32),
            threshold=stack("threshold", np.float64),
            left=stack("left", np.int32),
            right=stack("right", np.int32),
            is_leaf=stack("is_leaf", bool, True),
            value=stack("value", np.float64),
            baseline=np.zeros(1, dtype=np.float64),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in FIELDS}

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score of each row of ``X`` (log-odds for a classifier; a ranking score for a ranker)."""
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


def _flatten(node: dict[str, Any], nodes: list[dict[str, Any]]) -> int:
    """Append a LightGBM JSON (sub)tree to ``nodes`` in pre-order; returns the index of its root."""
    at = len(nodes)
    nodes.append({})
    if "split_feature" not in node:
        nodes[at] = {"is_leaf": True, "value": float(node.get("leaf_value", 0.0))}
        return at
    if node.get("decision_type", "<=") != "<=":
        raise ValueError(f"LightGBM split {node.get('decision_type')!r}: only numeric <= splits")
    left = _flatten(node["left_child"], nodes)
    right = _flatten(node["right_child"], nodes)
    nodes[at] = {
        "feature": int(node["split_feature"]),
        "threshold": float(node["threshold"]),
        "left": left,
        "right": right,
        "is_leaf": False,
    }
    return at
