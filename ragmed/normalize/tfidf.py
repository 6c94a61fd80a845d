"""Char 1–3-gram TF-IDF with an explicit vocabulary, kept as plain arrays (no pickled estimator).

The numbers are those of scikit-learn's ``TfidfVectorizer(analyzer="char", ngram_range=(1, 3),
sublinear_tf=True)`` (smooth idf, l2 rows), written out here because the normalizer must be stored in
formats that cannot run code — the vocabulary is a sorted fixed-width unicode array (.npy, looked up
with a binary search, memory-mapped: nothing to parse when loading), idf another .npy — and because
importing scikit-learn alone would cost more than the whole normalizer load budget at query time.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import scipy.sparse as sp

NGRAMS = (1, 2, 3)
GRAM_DTYPE = f"<U{max(NGRAMS)}"


def ngrams(text: str) -> Counter[str]:
    return Counter(text[i : i + n] for n in NGRAMS for i in range(len(text) - n + 1))


class CharTfidf:
    """Fitted vocabulary (sorted n-grams; column = position) and idf weights."""

    def __init__(self, vocabulary: np.ndarray, idf: np.ndarray) -> None:
        if vocabulary.dtype != np.dtype(GRAM_DTYPE) or len(vocabulary) != len(idf) or not len(idf):
            raise ValueError(f"{len(vocabulary)} n-grams ({vocabulary.dtype}) but {len(idf)} idf weights")
        self.vocabulary = vocabulary
        self.idf = np.asarray(idf, dtype=np.float32)

    @property
    def size(self) -> int:
        return len(self.idf)

    @classmethod
    def fit(cls, texts: list[str]) -> CharTfidf:
        df: Counter[str] = Counter()
        for text in texts:
            df.update(ngrams(text).keys())
        vocabulary = np.asarray(sorted(df), dtype=GRAM_DTYPE)
        counts = np.asarray([df[g] for g in vocabulary.tolist()], dtype=np.float64)
        idf = np.log((1 + len(texts)) / (1 + counts)) + 1.0
        return cls(vocabulary, idf.astype(np.float32))

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        """Rows of l2-normalized sublinear TF-IDF; n-grams outside the vocabulary are ignored."""
        grams: list[str] = []
        tfs: list[float] = []
        rows: list[int] = []
        for row, text in enumerate(texts):
            for gram, tf in ngrams(text).items():
                grams.append(gram)
                tfs.append(1.0 + math.log(tf) if tf > 1 else 1.0)
                rows.append(row)
        if grams:
            wanted = np.asarray(grams, dtype=GRAM_DTYPE)
            pos = np.minimum(np.searchsorted(self.vocabulary, wanted), self.size - 1)
            known = self.vocabulary[pos] == wanted
            col, row_of = pos[known], np.asarray(rows, dtype=np.int64)[known]
            vals = np.asarray(tfs, dtype=np.float32)[known] * self.idf[col]
        else:
            col, row_of, vals = (
                np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.int64),
                np.zeros(0, np.float32),
            )
        norms = np.sqrt(np.bincount(row_of, weights=vals.astype(np.float64) ** 2, minlength=len(texts)))
        norms[norms == 0] = 1.0
        vals = (vals / norms[row_of]).astype(np.float32)
        X = sp.csr_matrix((vals, (row_of, col)), shape=(len(texts), self.size))
        X.sort_indices()
        return X
