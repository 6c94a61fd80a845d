"""Serve stage: ragmed as an OpenAI-compatible HTTP API (``ragmed serve``).

Any OpenAI client (the official ``openai`` package, curl, Open WebUI, LangChain's ``ChatOpenAI``) pointed
at this server gets grounded, cited answers without code changes:

* ``GET /v1/models`` lists ``ragmed/<index>`` (RAG over the loaded index) and the upstream model
  itself (passed through without RAG).
* ``POST /v1/chat/completions`` (streaming SSE or not, multi-turn) answers with the RAG pipeline; the
  text keeps its ``[n]`` markers and a top-level ``citations`` list (also in the last stream chunk) says
  what each number is. Per-request options ride in ``extra_body={"ragmed": {"k": 8, "mode": "bm25",
  "rag": false}}``.
* ``POST /v1/embeddings`` embeds with the index's own embedder; ``GET /health`` checks index + upstream.

Errors always have OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) so clients raise
their usual exceptions: bad input is a 4xx, never a 500, and the upstream being down or slow is a
503 / 504. The upstream is reached only through :mod:`ragmed.llm` (the official ``openai`` client).

:class:`RagService` (one index, one upstream client, a few cached pipelines) is what both this API and
the Gradio UI call, so both answer identically.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import httpx
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from ragmed import __version__
from ragmed.index import RagmedIndex
from ragmed.llm import (
    ChatResult,
    LLMClient,
    LLMError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
    Message,
    SamplingParams,
)
from ragmed.rag import Answer, RagPipeline
from ragmed.retrieve import MODES, HybridRetriever, Searcher
from ragmed.settings import Settings, get_settings

log = logging.getLogger(__name__)

MODEL_PREFIX = "ragmed/"
# How many earlier user turns (besides the current one) go into the retrieval query.
QUERY_TURNS = 2


# --------------------------------------------------------------------------- the shared service


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
        raise ValueError("the last message must come from the user (role 'user')")
    question = turns[-1]["content"]
    if not question.strip():
        raise ValueError("the last user message is empty")
    users = [m["content"] for m in turns[:-1] if m["role"] == "user" and m["content"].strip()]
    query = "\n".join([*users[-QUERY_TURNS:], question])
    return question, [dict(m) for m in turns[:-1]], query, warnings


class RagService:
    """One loaded index and one upstream client shared by every request (thread- and task-safe).

    Pipelines differ only in ``k`` and retrieval mode; they are cached per (k, mode) and share the
    index's :class:`Searcher`, so per-request options cost nothing after the first use.
    """

    def __init__(self, index: RagmedIndex, settings: Settings, llm: LLMClient | None = None) -> None:
        self.index = index
        self.settings = settings
        self.llm = llm or LLMClient.from_settings(settings)
        self.searcher = Searcher(index, rrf_k=settings.rrf_k, reranker=settings.reranker)
        self._pipelines: dict[tuple[int, str], RagPipeline] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, index: str | RagmedIndex, settings: Settings | None = None) -> RagService:
        settings = settings or get_settings()
        loaded = index if isinstance(index, RagmedIndex) else RagmedIndex.load(index, settings=settings)
        return cls(loaded, settings)

    @property
    def model_id(self) -> str:
        return MODEL_PREFIX + self.index.name

    def pipeline(self, k: int | None = None, mode: str | None = None) -> RagPipeline:
        k = k or self.settings.top_k
        mode = mode or self.settings.mode
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}: use one of {', '.join(MODES)}")
        with self._lock:
            pipe = self._pipelines.get((k, mode))
            if pipe is None:
                retriever = HybridRetriever(self.index, k=k, mode=mode, searcher=self.searcher)
                pipe = RagPipeline(self.llm, retriever, settings=self.settings)
                self._pipelines[(k, mode)] = pipe
            return pipe

    def sampling(self, **overrides: Any) -> SamplingParams:
        return SamplingParams.from_settings(self.settings, **overrides)

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        k: int | None = None,
        mode: str | None = None,
        rag: bool = True,
        params: SamplingParams | None = None,
    ) -> AsyncIterator[str | Answer]:
        """Text deltas of the answer to the conversation's last user turn, then the :class:`Answer`."""
        question, history, query, notes = split_conversation(messages)
        pipe = self.pipeline(k, mode)
        prepare = functools.partial(pipe.prepare, question, rag, params, history=history, query=query)
        prep = await asyncio.to_thread(prepare)  # embedding, FAISS, BM25: CPU work off the event loop
        prep.warnings.extend(notes)
        started = time.perf_counter()
        async for item in pipe.llm.astream_chat(prep.messages, prep.params):
            if isinstance(item, ChatResult):
                yield pipe.finish(prep, item, (time.perf_counter() - started) * 1000)
            else:
                yield item

    async def aanswer(
        self,
        messages: Sequence[Message],
        *,
        k: int | None = None,
        mode: str | None = None,
        rag: bool = True,
        params: SamplingParams | None = None,
    ) -> Answer:
        question, history, query, notes = split_conversation(messages)
        pipe = self.pipeline(k, mode)
        prepare = functools.partial(pipe.prepare, question, rag, params, history=history, query=query)
        prep = await asyncio.to_thread(prepare)
        prep.warnings.extend(notes)
        started = time.perf_counter()
        result = await pipe.llm.achat(prep.messages, prep.params)
        return pipe.finish(prep, result, (time.perf_counter() - started) * 1000)

    async def upstream_model(self) -> str:
        return await self.llm.amodel()

    def embed(self, texts: list[str], input_type: Literal["passage", "query"] = "passage") -> np.ndarray:
        embedder = self.index.embedder
        return embedder.embed_queries(texts) if input_type == "query" else embedder.embed_passages(texts)


