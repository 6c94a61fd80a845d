"""The RAG pipeline, written once: question → linked diseases → retrieval → packed prompt → answer.

WHY this shape:

* :meth:`RagPipeline.prepare` is all of ragmed's own work before the LLM (linking, retrieval, packing,
  prompt building); the prompt itself comes from a :class:`PromptBuilder` — :class:`ChatPrompt` here,
  the exam prompt in :mod:`ragmed.exam` (which imports this module, never the reverse) — so retrieval,
  the context budget and numbering are written once for both.
* :meth:`RagPipeline.astream` is the one async core (a :class:`~ragmed.schema.Retrieved` event, text
  deltas, then the :class:`~ragmed.schema.Answer`); ``aanswer``, ``answer`` and ``stream`` derive from it.
* Multi-step solvers (exam mode with a reasoning step, structured-output fallbacks) are generators that
  yield :class:`LLMCall`\\ s and receive :class:`~ragmed.schema.ChatResult`\\ s, with no I/O of their own;
  :func:`drive` and :func:`adrive` run any of them against a backend, sync or async.
* The retriever is any :class:`~ragmed.retrieve.base.Retriever`; each call returns its own
  :class:`~ragmed.schema.Retrieval` (hits, linked diseases, trace), so concurrent answers never share state.
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from ragmed.aio import iterate_sync, run_sync
from ragmed.context import (
    DEFAULT_CONTEXT_LENGTH,
    Packed,
    TokenCounter,
    make_token_counter,
    new_fence,
    pack_context,
    resolve_citations,
)
from ragmed.errors import ConfigError, ContextTooSmallError, InputError, RagmedError, TooLargeError
from ragmed.generate.base import ChatBackend
from ragmed.prompts import PromptTemplate, load_template
from ragmed.retrieve.base import Retriever
from ragmed.schema import (
    Answer,
    ChatResult,
    Chunk,
    ContextInfo,
    LinkedDisease,
    Message,
    Retrieved,
    SamplingParams,
    Source,
)
from ragmed.settings import Settings, get_settings

T = TypeVar("T")

#: At most this many linked diseases are named in the prompt (deduplicated by standard name).
MAX_LINKED_IN_PROMPT = 10
#: Timing keys that are ragmed's own work (summed as ``ragmed_ms``).
OWN_TIMINGS = ("load_ms", "link_ms", "retrieval_ms", "packing_ms", "parse_ms")


def ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PromptParts:
    """What a prompt is built from once packing is done."""

    rag: bool
    context: str
    diseases: str
    question: str
    history: list[Message]


class PromptBuilder(ABC):
    """Builds one kind of prompt around the packed context: its fixed text (counted against the budget
    before packing) and its messages (built after)."""

    #: How many messages the fixed text is spread over (each costs chat-template tokens).
    fixed_messages: int = 2

    @abstractmethod
    def fixed_text(self, tpl: PromptTemplate, *, rag: bool, diseases: str) -> str:
        """Everything the prompt holds besides the context, the question and the history."""

    @abstractmethod
    def messages(self, tpl: PromptTemplate, parts: PromptParts) -> list[Message]:
        """The chat messages."""


class ChatPrompt(PromptBuilder):
    """A clinical question answered from numbered sources (or without sources when RAG is off)."""

    def fixed_text(self, tpl: PromptTemplate, *, rag: bool, diseases: str) -> str:
        if not rag:
            return tpl.system_no_rag + tpl.render("user_no_rag", question="")
        return tpl.system + tpl.render("user", context="", diseases=diseases, question="")

    def messages(self, tpl: PromptTemplate, parts: PromptParts) -> list[Message]:
        if not parts.rag:
            system, user = tpl.system_no_rag, tpl.render("user_no_rag", question=parts.question)
        else:
            system = tpl.system
            user = tpl.render("user", context=parts.context, diseases=parts.diseases, question=parts.question)
        return [{"role": "system", "content": system}, *parts.history, {"role": "user", "content": user}]


def diseases_line(tpl: PromptTemplate, linked: Sequence[LinkedDisease]) -> str:
    """The prompt's line naming the linked diseases: one entry per standard name (the first mention),
    at most :data:`MAX_LINKED_IN_PROMPT`, negation and suspicion stated."""
    seen: dict[str, LinkedDisease] = {}
    for d in linked:
        seen.setdefault(d.standard_name, d)
    items = []
    for d in list(seen.values())[:MAX_LINKED_IN_PROMPT]:
        notes = [f"ICD-10: {d.icd10}", *d.status_words()]
        items.append(f"{d.mention} → {d.standard_name}（{'、'.join(notes)}）")
    if not items:
        return ""
    return tpl.render("diseases", items="、".join(items)) + "\n"


# --------------------------------------------------------------------------- prepared prompts


class Prepared(BaseModel):
    """Everything up to the LLM call: the messages and what went into them."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: str
    messages: list[Message]
    packed: Packed | None
    retrieved: list[Chunk]
    linked: list[LinkedDisease]
    trace: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str]
    params: SamplingParams

    def sources(self, cited: set[int] = frozenset()) -> list[Source]:  # type: ignore[assignment]
        """The chunks given to the model, numbered as in the prompt."""
        return [Source.from_chunk(c, cited=c.n in cited) for c in (self.packed.chunks if self.packed else [])]

    def retrieved_event(self) -> Retrieved:
        return Retrieved(
            sources=self.sources(),
            linked=self.linked,
            expansion_en=list(self.trace.get("expansion_en") or []),
            rag=self.packed is not None,
            warnings=list(self.warnings),
        )


