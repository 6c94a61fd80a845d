"""``POST /v1/responses``: OpenAI's Responses API over the same answers as chat completions.

The official clients lead with ``client.responses.create``; this serves it for both models (RAG, and the
upstream passed through), streaming or not, with ``instructions``, a conversation in ``input`` (an earlier
response's ``output`` appended to it), ``max_output_tokens`` and ``text.format`` (the client's
``responses.parse`` structured output). ragmed stores nothing, so what needs stored state
(``previous_response_id``, ``conversation``, a stored ``prompt``, ``background``) is refused by name, as are
tools and log probabilities. ``sources`` rides on the response from the stream's first event;
``citations`` and ``ragmed`` come with the completed response.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ragmed.errors import InputError, NotFoundError, RagmedError, error_code
from ragmed.schema import Answer, ChatResult, Message, Retrieved
from ragmed.server.protocol import (
    IncompleteDetails,
    OutputMessage,
    OutputText,
    RagOptions,
    ResponseError,
    ResponseEvent,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
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

#: ``include`` values that ask for what ragmed cannot give; the others name outputs of tools, reasoning
#: or images, which a text answer does not have, so there is nothing to include and nothing is lost.
_UNSUPPORTED_INCLUDES = ("message.output_text.logprobs",)


def _refuse_unsupported(req: ResponsesRequest) -> None:
    """What needs stored responses, tools or log probabilities is an error naming the field, never a 200
    that silently lacks it."""
    stored = {
        "previous_response_id": req.previous_response_id,
        "conversation": req.conversation,
        "prompt": req.prompt,
        "background": req.background or None,
    }
    for field, value in stored.items():
        if value is not None:
            raise InputError(
                f"{field} needs responses stored on the server, and ragmed stores none: send the whole "
                "conversation in input (an earlier response's output can be appended to it).",
                param=field,
                code="unsupported_parameter",
            )
    if req.tools and req.tool_choice != "none":
        refuse_tools("tools")
    if req.top_logprobs or any(i in _UNSUPPORTED_INCLUDES for i in req.include or []):
        refuse_logprobs("top_logprobs" if req.top_logprobs else "include")


def _messages(req: ResponsesRequest) -> list[Message]:
    out: list[Message] = []
    if req.instructions:
        out.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        return [*out, {"role": "user", "content": req.input}]
    for i, item in enumerate(req.input):
        if item.type not in (None, "message"):
            raise InputError(
                f"Input items of type {item.type!r} are not supported: ragmed answers from messages only.",
                param=f"input[{i}]",
                code="unsupported_parameter",
            )
        if item.role is None:
            raise InputError("A message item needs a role.", param=f"input[{i}].role")
        text = item.text()
        if text is None:
            raise InputError(
                "Only text content parts are supported.",
                param=f"input[{i}].content",
                code="unsupported_content",
            )
        out.append({"role": item.role, "content": text})
    return out


@router.post("/v1/responses", response_model=None)
async def create_response(req: ResponsesRequest, request: Request) -> Response:
    """Answer with RAG (model ``ragmed/<index>``) or straight from the upstream model."""
    check_turns(request, 1 if isinstance(req.input, str) else len(req.input), "input")
    _refuse_unsupported(req)
    use_rag_model = await resolve_model(service_of(request), req.model)
    messages = _messages(req)
    text_format = req.text.format if req.text and req.text.format else None
    try:
        schema = text_format.schema_or_none() if text_format else None
    except ValueError as exc:
        raise InputError(str(exc), param="text.format.schema") from None
    params = sampling(
        request,
        temperature=req.temperature,
        top_p=req.top_p,
        max_tokens=req.max_output_tokens,
        json_schema=schema,
    )
    shell = ResponseObject(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="in_progress",
        instructions=req.instructions,
        max_output_tokens=params.max_tokens,  # the limit in force (RAGMED_MAX_TOKENS when unset)
        model=req.model,
        temperature=params.temperature,
        top_p=params.top_p,
        text={
            "format": text_format.model_dump(by_alias=True, exclude_none=True)
            if text_format
            else {"type": "text"}
        },
        tool_choice=req.tool_choice or "auto",
        metadata=req.metadata or {},
    )
    try:
        events = await start(request, use_rag_model, messages, req.ragmed or RagOptions(), params)
    except ClientGone:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    if req.stream:
        return StreamingResponse(
            _stream(events, shell), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    try:
        final = await unless_disconnected(request, collect(events))
    except ClientGone:
        return Response(status_code=499)
    message = OutputMessage(id=f"msg_{uuid.uuid4().hex}", status="completed")
    return JSONResponse(response_json(_finished(shell, message, final)))


@router.get("/v1/responses/{response_id}")
@router.delete("/v1/responses/{response_id}")
@router.get("/v1/responses/{response_id}/input_items")
async def stored_response(response_id: str) -> None:
    """``responses.retrieve`` / ``delete`` / ``input_items.list``: a 404 that says why, not a bare one."""
    raise NotFoundError(
        f"No response {response_id!r}: ragmed stores no responses (every response is answered with "
        "store: false); keep the one you were sent.",
        param="response_id",
    )


def _finished(shell: ResponseObject, message: OutputMessage, final: Answer | ChatResult) -> ResponseObject:
    """The response once the answer is complete: ``incomplete`` when the token limit cut it."""
    cut = final.finish_reason == "length"
    done = message.model_copy(
        update={"status": "incomplete" if cut else "completed", "content": [OutputText(text=final.text)]}
    )
    body = shell.model_copy(
        update={
            "status": "incomplete" if cut else "completed",
            "incomplete_details": IncompleteDetails(reason="max_output_tokens") if cut else None,
            "output": [done],
            "usage": ResponseUsage.of(final.usage),
        }
    )
    if isinstance(final, Answer):
        body.sources, body.citations, body.ragmed = final.sources, final.citations, extras(final)
    return body


def response_json(response: ResponseObject) -> dict[str, Any]:
    """A response's JSON: OpenAI's fields always (nulls included, as OpenAI sends them), ragmed's
    ``sources``, ``citations`` and ``ragmed`` only when set."""
    data = response.model_dump(mode="json")
    for key in ("sources", "citations", "ragmed"):
        if data[key] is None:
            del data[key]
    return data


def _event_bytes(event: ResponseEvent) -> bytes:
    data = {k: v for k, v in event.model_dump(mode="json", exclude={"response"}).items() if v is not None}
    if event.response is not None:
        data["response"] = response_json(event.response)
    if event.type == "error":
        data.setdefault("param", None)
    return f"event: {event.type}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _stream(events: AsyncGenerator[Event, None], shell: ResponseObject) -> AsyncIterator[bytes]:
    """The Responses event stream: created and in progress (with ``sources``), the message item and its
    text part opened, a delta per piece of text, text and part and item done, then completed (or
    incomplete when the token limit cut the answer; an error event and failed when the upstream fails)."""
    seq = 0
    message = OutputMessage(id=f"msg_{uuid.uuid4().hex}", status="in_progress")
    where = {"item_id": message.id, "output_index": 0, "content_index": 0}

    def emit(kind: str, **fields: Any) -> bytes:
        nonlocal seq
        seq += 1
        return _event_bytes(ResponseEvent(type=kind, sequence_number=seq - 1, **fields))

    def opening() -> list[bytes]:
        return [
            emit("response.created", response=shell),
            emit("response.in_progress", response=shell),
            emit("response.output_item.added", output_index=0, item=message),
            emit("response.content_part.added", **where, part=OutputText(text="")),
        ]

    opened = False
    try:
        async for item in events:
            if isinstance(item, Retrieved):  # always first when there is one
                shell.sources = item.sources
                continue
            if not opened:
                for event in opening():
                    yield event
                opened = True
            if isinstance(item, str):
                yield emit("response.output_text.delta", **where, delta=item, logprobs=[])
                continue
            final = _finished(shell, message, item)
            done = final.output[0]
            part = done.content[0]
            yield emit("response.output_text.done", **where, text=part.text, logprobs=[])
            yield emit("response.content_part.done", **where, part=part)
            yield emit("response.output_item.done", output_index=0, item=done)
            kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
            yield emit(kind, response=final)
    except RagmedError as exc:  # mid-stream: the status is already sent, so report in-band
        code = error_code(exc)
        if not opened:  # a client's stream helper expects the response created before it fails
            for event in opening():
                yield event
        yield emit("error", code=code, message=str(exc))
        failed = shell.model_copy(
            update={"status": "failed", "error": ResponseError(code=code, message=str(exc))}
        )
        yield emit("response.failed", response=failed)
    finally:
        await events.aclose()  # closes the upstream stream too when the client went away
