"""Generate stage, part 2: question → linked diseases → retrieval → packed context → answer with citations.

The pipeline is deliberately thin glue around interchangeable parts:

* any llama-index ``BaseRetriever`` (ragmed's :class:`~ragmed.retrieve.HybridRetriever` or a user's
  own), plus optional llama-index node postprocessors (rerankers);
* any :class:`~ragmed.llm.ChatBackend` (an OpenAI-compatible server or in-process vLLM);
* a prompt template file (:mod:`ragmed.prompts`) whose sha256 is recorded with each answer.

Context packing counts tokens with the model's own tokenizer when it can (vLLM's ``/tokenize``, a
local tokenizer folder, or in-process vLLM) because Japanese costs very different numbers of tokens
per character across tokenizers; otherwise it falls back to the UTF-8 byte count, an upper bound for
byte-level BPE and byte-fallback tokenizers, and says so in the answer's warnings.

Citations are the numbers ``[n]`` the model wrote, mapped back to the numbered context; numbers that
point at nothing are dropped (and listed), so a citation in an :class:`Answer` is always a real source.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.response.schema import Response
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from pydantic import BaseModel, ConfigDict, Field

from ragmed.errors import ContextTooSmallError
from ragmed.llm import ChatBackend, ChatResult, LLMClient, LLMError, Message, SamplingParams
from ragmed.prompts import PromptTemplate, load_template
from ragmed.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.console import Console

    from ragmed.exam import ExamAnswer, ExamKind

log = logging.getLogger(__name__)

# Tokens the chat template adds around messages (role markers, BOS/EOS); generous for safety.
CHAT_OVERHEAD_TOKENS = 32
# Tokens tokenization may differ by when two pieces are counted apart instead of together.
JOIN_SLACK_TOKENS = 2
# Below this, a partially fitting chunk is not worth truncating.
MIN_PARTIAL_TOKENS = 48
DEFAULT_CONTEXT_LENGTH = 4096
# A question cut shorter than this is not worth sending.
MIN_QUESTION_TOKENS = 32


# --------------------------------------------------------------------------- data


class RetrievedChunk(BaseModel):
    """One retrieved node; ``n`` is its citation number when it made it into the prompt."""

    node_id: str
    text: str
    score: float | None = None
    kind: str | None = None
    source: str = ""
    title: str = ""
    standard_name: str | None = None
    icd10: str | None = None
    level: str | None = None
    n: int | None = None
    truncated: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_node(cls, item: NodeWithScore) -> RetrievedChunk:
        meta = dict(item.node.metadata or {})
        return cls(
            node_id=item.node.node_id,
            text=item.node.get_content(),
            score=None if item.score is None else float(item.score),
            kind=meta.get("kind"),
            source=str(meta.get("source", "")),
            title=str(meta.get("title") or meta.get("standard_name") or ""),
            standard_name=meta.get("standard_name"),
            icd10=meta.get("icd10"),
            level=meta.get("level"),
            metadata=meta,
        )


class Citation(BaseModel):
    """A cited source: the ``[n]`` in the answer text resolves to this chunk."""

    n: int
    node_id: str
    source: str
    title: str
    standard_name: str | None = None
    icd10: str | None = None
    score: float | None = None
    kind: str | None = None
    text: str

    @classmethod
    def from_chunk(cls, chunk: RetrievedChunk) -> Citation:
        assert chunk.n is not None
        return cls(
            n=chunk.n,
            node_id=chunk.node_id,
            source=chunk.source,
            title=chunk.title,
            standard_name=chunk.standard_name,
            icd10=chunk.icd10,
            score=chunk.score,
            kind=chunk.kind,
            text=chunk.text,
        )


class LinkedDisease(BaseModel):
    """A disease mention in the question, linked to a Manbyo standard name."""

    mention: str
    start: int
    end: int
    standard_name: str
    icd10: str
    score: float | None = None


class ContextInfo(BaseModel):
    """How the prompt was packed."""

    prompt_tokens: int = 0
    budget: int = 0
    context_length: int = 0
    exact: bool = False
    counter: str = ""
    packed: int = 0
    dropped: int = 0
    duplicates: int = 0


class Answer(BaseModel):
    """Everything a caller may show or log about one answer."""

    question: str
    text: str
    citations: list[Citation] = Field(default_factory=list)
    invalid_citations: list[int] = Field(default_factory=list)
    chunks: list[RetrievedChunk] = Field(default_factory=list)
    linked: list[LinkedDisease] = Field(default_factory=list)
    rag: bool = True
    model: str = ""
    llm_url: str = ""
    prompt_template: str = ""
    prompt_hash: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    context: ContextInfo = Field(default_factory=ContextInfo)
    trace: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- token counting


class TokenCounter(ABC):
    """Counts tokens of the model that will read the prompt; ``exact`` says whether it can."""

    exact: bool = False
    description: str = ""

    @abstractmethod
    def count(self, text: str) -> int:
        """Tokens in ``text``."""


class ByteEstimateCounter(TokenCounter):
    """UTF-8 bytes: no byte-level BPE or byte-fallback token covers less than one byte."""

    exact = False
    description = "estimate: UTF-8 bytes (upper bound for byte-level tokenizers)"

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))


class BackendTokenCounter(TokenCounter):
    """The backend's own tokenizer (vLLM ``/tokenize`` or in-process vLLM)."""

    exact = True

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.description = f"exact: tokenizer of {backend.model} via {backend.where}"

    def count(self, text: str) -> int:
        n = self.backend.count_tokens(text)
        if n is None:  # the server stopped offering it; an estimate beats a crash
            return ByteEstimateCounter().count(text)
        return n


