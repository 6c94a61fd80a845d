"""What the two answering endpoints (chat completions and responses) share.

WHY one place: both bound the conversation, refuse by name what no answer here can give (tool calls, log
probabilities), build sampling parameters, start the answer — RAG or straight to the upstream — and wait
for its first token before sending a byte, so that an upstream failure keeps its HTTP status; only the wire
shapes differ, and those live in each route.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, NoReturn

from fastapi import Request
from pydantic import ValidationError

from ragmed.errors import InputError, RagmedError, TooLargeError
from ragmed.schema import Answer, ChatResult, Message, Retrieved, SamplingParams
from ragmed.server.protocol import RagmedExtras, RagOptions
from ragmed.server.routes.common import service_of, settings_of, unless_disconnected

Event = Retrieved | str | Answer | ChatResult


def extras(answer: Answer) -> RagmedExtras:
    """ragmed's own details beside OpenAI's fields (clients ignore unknown top-level keys)."""
    return RagmedExtras(
        linked=answer.linked,
        retrieved=len(answer.chunks),
        packed=answer.context.packed,
        invalid_citations=answer.invalid_citations,
        rag=answer.rag,
        upstream_model=answer.model,
        prompt_hash=answer.prompt_hash,
        timings=answer.timings,
        warnings=answer.warnings,
        trace=answer.trace,
    )


def check_turns(request: Request, turns: int, param: str) -> None:
    """A conversation longer than the server takes is a 413 naming the field that holds it."""
    limit = settings_of(request).serve.max_messages
    if turns > limit:
        raise TooLargeError(
            f"Too many messages: {turns}, the limit is {limit} (RAGMED_API_MAX_MESSAGES).",
            param=param,
            code="too_many_messages",
        )


def refuse_tools(param: str) -> NoReturn:
    """Tools offered to be called: a 400 naming the field, never a 200 without the calls."""
    raise InputError(
        "Tool and function calling is not supported by this server.",
        param=param,
        code="unsupported_parameter",
    )


def refuse_logprobs(param: str) -> NoReturn:
    """Log probabilities asked for: a 400 naming the field, never a 200 without them."""
    raise InputError(
        "Log probabilities are not supported by this server.", param=param, code="unsupported_parameter"
    )


def sampling(request: Request, **fields: Any) -> SamplingParams:
    """The request's sampling fields over the server's defaults; a bad value is a 400."""
    try:
        return service_of(request).sampling(**fields)
    except ValidationError as exc:
        raise InputError(f"Invalid sampling parameters: {exc.errors()[0]['msg']}") from None


async def start(
    request: Request, rag: bool, messages: list[Message], opts: RagOptions, params: SamplingParams
) -> AsyncGenerator[Event, None]:
    """The answer's events, started: retrieval (for the RAG model) and the model's first token are done
    before this returns, so an upstream failure raises here, before any byte is sent. Raises
    :class:`~ragmed.server.routes.common.ClientGone` if the client leaves meanwhile."""
    service = service_of(request)
    events: AsyncIterator[Event]
    if rag:
        events = service.astream(messages, k=opts.k, mode=opts.mode, rag=opts.rag, params=params)
    else:
        events = service.llm.astream(messages, params)
    try:
        head: list[Event] = [await unless_disconnected(request, anext(events))]
        if isinstance(head[0], Retrieved):  # sources first; the model's first token after them
            head.append(await unless_disconnected(request, anext(events)))
    except BaseException:
        await events.aclose()
        raise
    return _replay(head, events)


async def _replay(head: list[Event], events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    try:
        for item in head:
            yield item
        async for item in events:
            yield item
    finally:
        await events.aclose()  # closes the upstream stream too when the client went away


async def collect(events: AsyncGenerator[Event, None]) -> Answer | ChatResult:
    """Read a started answer to its end: its final result (the RAG model's carries its sources)."""
    final: Answer | ChatResult | None = None
    try:
        async for item in events:
            if isinstance(item, Answer | ChatResult):
                final = item
    finally:
        await events.aclose()
    if final is None:
        raise RagmedError("the answer ended without a result")
    return final