@dataclass(frozen=True)
class LLMCall:
    """One request a step generator wants answered."""

    messages: list[Message]
    params: SamplingParams


def drive(steps: Generator[LLMCall, ChatResult, T], backend: ChatBackend) -> T:
    """Run a step generator to its result, answering its calls with ``backend`` (sync).

    A :class:`RagmedError` from the backend is thrown into the generator, which may handle it (exam mode
    retries a refused structured-output request unconstrained) or let it propagate.
    """
    try:
        call = next(steps)
        while True:
            try:
                result = backend.chat(call.messages, call.params)
            except RagmedError as exc:
                call = steps.throw(exc)
                continue
            call = steps.send(result)
    except StopIteration as stop:
        return stop.value


async def adrive(steps: Generator[LLMCall, ChatResult, T], backend: ChatBackend) -> T:
    """:func:`drive` on an event loop: the first step (retrieval and packing, CPU work) runs in a
    worker thread, the LLM calls are awaited."""
    try:
        call = await asyncio.to_thread(next, steps)
        while True:
            try:
                result = await backend.achat(call.messages, call.params)
            except RagmedError as exc:
                call = steps.throw(exc)
                continue
            call = steps.send(result)
    except StopIteration as stop:
        return stop.value


# --------------------------------------------------------------------------- the pipeline


