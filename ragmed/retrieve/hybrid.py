"""ragmed's own retriever: dense (FAISS) and lexical (BM25 over fugashi tokens), fused.

Hybrid search fuses the two ranked lists with reciprocal rank fusion (RRF), which needs no score
calibration between cosine and BM25. Disease mentions in the query are linked to Manbyo standard
names first and those names expand the lexical query, so "AMI の治療" also matches passages that
only say 急性心筋梗塞; a mention the text negates (「DMなし」) expands nothing.

:class:`Searcher` holds the loaded index and is shared by every request; :class:`HybridRetriever`
is one configuration of it (k, mode, filters) implementing :class:`~ragmed.retrieve.base.Retriever`.

In hybrid mode the lexical search runs on a worker thread while the query is embedded and FAISS
searched on the caller's: tantivy and FAISS both release the GIL, so a hybrid query costs about the
slower of the two rather than their sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ragmed.errors import InputError
from ragmed.index import RagmedIndex
from ragmed.schema import RETRIEVAL_MODES, Chunk, LinkedDisease, Retrieval, RetrievalMode, SearchTrace
from ragmed.settings import RetrievalSettings
from ragmed.tokenize import normalize_text
from ragmed.tokenize import warm as warm_tokenizer

T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _beside(fn: Callable[[], T]) -> Future[T]:
    """Run ``fn`` on the shared worker threads (the lexical half of a hybrid query)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ragmed-lexical")
    return _pool.submit(fn)


