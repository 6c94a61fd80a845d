"""`ragmed eval …`: a typer sub-app the main CLI mounts (the core never imports this package)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from ragmed_eval.datasets import DatasetNotFound, list_datasets, load_dataset
from ragmed_eval.scoring import dumps, load_predictions, parse_thresholds, score
from rich.console import Console
from rich.table import Table

from ragmed.errors import DatasetError

app = typer.Typer(
    help="Exam evaluation: scoring, RAG vs no-RAG runs, comparison, reports.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def _table(title: str, rows: dict[str, dict], key: str) -> Table:
    t = Table(title=title)
    for col in (key, "correct", "n", "accuracy", "score", "total"):
        t.add_column(col, justify="right" if col != key else "left")
    for k, v in rows.items():
        t.add_row(k, str(v["correct"]), str(v["n"]), f"{v['accuracy']:.3f}", str(v["score"]), str(v["total"]))
    return t


@app.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets and the layout each loader expects."""
    for spec in list_datasets():
        opts = f" options: {', '.join(spec.options)}" if spec.options else ""
        typer.echo(
            f"{spec.name:12s} {spec.description}\n{'':12s} layout: {spec.layout}{opts}\n{'':12s} source: {spec.source_url}"
        )


@app.command("score")
def score_cmd(
    predictions: Path = typer.Option(
        ..., "--predictions", "-p", help="Prediction file or baseline_results/ folder"
    ),
    dataset: str = typer.Option("igakuqa", "--dataset", "-d"),
    data_dir: Path = typer.Option(..., "--data-dir", help="Dataset root (e.g. a clone of IgakuQA)"),
    system: str | None = typer.Option(None, "--system", help="Baseline name: files NNN-X_{system}.jsonl"),
    subset: str = typer.Option("all", "--subset", help="all | text_only | image"),
    normalized: bool = typer.Option(False, "--normalized", help="UNOFFICIAL lenient matching"),
    pass_threshold: list[str] = typer.Option(None, "--pass-threshold", help="YEAR=0.70 (一般・臨床 line)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    items: bool = typer.Option(False, "--items", help="With --json: include per-question results"),
) -> None:
    """Score prediction files with the dataset's official rules (IgakuQA's evaluate_main.py by default)."""
    try:
        qs = load_dataset(dataset, data_dir, subset=subset)
        preds = load_predictions(predictions, system)
        rep = score(
            qs, preds, normalized=normalized, subset=subset, thresholds=parse_thresholds(pass_threshold)
        )
    except (DatasetError, DatasetNotFound, FileNotFoundError, ValueError, KeyError) as e:
        _fail(str(e))
        return
    d = rep.to_dict(items=items)
    d["system"] = system
    if as_json:
        sys.stdout.write(dumps(d) + "\n")
        return
    out = Console()
    out.print(f"[bold]{dataset}[/bold] system={system} subset={subset} scoring: {d['scoring']}")
    o = d["overall"]
    out.print(f"overall: {o['correct']}/{o['n']} = {o['accuracy']:.4f}; score {o['score']}/{o['total']}")
    out.print(_table("by year", d["by_year"], "year"))
    out.print(_table("by section", d["by_section"], "section"))
    for y, v in d["pass"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a (incomplete exam)"}[v["passed"]]
        out.print(
            f"{y}: {verdict} (必修 {v['required']['rate']:.1%} ≥ 80%: {v['required']['passed']}; "
            f"一般・臨床 {v['general_clinical']['rate']:.1%} ≥ {v['general_clinical']['threshold']:.0%}: "
            f"{v['general_clinical']['passed']}; 禁忌肢 {v['kinki']['count']} ≤ 3: {v['kinki']['passed']})"
            + (" [partial exam]" if v["partial"] else "")
        )
    if d["missing"]:
        out.print(f"[yellow]{len(d['missing'])} questions had no prediction (scored wrong)[/yellow]")


@app.command("run")
def run_cmd(
    dataset: str = typer.Option("igakuqa", "--dataset", "-d"),
    data_dir: Path = typer.Option(..., "--data-dir"),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (resumed if it exists)"),
    modes: str = typer.Option(
        "norag,rag", "--modes", help="norag, rag, rag-dict, rag-corpus, rag-dense, rag-bm25, rag-kN"
    ),
    index: str | None = typer.Option(None, "--index", help="Index name or path (RAG modes)"),
    engine: str = typer.Option(
        "server", "--engine", help="server (OpenAI-compatible) | vllm (in-process batches)"
    ),
    llm_base_url: str | None = typer.Option(None, "--llm-base-url"),
    model: str | None = typer.Option(None, "--model"),
    subset: str = typer.Option("all", "--subset"),
    concurrency: int = typer.Option(
        16, "--concurrency", "-c", help="Requests in flight (vllm engine: batch size)"
    ),
    max_tokens: int | None = typer.Option(None, "--max-tokens"),
    temperature: float | None = typer.Option(None, "--temperature"),
    seed: int | None = typer.Option(None, "--seed"),
    top_k: int | None = typer.Option(None, "--k", help="Chunks retrieved per question"),
    reasoning: bool = typer.Option(
        False, "--reasoning", help="Free-text reasoning before the constrained answer"
    ),
    limit: int | None = typer.Option(None, "--limit", help="First N questions only"),
    ids: str | None = typer.Option(None, "--ids", help="Comma-separated problem ids"),
    leakage_guard: bool = typer.Option(True, "--leakage-guard/--no-leakage-guard"),
    exclude_leaked: bool = typer.Option(
        True, "--exclude-leaked/--keep-leaked", help="Drop chunks holding exam items from retrieval"
    ),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Answer every question in each mode; predictions stream to OUT/predictions/{mode}.jsonl."""
    from ragmed_eval.runs import RunConfig, RunConfigError, run

    cfg = RunConfig(
        dataset=dataset,
        data_dir=str(data_dir.resolve()),
        subset=subset,
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        index=index,
        engine=engine,
        llm_base_url=llm_base_url,
        model=model,
        concurrency=concurrency,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        top_k=top_k,
        reasoning=reasoning,
        limit=limit,
        ids=[i.strip() for i in ids.split(",")] if ids else None,
        leakage_guard=leakage_guard,
        exclude_leaked=exclude_leaked,
    )
    try:
        summary = run(cfg, out, progress=not no_progress)
    except (DatasetError, DatasetNotFound, FileNotFoundError, ValueError, KeyError, RunConfigError) as e:
        _fail(str(e))
        return
    lk = summary.get("leakage")
    if lk:
        console.print(
            f"leakage guard: {lk['verdict']} ({len(lk['contaminated_questions'])} items, "
            f"{len(lk['contaminated_node_ids'])} chunks{' excluded' if lk['excluded'] else ''})"
        )
    for m in summary["modes"]:
        console.print(
            f"{m['mode']}: answered {m['answered']}, already done {m['skipped_done']}, "
            f"errors {m['errors']}, {m['wall_s']:.1f}s"
        )
    typer.echo(json.dumps(summary, ensure_ascii=False))


@app.command("compare")
def compare_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory"),
    baseline: str = typer.Option("norag", "--baseline"),
    normalized: bool = typer.Option(False, "--normalized", help="UNOFFICIAL lenient matching"),
    pass_threshold: list[str] = typer.Option(None, "--pass-threshold"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """RAG vs no-RAG: accuracy/score with 95 % CIs, paired delta, exact McNemar, flips, pass/fail."""
    from ragmed_eval.report import build_report, render_markdown

    try:
        r = build_report(
            run_dir,
            baseline=baseline,
            normalized=normalized,
            thresholds=parse_thresholds(pass_threshold),
            plots=False,
        )
    except (FileNotFoundError, ValueError, DatasetError) as e:
        _fail(str(e))
        return
    if as_json:
        sys.stdout.write(dumps({k: r[k] for k in ("modes", "comparisons", "leakage", "baseline")}) + "\n")
    else:
        sys.stdout.write(render_markdown(r))


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory"),
    fmt: str = typer.Option("md", "--format", "-f", help="md | json | html"),
    baseline: str = typer.Option("norag", "--baseline"),
    normalized: bool = typer.Option(False, "--normalized"),
    pass_threshold: list[str] = typer.Option(None, "--pass-threshold"),
) -> None:
    """Write report.{md,json,html} and plots/*.png into the run directory; print the path."""
    from ragmed_eval.report import write_report

    try:
        path = write_report(
            run_dir,
            fmt,
            baseline=baseline,
            normalized=normalized,
            thresholds=parse_thresholds(pass_threshold),
        )
    except (FileNotFoundError, ValueError, DatasetError) as e:
        _fail(str(e))
        return
    typer.echo(str(path))


def main() -> None:  # pragma: no cover - convenience entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
