"""Whether wording has a standard name at all: a logistic regression over its character n-grams.

A third of the dictionary's variant rows are labelled ``-1`` (no single standard name): findings,
procedures, qualifiers written alone, wording too vague to name (術後, 精査, 腫大, …の疑い). The ranker
sees ``-1`` as one more candidate, with the evidence of the rows nearest the query; that says which
*rows* look like the query, not which *pieces* of wording make a row nameless. A linear model over the
query's char 1–3-grams (the normalizer's own TF-IDF columns), trained to tell the dictionary's ``-1``
variants from its named ones, gives that as one probability per query: a ranker feature. On the
grouped held-out split of bench/normalize.py alone it separates the two with ROC AUC 0.89.

Trained with scikit-learn at fit time; applied at query time as one sparse dot product from a plain
float array, so a saved normalizer loads without scikit-learn and no pickle is ever read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ragmed.errors import IndexCorruptError
from ragmed.normalize.store import Reader, Writer

C = 4.0  # inverse regularisation: 1, 4 and 16 measured (ROC AUC 0.876 / 0.885 / 0.882)


@dataclass
class NoneModel:
    """``P(-1 | query)`` = sigmoid(TF-IDF row · coef + intercept)."""

    coef: np.ndarray  # (n-gram vocabulary,) float32, over the normalizer's CharTfidf columns
    intercept: float

    @classmethod
    def train(cls, X: sp.csr_matrix, is_none: np.ndarray) -> NoneModel | None:
        """Fit on TF-IDF rows and whether each row's gold is ``-1``; None when one class is missing
        (nothing to tell apart)."""
        if is_none.all() or not is_none.any():
            return None
        from sklearn.linear_model import LogisticRegression  # fit time only

        lr = LogisticRegression(C=C, solver="liblinear", max_iter=2000).fit(X, is_none)
        return cls(lr.coef_[0].astype(np.float32), float(lr.intercept_[0]))

    def proba(self, Q: sp.csr_matrix) -> np.ndarray:
        """``P(-1)`` per row of ``Q``."""
        return 1.0 / (1.0 + np.exp(-(np.asarray(Q @ self.coef).ravel() + self.intercept)))

    # ------------------------------------------------------------------ persistence
    def save(self, out: Writer, prefix: str) -> None:
        out.array(f"{prefix}.coef", self.coef)
        out.array(f"{prefix}.intercept", np.asarray([self.intercept], dtype=np.float64))

    @classmethod
    def load(cls, store: Reader, prefix: str, columns: int) -> NoneModel:
        coef = np.asarray(store.array(f"{prefix}.coef", mmap=False))
        intercept = np.asarray(store.array(f"{prefix}.intercept", mmap=False))
        if coef.shape != (columns,) or intercept.shape != (1,):
            raise IndexCorruptError(
                f"{store.folder / (prefix + '.coef.npy')}: {coef.shape} weights for {columns} n-gram "
                "columns; rebuild the index (ragmed index build …)"
            )
        return cls(coef.astype(np.float32), float(intercept[0]))
