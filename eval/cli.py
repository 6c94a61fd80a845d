"""`ragmed eval …`: a typer sub-app the main CLI mounts (the core never imports this package).

Only ``RagmedError`` is caught (message + its exit code from ``ragmed.errors``); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from ragmed_eval.datasets import list_datasets, load_dataset, resolve, summarize
from ragmed_eval.scoring import dumps, load_prediction_set, parse_thresholds, score
from rich.console import Console
from rich.table import Table

from ragmed.errors import InputError, RagmedError, debug, exit_code

app = typer.Typer(
    help="Exam evaluation: scoring, RAG vs no-RAG runs, prompt robustness, comparison, reports.",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """A RagmedError becomes its message and exit code; every other exception propagates."""
    try:
        yield
    except RagmedError as e:
        if debug():
            raise
        console.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
        raise typer.Exit(exit_code(e)) from None


def _table(title: str, rows: dict[str, dict], key: str) -> Table:
    t = Table(title=title)
    for col in (key, "correct", "n", "accuracy", "score", "total"):
        t.add_column(col, justify="right" if col != key else "left")
    for k, v in rows.items():
        t.add_row(k, str(v["correct"]), str(v["n"]), f"{v['accuracy']:.3f}", str(v["score"]), str(v["total"]))
    return t


@app.command("datasets")
def datasets_cmd(
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Load this dataset and report on it"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Its local files"),
    lang: str | None = typer.Option(None, "--lang", help="ja | en (IgakuQA's English translations)"),
    subset: str = typer.Option(
        "all", "--subset", help="all | text_only | image | harness (text-only, 5 choices)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    items: bool = typer.Option(False, "--items", help="With --json and --dataset: every question"),
) -> None:
    """List the registered datasets; with --dataset/--data-dir, load one and report every repair made."""
    with _user_errors():
        if dataset is None:
            specs = list_datasets()
            if as_json:
                rows = [
                    {
                        k: getattr(s, k)
                        for k in ("name", "title", "description", "source_url", "license", "rule", "layout")
                    }
                    | {"options": list(s.options), "langs": list(s.langs)}
                    for s in specs
                ]
                sys.stdout.write(dumps({"datasets": rows}) + "\n")
                return
            for s in specs:
                opts = f"\n{'':12s} options: {', '.join(s.options)}" if s.options else ""
                typer.echo(
                    f"{s.name:12s} {s.description}\n{'':12s} layout: {s.layout}{opts}\n"
                    f"{'':12s} source: {s.source_url} · licence: {s.license}\n{'':12s} rule: {s.rule}"
                )
            return
        if data_dir is None:
            raise InputError("--dataset needs --data-dir (the dataset's local files)")
        qs = load_dataset(dataset, data_dir, subset=subset, lang=lang)
        info = {"dataset": dataset, "data_dir": str(data_dir), "lang": lang or qs[0].lang, **summarize(qs)}
        if items:
            info["items"] = [q.model_dump() for q in qs]
        if as_json:
            sys.stdout.write(dumps(info) + "\n")
            return
        typer.echo(f"{dataset}: {info['n']} questions, {info['points']} points, kinds {info['kinds']}")
        typer.echo(
            f"  with an image: {info['with_image']}; without a valid answer: {len(info['unanswerable'])}"
        )
        if info["repairs"]:
            typer.echo(f"  repaired while loading ({len(info['repairs'])}):")
            for r in info["repairs"]:
                typer.echo(f"    {r}")


@app.command("score")
def score_cmd(
    predictions: Path = typer.Option(
        ..., "--predictions", "-p", help="Prediction file, baseline_results/ folder, or IgakuQA119 answers/"
    ),
    dataset: str = typer.Option("igakuqa", "--dataset", "-d"),
    data_dir: Path = typer.Option(..., "--data-dir", help="Dataset root (e.g. a clone of IgakuQA)"),
    system: str | None = typer.Option(
        None, "--system", help="Baseline/model name: files NNN-X_{system}.jsonl or 119X_{system}.json"
    ),
    subset: str = typer.Option(
        "all", "--subset", help="all | text_only | image | harness (text-only, 5 choices)"
    ),
    lang: str | None = typer.Option(None, "--lang", help="ja | en (IgakuQA's English translations)"),
    normalized: bool = typer.Option(False, "--normalized", help="UNOFFICIAL lenient matching"),
    pass_threshold: list[str] = typer.Option(
        None, "--pass-threshold", help="YEAR=0.70: replace the year's published 一般・臨床 line by a share"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    items: bool = typer.Option(False, "--items", help="With --json: include per-question results"),
) -> None:
    """Score prediction files with the dataset's official rules (its own repository's script)."""
    with _user_errors():
        qs = load_dataset(dataset, data_dir, subset=subset, lang=lang)
        pset = load_prediction_set(predictions, system)
        rep = score(
            qs,
            pset.predictions,
            normalized=normalized,
            subset=subset,
            thresholds=parse_thresholds(pass_threshold),
        )
        if pset.answer_files is not None:
            from ragmed_eval import igakuqa119

            if resolve(dataset)[0].name != "igakuqa119":
                raise InputError("IgakuQA119 answer files score against --dataset igakuqa119")
            name = system or (Path(pset.files[0]).stem.split("_", 1)[1] if pset.files else None)
            rep.extra["leaderboard"] = igakuqa119.leaderboard(data_dir, pset.answer_files, name)
    d = rep.to_dict(items=items)
    d["system"] = system
    d["lang"] = lang or (qs[0].lang if qs else None)
    if as_json:
        sys.stdout.write(dumps(d) + "\n")
        return
    out = Console()
    out.print(
        f"[bold]{dataset}[/bold] system={system} subset={subset} scoring: {d['scoring']}", highlight=False
    )
    o = d["overall"]
    out.print(f"overall: {o['correct']}/{o['n']} = {o['accuracy']:.4f}; score {o['score']}/{o['total']}")
    out.print(_table("by year", d["by_year"], "year"))
    out.print(_table("by section", d["by_section"], "section"))
    for y, v in d["pass"].items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[v["passed"]]
        if v["exam"] != "medical":
            out.print(f"{y} ({v['exam']} {v['exam_number']}): {verdict} — {v['reason']}", highlight=False)
            continue
        req, gen, kinki = v["required"], v["general_clinical"], v["kinki"]

        def line(part: dict) -> str:
            if part.get("line") is not None and part["applied"] == "published points":
                return f"{part['score']}/{part['total']} ≥ {part['line']}/{part['line_total']}"
            if part.get("threshold") is not None:
                return f"{part['rate']:.1%} ≥ {part['threshold']:.1%}"
            return f"{part['rate']:.1%} (no published line)"

        out.print(
            f"{y}: {verdict} (必修 {line(req)}: {req['passed']}; 一般・臨床 {line(gen)}: {gen['passed']}; "
            f"禁忌肢 {kinki['count']} ≤ {kinki['limit']}: {kinki['passed']})"
            + (" [partial exam]" if v["partial"] else ""),
            highlight=False,
        )
    if "leaderboard" in d:
        lb = d["leaderboard"]
        f = lb["figures"]
        out.print(
            f"IgakuQA119 leaderboard figures: score {f['overall_score']:.0f}/{f['overall_possible_score']:.0f}, "
            f"correct {f['overall_correct']}/{f['overall_total']}; no image {f['no_image_score']:.0f}/"
            f"{f['no_image_possible_score']:.0f}, {f['no_image_correct']}/{f['no_image_total']}",
            highlight=False,
        )
        if "published" in lb:
            out.print(
                f"results/leaderboard.json '{lb['published']['entry']}': matches = {lb['matches_published']}"
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
    lang: str | None = typer.Option(None, "--lang", help="ja | en (IgakuQA's English translations)"),
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
    prompts: str | None = typer.Option(
        None,
        "--prompts",
        help="Prompt templates to compare, comma-separated names (ragmed/prompts) or .yaml paths; the first "
        "is the main one",
    ),
    shuffle_choices: int = typer.Option(
        0, "--shuffle-choices", help="Extra seeded choice orders per question (gold remapped)"
    ),
    shuffle_seed: int = typer.Option(0, "--shuffle-seed", help="Seed of the choice orders"),
    shots: int = typer.Option(0, "--shots", help="Few-shot examples per prompt (from another year or split)"),
    shots_from: str | None = typer.Option(
        None,
        "--shots-from",
        help="Dataset[:split] the examples come from (default: the same dataset, other years)",
    ),
    shots_data_dir: Path | None = typer.Option(
        None, "--shots-data-dir", help="Its files (default: --data-dir)"
    ),
    limit: int | None = typer.Option(None, "--limit", help="First N questions only"),
    ids: str | None = typer.Option(None, "--ids", help="Comma-separated problem ids"),
    leakage_guard: bool = typer.Option(True, "--leakage-guard/--no-leakage-guard"),
    exclude_leaked: bool = typer.Option(
        True, "--exclude-leaked/--keep-leaked", help="Drop chunks holding exam items from retrieval"
    ),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Answer every question in each mode (and prompt/choice-order variant); predictions stream to
    OUT/predictions/{mode}.jsonl (variants: OUT/predictions/variants/)."""
    from ragmed_eval.runs import RunConfig, run

    cfg = RunConfig(
        dataset=dataset,
        data_dir=str(data_dir.resolve()),
        subset=subset,
        lang=lang,
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
        prompts=[p.strip() for p in prompts.split(",") if p.strip()] if prompts else [],
        shuffle_choices=shuffle_choices,
        shuffle_seed=shuffle_seed,
        shots=shots,
        shots_from=shots_from,
        shots_data_dir=str(shots_data_dir.resolve()) if shots_data_dir else None,
        limit=limit,
        ids=[i.strip() for i in ids.split(",")] if ids else None,
        leakage_guard=leakage_guard,
        exclude_leaked=exclude_leaked,
    )
    with _user_errors():
        summary = run(cfg, out, progress=not no_progress)
    lk = summary.get("leakage")
    if lk:
        console.print(
            f"leakage guard: {lk['verdict']} ({len(lk['contaminated_questions'])} items, "
            f"{len(lk['contaminated_node_ids'])} chunks{' excluded' if lk['excluded'] else ''})"
        )
    for m in summary["modes"] + summary["variants"]:
        label = m["mode"] if m.get("main", True) else f"{m['mode']} {m['template']} p{m['permutation']}"
        console.print(
            f"{label}: answered {m['answered']}, already done {m['skipped_done']}, "
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

    with _user_errors():
        r = build_report(
            run_dir,
            baseline=baseline,
            normalized=normalized,
            thresholds=parse_thresholds(pass_threshold),
            plots=False,
        )
    if as_json:
        keys = ("modes", "comparisons", "leakage", "baseline", "robustness")
        sys.stdout.write(dumps({k: r[k] for k in keys if k in r}) + "\n")
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

    with _user_errors():
        path = write_report(
            run_dir,
            fmt,
            baseline=baseline,
            normalized=normalized,
            thresholds=parse_thresholds(pass_threshold),
        )
    typer.echo(str(path))


@app.command("fetch")
def fetch_cmd(
    dataset: str = typer.Argument(..., help="A registered dataset name"),
    to: Path = typer.Option(..., "--to", help="Folder to download into (then pass it as --data-dir)"),
) -> None:
    """Download a dataset by name from its public source (needs the network; ragmed hosts are often offline)."""
    from ragmed_eval.fetch import fetch

    with _user_errors():
        path = fetch(dataset, to)
    typer.echo(str(path))


def main() -> None:  # pragma: no cover - convenience entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
