"""Turn many concurrent `achat` calls into few `chat_batch` calls (in-process vLLM).

WHY: the runner is one asyncio program for both engines. Against a server, concurrency alone lets
vLLM batch. In-process, `InProcessLLM.achat` would run one prompt at a time behind its lock; this
wrapper collects the pending calls (up to `max_batch`, waiting at most `max_wait_s` for stragglers)
and submits them as one `chat_batch` — one per distinct sampling setting, unless the inner backend
takes a setting per prompt (`per_prompt_params`, as `InProcessLLM` does: exam questions differ in
their answer constraint, and one engine call keeps them all in one continuous batch) — so vLLM sees
hundreds of prompts at once, and with prefix caching the shared system prompt and instructions are
computed once, not once per question. `batches` keeps the batch sizes (the run summary reports them).

Each batch runs in its own daemon thread rather than asyncio's default executor: the event loop (and
with it Ctrl-C / SIGTERM handling) never waits for a batch in flight — a GPU batch of hundreds of
prompts can take minutes — and the default executor's threads stay free for retrieval.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from ragmed.errors import RagmedError, UpstreamRejected
from ragmed.generate.base import ChatBackend
from ragmed.schema import ChatResult, Message, SamplingParams


def _settle(fut: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if not fut.done():
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


async def _in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``await fn(*args)`` run in a daemon thread: abandoning the await abandons the thread."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(_settle, fut, result, error)
        except RuntimeError:  # the loop is gone: nobody waits for this batch any more
            pass

    threading.Thread(target=work, name="ragmed-engine-batch", daemon=True).start()
    return await fut


class BatchingBackend(ChatBackend):
    """A ChatBackend that batches `achat` calls onto `inner.chat_batch`."""

    def __init__(self, inner: ChatBackend, max_batch: int = 256, max_wait_s: float = 0.05) -> None:
        self.inner = inner
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[list[dict[str, str]], Any, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes, for benchmarks

    # ChatBackend surface, delegated
    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def where(self) -> str:
        return f"batched {self.inner.where}"

    def chat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        return self.inner.chat(messages, params)

    async def astream(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        result = await self.achat(messages, params)  # batched with the other pending calls
        yield result.text
        yield result

    @property
    def model_root(self) -> str | None:  # type: ignore[override]
        """The inner model's local folder, so the pipeline counts tokens with its tokenizer.json."""
        return self.inner.model_root

    def stats(self) -> dict[str, Any]:
        """The inner engine's counters (prefix-cache hits etc.), if it keeps any."""
        return self.inner.stats()

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        """Close the inner engine (in-process vLLM: stops its engine process)."""
        self.inner.close()

    def context_length(self) -> int | None:
        return self.inner.context_length()

    async def achat(self, messages: list[Message], params: SamplingParams) -> ChatResult:
        loop = asyncio.get_running_loop()
        if (
            self._queue is None
            or self._worker is None
            or self._worker.done()
            or self._worker.get_loop() is not loop
        ):
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._drain())
        fut: asyncio.Future = loop.create_future()
        await self._queue.put((messages, params, fut))
        return await fut

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            pending = [first]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(pending) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            per_prompt = self.inner.per_prompt_params
            if per_prompt:
                batches = [pending]
            else:
                groups: dict[str, list[tuple[list[dict[str, str]], Any, asyncio.Future]]] = defaultdict(list)
                for item in pending:
                    groups[item[1].model_dump_json()].append(item)
                batches = list(groups.values())
            for items in batches:
                await self._submit(items, per_prompt)

    async def _submit(
        self, items: list[tuple[list[dict[str, str]], Any, asyncio.Future]], per_prompt: bool
    ) -> None:
        self.batches.append(len(items))
        params = [p for _, p, _ in items] if per_prompt else items[0][1]
        try:
            results = await _in_daemon_thread(self.inner.chat_batch, [m for m, _, _ in items], params)
        except Exception as exc:
            if len(items) > 1:
                # vLLM refuses a whole call for one bad prompt (e.g. longer than max_model_len): one at
                # a time, only that question fails.
                for item in items:
                    await self._submit([item], per_prompt)
                return
            if isinstance(exc, ValueError) and not isinstance(exc, RagmedError):
                # vLLM refuses a request it cannot serve (a prompt longer than max_model_len, a bad
                # constraint) with ValueError: that is the upstream rejecting this one prompt.
                rejected = UpstreamRejected(f"in-process vLLM refused the prompt: {exc}")
                rejected.__cause__ = exc
                exc = rejected
            for _, _, fut in items:  # the waiter gets the error, the worker lives on
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), res in zip(items, results, strict=True):
            if not fut.done():
                fut.set_result(res)
