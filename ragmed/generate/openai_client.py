"""Any OpenAI-compatible chat server (vLLM first) through the official ``openai`` client.

Retries with backoff are the client's own (connection errors, 408/409/429, 5xx); failures become
:mod:`ragmed.errors` upstream errors whose messages name the server and the fix. The model name and
context length come from ``/v1/models`` (vLLM reports ``max_model_len`` and the model folder as
``root``), exact token counts from vLLM's ``/tokenize``.

Structured outputs: vLLM ≥ 0.12 reads ``extra_body={"structured_outputs": {...}}``; older servers read
``guided_choice``/``guided_regex`` (and new ones silently ignore those), so the wire style is a setting
and callers must still validate what comes back (exam mode does).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal

import httpx
import openai

from ragmed.aio import run_sync
from ragmed.errors import UpstreamError, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from ragmed.generate.base import ChatBackend
from ragmed.schema import ChatResult, Message, SamplingParams

if TYPE_CHECKING:
    from ragmed.settings import Settings

StructuredStyle = Literal["structured_outputs", "guided", "none"]

START_HINT = (
    "Start one with `ragmed llm serve-local` (offline vLLM on CPU, SmolLM2) or `vllm serve MODEL` "
    "on a GPU host, or point --llm-base-url / RAGMED_LLM_BASE_URL at a running OpenAI-compatible server."
)


def openai_kwargs(params: SamplingParams, style: StructuredStyle = "structured_outputs") -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` from ragmed's sampling settings."""
    kwargs: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.stop:
        kwargs["stop"] = list(params.stop)
    spec = params.structured()
    if spec is None or style == "none":
        return kwargs
    if params.json_schema is not None:
        # The OpenAI-standard field; every vLLM version (and most other servers) honours it.
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": params.json_schema},
        }
    elif style == "structured_outputs":
        kwargs["extra_body"] = {"structured_outputs": spec}
    else:  # vLLM < 0.12
        kwargs["extra_body"] = {f"guided_{key}": value for key, value in spec.items()}
    return kwargs


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": int(usage.prompt_tokens or 0),
        "completion_tokens": int(usage.completion_tokens or 0),
        "total_tokens": int(usage.total_tokens or 0),
    }


