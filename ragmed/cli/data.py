"""``ragmed data fetch``: public data, when the network allows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragmed.cli.base import make_app, out, settings_of
from ragmed.errors import InputError

app = make_app("Fetch public data (needs the network).")


@app.command("fetch")
def fetch(
    ctx: typer.Context,
    what: Annotated[str, typer.Argument(help="What to fetch: manbyo.")],
    dest: Annotated[Path | None, typer.Option(help="Folder to save into (default: cache dir).")] = None,
    url: Annotated[
        str | None, typer.Option(help="Release URL (default: the official MANBYO_202106 zip).")
    ] = None,
) -> None:
    """Download the official Manbyo release (needs the network)."""
    from ragmed.manbyo import OFFICIAL_ZIP_URL, SOURCE_CREDIT, fetch_manbyo

    if what != "manbyo":
        raise InputError(f"unknown dataset {what!r}; known: manbyo")
    settings = settings_of(ctx)
    path = fetch_manbyo(dest or settings.cache_dir / "data", url=url or OFFICIAL_ZIP_URL)
    out.print(f"saved {path}  ({SOURCE_CREDIT})")
    out.print(f"next: ragmed index build --name manbyo --manbyo {path}")