# --------------------------------------------------------------------------- errors


class APIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def llm_api_error(exc: LLMError) -> APIError:
    """Upstream failures: down → 503, slow → 504, refused our request → 400, anything else → 502."""
    if isinstance(exc, LLMTimeoutError):
        return APIError(504, str(exc), "upstream_error", code="upstream_timeout")
    if isinstance(exc, LLMUnavailableError):
        return APIError(503, str(exc), "upstream_error", code="upstream_unavailable")
    if isinstance(exc, LLMRequestError):
        return APIError(400, str(exc), "invalid_request_error", code="upstream_rejected")
    return APIError(502, str(exc), "upstream_error", code="upstream_error")


# ragmed.llm translates the openai client's errors, but a stream that fails while it is being read
# raises httpx's own (the openai client does not wrap errors during iteration).
UPSTREAM_ERRORS = (LLMError, httpx.TransportError)


def upstream_api_error(exc: BaseException, where: str) -> APIError:
    """503/504/502 for a failure talking to the upstream, whichever layer raised it."""
    if isinstance(exc, LLMError):
        return llm_api_error(exc)
    if isinstance(exc, httpx.TimeoutException):
        message = f"The LLM server at {where} stopped answering mid-response ({type(exc).__name__}); raise --llm-timeout."
        return APIError(504, message, "upstream_error", code="upstream_timeout")
    message = (
        f"The connection to the LLM server at {where} failed mid-response ({type(exc).__name__}: {exc})."
    )
    return APIError(503, message, "upstream_error", code="upstream_unavailable")


