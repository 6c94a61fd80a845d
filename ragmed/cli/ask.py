"""``ragmed ask``: a grounded answer streamed to the terminal (sources first), or an exam item solved."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ragmed.aio import run_sync
from ragmed.cli.base import IndexOpt, JsonOpt, LlmUrlOpt, UpstreamModelOpt, err, out, settings_of
from ragmed.cli.render import show_sources
from ragmed.errors import InputError
from ragmed.exam import ExamSolver
from ragmed.generate.openai_client import LLMClient
from ragmed.pipeline import RagPipeline
from ragmed.schema import Answer, ExamKind, Retrieved
from ragmed.settings import Settings

#: Seconds the upstream gets to answer the reachability check that precedes any loading.
PING_TIMEOUT_S = 5.0


def make_pipeline(index: str, settings: Settings, rag: bool) -> RagPipeline:
    """The pipeline for one question; the LLM server is checked first, so a missing server is reported
    in seconds, before the index is loaded."""
    llm = LLMClient.from_settings(settings)
    run_sync(llm.aping(timeout=PING_TIMEOUT_S))
    if not rag:
        return RagPipeline(llm, None, settings=settings)
    return RagPipeline.load(index, settings=settings, llm=llm)


def run_ask(
    question: str,
    pipeline: RagPipeline,
    *,
    rag: bool = True,
    json_output: bool = False,
    choices: list[str] | None = None,
    kind: ExamKind = "single",
    n_answers: int | None = None,
    reasoning: bool = False,
) -> None:
    """Answer ``question`` (or solve it as an exam item) and print it with its sources."""
    if choices is not None or kind == "numeric":
        exam = ExamSolver(pipeline).answer_exam(
            question, choices or [], kind=kind, n_answers=n_answers, rag=rag, reasoning=reasoning
        )
        if json_output:
            out.print_json(exam.model_dump_json())
            return
        out.print(f"[bold]Answer:[/] {exam.prediction or '(none)'}  [dim](method: {exam.method})[/]")
        if exam.reasoning:
            out.print(exam.reasoning, markup=False, highlight=False)
        if exam.sources:
            show_sources(exam.sources, title="Context given to the model")
        for w in exam.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
        return
    if json_output:
        answer = pipeline.answer(question, rag=rag)
        out.print_json(json.dumps(answer.model_dump(mode="json"), ensure_ascii=False))
        return
    final: Answer | None = None
    for item in pipeline.stream(question, rag=rag):
        if isinstance(item, Retrieved):
            if item.sources:  # shown before the answer: retrieval is done before generation starts
                show_sources(item.sources, title="Sources given to the model")
        elif isinstance(item, Answer):
            final = item
        else:
            out.print(item, end="", markup=False, highlight=False, soft_wrap=True)
    out.print()
    assert final is not None
    cited = [s for s in final.sources if s.cited]
    if cited:
        out.print(
            "[bold]Cited:[/] " + ", ".join(f"[{s.n}] {s.title or s.source}" for s in cited), highlight=False
        )
    elif rag:
        out.print("[dim]The answer cites no source.[/]")
    for w in final.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)


def ask(
    ctx: typer.Context,
    args: Annotated[
        list[str], typer.Argument(help="The question; with --choices: the choices, then the question.")
    ],
    index: IndexOpt = "demo",
    llm_base_url: LlmUrlOpt = None,
    model: UpstreamModelOpt = None,
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
    settings = settings_of(ctx).with_overrides(
        llm__base_url=llm_base_url,
        llm__model=model,
        llm__api_key=api_key,
        retrieval__top_k=k,
        retrieval__mode=mode,
        generation__max_tokens=max_tokens,
        generation__temperature=temperature,
    )
    question, options = args[-1], args[:-1]
    if options and not choices:
        raise InputError("give one question (quote it), or use --choices to pass choices before it")
    if choices and not options and not numeric:
        raise InputError("--choices needs the choices before the question")
    kind: ExamKind = "numeric" if numeric else "multi" if multi and multi > 1 else "single"
    pipeline = make_pipeline(index, settings, rag=not no_rag)
    run_ask(
        question,
        pipeline,
        rag=not no_rag,
        json_output=as_json,
        choices=list(options) if choices or numeric else None,
        kind=kind,
        n_answers=multi,
        reasoning=reasoning,
    )
