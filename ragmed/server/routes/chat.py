"""``POST /v1/chat/completions``: RAG answers (model ``ragmed/<index>``) or straight to the upstream.

Streaming or not, multi-turn, OpenAI's sampling fields passed through. Non-streaming responses carry
``sources`` (every chunk given to the model, numbered as in the prompt, ``cited`` marked) and
``citations``; a stream carries ``sources`` in its first chunk — retrieval is over before the first
token — and ``citations`` in the chunk that finishes it. Upstream failures before the first byte are
503/504/400 responses; after it, an in-band error event, then ``[DONE]``. A client that goes away stops
the work done for it (the upstream request included).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragmed.errors import InputError, RagmedError, error_code, mapping
from ragmed.schema import Answer, Message, Retrieved
from ragmed.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    RagOptions,
    Usage,
)
from ragmed.server.routes.answering import (
    Event,
    check_turns,
    collect,
    extras,
    refuse_logprobs,
    refuse_tools,
    sampling,
    start,
)
from ragmed.server.routes.common import ClientGone, service_of, unless_disconnected
from ragmed.server.routes.models import resolve_model

router = APIRouter(tags=["openai"])


def _messages(req: ChatRequest) -> list[Message]:
    out: list[Message] = []
    for i, m in enumerate(req.messages):
        text = m.text()
        if text is None:
            raise InputError(
                "Only text content parts are supported.",
                param=f"messages[{i}].content",
                code="unsupported_content",
            )
        out.append({"role": m.role, "content": text})
    return out


def _refuse_unsupported(req: ChatRequest) -> None:
    """Fields a client relies on that ragmed cannot honour are an error naming them, never a 200 that
    silently lacks what was asked (tool calls, log probabilities)."""
    if (req.tools or req.functions) and req.tool_choice != "none":
        refuse_tools("tools" if req.tools else "functions")
    if req.logprobs or req.top_logprobs:
        refuse_logprobs("logprobs" if req.logprobs else "top_logprobs")


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(req: ChatRequest, request: Request) -> Response:
    """Chat with RAG (model ``ragmed/<index>``) or straight to the upstream model."""
    check_turns(request, len(req.messages), "messages")
    _refuse_unsupported(req)
    use_rag_model = await resolve_model(service_of(request), req.model)
    messages = _messages(req)
    try:
        schema = req.response_format.schema_or_none() if req.response_format else None
    except ValueError as exc:
        raise InputError(str(exc), param="response_format.json_schema") from None
    params = sampling(
        request,
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        seed=req.seed,
        stop=[req.stop] if isinstance(req.stop, str) else req.stop,
        json_schema=schema,
    )
    completion = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
    try:
        events = await start(request, use_rag_model, messages, req.ragmed or RagOptions(), params)
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _sse(events, completion, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    try:
        final = await unless_disconnected(request, collect(events))
    except ClientGone:
        return Response(status_code=499)
    body = ChatCompletion(
        **completion,
        choices=[
            ChatChoice(
                message=AssistantMessage(content=final.text), finish_reason=final.finish_reason or "stop"
            )
        ],
        usage=Usage.of(final.usage),
    )
    if isinstance(final, Answer):
        body.sources, body.citations, body.ragmed = final.sources, final.citations, extras(final)
    return JSONResponse(dump(body))


def dump(model: ChatCompletion | ChatCompletionChunk) -> dict[str, Any]:
    """JSON of a response: ragmed's optional fields only when set, OpenAI's choices always whole
    (``finish_reason: null`` and ``logprobs: null`` included, as OpenAI sends them)."""
    data = {k: v for k, v in model.model_dump(mode="json").items() if v is not None}
    data["choices"] = [c.model_dump(mode="json", exclude={"delta"}) | _delta(c) for c in model.choices]
    return data


def _delta(choice: ChatChoice | ChunkChoice) -> dict[str, Any]:
    if isinstance(choice, ChunkChoice):
        return {"delta": choice.delta.model_dump(exclude_none=True)}
    return {}


def sse_event(model: ChatCompletionChunk, usage_key: bool = False) -> bytes:
    """One SSE event; with ``usage_key`` (the client asked for usage) every chunk carries ``usage``, null
    but on the last, as OpenAI's stream_options specify."""
    data = dump(model)
    if usage_key:
        data.setdefault("usage", None)
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _sse(
    events: AsyncGenerator[Event, None], completion: dict[str, Any], include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream with ragmed's ``sources`` first and ``citations`` at the end."""

    def chunk(choices: list[ChunkChoice], **extra: Any) -> bytes:
        return sse_event(ChatCompletionChunk(**completion, choices=choices, **extra), include_usage)

    def delta(content: str | None = None, role: bool = False) -> list[ChunkChoice]:
        return [ChunkChoice(delta=Delta(role="assistant" if role else None, content=content))]

    opened = False
    try:
        async for item in events:
            if isinstance(item, Retrieved):  # always the first event when there is one
                yield chunk(delta("", role=True), sources=item.sources)
                opened = True
                continue
            if not opened:
                yield chunk(delta("", role=True))
                opened = True
            if isinstance(item, str):
                yield chunk(delta(item))
            else:
                finishing: dict[str, Any] = {}
                if isinstance(item, Answer):
                    finishing = {"citations": item.citations, "ragmed": extras(item)}
                yield chunk(
                    [ChunkChoice(delta=Delta(), finish_reason=item.finish_reason or "stop")], **finishing
                )
                if include_usage:
                    yield chunk([], usage=Usage.of(item.usage))
    except RagmedError as exc:  # mid-stream: the status is already sent, so report in-band
        error = ErrorResponse(
            error=ErrorDetail(message=str(exc), type=mapping(exc).type, code=error_code(exc))
        )
        yield f"data: {error.model_dump_json()}\n\n".encode()
    finally:
        await events.aclose()  # closes the upstream stream too when the client went away
    yield b"data: [DONE]\n\n"
