"""Comparison statistics and the report schema, on a run dir built from fixture predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ragmed_eval.cli import app
from ragmed_eval.compare import bootstrap_ci, mcnemar_exact
from ragmed_eval.report import SCHEMA, load_report
from ragmed_eval.runs import RunConfig
from ragmed_eval.scoring import load_predictions
from typer.testing import CliRunner

IGAKU = Path(__file__).parent / "fixtures" / "exams" / "igakuqa"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run: 'norag' = the chatgpt fixture baseline, 'rag' = gpt4, with cited sources."""
    d = tmp_path / "run"
    (d / "predictions").mkdir(parents=True)
    cfg = RunConfig(dataset="igakuqa", data_dir=str(IGAKU), modes=["norag", "rag"], model="fixture-model")
    (d / "config.json").write_text(cfg.model_dump_json(), encoding="utf-8")
    for mode, system in (("norag", "chatgpt"), ("rag", "gpt4")):
        with open(d / "predictions" / f"{mode}.jsonl", "w", encoding="utf-8") as fh:
            for pid, pred in load_predictions(IGAKU / "baseline_results", system).items():
                cites = [{"n": 1, "node_id": f"chunk-{pid}", "source": "産科学.txt", "title": "前置胎盤"}]
                rec = {
                    "problem_id": pid,
                    "prediction": pred,
                    "mode": mode,
                    "citations": cites if mode == "rag" else [],
                }
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return d


def test_mcnemar_exact_matches_binomial():
    base = np.array([True] * 10 + [False] * 10)
    mode = np.array([True] * 2 + [False] * 8 + [True] * 9 + [False] * 1)
    r = mcnemar_exact(base, mode)
    assert (r["b_improved"], r["c_regressed"]) == (9, 8)
    assert r["p_value"] == pytest.approx(1.0)
    r = mcnemar_exact(np.zeros(12, bool), np.ones(12, bool))
    assert r["p_value"] == pytest.approx(2 * 0.5**12)


def test_bootstrap_ci_brackets_mean():
    v = np.array([1.0] * 60 + [0.0] * 40)
    lo, hi = bootstrap_ci(v, n_boot=2000)
    assert lo < 0.6 < hi and hi - lo < 0.25


def test_report_schema_flips_and_plots(run_dir):
    r = load_report(run_dir)
    assert r["schema"] == SCHEMA and r["baseline"] == "norag"
    assert r["modes"]["rag"]["overall"]["correct"] == 8 and r["modes"]["norag"]["overall"]["correct"] == 6
    lo, hi = r["modes"]["rag"]["overall"]["accuracy_ci"]
    assert lo <= 8 / 13 <= hi
    c = r["comparisons"][0]
    assert c["mode"] == "rag" and c["n_paired"] == 13
    assert c["mcnemar"]["b_improved"] - c["mcnemar"]["c_regressed"] == 2
    improved = {f["id"]: f for f in c["flips"]["improved"]}
    assert "112B30" in improved and improved["112B30"]["sources"][0]["source"] == "産科学.txt"
    assert "112A2" in {f["id"] for f in c["flips"]["regressed"]}  # "a, c" is wrong officially
    assert {row["name"] for row in c["by_section"]} == {"必修", "一般・臨床"}
    assert r["modes"]["rag"]["pass"]["2018"]["passed"] is False
    for rel in r["plots"].values():
        png = run_dir / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    again = load_report(run_dir)  # cached report.json is reused
    assert again["created"] == r["created"]


def test_cli_compare_and_report_formats(run_dir):
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["comparisons"][0]["mode"] == "rag"
    for fmt, name in (("md", "report.md"), ("html", "report.html"), ("json", "report.json")):
        res = runner.invoke(app, ["report", str(run_dir), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert (run_dir / name).exists()
    assert "exact McNemar" in (run_dir / "report.md").read_text(encoding="utf-8")
    assert "<table>" in (run_dir / "report.html").read_text(encoding="utf-8")


def test_cli_compare_not_a_run(tmp_path):
    res = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
