"""ragmed ⇄ llama-index, both ways.

* :class:`RagmedRetriever` — any ragmed :class:`~ragmed.retrieve.base.Retriever` as a llama-index
  retriever (``NodeWithScore`` out), for llama-index query engines and agents.
* :class:`LlamaIndexRetriever` — any llama-index retriever (plus node postprocessors such as rerankers)
  as a ragmed retriever, so :class:`~ragmed.pipeline.RagPipeline` answers from it.
* :class:`RagmedQueryEngine` — the pipeline as a llama-index query engine.
* :class:`LlamaIndexEmbedding` — any ragmed embedder as a llama-index embedding model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.response.schema import Response
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import PrivateAttr

from ragmed.embeddings import Embedder
from ragmed.pipeline import RagPipeline
from ragmed.retrieve.base import Linker, Retriever
from ragmed.schema import Answer, Chunk, Retrieval, SearchTrace


def chunk_to_node(chunk: Chunk) -> NodeWithScore:
    return NodeWithScore(
        node=TextNode(id_=chunk.node_id, text=chunk.text, metadata=chunk.metadata), score=chunk.score
    )


def node_to_chunk(item: NodeWithScore, rank: int) -> Chunk:
    return Chunk.from_record(
        item.node.node_id,
        item.node.get_content(),
        dict(item.node.metadata or {}),
        rank=rank,
        score=None if item.score is None else float(item.score),
    )


class RagmedRetriever(BaseRetriever):
    """A ragmed retriever seen by llama-index."""

    def __init__(self, retriever: Retriever) -> None:
        super().__init__()
        self.retriever = retriever

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [chunk_to_node(c) for c in self.retriever.retrieve(query_bundle.query_str).chunks]


class LlamaIndexRetriever:
    """A llama-index retriever (and postprocessors) seen by ragmed; ``linker`` links diseases in the query."""

    def __init__(
        self,
        retriever: BaseRetriever,
        postprocessors: Sequence[BaseNodePostprocessor] = (),
        linker: Linker | None = None,
    ) -> None:
        self.retriever = retriever
        self.postprocessors = list(postprocessors)
        self.linker = linker

    def retrieve(self, query: str) -> Retrieval:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        linked = self.linker.link(query) if self.linker is not None else []
        timings["link_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        nodes = self.retriever.retrieve(query)
        timings["retrieve_ms"] = (time.perf_counter() - t) * 1000
        if self.postprocessors:
            t = time.perf_counter()
            bundle = QueryBundle(query)
            for post in self.postprocessors:
                nodes = post.postprocess_nodes(nodes, query_bundle=bundle)
            timings["rerank_ms"] = (time.perf_counter() - t) * 1000
        trace = SearchTrace(
            query=query,
            mode="llama-index",
            retriever=type(self.retriever).__name__,
            linked=linked,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
        )
        return Retrieval(
            chunks=[node_to_chunk(n, r) for r, n in enumerate(nodes, start=1)], linked=linked, trace=trace
        )


def answer_to_response(answer: Answer) -> Response:
    """A llama-index Response: cited chunks first as source nodes, the full Answer in metadata."""
    cited = {c.node_id for c in answer.citations}
    ordered = sorted(answer.chunks, key=lambda c: (c.node_id not in cited, c.n is None, c.n or 0))
    return Response(
        response=answer.text,
        source_nodes=[chunk_to_node(c) for c in ordered],
        metadata={"answer": answer.model_dump()},
    )


class RagmedQueryEngine(CustomQueryEngine):
    """ragmed's pipeline as a llama-index query engine (``.query()`` / ``.aquery()``)."""

    pipeline: Any
    rag: bool = True

    @classmethod
    def of(cls, pipeline: RagPipeline, rag: bool = True) -> RagmedQueryEngine:
        return cls(pipeline=pipeline, rag=rag)

    def custom_query(self, query_str: str) -> Response:
        return answer_to_response(self.pipeline.answer(query_str, rag=self.rag))

    async def acustom_query(self, query_str: str) -> Response:
        return answer_to_response(await self.pipeline.aanswer(query_str, rag=self.rag))


class LlamaIndexEmbedding(BaseEmbedding):
    """Any :class:`Embedder` as a llama-index embedding model (query/passage prefixes kept)."""

    _embedder: Embedder = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: object) -> None:
        super().__init__(model_name=embedder.name, **kwargs)
        self._embedder = embedder

    @classmethod
    def class_name(cls) -> str:
        return "RagmedEmbedding"

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embedder.embed_query(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embedder.embed_passages([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed_passages(texts).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
