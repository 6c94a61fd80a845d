"""``GET /health``: liveness for anyone; with the API key (or on a keyless server) the index and upstream."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ragmed.server.auth import key_ok
from ragmed.server.routes.common import service_of

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Index loaded and upstream reachable (503 when it is not). Without the key: only ``{"status": "ok"}``
    — the index path and the upstream URL are for the operator."""
    if key_ok(dict(request.scope.get("headers") or []), request.app.state.api_key) is not True:
        return JSONResponse({"status": "ok"})
    body = await service_of(request).health()
    return JSONResponse(body, status_code=200 if body["upstream"]["reachable"] else 503)