def rrf(rankings: Iterable[list[int]], k: int = 60) -> dict[int, float]:
    """Reciprocal rank fusion: sum of 1/(k + rank) over the lists a document appears in."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return fused


class DictionaryLinker:
    """The Manbyo normalizer as a :class:`~ragmed.retrieve.base.Linker`: each mention in the text,
    linked to its best real standard name (a mention whose candidates are all "-1" is not a link)."""

    def __init__(self, normalizer: Any, k: int = 1) -> None:
        self.normalizer = normalizer
        self.k = k

    def link(self, text: str) -> list[LinkedDisease]:
        if self.normalizer is None:
            return []
        linked = []
        for m in self.normalizer.find_mentions(text, k=self.k):
            best = [c for c in m.candidates if c.standard_name != "-1"]
            if best:
                linked.append(
                    LinkedDisease(
                        mention=m.text,
                        start=m.start,
                        end=m.end,
                        standard_name=best[0].standard_name,
                        icd10=best[0].icd10,
                        score=best[0].score,
                        level=best[0].level or None,
                        **m.flags(),
                    )
                )
        return linked


class Searcher:
    """Search over one loaded :class:`RagmedIndex`; safe to share between threads.

    The index opens its components on first use; the first query's trace reports that one-time cost as
    ``timings_ms["load_ms"]``, apart from linking and searching. ``nprobe`` / ``ef_search`` / ``rescore``
    override the approximate dense index's own settings (ignored by flat indexes).
    """

    def __init__(
        self,
        index: RagmedIndex,
        rrf_k: int = 60,
        reranker: str | None = None,
        depth: int = 50,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rescore: int | None = None,
        dense_expand: bool = True,
    ) -> None:
        self.index = index
        self.dense_expand = dense_expand
        self.rrf_k = rrf_k
        self.depth = depth
        self.nprobe, self.ef_search, self.rescore = nprobe, ef_search, rescore
        self._reranker_name = reranker
        self._reranker: Any = None

    @classmethod
    def configured(cls, index: RagmedIndex, r: RetrievalSettings, **overrides: Any) -> Searcher:
        """A searcher with the retrieval settings (``overrides`` win where not None)."""
        kwargs: dict[str, Any] = {
            "rrf_k": r.rrf_k,
            "reranker": r.reranker,
            "nprobe": r.nprobe,
            "ef_search": r.ef_search,
            "rescore": r.rescore,
            "dense_expand": r.dense_english_terms,
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(index, **kwargs)

    def warm(self) -> None:
        """Load what the first query would otherwise wait for (query encoder, disease normalizer,
        fugashi): long-running services and eval runs call it before they time anything."""
        self.index.embedder.warm()
        self.search("急性心筋梗塞", k=1)

    # ------------------------------------------------------------ components
    @staticmethod
    def _allowed(n: int, exclude: set[int] | None, allowed: np.ndarray | None) -> np.ndarray | None:
        if not exclude:
            return allowed
        mask = np.ones(n, dtype=bool) if allowed is None else allowed.copy()
        mask[list(exclude)] = False
        return mask

    def dense(
        self,
        query_vector: np.ndarray,
        n: int,
        exclude: set[int] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """Top-``n`` (position, cosine) from FAISS; ``allowed`` masks positions (a FAISS selector, so a
        filtered search still finds ``n`` hits)."""
        if not len(self.index):
            return []
        mask = self._allowed(len(self.index), exclude, allowed)
        return self.index.dense.search(
            query_vector, n, mask, nprobe=self.nprobe, ef_search=self.ef_search, rescore=self.rescore
        )

    def bm25(
        self,
        tokens: list[str],
        n: int,
        exclude: set[int] | None = None,
        kinds: set[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Top-``n`` BM25 documents of ``kinds`` (all when None), none of ``exclude``."""
        if not tokens or not len(self.index):
            return []
        return self.index.lexical.search(tokens, n, kinds=kinds, exclude=exclude or ())

    def _load(self, mode: str, link: bool, embed: bool) -> float:
        """Open what this query needs (a no-op once loaded); returns the milliseconds it took."""
        t = time.perf_counter()
        if link:
            warm_tokenizer()
            _ = self.index.normalizer
            _ = self.index.glossary
        if mode in ("hybrid", "bm25"):
            warm_tokenizer()
            _ = self.index.lexical
        if mode in ("hybrid", "dense"):
            _ = self.index.dense
            if embed:
                _ = self.index.embedder
        _ = self.index.store
        return (time.perf_counter() - t) * 1000

    def _has_english(self) -> bool:
        """Whether English expansion can reach anything: English chunks and a glossary in the index."""
        components = self.index.manifest.components
        lexical = components.get("lexical")
        languages = (lexical.params.get("languages") or {}) if lexical is not None else {}
        return bool(languages.get("en")) and "glossary" in components

    def english_terms(self, linked: list[LinkedDisease]) -> list[str]:
        """English terms for the linked, not negated diseases: WHO ICD-10 titles and the dictionary's
        Latin-letter abbreviations (the cross-lingual expansion; see :mod:`ragmed.index.glossary`)."""
        glossary = self.index.glossary
        if glossary is None:
            return []
        terms: dict[str, None] = {}
        for d in linked:
            if not d.negated:
                terms.update(dict.fromkeys(glossary.english(d.standard_name, d.icd10)))
        return list(terms)

    @property
    def linker(self) -> DictionaryLinker:
        """Disease linking over the index's dictionary (links nothing when it holds none)."""
        return DictionaryLinker(self.index.normalizer)

    # ------------------------------------------------------------ search
    def search(
        self, query: str, k: int = 5, mode: RetrievalMode | str = "hybrid", **options: Any
    ) -> list[Chunk]:
        """Top-``k`` chunks (options as :meth:`retrieve`, which also says how they were found)."""
        return self.retrieve(query, k, mode, **options).chunks

    def retrieve(
        self,
        query: str,
        k: int = 5,
        mode: RetrievalMode | str = "hybrid",
        *,
        expand: bool = True,
        exclude_ids: set[str] | None = None,
        query_vector: np.ndarray | None = None,
        kinds: set[str] | None = None,
    ) -> Retrieval:
        """Top-``k`` chunks, the diseases linked in the query and the trace. ``kinds`` keeps only nodes
        of those kinds ("manbyo", "corpus"); ``exclude_ids`` drops nodes (the eval leakage guard)."""
        if mode not in RETRIEVAL_MODES:
            raise InputError(f"unknown retrieval mode {mode!r}: use one of {', '.join(RETRIEVAL_MODES)}")
        if not query.strip():
            raise InputError("the query is empty")
        english = expand and self._has_english()
        # linking feeds the lexical query, and the dense one only with English terms
        link = expand and (mode != "dense" or (english and self.dense_expand))
        timings: dict[str, float] = {"load_ms": self._load(mode, link, query_vector is None)}
        exclude = set(self.index.positions(exclude_ids).values()) if exclude_ids else set()
        depth = max(self.depth, 4 * k)
        dense_hits: list[tuple[int, float]] = []
        bm25_hits: list[tuple[int, float]] = []
        expansion: list[str] = []
        expansion_en: list[str] = []
        linked: list[LinkedDisease] = []
        if link:
            # Only names the query does not already say: repeating a term would just up-weight the
            # short dictionary rows that contain it. ICD codes stay in the trace: passages rarely
            # contain them, so they would favour dictionary rows too. A negated mention ("HTなし")
            # is linked (the trace shows it) but expands nothing.
            t = time.perf_counter()
            linked = self.linker.link(query)
            folded = normalize_text(query)
            expansion = list(
                dict.fromkeys(
                    d.standard_name
                    for d in linked
                    if not d.negated and normalize_text(d.standard_name) not in folded
                )
            )
            if english:
                expansion_en = self.english_terms(linked)
            timings["link_ms"] = (time.perf_counter() - t) * 1000

        def lexical_part() -> tuple[list[tuple[int, float]], float]:
            t = time.perf_counter()
            lexical = self.index.lexical
            tokens = lexical.query_tokens(query)
            seen = set(tokens)
            extra = lexical.analyzers.query_tokens(" ".join(expansion), ["ja"]) if expansion else []
            if expansion_en:
                extra += lexical.analyzers.query_tokens(" ; ".join(expansion_en), ["en"])
            tokens += [tok for tok in dict.fromkeys(extra) if tok not in seen]
            return self.bm25(tokens, depth, exclude, kinds), (time.perf_counter() - t) * 1000

        pending = _beside(lexical_part) if mode == "hybrid" else None
        if mode == "bm25":
            bm25_hits, timings["bm25_ms"] = lexical_part()
        if mode in ("hybrid", "dense"):
            t = time.perf_counter()
            if query_vector is None:
                text = query
                if expansion_en and self.dense_expand:
                    text = f"{query}\n{'; '.join(expansion_en)}"
                query_vector = self.index.embedder.embed_query(text)
            timings["embed_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            allowed = self.index.kind_mask(kinds) if kinds is not None else None
            dense_hits = self.dense(query_vector, depth, exclude, allowed)
            timings["dense_ms"] = (time.perf_counter() - t) * 1000
        if pending is not None:
            t = time.perf_counter()
            bm25_hits, timings["bm25_ms"] = pending.result()
            timings["bm25_wait_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        dense_map, bm25_map = dict(dense_hits), dict(bm25_hits)
        if mode == "dense":
            ranked = dense_hits
        elif mode == "bm25":
            ranked = bm25_hits
        else:
            fused = rrf([[d for d, _ in dense_hits], [d for d, _ in bm25_hits]], self.rrf_k)
            ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
        pool = ranked[: max(k, 20)] if self._reranker_name else ranked[:k]
        records = self.index.get([pos for pos, _ in pool])  # only the hits are read from disk
        chunks = [
            Chunk.from_record(
                rec["id"],
                rec["text"],
                rec["metadata"],
                rank=r,
                score=score,
                dense_score=dense_map.get(pos),
                bm25_score=bm25_map.get(pos),
            )
            for r, ((pos, score), rec) in enumerate(zip(pool, records, strict=True), start=1)
        ]
        if self._reranker_name and chunks:
            chunks = self.rerank(query, chunks)[:k]
        timings["fuse_ms"] = (time.perf_counter() - t) * 1000
        trace = SearchTrace(
            query=query,
            mode=str(mode),
            retriever=type(self).__name__,
            expansion=expansion,
            expansion_en=expansion_en,
            linked=linked,
            query_encoder=self.index.embedder.active_query_encoder if mode != "bm25" else None,
            timings_ms={key: round(v, 3) for key, v in timings.items()},
        )
        return Retrieval(chunks=chunks, linked=linked, trace=trace)

    def rerank(self, query: str, chunks: list[Chunk]) -> list[Chunk]:
        """Re-order with a sentence-transformers CrossEncoder (off unless configured)."""
        if self._reranker is None:
            from sentence_transformers import CrossEncoder

            self._reranker = CrossEncoder(self._reranker_name)
        scores = self._reranker.predict([(query, c.text) for c in chunks], show_progress_bar=False)
        order = sorted(range(len(chunks)), key=lambda i: -float(scores[i]))
        return [
            chunks[i].model_copy(
                update={"rank": rank, "rerank_score": float(scores[i]), "score": float(scores[i])}
            )
            for rank, i in enumerate(order, start=1)
        ]


class HybridRetriever:
    """One configuration of a shared :class:`Searcher` (k, mode, expansion, filters) as a
    :class:`~ragmed.retrieve.base.Retriever`. Cheap to create per request."""

    def __init__(
        self,
        searcher: Searcher,
        k: int = 5,
        mode: RetrievalMode | str = "hybrid",
        *,
        expand: bool = True,
        exclude_ids: set[str] | None = None,
        kinds: set[str] | None = None,
    ) -> None:
        if mode not in RETRIEVAL_MODES:
            raise InputError(f"unknown retrieval mode {mode!r}: use one of {', '.join(RETRIEVAL_MODES)}")
        self.searcher = searcher
        self.k, self.mode, self.expand = k, mode, expand
        self.exclude_ids = set(exclude_ids or ())
        self.kinds = set(kinds) if kinds is not None else None

    @classmethod
    def over(
        cls, index: RagmedIndex, k: int = 5, mode: RetrievalMode | str = "hybrid", **kwargs: Any
    ) -> HybridRetriever:
        """A retriever with its own :class:`Searcher` over ``index`` (one-off use)."""
        reranker = kwargs.pop("reranker", None)
        rrf_k = kwargs.pop("rrf_k", 60)
        return cls(Searcher(index, rrf_k=rrf_k, reranker=reranker), k, mode, **kwargs)

    def retrieve(self, query: str) -> Retrieval:
        return self.searcher.retrieve(
            query, self.k, self.mode, expand=self.expand, exclude_ids=self.exclude_ids, kinds=self.kinds
        )
