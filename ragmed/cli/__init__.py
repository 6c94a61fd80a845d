"""The ``ragmed`` command line: thin commands that read like what they do.

    ragmed index build --name demo --manbyo MANBYO.xlsx --corpus docs/
    ragmed search --index demo "急性心筋梗塞の初期治療" -k 5
    ragmed normalize --index demo "AMI"
    ragmed ask --index demo "…"

Every command takes its defaults from :class:`ragmed.settings.Settings` (env ``RAGMED_*``); flags
override them. Errors are mapped in :mod:`ragmed.cli.base`. Commands from other packages plug in
through the ``ragmed.commands`` entry-point group (``ragmed eval`` from ragmed_eval, ``ragmed ui`` from
ragmed_ui), so this package never imports them.
"""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer

from ragmed import __version__
from ragmed.cli import ask, data, demo, index, llm, search, serve
from ragmed.cli.base import make_app, out
from ragmed.settings import get_settings

app = make_app("ragmed: Japanese clinical retrieval-augmented QA.")
app.add_typer(index.app, name="index")
app.add_typer(data.app, name="data")
app.add_typer(llm.app, name="llm")
app.command()(search.search)
app.command()(search.normalize)
app.command(context_settings={"allow_interspersed_args": True})(ask.ask)
app.command()(serve.serve)
app.command()(demo.demo)


@app.callback()
def main(
    ctx: typer.Context,
    index_dir: Annotated[
        Path | None, typer.Option(help="Folder holding indexes (env RAGMED_INDEX_DIR).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Models, venvs, downloads (env RAGMED_CACHE_DIR).")
    ] = None,
) -> None:
    ctx.obj = get_settings().with_overrides(index_dir=index_dir, cache_dir=cache_dir)


@app.command()
def version() -> None:
    """Print ragmed's version."""
    out.print(__version__)


@app.command()
def schema(what: Annotated[str, typer.Argument(help="ask, exam, search or normalize.")]) -> None:
    """The JSON Schema of a command's ``--json`` output."""
    from ragmed.cli.render import NameHit, SearchHit
    from ragmed.errors import InputError
    from ragmed.schema import Answer, ExamAnswer

    models = {"ask": Answer, "exam": ExamAnswer, "search": SearchHit, "normalize": NameHit}
    if what not in models:
        raise InputError(f"unknown output {what!r}: one of {', '.join(models)}")
    found = models[what].model_json_schema()
    if what in ("search", "normalize"):  # one JSON list of these per query (JSON Lines with --input)
        found = {"type": "array", "items": found, "$defs": found.pop("$defs", {})}
    out.print_json(json.dumps(found, ensure_ascii=False))


def _plug_in() -> None:
    """Commands other packages register under the ``ragmed.commands`` entry-point group."""
    for ep in entry_points(group="ragmed.commands"):
        command = ep.load()
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=ep.name)
        else:
            app.command(name=ep.name)(command)


_plug_in()

__all__ = ["app"]
