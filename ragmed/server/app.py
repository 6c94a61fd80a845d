"""ragmed as an OpenAI-compatible HTTP API (``ragmed serve``): the app, its guards and error mapping.

Any OpenAI client (the official ``openai`` package, curl, Open WebUI, LangChain's ``ChatOpenAI``)
pointed at this server gets grounded, cited answers without code changes (routes in
:mod:`ragmed.server.routes`, wire format in :mod:`ragmed.server.protocol`, answers from
:class:`ragmed.service.RagService`).

Guards, outermost first, before any body byte is read: the Host header must name this machine when the
server is keyless (DNS rebinding), the API key is checked (so a malformed body without a key is a 401,
not a 400), bodies over the size limit are refused (413) and a body that does not arrive in time is a 408.
Errors always have OpenAI's shape; a :class:`~ragmed.errors.RagmedError` maps to its status through
:func:`ragmed.errors.mapping`, anything else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from ragmed import __version__
from ragmed.errors import RagmedError, debug, error_code, http_status, mapping
from ragmed.generate.base import ChatBackend
from ragmed.hosts import check_bind, host_header_allowed, is_loopback
from ragmed.server.auth import key_ok
from ragmed.server.protocol import ErrorDetail, ErrorResponse
from ragmed.server.routes import chat, embeddings, health, models, responses
from ragmed.service import RagService
from ragmed.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Paths answered without the API key: a bare liveness probe (``/health`` shows more with the key).
OPEN_PATHS = ("/health",)


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type_, param=param, code=code))
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def ragmed_error_response(exc: RagmedError) -> JSONResponse:
    return error_response(http_status(exc), str(exc), mapping(exc).type, exc.param, error_code(exc))


class Guard:
    """Host check, API key, body size and body read timeout, before the app reads anything."""

    def __init__(
        self, app: ASGIApp, *, api_key: str | None, check_host: bool, max_bytes: int, body_timeout: float
    ) -> None:
        self.app, self.api_key, self.check_host = app, api_key, check_host
        self.max_bytes, self.body_timeout = max_bytes, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.check_host and not host_header_allowed(headers.get(b"host", b"").decode("latin-1")):
            response = error_response(
                403,
                "Invalid Host header: this keyless server answers only requests addressed to 127.0.0.1 / "
                "localhost (set an API key to serve other names).",
                code="invalid_host",
            )
            await response(scope, receive, send)
            return
        if scope["path"] not in OPEN_PATHS:
            ok = key_ok(headers, self.api_key)
            if ok is None:
                response = error_response(
                    401, "Missing API key: send 'Authorization: Bearer KEY'.", code="missing_api_key"
                )
                await response(scope, receive, send)
                return
            if not ok:
                await error_response(401, "Incorrect API key provided.", code="invalid_api_key")(
                    scope, receive, send
                )
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(length.decode(errors="replace"))(scope, receive, send)
            return
        await self.app(scope, self._bounded(receive), send)

    def _too_large_message(self, size: str) -> str:
        return f"Request body too large: {size} bytes, the limit is {self.max_bytes} (RAGMED_API_MAX_BODY_BYTES)."

    def _too_large(self, size: str) -> JSONResponse:
        return error_response(413, self._too_large_message(size), code="request_too_large")

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0
        deadline: float | None = None

        async def bounded() -> ASGIMessage:
            nonlocal seen, deadline
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                # FastAPI re-raises HTTPExceptions from body reading; the handler shapes the reply.
                raise StarletteHTTPException(
                    408,
                    f"The request body did not arrive within {self.body_timeout:g} s (RAGMED_API_BODY_TIMEOUT): "
                    "is its Content-Length larger than the body sent?",
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, self._too_large_message(f"more than {self.max_bytes}"))
                if not message.get("more_body"):
                    deadline = float("inf")  # the body is complete: waiting for a disconnect is not a timeout
            return message

        return bounded


def _param(loc: Sequence[Any]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def create_app(
    service: RagService,
    *,
    api_key: str | None = None,
    settings: Settings | None = None,
    check_host: bool | None = None,
) -> FastAPI:
    """The FastAPI app over one :class:`RagService`; ``api_key`` (default ``serve.key``) guards it.

    ``check_host`` (default: when there is no key) refuses Host headers that do not name this machine.
    """
    settings = settings or service.settings
    api_key = api_key if api_key is not None else settings.serve.key
    app = FastAPI(
        title="ragmed",
        version=__version__,
        description="OpenAI-compatible Japanese clinical RAG API: grounded answers with citations.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = service
    app.state.settings = settings
    app.state.api_key = api_key
    app.add_middleware(
        Guard,
        api_key=api_key,
        check_host=(not api_key) if check_host is None else check_host,
        max_bytes=settings.serve.max_body_bytes,
        body_timeout=settings.serve.body_timeout,
    )
    if settings.serve.cors_origins:
        # added last, so outermost: a browser's preflight (no key, by the CORS rules) is answered here,
        # and every answer behind it, the Guard's 401s included, carries the headers the page needs
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.serve.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "OpenAI-Organization", "OpenAI-Project"],
            allow_credentials=False,  # the key travels in a header, not a cookie
            max_age=600,
        )

    @app.exception_handler(RagmedError)
    async def _ragmed(request: Request, exc: RagmedError) -> JSONResponse:
        return ragmed_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            error = first.get("ctx", {}).get("error", "")
            message = f"The request body is not valid JSON ({error} at character {first['loc'][-1]})."
            return error_response(400, message, code="invalid_json")
        param = _param(first.get("loc", ()))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return error_response(
            400,
            f"Invalid request: {param or 'body'}: {first.get('msg')}{more}.",
            param=param,
            code="invalid_value",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            408: "request_timeout",
            413: "request_too_large",
        }
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, message, code=codes.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        detail = "".join(traceback.format_exception(exc)) if debug() else "see the server log"
        return error_response(
            500, f"Internal error (a bug in ragmed): {type(exc).__name__}; {detail}", "server_error"
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ragmed API")

    for module in (health, models, chat, responses, embeddings):
        app.include_router(module.router)
    return app


def serve(
    index: str,
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    llm: ChatBackend | None = None,
) -> None:
    """``ragmed serve``: load the index and run uvicorn until Ctrl-C (refuses open binds without a key)."""
    import uvicorn

    settings = settings or get_settings()
    check_bind(host, settings.serve.key, what="the API", need="an API key", fix="--api-key / RAGMED_API_KEY")
    service = RagService.load(index, settings, llm)
    service.warm()  # the first request should not wait for the query encoder or normalizer
    app = create_app(service, settings=settings, check_host=not settings.serve.key and is_loopback(host))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