class LLMClient(ChatBackend):
    """An OpenAI-compatible chat server, e.g. ``vllm serve`` or ``ragmed llm serve-local``.

    Thread- and task-safe. One async client per event loop (httpx pools are bound to the loop that
    opened them): the API's loop and the background loop sync callers use (:mod:`ragmed.aio`).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str = "EMPTY",
        timeout: float = 120.0,
        max_retries: int = 3,
        structured_style: StructuredStyle = "structured_outputs",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.structured_style: StructuredStyle = structured_style
        self._api_key = api_key or "EMPTY"
        self._model = model
        self._max_model_len: int | None = None
        self._tokenize_ok: bool | None = None
        self._discovered = False
        self._token_cache: OrderedDict[str, int] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClient:
        llm = settings.llm
        return cls(
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key,
            timeout=llm.timeout,
            max_retries=llm.max_retries,
            structured_style=llm.structured_outputs,
        )

    @property
    def where(self) -> str:
        return self.base_url

    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.get(loop)
            if client is None:
                client = openai.AsyncOpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
                self._clients[loop] = client
            return client

    # -- errors

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except openai.APITimeoutError as exc:
            raise UpstreamTimeout(
                f"The LLM server at {self.base_url} did not answer within {self.timeout:g} s "
                f"(after {self.max_retries} retries). Raise --llm-timeout / RAGMED_LLM_TIMEOUT or use a "
                "faster model."
            ) from exc
        except openai.APIConnectionError as exc:
            raise UpstreamUnavailable(
                f"No LLM server reachable at {self.base_url} ({exc.__cause__ or exc}). {START_HINT}"
            ) from exc
        # While a stream is being read, the openai client lets httpx's own errors through.
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"The LLM server at {self.base_url} stopped sending within {self.timeout:g} s ({exc!r})."
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"The connection to the LLM server at {self.base_url} broke ({exc!r}). {START_HINT}"
            ) from exc
        except openai.AuthenticationError as exc:
            raise UpstreamRejected(
                f"The LLM server at {self.base_url} rejected the API key (set --llm-api-key / "
                "RAGMED_LLM_API_KEY)."
            ) from exc
        except openai.NotFoundError as exc:
            raise UpstreamRejected(
                f"The LLM server at {self.base_url} answered 404 for model {self._model!r}: {exc.message}. "
                "Leave the model unset to use the one the server serves."
            ) from exc
        except openai.APIStatusError as exc:
            kind = UpstreamRejected if 400 <= exc.status_code < 500 else UpstreamError
            raise kind(
                f"The LLM server at {self.base_url} answered HTTP {exc.status_code}: {exc.message}"
            ) from exc

    # -- discovery

    def _remember_models(self, data: list[Any]) -> str:
        if not data:
            raise UpstreamError(f"The LLM server at {self.base_url} serves no model (GET /models is empty).")
        wanted = next((m for m in data if m.id == self._model), data[0])
        extra = getattr(wanted, "model_extra", None) or {}
        if isinstance(extra.get("max_model_len"), int):
            self._max_model_len = extra["max_model_len"]
        if isinstance(extra.get("root"), str):
            self.model_root = extra["root"]  # vLLM: the model folder, possibly on this machine
        self._discovered = True
        return wanted.id

    async def _adiscover(self) -> str:
        with self._errors():
            page = await self._client().models.list()
        return self._remember_models(list(page.data))

    async def amodel(self) -> str:
        if self._model is None:
            self._model = await self._adiscover()
        return self._model

    @property
    def model(self) -> str:
        """The model name; asked from ``/v1/models`` (first entry) when not configured."""
        if self._model is None:
            self._model = run_sync(self.amodel())
        return self._model

    def context_length(self) -> int | None:
        """The server's max_model_len (vLLM reports it in /v1/models), if it says."""
        if not self._discovered:
            found = run_sync(self._adiscover())
            self._model = self._model or found
        return self._max_model_len

    async def aping(self, timeout: float = 5.0) -> list[str]:
        """Ask the server for its models now (no cache, no retries): a health probe."""
        client = self._client().with_options(timeout=timeout, max_retries=0)
        with self._errors():
            page = await client.models.list()
        return [m.id for m in page.data]

    # -- tokens

    @property
    def _root(self) -> str:
        # vLLM's extra endpoints (/tokenize) live beside /v1, not under it.
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    async def _acount(self, text: str) -> dict[str, Any] | None:
        body = {"model": await self.amodel(), "prompt": text, "add_special_tokens": False}
        try:
            with self._errors():
                reply = await self._client().post(f"{self._root}/tokenize", cast_to=object, body=body)
        except UpstreamRejected:
            return None
        return reply if isinstance(reply, dict) and "count" in reply else None

    def count_tokens(self, text: str) -> int | None:
        """Exact token count from vLLM's ``/tokenize`` (cached); None when the server has no such endpoint."""
        if self._tokenize_ok is False:
            return None
        with self._cache_lock:
            cached = self._token_cache.get(text)
            if cached is not None:
                self._token_cache.move_to_end(text)
                return cached
        reply = run_sync(self._acount(text))
        if reply is None:
            self._tokenize_ok = False
            return None
        self._tokenize_ok = True
        if isinstance(reply.get("max_model_len"), int) and self._max_model_len is None:
            self._max_model_len = reply["max_model_len"]
        count = int(reply["count"])
        with self._cache_lock:  # pipelines count from worker threads (concurrent answers)
            self._token_cache[text] = count
            if len(self._token_cache) > 4096:
                self._token_cache.popitem(last=False)
        return count

    # -- chat

    async def astream(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        """Yield text deltas as they arrive, then one final :class:`ChatResult`."""
        started = time.perf_counter()
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish: str | None = None
        model = await self.amodel()
        request = {"model": model, "messages": messages, **openai_kwargs(params, self.structured_style)}
        with self._errors():
            stream = await self._client().chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        usage = _usage(chunk.usage)
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            yield choice.delta.content
        yield ChatResult(
            text="".join(parts),
            model=model,
            finish_reason=finish,
            usage=usage,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        """Close the async pool of the running loop (else asyncio warns at exit)."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        with self._clients_lock:
            clients = list(self._clients.items())
            self._clients.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, client in clients:
            if loop is not current and not loop.is_closed() and loop.is_running():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=5)
