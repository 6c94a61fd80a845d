"""``ragmed search`` and ``ragmed normalize``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ragmed.cli.base import IndexOpt, JsonOpt, print_json, settings_of
from ragmed.cli.render import hit_json, mention_rows, name_json, show_hits, show_names
from ragmed.errors import InputError, NotFoundError
from ragmed.ingest.files import decode_text


def read_lines(input_file: Path) -> list[str]:
    """One term per line, as a file iterator reads them: UTF-8, or cp932 and UTF-16 as Japanese Windows
    tools save them; a byte-order mark and CRLF endings are the editor's, not the term's, and only a
    newline ends a line (``str.splitlines`` would also split at U+2028, U+0085 or a form feed, and every
    answer after it would sit one line off its term)."""
    if not input_file.is_file():
        raise NotFoundError(f"{input_file}: no such file")
    try:
        text = decode_text(input_file.read_bytes(), reject_nul=True)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{input_file}: neither UTF-8 text ({exc.reason} at byte {exc.start}) nor cp932"
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # CRLF and CR end lines too
    if lines[-1] == "":  # the last line's own newline
        lines.pop()
    return [line.strip() for line in lines]


def read_terms(input_file: Path) -> list[str]:
    """Terms to normalize: one per line, or the 出現形 column of a Manbyo table (a CSV whose header names
    出現形, an xlsx or the release zip), one per row: answers line up with the table's rows."""
    from ragmed.ingest.manbyo import is_manbyo_table, read_surfaces

    if input_file.is_file() and is_manbyo_table(input_file):
        terms = read_surfaces(input_file)
        typer.echo(f"{input_file}: a Manbyo table: {len(terms)} rows' 出現形, one JSON line each", err=True)
        return terms
    return read_lines(input_file)


def each_query(
    query: str | None,
    input_file: Path | None,
    fn: Callable[[str], list[dict[str, Any]]],
    as_json: bool,
    show: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    if input_file is not None:
        for line in read_lines(input_file):
            result = fn(line) if line else []
            print_json(result) if as_json else show(line, result)
        return
    if not query:
        raise InputError("give a query, or --input FILE with one per line")
    result = fn(query)
    print_json(result) if as_json else show(query, result)


def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="The query.")] = None,
    index: IndexOpt = "demo",
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, dense or bm25.")] = "hybrid",
    input_file: Annotated[
        Path | None, typer.Option("--input", help="One query per line; JSON Lines out.")
    ] = None,
    no_expand: Annotated[
        bool, typer.Option("--no-expand", help="Do not expand with linked disease names.")
    ] = False,
    rerank: Annotated[str | None, typer.Option(help="CrossEncoder id/path to rerank with.")] = None,
    nprobe: Annotated[int | None, typer.Option(help="IVF lists to search (approximate indexes).")] = None,
    ef_search: Annotated[int | None, typer.Option(help="HNSW search breadth (approximate indexes).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Hybrid (FAISS + BM25) search over an index."""
    from ragmed.index import RagmedIndex
    from ragmed.retrieve.hybrid import Searcher

    settings = settings_of(ctx)
    idx = RagmedIndex.load(index, settings)
    searcher = Searcher.configured(
        idx, settings.retrieval, reranker=rerank, nprobe=nprobe, ef_search=ef_search
    )

    def run(q: str) -> list[dict[str, Any]]:
        return [hit_json(h) for h in searcher.search(q, k=k, mode=mode, expand=not no_expand)]

    each_query(query, input_file, run, as_json, show_hits)


def normalize(
    ctx: typer.Context,
    term: Annotated[str | None, typer.Argument(help="A disease term (surface form).")] = None,
    index: IndexOpt = "demo",
    k: Annotated[int, typer.Option("-k", help="Standard names per term.")] = 5,
    text: Annotated[
        str | None, typer.Option("--text", help="Free text: find and link disease mentions.")
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input", help="One term per line, or a Manbyo table (its 出現形 column); JSON Lines out."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Map disease terms to Manbyo standard names and ICD-10 codes."""
    from ragmed.index import RagmedIndex

    idx = RagmedIndex.load(index, settings_of(ctx))
    normalizer = idx.normalizer
    if normalizer is None:
        raise InputError(f"index {idx.name!r} holds no Manbyo dictionary: build it with --manbyo")
    if text is not None:
        rows = mention_rows(idx, text, k)
        print_json(rows) if as_json else show_names(text, rows)
        return
    if input_file is not None:
        terms = read_terms(input_file)
        results = iter(normalizer.normalize_many([t for t in terms if t], k=k))
        for t in terms:
            rows = [name_json(idx, c) for c in next(results)] if t else []
            print_json(rows) if as_json else show_names(t, rows)
        return
    each_query(
        term, None, lambda t: [name_json(idx, c) for c in normalizer.normalize(t, k=k)], as_json, show_names
    )
