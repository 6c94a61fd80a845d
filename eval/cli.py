"""`ragmed eval …`: a typer sub-app the main CLI mounts (the core never imports this package)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from ragmed_eval.datasets import DatasetNotFound, list_datasets, load_dataset
from ragmed_eval.schema import DatasetError
from ragmed_eval.scoring import dumps, load_predictions, parse_thresholds, score
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Exam evaluation: scoring, RAG vs no-RAG runs, comparison, reports.", no_args_is_help=True
)
console = Console(stderr=True)


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


def main() -> None:  # pragma: no cover - convenience entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