class RagPipeline:
    """Answer clinical questions from retrieved context with a chat LLM; thread- and task-safe."""

    def __init__(
        self,
        llm: ChatBackend,
        retriever: Retriever | None = None,
        *,
        settings: Settings | None = None,
        template: str | Path | PromptTemplate | None = None,
        token_counter: TokenCounter | None = None,
        context_length: int | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.llm = llm
        self.retriever = retriever
        chosen = template if template is not None else self.settings.generation.prompt_template
        self.template = load_template(chosen) if isinstance(chosen, str | Path) else chosen
        self._counter = token_counter
        self._context_length = context_length or self.settings.llm.context_length

    @classmethod
    def load(
        cls,
        index: str | Path,
        settings: Settings | None = None,
        llm: ChatBackend | None = None,
        **kwargs: Any,
    ) -> RagPipeline:
        """ragmed's own stack: the named index (or path) with its hybrid retriever and the configured LLM."""
        from ragmed.generate.openai_client import LLMClient
        from ragmed.index import RagmedIndex
        from ragmed.retrieve.hybrid import HybridRetriever, Searcher

        settings = settings or get_settings()
        loaded = RagmedIndex.load(index, settings=settings)
        r = settings.retrieval
        searcher = Searcher.configured(loaded, r)
        retriever = HybridRetriever(searcher, k=r.top_k, mode=r.mode)
        return cls(llm or LLMClient.from_settings(settings), retriever, settings=settings, **kwargs)

    # -- parts

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = make_token_counter(self.llm, self.settings.llm.tokenizer)
        return self._counter

    def context_length(self) -> tuple[int, list[str]]:
        """The model's context length, and a warning when it had to be assumed."""
        if self._context_length:
            return self._context_length, []
        found = self.llm.context_length()
        if found:
            self._context_length = found
            return found, []
        return DEFAULT_CONTEXT_LENGTH, [
            f"The model's context length is unknown; assuming {DEFAULT_CONTEXT_LENGTH} tokens "
            "(set RAGMED_LLM_CONTEXT_LENGTH)."
        ]

    def sampling(self, **overrides: Any) -> SamplingParams:
        g = self.settings.generation
        base: dict[str, Any] = {"temperature": g.temperature, "max_tokens": g.max_tokens, "seed": g.seed}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**base)

    def check_question(self, question: str) -> None:
        """Refuse an empty question, or one over the configured length, before any work is done."""
        if not question or not question.strip():
            raise InputError("the question is empty")
        limit = self.settings.generation.max_question_chars
        if len(question) > limit:
            raise TooLargeError(
                f"The question is {len(question)} characters long; the limit is {limit} "
                "(RAGMED_MAX_QUESTION_CHARS)."
            )

    # -- ragmed's own work before the LLM

    def prepare(
        self,
        question: str,
        rag: bool = True,
        params: SamplingParams | None = None,
        *,
        history: Sequence[Message] = (),
        query: str | None = None,
        prompt: PromptBuilder | None = None,
    ) -> Prepared:
        """Link, retrieve, pack and build the chat messages: all of ragmed's own work before the LLM.

        ``history`` holds earlier user/assistant turns (multi-turn chat), fitted into the budget newest
        first; ``query`` is what retrieval searches for (built from the conversation, so a follow-up like
        「その治療は？」 still finds the disease talked about). ``prompt`` builds the messages
        (:class:`ChatPrompt` by default; exam mode passes its own).
        """
        self.check_question(question)
        params = params or self.sampling()
        prompt = prompt or ChatPrompt()
        timings: dict[str, float] = {}
        warnings: list[str] = []
        retrieved: list[Chunk] = []
        linked: list[LinkedDisease] = []
        trace: dict[str, Any] = {}
        if rag:
            if self.retriever is None:
                raise ConfigError("this pipeline has no retriever: give it one, or answer with rag=False")
            limit = self.settings.generation.max_question_chars
            search_for = (query or question)[-limit:]  # the newest turns matter most
            t = time.perf_counter()
            retrieval = self.retriever.retrieve(search_for)
            total = ms_since(t)
            inner = retrieval.trace.timings_ms
            timings["load_ms"] = round(inner.get("load_ms", 0.0), 3)
            timings["link_ms"] = round(inner.get("link_ms", 0.0), 3)
            timings["retrieval_ms"] = round(max(total - timings["link_ms"] - timings["load_ms"], 0.0), 3)
            retrieved, linked = retrieval.chunks, retrieval.linked
            trace = retrieval.trace.model_dump(mode="json")
        t = time.perf_counter()
        length, notes = self.context_length()
        warnings += notes
        tpl = self.template
        diseases = diseases_line(tpl, linked) if rag else ""
        fence = new_fence()

        def pack(diseases: str) -> Packed:
            return pack_context(
                retrieved,
                question,
                prompt.fixed_text(tpl, rag=rag, diseases=diseases),
                tpl,
                self.counter,
                length,
                params.max_tokens,
                history=history,
                fixed_messages=prompt.fixed_messages,
                fence=fence,
                with_context=rag,
            )

        try:
            packed = pack(diseases)
        except ContextTooSmallError:
            if not diseases:
                raise
            packed = pack("")  # the linked-disease line is a hint: drop it before refusing
            warnings.append("The linked-disease line did not fit the model's context; it was left out.")
            diseases = ""
        warnings += [w for w in packed.warnings if rag or "chunks packed" not in w]
        messages = prompt.messages(
            tpl, PromptParts(rag, packed.context, diseases, packed.question, list(packed.history))
        )
        timings["packing_ms"] = ms_since(t)
        numbered = {c.node_id: c.n for c in packed.chunks}
        return Prepared(
            question=question,
            messages=messages,
            packed=packed if rag else None,
            retrieved=[c.model_copy(update={"n": numbered.get(c.node_id)}) for c in retrieved],
            linked=linked,
            trace=trace,
            timings=timings,
            warnings=warnings,
            params=params,
        )

    def finish(self, prep: Prepared, result: ChatResult, llm_ms: float) -> Answer:
        """Parse citations and assemble the :class:`Answer`."""
        t = time.perf_counter()
        packed_chunks = prep.packed.chunks if prep.packed else []
        resolved = resolve_citations(result.text, packed_chunks)
        timings = dict(prep.timings)
        timings["llm_ms"] = round(llm_ms, 3)
        timings["parse_ms"] = ms_since(t)
        timings["ragmed_ms"] = round(sum(timings.get(k, 0.0) for k in OWN_TIMINGS), 3)
        timings["total_ms"] = round(timings["ragmed_ms"] + llm_ms, 3)
        warnings = list(prep.warnings)
        if resolved.invalid:
            warnings.append(
                "Dropped citation(s) that point to no source: "
                + ", ".join(f"[{n}]" for n in resolved.invalid)
            )
        if resolved.rejected:
            warnings.append(
                "Ignored citation range(s) naming too many sources: "
                + ", ".join(f"[{r}]" for r in resolved.rejected)
            )
        quoted = [c.n for c in resolved.citations if c.in_quote]
        if quoted:
            warnings.append(
                "Citation marker(s) "
                + ", ".join(f"[{n}]" for n in quoted)
                + " follow text copied from a source: they may be that document's own references."
            )
        if result.finish_reason == "length":
            warnings.append(f"The answer hit max_tokens ({prep.params.max_tokens}) and is cut off.")
        cited = {c.n for c in resolved.citations if not c.in_quote}
        return Answer(
            question=prep.question,
            text=result.text,
            sources=prep.sources(cited),
            citations=resolved.citations,
            invalid_citations=resolved.invalid,
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

    # -- answering: one async core, derived sync forms

    async def astream(
        self,
        question: str,
        rag: bool = True,
        params: SamplingParams | None = None,
        *,
        history: Sequence[Message] = (),
        query: str | None = None,
        notes: Sequence[str] = (),
    ) -> AsyncIterator[Retrieved | str | Answer]:
        """A :class:`Retrieved` event once the prompt is built (before the first token), the text deltas
        as the model writes them, then the final :class:`Answer`. ``notes`` are extra warnings."""
        prepare = functools.partial(self.prepare, question, rag, params, history=history, query=query)
        prep = await asyncio.to_thread(prepare)  # embedding, FAISS, BM25, token counting: CPU work
        prep.warnings.extend(notes)
        yield prep.retrieved_event()
        started = time.perf_counter()
        async for item in self.llm.astream(prep.messages, prep.params):
            if isinstance(item, ChatResult):
                yield self.finish(prep, item, (time.perf_counter() - started) * 1000)
            else:
                yield item

    async def aanswer(
        self, question: str, rag: bool = True, params: SamplingParams | None = None, **kwargs: Any
    ) -> Answer:
        """The whole answer at once (keywords as :meth:`astream`)."""
        final: Answer | None = None
        async for item in self.astream(question, rag, params, **kwargs):
            if isinstance(item, Answer):
                final = item
        assert final is not None  # astream always ends with the Answer
        return final

    def answer(
        self, question: str, rag: bool = True, params: SamplingParams | None = None, **kwargs: Any
    ) -> Answer:
        """Sync :meth:`aanswer`."""
        return run_sync(self.aanswer(question, rag, params, **kwargs))

    def stream(
        self, question: str, rag: bool = True, params: SamplingParams | None = None, **kwargs: Any
    ) -> Iterator[Retrieved | str | Answer]:
        """Sync :meth:`astream`."""
        return iterate_sync(self.astream(question, rag, params, **kwargs))
