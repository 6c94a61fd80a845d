"""The generate stage's seam: :class:`ChatBackend`, what the pipeline needs from an LLM.

WHY one abstract method: a backend implements :meth:`ChatBackend.astream` (text deltas, then one
:class:`~ragmed.schema.ChatResult`) and gets ``achat``, ``chat`` and ``stream`` derived from it, so no
backend carries sync and async twins that drift apart. Engines whose native call is synchronous (vLLM in
process) override ``chat`` and build ``astream`` on it instead.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ragmed.aio import iterate_sync, run_sync
from ragmed.errors import UpstreamError
from ragmed.schema import ChatResult, Message, SamplingParams


class ChatBackend(ABC):
    """An LLM that answers chat messages: a server, an in-process engine, or the echo backend."""

    #: A local folder with the model's ``tokenizer.json`` when known (exact token counts without HTTP).
    model_root: str | None = None
    #: ``chat_batch`` accepts one :class:`SamplingParams` per conversation.
    per_prompt_params: bool = False

    @property
    @abstractmethod
    def model(self) -> str:
        """The model's name as the backend reports it."""

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the model runs, for messages and records (a URL, or "in-process …")."""

    @abstractmethod
    def astream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[str | ChatResult]:
        """Text deltas as they are generated, then exactly one final :class:`ChatResult`."""

    # -- derived

    async def achat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        final: ChatResult | None = None
        async for item in self.astream(messages, params):
            if isinstance(item, ChatResult):
                final = item
        if final is None:
            raise UpstreamError(f"The LLM at {self.where} ended its answer without a final result.")
        return final

    def chat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        return run_sync(self.achat(messages, params))

    def stream(self, messages: list[Message], params: SamplingParams) -> Iterator[str | ChatResult]:
        return iterate_sync(self.astream(messages, params))

    def chat_batch(
        self, conversations: list[list[Message]], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[ChatResult]:
        """Answer several conversations; servers batch concurrent requests themselves."""
        per = [params] * len(conversations) if isinstance(params, SamplingParams) else list(params)

        async def gather() -> list[ChatResult]:
            return list(
                await asyncio.gather(*(self.achat(m, p) for m, p in zip(conversations, per, strict=True)))
            )

        return run_sync(gather())

    async def amodel(self) -> str:
        """The model name, found without blocking the event loop."""
        return self.model

    async def aping(self, timeout: float = 5.0) -> list[str]:
        """Check now that the backend answers (health probes); returns its model names."""
        return [self.model]

    def count_tokens(self, text: str) -> int | None:
        """Exact tokens of ``text`` in the model's tokenizer, or None when the backend cannot say."""
        return None

    def context_length(self) -> int | None:
        """The model's context length, when the backend knows it."""
        return None

    def stats(self) -> dict[str, Any]:
        """Engine counters (requests, prefix-cache hits…), when the backend keeps any."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing
        """Release what the backend holds (an engine process, connection pools)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close async resources on the loop that opened them."""