class HFTokenCounter(TokenCounter):
    """A Hugging Face tokenizer from a local folder (no downloads): ``tokenizer.json`` through the
    fast ``tokenizers`` library when present (microseconds, no HTTP), else transformers."""

    exact = True

    def __init__(self, path: str | Path) -> None:
        folder = Path(path)
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._encode: Callable[[str], int] = lambda text: len(
                fast.encode(text, add_special_tokens=False).ids
            )
        else:
            from transformers import AutoTokenizer

            slow = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self._encode = lambda text: len(slow.encode(text, add_special_tokens=False))
        self.description = f"exact: tokenizer in {folder}"

        self._cached = lru_cache(maxsize=4096)(self._encode)  # the system prompt etc. recur every call

    def count(self, text: str) -> int:
        return self._cached(text)


def make_token_counter(backend: ChatBackend | None, tokenizer: str | Path | None = None) -> TokenCounter:
    """Best available counter, in order: a configured tokenizer folder; the served model's own folder
    when it is on this machine (vLLM reports it as ``root``); the backend's tokenizer (vLLM's
    ``/tokenize``, one HTTP call per new text); else the UTF-8 byte estimate."""
    if tokenizer:
        return HFTokenCounter(tokenizer)
    if backend is not None:
        try:
            backend.context_length()  # discovers the model (and its folder) once
            root = getattr(backend, "model_root", None)
            if root and (Path(root) / "tokenizer.json").is_file():
                return HFTokenCounter(root)
            if backend.count_tokens("トークン数") is not None:
                return BackendTokenCounter(backend)
        except LLMError as exc:
            log.warning("token counting via %s failed (%s); using an estimate", backend.where, exc)
    return ByteEstimateCounter()


# --------------------------------------------------------------------------- packing


def dedupe_and_order(chunks: Sequence[RetrievedChunk]) -> tuple[list[RetrievedChunk], int]:
    """Drop repeated nodes and repeated texts (keeping the best-scored copy); best score first."""
    ordered = sorted(
        enumerate(chunks), key=lambda ic: (ic[1].score is None, -(ic[1].score or 0.0), ic[0])
    )  # stable: retriever order breaks ties
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    out: list[RetrievedChunk] = []
    for _, chunk in ordered:
        key = "".join(unicodedata.normalize("NFKC", chunk.text).split())
        if chunk.node_id in seen_ids or key in seen_text:
            continue
        seen_ids.add(chunk.node_id)
        seen_text.add(key)
        out.append(chunk)
    return out, len(chunks) - len(out)


