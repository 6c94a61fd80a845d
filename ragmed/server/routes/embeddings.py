"""``POST /v1/embeddings``: embeddings from the index's own model (``ragmed/<index>`` or the embedder's name)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Request

from ragmed.errors import InputError, ModelNotFoundError, TooLargeError
from ragmed.server.protocol import EmbeddingItem, EmbeddingOptions, EmbeddingRequest, EmbeddingResponse
from ragmed.server.routes.common import service_of

router = APIRouter(tags=["openai"])

MAX_INPUTS = 2048


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    service = service_of(request)
    if req.model not in (service.model_id, service.embedder_name):
        raise ModelNotFoundError(
            f"The embedding model {req.model!r} does not exist. Use {service.model_id!r} "
            f"(embedder {service.embedder_name!r}).",
            param="model",
        )
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if len(texts) > MAX_INPUTS:
        raise TooLargeError(f"Too many inputs: {len(texts)} (at most {MAX_INPUTS}).", param="input")
    input_type = (req.ragmed or EmbeddingOptions()).input_type
    try:
        vectors = await asyncio.to_thread(service.embed, texts, input_type)
    except InputError as exc:
        exc.param = exc.param or "input"
        raise
    if req.dimensions is not None and req.dimensions != vectors.shape[1]:
        raise InputError(
            f"This embedder has {vectors.shape[1]} dimensions; it cannot give {req.dimensions}.",
            param="dimensions",
        )
    data = []
    for i, vec in enumerate(vectors):
        vec = np.asarray(vec, dtype=np.float32)
        value = base64.b64encode(vec.tobytes()).decode() if req.encoding_format == "base64" else vec.tolist()
        data.append(EmbeddingItem(index=i, embedding=value))
    tokens = sum(len(t) for t in texts)  # characters: the embedder's tokenizer is not exposed
    return EmbeddingResponse(
        data=data, model=req.model, usage={"prompt_tokens": tokens, "total_tokens": tokens}
    )
