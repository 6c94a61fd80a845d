"""``ragmed ui``: registered with the ragmed command line through the ``ragmed.commands`` entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from ragmed.cli.base import IndexOpt, LlmUrlOpt, UpstreamModelOpt, settings_of


def ui(
    ctx: typer.Context,
    index: IndexOpt = "demo",
    llm_base_url: LlmUrlOpt = None,
    model: UpstreamModelOpt = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    auth: Annotated[
        str | None,
        typer.Option(help="'user:password' to log in (or RAGMED_UI_AUTH); needed beyond 127.0.0.1."),
    ] = None,
) -> None:
    """Gradio chat UI: chat with sources, dictionary lookup, evaluation reports. Prints its URL; Ctrl-C stops."""
    from ragmed_ui.app import launch

    settings = settings_of(ctx).with_overrides(llm__base_url=llm_base_url, llm__model=model, ui__auth=auth)
    launch(settings, index=index, host=host, port=port)
