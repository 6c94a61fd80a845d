"""Index stage: node records → components on disk — node store (SQLite), dense (FAISS), lexical (BM25),
disease normalizer — listed with their checksums in ``manifest.json``.

An index lives in ``<index_dir>/<name>/``::

    manifest.json   format, embedding model (and which encoder wrote the vectors), counts, sources,
                    and per component: its files with size and sha256, its count and parameters
    nodes.sqlite    node id, kind, text, metadata by position (row i ↔ vector i ↔ BM25 document i)
    dense.faiss     the FAISS index, memory-mapped (vectors.f16 beside it for the approximate types)
    lexical/        BM25 postings: tantivy segments (memory-mapped), scored at query time
    normalizer/     the Manbyo disease normalizer (when the index holds dictionary entries)

:mod:`~ragmed.index.store` (manifest, names, atomic swap, checks), :mod:`~ragmed.index.nodes`,
:mod:`~ragmed.index.dense`, :mod:`~ragmed.index.lexical` (one component each), and
:mod:`~ragmed.index.build` (streamed, resumable builds and ``index add``). Opening an index reads its
manifest only (:class:`RagmedIndex`); FAISS, tantivy and llama-index are imported when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragmed.errors import EmbeddingMismatchError, IndexCorruptError, IndexNotFoundError
from ragmed.index.loaded import RagmedIndex, record_to_node
from ragmed.index.store import (
    MANIFEST,
    Manifest,
    SourceInfo,
    list_indexes,
    resolve_index_path,
    sha256_file,
    validate_name,
)

if TYPE_CHECKING:
    from ragmed.index.build import add_to_index, build_index, embed_text, lexical_text

_LAZY = {"build_index", "add_to_index", "embed_text", "lexical_text"}


def __getattr__(name: str) -> Any:
    # building pulls in FAISS, bm25s and llama-index: not for one-shot commands that only read
    if name in _LAZY:
        from ragmed.index import build

        return getattr(build, name)
    raise AttributeError(f"module 'ragmed.index' has no attribute {name!r}")


__all__ = [
    "MANIFEST",
    "EmbeddingMismatchError",
    "IndexCorruptError",
    "IndexNotFoundError",
    "Manifest",
    "RagmedIndex",
    "SourceInfo",
    "add_to_index",
    "build_index",
    "embed_text",
    "lexical_text",
    "list_indexes",
    "record_to_node",
    "resolve_index_path",
    "sha256_file",
    "validate_name",
]