def _param(loc: Sequence[Any]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


class BodyLimit:
    """HTTP 413 for bodies over ``max_bytes``: at once from Content-Length, else while reading (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def error(self, size: str) -> APIError:
        return APIError(
            413,
            f"Request body too large: {size} bytes, the limit is {self.max_bytes} (RAGMED_API_MAX_BODY_BYTES).",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self.error(length.decode(errors="replace")).response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> ASGIMessage:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading; the handler shapes the reply.
                    raise HTTPException(413, self.error(f"more than {self.max_bytes}").message)
            return message

        await self.app(scope, counted, send)


# --------------------------------------------------------------------------- request schemas


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        if any(p.type != "text" for p in self.content):
            raise APIError(
                400, "Only text content parts are supported.", param="messages", code="unsupported_content"
            )
        return "".join(p.text or "" for p in self.content)


class RagOptions(BaseModel):
    """``extra_body={"ragmed": {...}}``: per-request retrieval options."""

    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, ge=1, le=50)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    rag: bool = True


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    # Unknown OpenAI fields (user, logit_bias, …) are accepted and ignored, as vLLM does.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    ragmed: RagOptions | None = None


class EmbeddingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_type: Literal["passage", "query"] = "passage"


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    ragmed: EmbeddingOptions | None = None


# --------------------------------------------------------------------------- the app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the API beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"Refusing to serve on {host!r} without an API key: anyone on the network could use it. Set "
            "--api-key / RAGMED_API_KEY, or bind to 127.0.0.1."
        )


def _usage(answer_usage: dict[str, int]) -> dict[str, int]:
    prompt = int(answer_usage.get("prompt_tokens", 0))
    completion = int(answer_usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extras(answer: Answer) -> dict[str, Any]:
    """ragmed's own details beside OpenAI's fields (clients ignore unknown top-level keys)."""
    return {
        "linked": [d.model_dump() for d in answer.linked],
        "retrieved": len(answer.chunks),
        "packed": answer.context.packed,
        "invalid_citations": answer.invalid_citations,
        "rag": answer.rag,
        "upstream_model": answer.model,
        "prompt_hash": answer.prompt_hash,
        "timings": answer.timings,
        "warnings": answer.warnings,
    }


def create_app(
    service: RagService, *, api_key: str | None = None, settings: Settings | None = None
) -> FastAPI:
    """The FastAPI app over one :class:`RagService`; ``api_key`` (default Settings.api_key) guards /v1."""
    settings = settings or service.settings
    api_key = api_key if api_key is not None else settings.api_key
    app = FastAPI(
        title="ragmed",
        version=__version__,
        description="OpenAI-compatible Japanese clinical RAG API: grounded answers with citations.",
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            error = first.get("ctx", {}).get("error", "")
            message = f"The request body is not valid JSON ({error} at character {first['loc'][-1]})."
            return APIError(400, message, code="invalid_json").response()
        param = _param(first.get("loc", ()))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        message = f"Invalid request: {param or 'body'}: {first.get('msg')}{more}."
        return APIError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        return APIError(exc.status_code, message, code=codes.get(exc.status_code)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return APIError(500, f"Internal error: {type(exc).__name__}: {exc}", "server_error").response()

    def require_key(request: Request) -> None:
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            raise APIError(401, "Missing API key: send 'Authorization: Bearer KEY'.", code="missing_api_key")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    guarded = [Depends(require_key)]

    async def upstream_model_or_none() -> str | None:
        try:
            return await service.upstream_model()
        except LLMError:
            return None

    @app.get("/health", tags=["ops"])
    async def health() -> JSONResponse:
        """Index loaded and upstream reachable (503 when the upstream is not)."""
        upstream: dict[str, Any] = {"url": service.llm.where}
        try:
            upstream["model"] = await asyncio.wait_for(service.llm.amodel(), timeout=10)
            # amodel() is cached; ask again so health reflects now, with a short timeout and no retries.
            await service.llm.aping(timeout=5.0)
            upstream["reachable"] = True
        except Exception as exc:  # any failure means "not reachable", and is reported
            upstream["reachable"], upstream["error"] = False, f"{type(exc).__name__}: {exc}"
        body = {
            "status": "ok" if upstream["reachable"] else "degraded",
            "index": {
                "name": service.index.name,
                "nodes": len(service.index),
                "path": str(service.index.path),
            },
            "upstream": upstream,
            "model": service.model_id,
        }
        return JSONResponse(body, status_code=200 if upstream["reachable"] else 503)

    @app.get("/v1/models", dependencies=guarded, tags=["openai"])
    async def models() -> dict[str, Any]:
        """The RAG model, plus the upstream model passed through without RAG when reachable."""
        now = int(time.time())
        data = [{"id": service.model_id, "object": "model", "created": now, "owned_by": "ragmed"}]
        upstream = await upstream_model_or_none()
        if upstream:
            data.append({"id": upstream, "object": "model", "created": now, "owned_by": "upstream"})
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}", dependencies=guarded, tags=["openai"])
    async def model(model_id: str) -> dict[str, Any]:
        listed = await models()
        for item in listed["data"]:
            if item["id"] == model_id:
                return item
        raise APIError(404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found")

    async def resolve_model(name: str) -> bool:
        """True for the RAG model, False for the upstream pass-through; 404 for anything else."""
        if name == service.model_id:
            return True
        try:
            upstream = await service.upstream_model()
        except LLMError as exc:
            raise llm_api_error(exc) from exc
        if name == upstream:
            return False
        raise APIError(
            404,
            f"The model {name!r} does not exist. Available: {service.model_id!r} (RAG) and {upstream!r}.",
            param="model",
            code="model_not_found",
        )

    @app.post("/v1/chat/completions", dependencies=guarded, tags=["openai"])
    async def chat_completions(req: ChatRequest) -> Any:
        """Chat with RAG (model ``ragmed/<index>``) or straight to the upstream model."""
        if len(req.messages) > settings.api_max_messages:
            raise APIError(
                413,
                f"Too many messages: {len(req.messages)}, the limit is {settings.api_max_messages} "
                "(RAGMED_API_MAX_MESSAGES).",
                param="messages",
                code="too_many_messages",
            )
        use_rag_model = await resolve_model(req.model)
        messages: list[Message] = [{"role": m.role, "content": m.text()} for m in req.messages]
        opts = req.ragmed or RagOptions()
        try:
            params = service.sampling(
                temperature=req.temperature,
                top_p=req.top_p,
                max_tokens=req.max_completion_tokens or req.max_tokens,
                seed=req.seed,
                stop=[req.stop] if isinstance(req.stop, str) else req.stop,
            )
        except ValidationError as exc:
            raise APIError(400, f"Invalid sampling parameters: {exc.errors()[0]['msg']}") from exc
        if use_rag_model:
            stream = service.astream(messages, k=opts.k, mode=opts.mode, rag=opts.rag, params=params)
        else:
            stream = service.llm.astream_chat(messages, params)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        where = service.llm.where
        try:
            first = await anext(stream)  # upstream failures surface here, before any byte is sent
        except ValueError as exc:
            await stream.aclose()
            raise APIError(400, str(exc)) from exc
        except UPSTREAM_ERRORS as exc:
            await stream.aclose()
            raise upstream_api_error(exc, where) from exc
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = _sse(stream, first, completion_id, created, req.model, include_usage, where)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        parts: list[str] = []
        final: Answer | ChatResult | None = None
        try:
            item: str | Answer | ChatResult = first
            while True:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    final = item
                item = await anext(stream)
        except StopAsyncIteration:
            pass
        except UPSTREAM_ERRORS as exc:
            raise upstream_api_error(exc, where) from exc
        finally:
            await stream.aclose()
        assert final is not None
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": final.text},
                    "finish_reason": final.finish_reason or "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(final.usage),
            "citations": [c.model_dump() for c in final.citations] if isinstance(final, Answer) else [],
        }
        if isinstance(final, Answer):
            body["ragmed"] = _extras(final)
        return JSONResponse(body)

    @app.post("/v1/embeddings", dependencies=guarded, tags=["openai"])
    async def embeddings(req: EmbeddingRequest) -> dict[str, Any]:
        """Embeddings from the index's own model (``ragmed/<index>`` or the embedder's name)."""
        embedder_name = str(service.index.manifest.embedding.get("name", ""))
        if req.model not in (service.model_id, embedder_name):
            raise APIError(
                404,
                f"The embedding model {req.model!r} does not exist. Use {service.model_id!r} "
                f"(embedder {embedder_name!r}).",
                param="model",
                code="model_not_found",
            )
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if any(not t.strip() for t in texts):
            raise APIError(400, "Embedding inputs must be non-empty strings.", param="input")
        if len(texts) > 2048:
            raise APIError(400, f"Too many inputs: {len(texts)} (at most 2048).", param="input")
        input_type = (req.ragmed or EmbeddingOptions()).input_type
        vectors = await asyncio.to_thread(service.embed, texts, input_type)
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            raise APIError(
                400,
                f"This embedder has {vectors.shape[1]} dimensions; it cannot give {req.dimensions}.",
                param="dimensions",
            )
        data = []
        for i, vec in enumerate(vectors):
            vec = np.asarray(vec, dtype=np.float32)
            value: Any = (
                base64.b64encode(vec.tobytes()).decode() if req.encoding_format == "base64" else vec.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(len(t) for t in texts)  # characters: the embedder's tokenizer is not exposed
        return {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


async def _sse(
    stream: AsyncIterator[str | Answer | ChatResult],
    first: str | Answer | ChatResult,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    where: str,
) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream; the chunk with finish_reason also carries ``citations``."""

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

    try:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        item: str | Answer | ChatResult = first
        while True:
            if isinstance(item, str):
                yield event([{"index": 0, "delta": {"content": item}, "finish_reason": None}])
            else:
                extra: dict[str, Any] = {
                    "citations": [c.model_dump() for c in item.citations] if isinstance(item, Answer) else []
                }
                if isinstance(item, Answer):
                    extra["ragmed"] = _extras(item)
                finish = [{"index": 0, "delta": {}, "finish_reason": item.finish_reason or "stop"}]
                yield event(finish, **extra)
                if include_usage:
                    yield event([], usage=_usage(item.usage))
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                break
    except UPSTREAM_ERRORS as exc:  # mid-stream: the status is already sent, so report in-band
        yield f"data: {json.dumps(upstream_api_error(exc, where).body(), ensure_ascii=False)}\n\n".encode()
    finally:
        await stream.aclose()  # closes the upstream stream too when the client went away
    yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- running it


def serve(
    index: str,
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    api_key: str | None = None,
    log_level: str = "info",
) -> None:
    """``ragmed serve``: load the index and run uvicorn until Ctrl-C (refuses open binds without a key)."""
    import uvicorn

    settings = (settings or get_settings()).with_overrides(api_key=api_key)
    check_bind(host, settings.api_key)
    service = RagService.load(index, settings)
    service.searcher.warm()  # the first request should not wait for the query encoder or normalizer
    app = create_app(service, settings=settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
