"""What every command shares: the error mapping, consoles, common options and settings from the context.

Only :class:`~ragmed.errors.RagmedError` is caught: it becomes one clear line on stderr and the exit code
of :func:`ragmed.errors.exit_code` (2 bad input · 3 the LLM server or a local component · 4 corrupt data).
Anything else is a bug and keeps its traceback (exit 1). ``RAGMED_DEBUG=1`` shows tracebacks of
expected errors too.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from ragmed.errors import RagmedError, debug, exit_code
from ragmed.settings import Settings, get_settings

out = Console()
err = Console(stderr=True)


def report(exc: RagmedError) -> int:
    """Print ``exc`` for a person and return its exit code."""
    if debug():
        err.print("".join(traceback.format_exception(exc)), markup=False, highlight=False)
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return exit_code(exc)


class RagmedGroup(TyperGroup):
    """A command group that maps :class:`RagmedError` to its message and exit code, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RagmedError as exc:
            raise typer.Exit(report(exc)) from None


def make_app(help: str, **kwargs: Any) -> typer.Typer:
    return typer.Typer(
        cls=RagmedGroup,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,  # locals may hold keys
        **kwargs,
    )


def settings_of(ctx: typer.Context) -> Settings:
    """The settings of this invocation (env + global flags), found on the root context."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Settings) else get_settings()


def print_json(data: Any) -> None:
    """One JSON document on one line of stdout (JSON Lines when called repeatedly)."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


IndexOpt = Annotated[
    str,
    typer.Option("--index", "-i", help="Index name (under --index-dir / RAGMED_INDEX_DIR) or path."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON output (`ragmed schema` describes it).")
]
LlmUrlOpt = Annotated[
    str | None,
    typer.Option("--llm-base-url", help="Upstream OpenAI-compatible server (env RAGMED_LLM_BASE_URL)."),
]
UpstreamModelOpt = Annotated[
    str | None, typer.Option("--model", help="Upstream model (default: discovered from /v1/models).")
]
