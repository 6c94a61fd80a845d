"""Boosted trees as flat numpy arrays: trained with LightGBM, stored as .npy, evaluated with numpy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIELDS = ("feature", "threshold", "left", "right", "is_leaf", "value", "baseline")
WALK_ROWS = 64  # rows walked together (one query scores ~40 candidates)
COMPACT_EVERY = 3  # steps between setting aside the (tree, row) pairs that reached a leaf
# trees of each bagged model placed first by :meth:`Forest.mean`: the head that scores every candidate,
# where the rest of the trees score only the candidates it ranks highest (see ``DiseaseNormalizer``)
HEAD_TREES = 50


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
    head: int = 0  # trees [0, head) are the head of :meth:`stages` (0: no head; saves before it)
    _walk: _Walk | None = field(default=None, repr=False, compare=False)
    _stages: tuple[Forest, Forest] | None = field(default=None, repr=False, compare=False)

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

    @classmethod
    def mean(cls, forests: list[Forest], head: int = HEAD_TREES) -> Forest:
        """One forest scoring the mean of ``forests`` (their trees side by side, leaf values divided).

        The first ``head`` trees of each forest go first, as the mean's head (:meth:`stages`): boosting's
        first trees carry most of a model's ranking, so they are the cheap first look at a candidate."""
        width = max(f.feature.shape[1] for f in forests)
        firsts = [min(head, len(f.feature)) for f in forests]

        def stack(name: str, padding: object = 0) -> np.ndarray:
            parts = []
            for f in forests:
                a = getattr(f, name)
                pad = np.full((a.shape[0], width - a.shape[1]), padding, dtype=a.dtype)
                parts.append(np.concatenate([a, pad], axis=1))
            return np.concatenate(
                [p[:n] for p, n in zip(parts, firsts, strict=True)]
                + [p[n:] for p, n in zip(parts, firsts, strict=True)]
            )

        return cls(
            feature=stack("feature"),
            threshold=stack("threshold"),
            left=stack("left"),
            right=stack("right"),
            is_leaf=stack("is_leaf", True),
            value=stack("value") / len(forests),
            baseline=np.mean([f.baseline for f in forests], axis=0),
            head=sum(firsts) if head else 0,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in FIELDS}

    def stages(self) -> tuple[Forest, Forest] | None:
        """The head and the rest of the trees as two forests (``raw`` is their sum; the baseline goes
        with the head), or None for a forest without a head."""
        if not 0 < self.head < len(self.feature):
            return None
        if self._stages is None:
            cut = self.head

            def part(trees: slice, baseline: np.ndarray) -> Forest:
                return Forest(
                    **{k: getattr(self, k)[trees] for k in FIELDS if k != "baseline"}, baseline=baseline
                )

            self._stages = (part(slice(0, cut), self.baseline), part(slice(cut, None), np.zeros(1)))
        return self._stages

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw score of each row of ``X`` (log-odds for a classifier; a ranking score for a ranker)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._walk is None:
            self._walk = _Walk.of(self)
        if len(X) > WALK_ROWS:  # trees × rows index arrays past the CPU cache walk 4× slower per row
            return np.concatenate([self.raw(X[i : i + WALK_ROWS]) for i in range(0, len(X), WALK_ROWS)])
        w = self._walk
        n_rows, n_features = X.shape
        # every (tree, row) pair walks down together; a leaf points to itself, so a pair that reached
        # its leaf may take more steps unharmed. Every COMPACT_EVERY steps the pairs at a leaf are set
        # aside: leaf-wise trees are 18 deep but half the pairs stop by depth 5 (2x fewer steps walked)
        node = np.repeat(w.roots, n_rows)
        cell = np.tile(np.arange(n_rows) * n_features, len(w.roots))
        flat = X.ravel()
        leaf = node.copy()  # each pair's leaf, filled in as pairs are set aside
        pair = np.arange(len(node))  # the pairs still walking
        for step in range(w.depth):
            if step and step % COMPACT_EVERY == 0:
                walking = ~w.is_leaf[node]
                leaf[pair[~walking]] = node[~walking]
                pair, node, cell = pair[walking], node[walking], cell[walking]
            right = flat[cell + w.feature[node]] > w.threshold[node]
            node = w.child[2 * node + right]
        leaf[pair] = node
        return self.baseline[0] + w.value[leaf].reshape(len(w.roots), n_rows).sum(axis=0)


@dataclass
class _Walk:
    """A forest's nodes as flat arrays, leaves made self-loops: what :meth:`Forest.raw` walks."""

    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    child: np.ndarray  # 2 × node + (go right)
    value: np.ndarray
    depth: int
    is_leaf: np.ndarray

    @classmethod
    def of(cls, f: Forest) -> _Walk:
        n_trees, width = f.feature.shape
        base = (np.arange(n_trees) * width)[:, None]
        ids = base + np.arange(width)[None, :]
        leaf = f.is_leaf.ravel()
        left = np.where(f.is_leaf, ids, base + f.left).ravel()
        right = np.where(f.is_leaf, ids, base + f.right).ravel()
        child = np.stack([left, right], axis=1).ravel()
        depth, level = 0, np.zeros(len(leaf), dtype=bool)  # deepest leaf, found by walking level by level
        level[base.ravel()] = True
        while (level & ~leaf).any():
            inner = np.flatnonzero(level & ~leaf)
            level = np.zeros(len(leaf), dtype=bool)
            level[left[inner]] = True
            level[right[inner]] = True
            depth += 1
        return cls(
            roots=base.ravel(),
            feature=np.where(leaf, 0, f.feature.ravel()).astype(np.int64),
            threshold=np.where(leaf, np.inf, f.threshold.ravel()),
            child=child,
            value=f.value.ravel(),
            depth=depth,
            is_leaf=leaf,
        )


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
