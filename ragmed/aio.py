"""Sync faces of async code: one background event loop that sync callers hand coroutines to.

WHY: ragmed's I/O paths (talking to the LLM, the pipeline, exam solving) are written once, async. A
sync caller — the CLI, a notebook, a worker thread counting tokens — runs them on one long-lived loop
in a daemon thread instead of ``asyncio.run`` per call: the HTTP client's connection pool is bound
to the loop that opened it, so a loop per call would rebuild it every time, and ``asyncio.run`` cannot
be called from a thread whose loop is already running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop, started on first use (a daemon thread: it never keeps a program alive)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="ragmed-aio", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and wait for its result (exceptions propagate as raised)."""
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError("run_sync called from the ragmed-aio loop itself: await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code, item by item, on the background loop.

    Breaking out early closes the async iterator (its ``finally`` blocks run on the loop).
    """
    try:
        while True:
            try:
                yield run_sync(_anext(agen))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run_sync(aclose())


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
