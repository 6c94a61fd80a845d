"""``GET /v1/models``: the RAG model ``ragmed/<index>`` plus the upstream model (passed through without RAG)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ragmed.errors import ModelNotFoundError, UpstreamError
from ragmed.server.protocol import ModelCard, ModelList
from ragmed.server.routes.common import service_of
from ragmed.service import RagService

router = APIRouter(tags=["openai"])


async def resolve_model(service: RagService, name: str) -> bool:
    """True for the RAG model, False for the upstream pass-through; 404 for anything else."""
    if name == service.model_id:
        return True
    upstream = await service.upstream_model()
    if name == upstream:
        return False
    raise ModelNotFoundError(
        f"The model {name!r} does not exist. Available: {service.model_id!r} (RAG) and {upstream!r}.",
        param="model",
    )


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    """The RAG model, plus the upstream model passed through without RAG when reachable."""
    service = service_of(request)
    now = int(time.time())
    data = [ModelCard(id=service.model_id, created=now, owned_by="ragmed")]
    try:
        data.append(ModelCard(id=await service.upstream_model(), created=now, owned_by="upstream"))
    except UpstreamError:
        pass  # the RAG model is listed even while the upstream is down
    return ModelList(data=data)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in (await list_models(request)).data:
        if card.id == model_id:
            return card
    raise ModelNotFoundError(f"The model {model_id!r} does not exist.", param="model")
