"""Official scoring on fixtures laid out like IgakuQA (invented rows), expected figures by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragmed_eval.cli import app
from ragmed_eval.datasets import load_dataset
from ragmed_eval.scoring import (
    load_predictions,
    normalize_prediction,
    official_igakuqa_correct,
    score,
)
from typer.testing import CliRunner

FIX = Path(__file__).parent / "fixtures" / "exams"
IGAKU = FIX / "igakuqa"


@pytest.fixture(scope="module")
def questions():
    return load_dataset("igakuqa", IGAKU)


def test_official_rules_line_by_line():
    assert official_igakuqa_correct("112A2", "c,a", ["a", "c"])
    assert not official_igakuqa_correct("112A2", "a, c", ["a", "c"])  # no whitespace stripping
    assert not official_igakuqa_correct("112A2", "a,c ", ["a", "c"])
    assert official_igakuqa_correct("116A71", "", ["b"])  # correct for everyone
    assert official_igakuqa_correct("116A71", "z", ["b"])
    assert official_igakuqa_correct("112B30", "a", ["a or d"])
    assert official_igakuqa_correct("112B30", "d", ["a or d"])
    assert not official_igakuqa_correct("112B30", "a,d", ["a or d"])
    assert not official_igakuqa_correct("112B30", "b", ["a or d"])
    assert official_igakuqa_correct("112A5", "26", ["26"])
    assert not official_igakuqa_correct("112A5", "26.0", ["26"])
    # A bare-string answer is compared literally, as evaluate_main.py does (sorted characters).
    assert not official_igakuqa_correct("X1", "7.20", "7.20")


def test_gpt4_fixture_figures(questions):
    preds = load_predictions(IGAKU / "baseline_results", "gpt4")
    d = score(questions, preds).to_dict()
    assert d["official"] is True
    assert d["overall"] == {"correct": 8, "n": 13, "accuracy": 8 / 13, "score": 9, "total": 16}
    # 2018: 112A3 (0 points) stays in the denominator; "a, c" is wrong; 112B30 "d" scores 3.
    assert d["by_year"]["2018"] == {"correct": 5, "n": 9, "accuracy": 5 / 9, "score": 6, "total": 12}
    assert d["by_year"]["2022"] == {"correct": 3, "n": 4, "accuracy": 0.75, "score": 3, "total": 4}
    assert d["by_section"]["必修"] == {"correct": 1, "n": 4, "accuracy": 0.25, "score": 3, "total": 8}
    v = d["pass"]["2018"]
    assert v["kinki"]["count"] == 2 and v["kinki"]["passed"]
    assert v["required"]["rate"] == 3 / 8 and not v["required"]["passed"]
    assert v["general_clinical"]["rate"] == 0.75 and v["general_clinical"]["passed"]
    assert v["passed"] is False
    assert d["pass"]["2022"]["passed"] is None  # no 必修 block in the 2022 fixture


def test_chatgpt_fixture_and_normalized(questions):
    preds = load_predictions(IGAKU / "baseline_results", "chatgpt")
    off = score(questions, preds).to_dict()
    assert (off["overall"]["correct"], off["overall"]["score"]) == (6, 8)
    norm = score(questions, preds, normalized=True).to_dict()
    assert norm["official"] is False and "UNOFFICIAL" in norm["scoring"]
    assert (norm["overall"]["correct"], norm["overall"]["score"]) == (7, 9)  # "26 " accepted


def test_text_only_subset_and_threshold(questions):
    preds = load_predictions(IGAKU / "baseline_results", "gpt4")
    qs = [q for q in questions if not q.has_image]
    d = score(qs, preds, subset="text_only", thresholds={"2018": 0.8}).to_dict()
    assert d["by_year"]["2018"] == {"correct": 3, "n": 7, "accuracy": 3 / 7, "score": 2, "total": 8}
    assert d["pass"]["2018"]["general_clinical"]["threshold"] == 0.8
    assert d["pass"]["2018"]["partial"] is True


def test_missing_predictions_count_wrong(questions):
    d = score(questions, {"112A1": "b"}).to_dict()
    assert d["overall"]["correct"] == 1  # a missing line is wrong, even for 116A71
    assert len(d["missing"]) == 12


def test_normalize_prediction():
    assert normalize_prediction("a, c") == ["a", "c"]
    assert normalize_prediction("ＣＡ") == ["a", "c"]
    assert normalize_prediction("[e, c]") == ["c", "e"]
    assert normalize_prediction(" 7.20 ", "numeric") == ["7.20"]


def test_igakuqa119_grading():
    qs = load_dataset("igakuqa119", FIX / "igakuqa119")
    assert {q.id: q.points for q in qs} == {"119A1": 1, "119A2": 1, "119A3": 1, "119E28": 3, "119E30": 3}
    d = score(qs, load_predictions(FIX / "igakuqa119" / "predictions.jsonl")).to_dict()
    assert d["scoring"].startswith("official IgakuQA119")
    assert d["overall"] == {"correct": 4, "n": 5, "accuracy": 0.8, "score": 6, "total": 9}


def test_cli_score_json():
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--dataset",
            "igakuqa",
            "--data-dir",
            str(IGAKU),
            "--predictions",
            str(IGAKU / "baseline_results"),
            "--system",
            "gpt4",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["by_year"]["2018"]["correct"] == 5 and d["overall"]["total"] == 16
    res = CliRunner().invoke(
        app,
        [
            "score",
            "--dataset",
            "igakuqa",
            "--data-dir",
            str(IGAKU),
            "--predictions",
            str(IGAKU / "baseline_results"),
            "--system",
            "gpt4",
            "--json",
            "--subset",
            "text_only",
            "--normalized",
        ],
    )
    d = json.loads(res.stdout)
    assert d["subset"] == "text_only" and d["official"] is False and d["overall"]["n"] == 11


def test_cli_score_bad_prediction_line(tmp_path):
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"problem_id": "112A1", "prediction": "b"}\n{"problem_id": "112A2"}\n', encoding="utf-8")
    res = CliRunner().invoke(
        app, ["score", "--dataset", "igakuqa", "--data-dir", str(IGAKU), "--predictions", str(bad)]
    )
    assert res.exit_code == 2
    assert "preds.jsonl:2" in res.output
