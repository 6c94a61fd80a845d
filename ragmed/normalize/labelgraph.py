"""The character encoders' label encodings in an HNSW graph (faiss), for a query's nearest names.

A query scored by all encoders needs their mean cosine's ten best labels out of ~27,000. The exact
product reads every label's encodings (3 × 256 floats each, 84 MB): ~2 ms a query, and it sweeps the CPU
cache that the tree walk and the lookups then miss. The graph visits a few hundred labels (fp16 codes):
~0.4 ms, and the caller re-scores what it returns exactly, so only the membership of the ten can differ
(on 400 held-out queries the exact ten were found in order for 98 %, recall 0.998).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

M = 32  # graph links per label
EF_CONSTRUCTION = 80
EF_SEARCH = 64  # labels a search keeps in its frontier, and returns


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """faiss builds an HNSW graph in parallel in an order that depends on thread timing: one thread
    keeps a build reproducible (the same dictionary gives the same graph and the same answers)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class LabelGraph:
    """Every label's encodings by each encoder, side by side (label ``i`` is graph id ``i``), scaled so
    that a query's inner product with them is the encoders' mean cosine."""

    def __init__(self, index: Any) -> None:
        self.index = index  # a faiss.IndexHNSWSQ (faiss is imported where it is needed: slow to import)

    @staticmethod
    def _rows(encodings: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.hstack(encodings), dtype=np.float32)

    @classmethod
    def build(cls, encodings: list[np.ndarray]) -> LabelGraph:
        """A graph over ``encodings`` (per encoder: labels × OUT)."""
        import faiss

        rows = cls._rows(encodings)
        index = faiss.IndexHNSWSQ(rows.shape[1], faiss.ScalarQuantizer.QT_fp16, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        graph = cls(index)
        with _one_thread():
            index.train(rows)
            index.add(rows)
        return graph

    def add(self, encodings: list[np.ndarray]) -> None:
        """Link new labels' encodings (their ids continue the labels')."""
        with _one_thread():
            self.index.add(self._rows(encodings))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, query: np.ndarray, k: int = EF_SEARCH) -> np.ndarray:
        """Up to ``max(k, EF_SEARCH)`` labels near ``query`` (the encoders' vectors side by side, divided
        by their number), in no guaranteed order: the caller scores them exactly."""
        import faiss

        ef = max(k, EF_SEARCH)
        params = faiss.SearchParametersHNSW(efSearch=ef)
        _, ids = self.index.search(np.asarray(query, dtype=np.float32)[None, :], ef, params=params)
        ids = ids[0]
        return ids[ids >= 0]

    def to_array(self) -> np.ndarray:
        """The graph as bytes (faiss's own format) for an .npy file."""
        import faiss

        return faiss.serialize_index(self.index)

    @classmethod
    def from_array(cls, data: np.ndarray) -> LabelGraph:
        import faiss

        return cls(faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8)))