def truncate_to_tokens(text: str, limit: int, counter: TokenCounter, suffix: str = "…") -> str:
    """Longest prefix of ``text`` (plus ``suffix``) within ``limit`` tokens; binary search on chars."""
    if counter.count(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(text[:mid] + suffix) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + suffix if lo else ""


class Packed(BaseModel):
    """Result of packing: the numbered chunks that fit, the context text, the (maybe cut) question."""

    chunks: list[RetrievedChunk]
    context: str
    question: str
    info: ContextInfo
    warnings: list[str] = Field(default_factory=list)


def pack_context(
    chunks: Sequence[RetrievedChunk],
    question: str,
    fixed_text: str,
    template: PromptTemplate,
    counter: TokenCounter,
    context_length: int,
    max_tokens: int,
    reserve_question: bool = True,
) -> Packed:
    """Fit question and as many best chunks as possible into ``context_length - max_tokens`` tokens.

    ``fixed_text`` is everything else the prompt holds (system prompt, template text, choices). An
    over-long question is truncated with a warning; a chunk that half fits is cut, later ones dropped.
    """
    warnings: list[str] = []
    unique, duplicates = dedupe_and_order(chunks)
    budget = context_length - max_tokens
    # The empty-context notice is reserved up front: it is sent when no chunk fits.
    used = counter.count(fixed_text) + counter.count(template.empty_context) + CHAT_OVERHEAD_TOKENS
    q_tokens = counter.count(question)
    if used + q_tokens > budget:
        room = budget - used
        if room < MIN_QUESTION_TOKENS:
            raise ContextTooSmallError(
                f"The model's context ({context_length} tokens) cannot hold the prompt template ({used} tokens "
                f"with chat overhead), the answer ({max_tokens} tokens) and the question: use a model with a "
                "longer context, lower --max-tokens, or a shorter prompt template."
            )
        cut = truncate_to_tokens(question, room, counter)
        warnings.append(
            f"The question ({q_tokens} tokens) does not fit the model's context ({context_length} tokens, "
            f"{max_tokens} kept for the answer); it was truncated to {len(cut)} characters."
        )
        question, q_tokens = cut, counter.count(cut)
    used += q_tokens
    packed: list[RetrievedChunk] = []
    items: list[str] = []
    dropped = 0
    for chunk in unique:
        n = len(packed) + 1
        header = template.render(
            "context_item",
            n=n,
            title=chunk.title or chunk.source,
            source=chunk.source,
            text="",
            icd10=chunk.icd10 or "",
            standard_name=chunk.standard_name or "",
            kind=chunk.kind or "",
        )
        cost = counter.count(header) + counter.count(chunk.text) + JOIN_SLACK_TOKENS
        if used + cost <= budget:
            text, truncated = chunk.text, False
        elif budget - used - counter.count(header) - JOIN_SLACK_TOKENS >= MIN_PARTIAL_TOKENS:
            room = budget - used - counter.count(header) - JOIN_SLACK_TOKENS
            text, truncated = truncate_to_tokens(chunk.text, room, counter), True
            cost = counter.count(header) + counter.count(text) + JOIN_SLACK_TOKENS
        else:
            dropped = len(unique) - len(packed)
            break
        used += cost
        items.append(header + text)
        packed.append(chunk.model_copy(update={"n": n, "text": text, "truncated": truncated}))
        if truncated:
            dropped = len(unique) - len(packed)
            break
    if dropped or any(c.truncated for c in packed):
        warnings.append(
            f"Context budget reached: {len(packed)} of {len(unique)} chunks packed"
            + (" (the last one cut)" if packed and packed[-1].truncated else "")
            + "."
        )
    if not counter.exact:
        warnings.append(f"Token counts are estimates ({counter.description}).")
    return Packed(
        chunks=packed,
        context="\n\n".join(items) if items else template.empty_context,
        question=question,
        info=ContextInfo(
            prompt_tokens=used,
            budget=budget,
            context_length=context_length,
            exact=counter.exact,
            counter=counter.description,
            packed=len(packed),
            dropped=dropped,
            duplicates=duplicates,
        ),
        warnings=warnings,
    )


# --------------------------------------------------------------------------- citations

_CITE = re.compile(r"[\[【]\s*(\d+(?:\s*(?:[,、，;]|-|–|〜|~)\s*\d+)*)\s*[\]】]")


def cited_numbers(text: str) -> list[int]:
    """The numbers in ``[1]``, ``[1, 3]``, ``[2-4]``, ``［１］``, ``【1】`` in order of first use."""
    found: list[int] = []
    for match in _CITE.finditer(unicodedata.normalize("NFKC", text)):
        body = match.group(1)
        for part in re.split(r"\s*[,、，;]\s*", body):
            bounds = re.split(r"\s*(?:-|–|〜|~)\s*", part)
            if len(bounds) == 2 and int(bounds[0]) <= int(bounds[1]) and int(bounds[1]) - int(bounds[0]) < 50:
                numbers = range(int(bounds[0]), int(bounds[1]) + 1)
            else:
                numbers = [int(b) for b in bounds]
            for n in numbers:
                if n not in found:
                    found.append(n)
    return found


def resolve_citations(text: str, packed: Sequence[RetrievedChunk]) -> tuple[list[Citation], list[int]]:
    """Map ``[n]`` back to packed chunks; numbers with no chunk are returned separately."""
    by_n = {c.n: c for c in packed if c.n is not None}
    citations, invalid = [], []
    for n in cited_numbers(text):
        if n in by_n:
            citations.append(Citation.from_chunk(by_n[n]))
        else:
            invalid.append(n)
    return citations, invalid


# --------------------------------------------------------------------------- pipeline


class Prepared(BaseModel):
    """Everything up to the LLM call (shared by plain, streaming, async and exam paths)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    messages: list[Message]
    packed: Packed | None
    retrieved: list[RetrievedChunk]
    linked: list[LinkedDisease]
    trace: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str]
    params: SamplingParams


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


class RagPipeline:
    """Answer clinical questions from retrieved context with a chat LLM.

    Thread-safe for concurrent answers as long as the retriever is (ragmed's is).
    """

    def __init__(
        self,
        llm: ChatBackend,
        retriever: BaseRetriever | None = None,
        *,
        settings: Settings | None = None,
        normalizer: Any = None,
        template: str | PromptTemplate | None = None,
        postprocessors: Sequence[BaseNodePostprocessor] = (),
        token_counter: TokenCounter | None = None,
        context_length: int | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.llm = llm
        self.retriever = retriever
        self.normalizer = normalizer
        self.postprocessors = list(postprocessors)
        name = template if template is not None else self.settings.prompt_template
        self.template = name if isinstance(name, PromptTemplate) else load_template(name)
        self._counter = token_counter
        self._context_length = context_length or self.settings.llm_context_length

    @classmethod
    def from_index(
        cls, index: Any, settings: Settings | None = None, llm: ChatBackend | None = None, **kwargs: Any
    ) -> RagPipeline:
        """ragmed's own stack: a RagmedIndex (name, path or loaded) with its hybrid retriever."""
        from ragmed.index import RagmedIndex
        from ragmed.retrieve import HybridRetriever

        settings = settings or get_settings()
        loaded = index if isinstance(index, RagmedIndex) else RagmedIndex.load(index, settings=settings)
        retriever = HybridRetriever(loaded, k=settings.top_k, mode=settings.mode, reranker=settings.reranker)
        return cls(llm or LLMClient.from_settings(settings), retriever, settings=settings, **kwargs)

    # -- parts

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = make_token_counter(self.llm, self.settings.llm_tokenizer)
        return self._counter

    def context_length(self) -> tuple[int, list[str]]:
        if self._context_length:
            return self._context_length, []
        try:
            found = self.llm.context_length()
        except LLMError:
            raise
        if found:
            self._context_length = found
            return found, []
        return DEFAULT_CONTEXT_LENGTH, [
            f"The model's context length is unknown; assuming {DEFAULT_CONTEXT_LENGTH} tokens "
            "(set RAGMED_LLM_CONTEXT_LENGTH)."
        ]

    def link(self, question: str) -> list[LinkedDisease]:
        """Disease mentions via the Manbyo normalizer (none without one)."""
        from ragmed.retrieve import link_diseases

        return [LinkedDisease(**item) for item in link_diseases(self.normalizer, question)]

    def retrieve(
        self, query: str, timings: dict[str, float]
    ) -> tuple[list[RetrievedChunk], list[LinkedDisease], dict[str, Any]]:
        """Retrieved chunks, linked diseases and a retrieval trace for ``query``."""
        from ragmed.retrieve import HybridRetriever, SearchTrace

        if self.retriever is None:
            raise ValueError("this pipeline has no retriever: pass one, or answer with rag=False")
        trace: dict[str, Any] = {}
        if isinstance(self.retriever, HybridRetriever):
            # Call the searcher directly: it links diseases itself and a per-call trace is thread-safe.
            r = self.retriever
            search_trace = SearchTrace(query=query, mode=str(r.mode))
            t = time.perf_counter()
            hits = r.searcher.search(
                query,
                k=r.k,
                mode=r.mode,
                expand=r.expand,
                exclude_ids=r.exclude_ids,
                kinds=r.kinds,
                trace=search_trace,
            )
            nodes = [
                NodeWithScore(node=r.index.node(r.index.position[h.node_id]), score=h.score) for h in hits
            ]
            total = _ms(t)
            # The searcher links diseases inside its search; report the two apart, without double counting.
            timings["link_ms"] = round(search_trace.timings_ms.get("link_ms", 0.0), 3)
            timings["retrieval_ms"] = round(max(total - timings["link_ms"], 0.0), 3)
            linked = [LinkedDisease(**item) for item in search_trace.linked]
            trace = search_trace.model_dump()
        else:
            t = time.perf_counter()
            linked = self.link(query)
            timings["link_ms"] = _ms(t)
            t = time.perf_counter()
            nodes = self.retriever.retrieve(query)
            timings["retrieval_ms"] = _ms(t)
            trace = {"query": query, "retriever": type(self.retriever).__name__}
        if self.postprocessors:
            t = time.perf_counter()
            bundle = QueryBundle(query)
            for post in self.postprocessors:
                nodes = post.postprocess_nodes(nodes, query_bundle=bundle)
            timings["rerank_ms"] = _ms(t)
        return [RetrievedChunk.from_node(n) for n in nodes], linked, trace

    def _diseases_text(self, linked: Sequence[LinkedDisease]) -> str:
        if not linked:
            return ""
        items = "、".join(f"{d.mention} → {d.standard_name}（ICD-10: {d.icd10}）" for d in linked)
        return self.template.render("diseases", items=items) + "\n"

    def sampling(self, **overrides: Any) -> SamplingParams:
        return SamplingParams.from_settings(self.settings, **overrides)

    def fit_history(self, history: Sequence[Message], length: int, max_tokens: int) -> list[Message]:
        """The most recent earlier turns that fit in half the prompt budget (the rest is for context)."""
        budget = (length - max_tokens) // 2
        kept: list[Message] = []
        used = 0
        for message in reversed(list(history)):
            cost = self.counter.count(message.get("content") or "") + 8  # role markers
            if used + cost > budget:
                break
            kept.insert(0, {"role": message["role"], "content": message.get("content") or ""})
            used += cost
        return kept

    def prepare(
        self,
        question: str,
        rag: bool = True,
        params: SamplingParams | None = None,
        *,
        history: Sequence[Message] = (),
        query: str | None = None,
    ) -> Prepared:
        """Link, retrieve, pack and build the chat messages: all of ragmed's own work before the LLM.

        Multi-turn chat (API, UI): ``history`` holds the earlier user/assistant turns, placed between
        the system prompt and this turn and counted against the budget (oldest dropped first);
        ``query`` is what retrieval searches for, built from the conversation so a follow-up like
        「その治療は？」 still finds the disease talked about. Both default to single-turn behaviour.
        """
        if not question or not question.strip():
            raise ValueError("the question is empty")
        params = params or self.sampling()
        timings: dict[str, float] = {}
        warnings: list[str] = []
        tpl = self.template
        if history:
            hist_length, _ = self.context_length()
            history = self.fit_history(history, hist_length, params.max_tokens)
            if not history:
                warnings.append("The earlier conversation does not fit the model's context; it was left out.")
        history_text = "\n".join(m["content"] for m in history) + "\n" * bool(history)
        history = list(history)
        if not rag:
            # No-RAG: no retrieval and no context at all, not even an empty one.
            t = time.perf_counter()
            length, notes = self.context_length()
            warnings += notes
            counter = self.counter
            fixed = tpl.system_no_rag + history_text + tpl.render("user_no_rag", question="")
            packed = pack_context([], question, fixed, tpl, counter, length, params.max_tokens)
            warnings += [w for w in packed.warnings if "chunks packed" not in w]
            messages = [
                {"role": "system", "content": tpl.system_no_rag},
                *history,
                {"role": "user", "content": tpl.render("user_no_rag", question=packed.question)},
            ]
            timings["packing_ms"] = _ms(t)
            return Prepared(
                question=question,
                messages=messages,
                packed=None,
                retrieved=[],
                linked=[],
                trace={},
                timings=timings,
                warnings=warnings,
                params=params,
            )
        retrieved, linked, trace = self.retrieve(query or question, timings)
        t = time.perf_counter()
        length, notes = self.context_length()
        warnings += notes
        diseases = self._diseases_text(linked)
        fixed = tpl.system + history_text + tpl.render("user", context="", diseases=diseases, question="")
        packed = pack_context(retrieved, question, fixed, tpl, self.counter, length, params.max_tokens)
        warnings += packed.warnings
        messages = [
            {"role": "system", "content": tpl.system},
            *history,
            {
                "role": "user",
                "content": tpl.render(
                    "user", context=packed.context, diseases=diseases, question=packed.question
                ),
            },
        ]
        timings["packing_ms"] = _ms(t)
        numbered = {c.node_id: c.n for c in packed.chunks}
        retrieved = [c.model_copy(update={"n": numbered.get(c.node_id)}) for c in retrieved]
        return Prepared(
            question=question,
            messages=messages,
            packed=packed,
            retrieved=retrieved,
            linked=linked,
            trace=trace,
            timings=timings,
            warnings=warnings,
            params=params,
        )

    def finish(self, prep: Prepared, result: ChatResult, llm_ms: float) -> Answer:
        """Parse citations and assemble the Answer."""
        t = time.perf_counter()
        packed_chunks = prep.packed.chunks if prep.packed else []
        citations, invalid = resolve_citations(result.text, packed_chunks)
        timings = dict(prep.timings)
        timings["llm_ms"] = round(llm_ms, 3)
        timings["parse_ms"] = _ms(t)
        own = ("link_ms", "retrieval_ms", "rerank_ms", "packing_ms", "parse_ms")
        timings["ragmed_ms"] = round(sum(timings.get(k, 0.0) for k in own), 3)
        timings["total_ms"] = round(timings["ragmed_ms"] + llm_ms, 3)
        warnings = list(prep.warnings)
        if invalid:
            warnings.append(
                f"Dropped citation(s) that point to no source: {', '.join(f'[{n}]' for n in invalid)}"
            )
        if result.finish_reason == "length":
            warnings.append(f"The answer hit max_tokens ({prep.params.max_tokens}) and is cut off.")
        return Answer(
            question=prep.question,
            text=result.text,
            citations=citations,
            invalid_citations=invalid,
            chunks=prep.retrieved,
            linked=prep.linked,
            rag=prep.packed is not None,
            model=result.model,
            llm_url=self.llm.where,
            prompt_template=self.template.name,
            prompt_hash=self.template.sha256,
            finish_reason=result.finish_reason,
            usage=result.usage,
            timings=timings,
            context=prep.packed.info if prep.packed else ContextInfo(),
            trace=prep.trace,
            warnings=warnings,
        )

    # -- answering

    def answer(self, question: str, rag: bool = True, params: SamplingParams | None = None) -> Answer:
        prep = self.prepare(question, rag=rag, params=params)
        t = time.perf_counter()
        result = self.llm.chat(prep.messages, prep.params)
        return self.finish(prep, result, _ms(t))

    def stream(
        self, question: str, rag: bool = True, params: SamplingParams | None = None
    ) -> Iterator[str | Answer]:
        """Text deltas as the model writes them, then the final :class:`Answer`."""
        prep = self.prepare(question, rag=rag, params=params)
        t = time.perf_counter()
        for item in self.llm.stream_chat(prep.messages, prep.params):
            if isinstance(item, ChatResult):
                yield self.finish(prep, item, _ms(t))
            else:
                yield item

    async def aanswer(self, question: str, rag: bool = True, params: SamplingParams | None = None) -> Answer:
        # Retrieval and packing are CPU work (embedding, FAISS, BM25): off the event loop.
        prep = await asyncio.to_thread(self.prepare, question, rag, params)
        t = time.perf_counter()
        result = await self.llm.achat(prep.messages, prep.params)
        return self.finish(prep, result, _ms(t))

    async def astream(
        self, question: str, rag: bool = True, params: SamplingParams | None = None
    ) -> AsyncIterator[str | Answer]:
        prep = await asyncio.to_thread(self.prepare, question, rag, params)
        t = time.perf_counter()
        async for item in self.llm.astream_chat(prep.messages, prep.params):
            if isinstance(item, ChatResult):
                yield self.finish(prep, item, _ms(t))
            else:
                yield item

    # -- exam mode (logic in ragmed.exam)

    def answer_exam(
        self,
        question: str,
        choices: list[str],
        kind: ExamKind = "single",
        n_answers: int | None = None,
        rag: bool = True,
        reasoning: bool = False,
    ) -> ExamAnswer:
        from ragmed.exam import answer_exam

        return answer_exam(
            self, question, choices, kind=kind, n_answers=n_answers, rag=rag, reasoning=reasoning
        )

    async def aanswer_exam(
        self,
        question: str,
        choices: list[str],
        kind: ExamKind = "single",
        n_answers: int | None = None,
        rag: bool = True,
        reasoning: bool = False,
    ) -> ExamAnswer:
        from ragmed.exam import aanswer_exam

        return await aanswer_exam(
            self, question, choices, kind=kind, n_answers=n_answers, rag=rag, reasoning=reasoning
        )

    def as_query_engine(self, rag: bool = True) -> RagmedQueryEngine:
        return RagmedQueryEngine(pipeline=self, rag=rag)


# --------------------------------------------------------------------------- llama-index


def answer_to_response(answer: Answer) -> Response:
    """A llama-index Response: cited chunks first as source nodes, the full Answer in metadata."""
    cited = {c.node_id for c in answer.citations}
    ordered = sorted(answer.chunks, key=lambda c: (c.node_id not in cited, c.n is None, c.n or 0))
    nodes = [
        NodeWithScore(node=TextNode(id_=c.node_id, text=c.text, metadata=c.metadata), score=c.score)
        for c in ordered
    ]
    return Response(response=answer.text, source_nodes=nodes, metadata={"answer": answer.model_dump()})


class RagmedQueryEngine(CustomQueryEngine):
    """ragmed's pipeline as a llama-index query engine (``.query()`` / ``.aquery()``)."""

    pipeline: Any
    rag: bool = True

    def custom_query(self, query_str: str) -> Response:
        return answer_to_response(self.pipeline.answer(query_str, rag=self.rag))

    async def acustom_query(self, query_str: str) -> Response:
        return answer_to_response(await self.pipeline.aanswer(query_str, rag=self.rag))


# --------------------------------------------------------------------------- CLI logic


def print_sources(
    answer_chunks: Sequence[Citation | RetrievedChunk], console: Console, title: str = "Sources"
) -> None:
    """The table under an answer: n, source, title/standard name, ICD-10, score."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for col in ("n", "source", "title / standard name", "ICD-10", "score"):
        table.add_column(col, overflow="fold")
    for c in answer_chunks:
        name = c.title
        if c.standard_name and c.standard_name not in (c.title, "-1"):
            name = f"{c.title} ({c.standard_name})"
        table.add_row(
            f"[{c.n}]" if c.n is not None else "-",
            c.source,
            name,
            c.icd10 if c.icd10 and c.icd10 != "-1" else "",
            "" if c.score is None else f"{c.score:.4f}",
        )
    console.print(table)


def run_ask(
    question: str,
    *,
    index: str | None = None,
    settings: Settings | None = None,
    rag: bool = True,
    json_output: bool = False,
    choices: list[str] | None = None,
    kind: Literal["single", "multi", "numeric"] = "single",
    n_answers: int | None = None,
    reasoning: bool = False,
    console: Console | None = None,
    err_console: Console | None = None,
    pipeline_factory: Callable[[], RagPipeline] | None = None,
) -> int:
    """``ragmed ask``: stream the answer (or solve an exam item) and list its sources. Returns the exit code."""
    import json

    from rich.console import Console

    console = console or Console()
    err = err_console or Console(stderr=True)
    settings = settings or get_settings()
    try:
        if pipeline_factory is not None:
            pipeline = pipeline_factory()
        elif rag:
            pipeline = RagPipeline.from_index(index or "demo", settings=settings)
        else:
            pipeline = RagPipeline(LLMClient.from_settings(settings), settings=settings)
        if choices is not None or kind == "numeric":
            exam = pipeline.answer_exam(
                question, choices or [], kind=kind, n_answers=n_answers, rag=rag, reasoning=reasoning
            )
            if json_output:
                console.print_json(exam.model_dump_json())
                return 0
            console.print(f"[bold]Answer:[/] {exam.prediction or '(none)'}  [dim](method: {exam.method})[/]")
            if exam.reasoning:
                console.print(exam.reasoning, markup=False, highlight=False)
            if exam.citations:
                print_sources(exam.citations, console, title="Context given to the model")
            for w in exam.warnings:
                err.print(f"[yellow]warning:[/] {w}", highlight=False)
            return 0
        if json_output:
            answer = pipeline.answer(question, rag=rag)
            console.print_json(json.dumps(answer.model_dump(mode="json"), ensure_ascii=False))
            return 0
        final: Answer | None = None
        for item in pipeline.stream(question, rag=rag):
            if isinstance(item, Answer):
                final = item
            else:
                console.print(item, end="", markup=False, highlight=False, soft_wrap=True)
        console.print()
        assert final is not None
        if final.citations:
            print_sources(final.citations, console)
        elif rag:
            console.print("[dim]The answer cites no source.[/]")
        for w in final.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
        return 0
    except LLMError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 1
    except (FileNotFoundError, ValueError) as exc:  # IndexNotFoundError lists the available indexes
        err.print(f"[red]error:[/] {exc}", highlight=False)
        return 1
