"""Char 1–3-gram TF-IDF with an explicit vocabulary, kept as plain arrays (no pickled estimator).

The numbers are those of scikit-learn's ``TfidfVectorizer(analyzer="char", ngram_range=(1, 3),
sublinear_tf=True)`` (smooth idf, l2 rows), written out here because the normalizer must be stored in
formats that cannot run code (a vocabulary list in JSON, idf in .npy), and because importing
scikit-learn alone would cost more than the whole normalizer load budget at query time.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import scipy.sparse as sp

NGRAMS = (1, 2, 3)


def ngrams(text: str) -> Counter[str]:
    return Counter(text[i : i + n] for n in NGRAMS for i in range(len(text) - n + 1))


class CharTfidf:
    """Fitted vocabulary (n-gram → column) and idf weights."""

    def __init__(self, vocabulary: list[str], idf: np.ndarray) -> None:
        self.vocabulary = vocabulary
        self.idf = np.asarray(idf, dtype=np.float32)
        self._column: dict[str, int] | None = None

    @classmethod
    def fit(cls, texts: list[str]) -> CharTfidf:
        df: Counter[str] = Counter()
        for text in texts:
            df.update(ngrams(text).keys())
        vocabulary = sorted(df)
        counts = np.asarray([df[g] for g in vocabulary], dtype=np.float64)
        idf = np.log((1 + len(texts)) / (1 + counts)) + 1.0
        return cls(vocabulary, idf.astype(np.float32))

    @property
    def column(self) -> dict[str, int]:
        if self._column is None:  # built on first use: loading stays cheap
            self._column = {g: i for i, g in enumerate(self.vocabulary)}
        return self._column

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Rows of l2-normalized sublinear TF-IDF; n-grams outside the vocabulary are ignored."""
        column = self.column
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for text in texts:
            for gram, tf in ngrams(text).items():
                j = column.get(gram)
                if j is not None:
                    indices.append(j)
                    data.append(1.0 + math.log(tf) if tf > 1 else 1.0)
            indptr.append(len(indices))
        idx = np.asarray(indices, dtype=np.int32)
        vals = np.asarray(data, dtype=np.float32) * self.idf[idx]
        ptr = np.asarray(indptr, dtype=np.int64)
        rows = np.repeat(np.arange(len(texts)), np.diff(ptr))
        row_sq = np.bincount(rows, weights=vals.astype(np.float64) ** 2, minlength=len(texts))
        norms = np.sqrt(row_sq)
        norms[norms == 0] = 1.0
        vals = vals / np.repeat(norms, np.diff(ptr)).astype(np.float32)
        return sp.csr_matrix((vals, idx, ptr), shape=(len(texts), len(self.vocabulary)))
