"""``ragmed serve``: the OpenAI-compatible API."""

from __future__ import annotations

from typing import Annotated

import typer

from ragmed.cli.base import IndexOpt, LlmUrlOpt, UpstreamModelOpt, settings_of
from ragmed.errors import InputError


def serve(
    ctx: typer.Context,
    index: IndexOpt = "demo",
    llm_base_url: LlmUrlOpt = None,
    model: UpstreamModelOpt = None,
    host: Annotated[str, typer.Option(help="Bind address; non-loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    api_key: Annotated[str | None, typer.Option(help="Key clients must send (env RAGMED_API_KEY).")] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="server: the upstream at --llm-base-url; echo: an in-process stand-in that answers from its "
            "own prompt (try the API, or load-test ragmed itself, without a model)."
        ),
    ] = "server",
) -> None:
    """OpenAI-compatible RAG API: point any OpenAI client at http://HOST:PORT/v1."""
    from ragmed.generate import make_backend
    from ragmed.server.app import serve as run_api

    if engine not in ("server", "echo"):
        raise InputError(f"unknown --engine {engine!r}: server or echo")
    settings = settings_of(ctx).with_overrides(
        llm__base_url=llm_base_url, llm__model=model, serve__key=api_key
    )
    llm = make_backend(settings, engine="echo") if engine == "echo" else None
    run_api(index, settings=settings, host=host, port=port, llm=llm)
