"""What the API and the UI call: one loaded index, one upstream LLM, pipelines per retrieval setting.

WHY a service apart from the server: the OpenAI-compatible API and the Gradio UI must answer
identically, and neither should reach into the index or the pipeline on its own. This module knows
conversations (the last user turn is the question; earlier turns are history and shape the retrieval
query), per-request options (k, mode, RAG on/off), dictionary lookups and health — nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from ragmed.errors import InputError, TooLargeError, UpstreamError
from ragmed.generate.base import ChatBackend
from ragmed.index import RagmedIndex
from ragmed.pipeline import RagPipeline
from ragmed.retrieve.hybrid import HybridRetriever, Searcher
from ragmed.schema import RETRIEVAL_MODES, Answer, Message, RetrievalMode, Retrieved, SamplingParams
from ragmed.settings import Settings, get_settings

MODEL_PREFIX = "ragmed/"
#: How many earlier user turns (besides the current one) go into the retrieval query.
QUERY_TURNS = 2
#: Most characters one embedding input may have (a passage is a few hundred).
MAX_EMBED_CHARS = 8192


def split_conversation(messages: Sequence[Message]) -> tuple[str, list[Message], str, list[str]]:
    """(question, history, retrieval query, warnings) from an OpenAI-style message list.

    The retrieval query joins the last few user turns, so a follow-up such as 「その治療は？」 is searched
    together with the disease asked about before. Client system messages are not forwarded: ragmed's
    prompt template owns the system prompt (its grounding rules must not be overridden).
    """
    warnings: list[str] = []
    if any(m["role"] in ("system", "developer") for m in messages):
        warnings.append("Client system messages were ignored: ragmed uses its own system prompt.")
    turns = [m for m in messages if m["role"] in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise InputError("the last message must come from the user (role 'user')")
    question = turns[-1]["content"]
    if not question.strip():
        raise InputError("the last user message is empty")
    users = [m["content"] for m in turns[:-1] if m["role"] == "user" and m["content"].strip()]
    query = "\n".join([*users[-QUERY_TURNS:], question])
    return question, [dict(m) for m in turns[:-1]], query, warnings


class DictionaryRow(BaseModel):
    """One line of a dictionary lookup (the UI's Dictionary tab)."""

    mention: str
    standard_name: str
    icd10: str
    level: str = ""
    score: float | None = None
    how: Literal["linked", "normalized", "search"]
    negated: bool = False
    suspected: bool = False
    family: bool = False
    historical: bool = False
    hypothetical: bool = False


class RagService:
    """One loaded index and one upstream backend shared by every request (thread- and task-safe).

    Pipelines differ only in ``k`` and retrieval mode; they are cached per (k, mode) and share the
    index's :class:`Searcher`, so per-request options cost nothing after the first use.
    """

    def __init__(self, index: RagmedIndex, settings: Settings, llm: ChatBackend | None = None) -> None:
        from ragmed.generate.openai_client import LLMClient

        self.index = index
        self.settings = settings
        self.llm = llm or LLMClient.from_settings(settings)
        self.searcher = Searcher.configured(index, settings.retrieval)
        self._pipelines: dict[tuple[int, str], RagPipeline] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, index: str, settings: Settings | None = None, llm: ChatBackend | None = None) -> RagService:
        settings = settings or get_settings()
        return cls(RagmedIndex.load(index, settings=settings), settings, llm)

    @property
    def model_id(self) -> str:
        return MODEL_PREFIX + self.index.name

    def warm(self) -> None:
        """Load what the first request would otherwise wait for (query encoder, normalizer, fugashi)."""
        self.searcher.warm()

    def pipeline(self, k: int | None = None, mode: RetrievalMode | str | None = None) -> RagPipeline:
        k = k or self.settings.retrieval.top_k
        mode = mode or self.settings.retrieval.mode
        if mode not in RETRIEVAL_MODES:
            raise InputError(f"unknown retrieval mode {mode!r}: use one of {', '.join(RETRIEVAL_MODES)}")
        with self._lock:
            pipe = self._pipelines.get((k, mode))
            if pipe is None:
                pipe = RagPipeline(
                    self.llm, HybridRetriever(self.searcher, k=k, mode=mode), settings=self.settings
                )
                self._pipelines[(k, mode)] = pipe
            return pipe

    def sampling(self, **overrides: Any) -> SamplingParams:
        return self.pipeline().sampling(**overrides)

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        k: int | None = None,
        mode: RetrievalMode | str | None = None,
        rag: bool = True,
        params: SamplingParams | None = None,
    ) -> AsyncIterator[Retrieved | str | Answer]:
        """The answer to the conversation's last user turn: a :class:`Retrieved` event (sources, before
        the first token), text deltas, then the :class:`Answer`."""
        question, history, query, notes = split_conversation(messages)
        pipe = self.pipeline(k, mode)
        async for item in pipe.astream(question, rag, params, history=history, query=query, notes=notes):
            yield item

    async def aanswer(self, messages: Sequence[Message], **kwargs: Any) -> Answer:
        question, history, query, notes = split_conversation(messages)
        pipe = self.pipeline(kwargs.pop("k", None), kwargs.pop("mode", None))
        return await pipe.aanswer(question, history=history, query=query, notes=notes, **kwargs)

    async def upstream_model(self) -> str:
        return await self.llm.amodel()

    def embed(self, texts: list[str], input_type: Literal["passage", "query"] = "passage") -> np.ndarray:
        """Embeddings from the index's own model; inputs are checked first (non-empty, valid UTF-8, bounded)."""
        for i, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"input[{i}]: embedding inputs must be non-empty strings")
            if len(text) > MAX_EMBED_CHARS:
                raise TooLargeError(f"input[{i}] has {len(text)} characters; the limit is {MAX_EMBED_CHARS}")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(
                    f"input[{i}] is not valid Unicode text (an unpaired surrogate at character {exc.start})"
                ) from None
        embedder = self.index.embedder
        return embedder.embed_queries(texts) if input_type == "query" else embedder.embed_passages(texts)

    @property
    def embedder_name(self) -> str:
        return str(self.index.manifest.embedding.get("name", ""))

    def dictionary(self, text: str, k: int = 3) -> list[DictionaryRow]:
        """Disease mentions in ``text`` linked to Manbyo; a bare term normalized whole when nothing is
        linked; else the closest dictionary entries by search."""
        limit = self.settings.generation.max_question_chars
        if len(text) > limit:
            raise TooLargeError(
                f"The text is {len(text)} characters long; the limit is {limit} (RAGMED_MAX_QUESTION_CHARS)."
            )
        rows: list[DictionaryRow] = []
        normalizer = self.index.normalizer
        if normalizer is not None:
            for m in normalizer.find_mentions(text, k=k):
                for c in m.candidates:
                    if c.standard_name == "-1":
                        continue
                    rows.append(
                        DictionaryRow(
                            mention=m.text,
                            standard_name=c.standard_name,
                            icd10=c.icd10,
                            level=c.level or "",
                            score=round(float(c.score), 4) if c.score is not None else None,
                            how="linked",
                            **m.flags(),
                        )
                    )
            if not rows and len(text.strip()) <= 40:  # a bare term: normalize it whole
                for c in normalizer.normalize(text.strip(), k=k):
                    if c.standard_name != "-1":
                        rows.append(
                            DictionaryRow(
                                mention=text.strip(),
                                standard_name=c.standard_name,
                                icd10=c.icd10,
                                level=c.level or "",
                                score=round(float(c.score), 4),
                                how="normalized",
                            )
                        )
        if not rows:  # no normalizer, or nothing linked: dictionary entries by hybrid search
            for hit in self.searcher.search(text, k=k * 3, kinds={"manbyo"}):
                meta = hit.metadata
                rows.append(
                    DictionaryRow(
                        mention=str(meta.get("surface", "")),
                        standard_name=str(meta.get("standard_name", "")),
                        icd10=str(meta.get("icd10", "")),
                        level=str(meta.get("level") or ""),
                        score=round(hit.score or 0.0, 4),
                        how="search",
                    )
                )
        return rows

    async def health(self) -> dict[str, Any]:
        """Index loaded, and whether the upstream answers now (short timeout, no retries)."""
        upstream: dict[str, Any] = {"url": self.llm.where}
        try:
            upstream["model"] = await asyncio.wait_for(self.llm.amodel(), timeout=10)
            await self.llm.aping(timeout=5.0)  # amodel() is cached: ask again so health reflects now
            upstream["reachable"] = True
        except UpstreamError as exc:
            upstream["reachable"], upstream["error"] = False, str(exc)
        except TimeoutError:
            upstream["reachable"], upstream["error"] = False, "no answer within 10 s"
        return {
            "status": "ok" if upstream["reachable"] else "degraded",
            "index": {"name": self.index.name, "nodes": len(self.index), "path": str(self.index.path)},
            "upstream": upstream,
            "model": self.model_id,
        }
