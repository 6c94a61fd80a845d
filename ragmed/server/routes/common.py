"""What every route needs: the service and settings of the app it runs in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from ragmed.service import RagService
from ragmed.settings import Settings

T = TypeVar("T")


def service_of(request: Request) -> RagService:
    return request.app.state.service


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


class ClientGone(Exception):  # noqa: N818 - a signal, not an error: nobody is left to answer
    """The client disconnected while its request was being answered."""


async def unless_disconnected(request: Request, work: Awaitable[T], poll_s: float = 0.25) -> T:
    """Await ``work``, cancelling it (and the upstream request inside) if the client goes away."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
