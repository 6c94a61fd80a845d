"""Official scoring on fixtures laid out like each repository (invented rows), figures worked out by hand
from each repository's own script: IgakuQA's and DenQA's evaluate_main.py, IgakuQA119's grading_logic.py
+ stats_utils.py (its leaderboard), and the published pass lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ragmed_eval import igakuqa119
from ragmed_eval.cli import app
from ragmed_eval.datasets import load_dataset
from ragmed_eval.scoring import (
    denqa_correct,
    load_prediction_set,
    load_predictions,
    normalize_prediction,
    official_igakuqa_correct,
    pass_lines,
    score,
)
from typer.testing import CliRunner

from ragmed.errors import DataFormatError, NotFoundError

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


def test_denqa_rule_line_by_line():
    assert denqa_correct("116A2", "b, c", ["b", "c"])  # parts are stripped
    assert denqa_correct("116A2", "c、b", ["b", "c"])
    assert denqa_correct("116A2", "ｂ，ｃ", ["b", "c"])  # NFKC, full-width comma
    assert not denqa_correct("116A2", "b c", ["b", "c"])  # spaces inside a part are not split
    assert not denqa_correct("116A2", "bc", ["b", "c"])
    assert not denqa_correct("117A87", "NA", "NA")  # sorted("NA") is ['A','N']: an NA gold never matches "NA"
    assert not denqa_correct("117A87", "a,b", "NA")
    assert not denqa_correct("117A87", "A,N", "NA")  # the script would credit these: "never credited"
    assert not denqa_correct("117A87", "N, A", "NA")
    assert not denqa_correct("117A87", "NA", ["NA"])
    assert denqa_correct("116A71", "", ["d"])  # the script's copied IgakuQA special case applies to DenQA ids


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
    assert v["kinki"]["count"] == 2 and v["kinki"]["passed"] and v["kinki"]["limit"] == 3
    # The 112th exam's published lines (必修 160/200, 一般・臨床 208/299) as shares: the fixture's totals differ.
    req, gen = v["required"], v["general_clinical"]
    assert (req["line"], req["line_total"], gen["line"], gen["line_total"]) == (160, 200, 208, 299)
    assert req["rate"] == 3 / 8 and not req["passed"] and req["applied"].startswith("share")
    assert gen["rate"] == 0.75 and gen["passed"] and gen["threshold"] == pytest.approx(208 / 299)
    assert v["passed"] is False and v["source"]["announcement"].startswith("https://www.mhlw.go.jp/")
    assert d["pass"]["2022"]["passed"] is None  # no 必修 block in the 2022 fixture


def test_chatgpt_fixture_and_normalized(questions):
    preds = load_predictions(IGAKU / "baseline_results", "chatgpt")
    off = score(questions, preds).to_dict()
    assert (off["overall"]["correct"], off["overall"]["score"]) == (6, 8)
    norm = score(questions, preds, normalized=True).to_dict()
    assert norm["official"] is False and "UNOFFICIAL" in norm["scoring"]
    assert (norm["overall"]["correct"], norm["overall"]["score"]) == (7, 9)  # "26 " accepted


def test_translate_chatgpt_en_baseline_is_reproduced():
    """IgakuQA's English baseline, scored by the same script against the same gold."""
    en = load_dataset("igakuqa", IGAKU, lang="en")
    d = score(en, load_predictions(IGAKU / "baseline_results", "translate_chatgpt-en")).to_dict(items=True)
    # right: 112A1 A2 A4 B1 B30("a") B31 E1 116A71(all) A72 A73; wrong: 112A3, 112A5 "25", 116A74 "a, b, e"
    assert d["overall"] == {"correct": 10, "n": 13, "accuracy": 10 / 13, "score": 14, "total": 16}
    assert {i["id"] for i in d["items"] if not i["correct"]} == {"112A3", "112A5", "116A74"}
    assert d["scoring"].startswith("official IgakuQA")


def test_published_pass_lines_applied_with_exam_points():
    lines = pass_lines()
    assert set(lines["medical"]) == {112, 113, 114, 115, 116, 119}
    assert lines["medical"][113]["general_clinical"] == {"line": 209, "total": 296}
    assert lines["medical"][119]["required"] == {"line": 160, "total": 200}
    assert set(lines["dental"]) == {116, 117} and lines["dental"][117]["area_b"] == {
        "line": 254,
        "total": 379,
    }
    for exam in lines.values():
        for entry in exam.values():
            assert (
                entry["sources"]
                and entry["verified"]
                and entry["announcement"].startswith("https://www.mhlw")
            )
    # A full 119th exam built from the real point rule: 必修 B/E (25 × 1 + 25 × 3 each = 200 points),
    # 一般・臨床 A/C/D/F (300 questions, 1 point each); the published lines apply in points.
    from ragmed_eval.schema import Question

    qs = []
    for block, n in (("A", 75), ("B", 50), ("C", 75), ("D", 75), ("E", 50), ("F", 75)):
        for i in range(1, n + 1):
            pid = f"119{block}{i}"
            qs.append(
                Question(
                    id=pid,
                    dataset="igakuqa119",
                    text="架空",
                    choices=["甲", "乙"],
                    gold=["a"],
                    answer_raw="a",
                    points=igakuqa119.points_of(pid),
                    section="必修" if block in "BE" else "一般・臨床",
                    year=2025,
                    block=block,
                    exam="medical",
                    exam_number=119,
                )
            )
    assert sum(q.points for q in qs) == 500
    # 必修: miss 13 three-point items (200 - 39 = 161 ≥ 160); 一般・臨床: miss 80 (220 < 221).
    wrong = (
        {f"119B{i}" for i in range(26, 39)}
        | {f"119A{i}" for i in range(1, 76)}
        | {f"119C{i}" for i in range(1, 6)}
    )
    preds = {q.id: ("b" if q.id in wrong else "a") for q in qs}
    v = score(qs, preds).to_dict()["pass"]["2025"]
    assert (v["required"]["score"], v["required"]["total"], v["required"]["applied"]) == (
        161,
        200,
        "published points",
    )
    assert v["required"]["passed"] and (v["general_clinical"]["score"], v["general_clinical"]["passed"]) == (
        220,
        False,
    )
    assert v["passed"] is False and not v["partial"]
    preds["119C1"] = "a"  # 221 ≥ 221
    assert score(qs, preds).to_dict()["pass"]["2025"]["passed"] is True


def test_denqa_perfect_answers_written_loosely():
    """Answers a model writes as "b, c", "e、a", "ａ": the repository's script credits all but the NA items."""
    qs = load_dataset("denqa", FIX / "medllm")
    pset = load_prediction_set(FIX / "medllm" / "output" / "model-z" / "ja" / "DenQA" / "denqa_pred.jsonl")
    d = score(qs, pset.predictions).to_dict(items=True)
    assert d["scoring"].startswith("official DenQA")
    assert {i["id"] for i in d["items"] if not i["correct"]} == {"116A5", "117A87"}  # the two "NA" golds
    assert d["overall"]["correct"] == 7 and d["by_year"]["2023"]["n"] == 6 and d["by_year"]["2024"]["n"] == 3
    v = d["pass"]["2023"]
    assert (
        v["passed"] is None and v["exam"] == "dental" and v["lines"]["required"] == {"line": 64, "total": 80}
    )
    # The IgakuQA rule would not strip: the reason the datasets keep their own scorers.
    assert not official_igakuqa_correct("116A2", "b, c", ["b", "c"])


def test_igakuqa119_grading_and_points():
    qs = load_dataset("igakuqa119", FIX / "igakuqa119")
    assert {q.id: q.points for q in qs}["119E28"] == 3 and sum(q.points for q in qs) == 18
    d = score(qs, load_predictions(FIX / "igakuqa119" / "predictions.jsonl")).to_dict(items=True)
    assert d["scoring"].startswith("official IgakuQA119")
    wrong = {i["id"] for i in d["items"] if not i["correct"]}
    assert wrong == {"119E30"}  # "B" and "[e, c]" and "E" normalize; 119E28 "c" is accepted; "" is wrong
    assert d["overall"]["score"] == 15


def test_igakuqa119_answer_files_reproduce_the_leaderboard():
    """The repository's own answer files, graded as its grading_logic/stats_utils do (duplicates, skipped
    rows, numbers as JSON numbers, "d, e", "b (100%)", placeholders), match results/leaderboard.json."""
    root = FIX / "igakuqa119"
    pset = load_prediction_set(root / "answers", "model-x")
    assert len(pset.files) == 3 and pset.answer_files is not None
    lb = igakuqa119.leaderboard(root, pset.answer_files, "model-x")
    assert lb["matches_published"] is True and lb["published"]["entry"] == "Model-X"
    f = lb["figures"]
    assert (f["overall_score"], f["overall_possible_score"], f["overall_correct"], f["overall_total"]) == (
        11.0,
        18.0,
        7,
        10,
    )
    assert (
        f["no_image_score"],
        f["no_image_possible_score"],
        f["no_image_correct"],
        f["no_image_total"],
    ) == (
        9.0,
        16.0,
        5,
        8,
    )
    # model-y: a row with no answers and one without has_image are skipped (not counted), a question the
    # gold lacks is not graded, a null answer is wrong.
    y = load_prediction_set(root / "answers" / "model-y")
    ly = igakuqa119.leaderboard(root, y.answer_files, None)
    assert ly["skipped"] == ["119C19", "119E28"] and "published" not in ly
    assert (
        ly["figures"]["overall_correct"],
        ly["figures"]["overall_total"],
        ly["figures"]["overall_score"],
    ) == (5, 8, 9.0)
    assert ly["figures"]["no_image_total"] == 6
    with pytest.raises(DataFormatError, match="several models"):
        load_prediction_set(root / "answers")


def test_cli_score_igakuqa119_answer_files():
    args = ["score", "--dataset", "igakuqa119", "--data-dir", str(FIX / "igakuqa119"), "--predictions"]
    res = CliRunner().invoke(app, [*args, str(FIX / "igakuqa119" / "answers" / "model-x"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["leaderboard"]["matches_published"] is True
    assert d["leaderboard"]["figures"]["overall_score"] == d["overall"]["score"] == 11
    res = CliRunner().invoke(app, [*args, str(FIX / "igakuqa119" / "answers" / "model-x")])
    assert res.exit_code == 0 and "matches = True" in res.stdout


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


def test_cli_score_json():
    args = ["score", "--dataset", "igakuqa", "--data-dir", str(IGAKU), "--predictions"]
    res = CliRunner().invoke(app, [*args, str(IGAKU / "baseline_results"), "--system", "gpt4", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["by_year"]["2018"]["correct"] == 5 and d["overall"]["total"] == 16
    res = CliRunner().invoke(
        app,
        [
            *args,
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
    res = CliRunner().invoke(
        app,
        [
            *args,
            str(IGAKU / "baseline_results"),
            "--system",
            "translate_chatgpt-en",
            "--lang",
            "en",
            "--json",
        ],
    )
    d = json.loads(res.stdout)
    assert d["lang"] == "en" and d["overall"]["correct"] == 10


def test_cli_score_bad_prediction_line(tmp_path):
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"problem_id": "112A1", "prediction": "b"}\n{"problem_id": "112A2"}\n', encoding="utf-8")
    res = CliRunner().invoke(
        app, ["score", "--dataset", "igakuqa", "--data-dir", str(IGAKU), "--predictions", str(bad)]
    )
    assert res.exit_code == 2
    assert "preds.jsonl:2" in res.output
    res = CliRunner().invoke(
        app,
        ["score", "--dataset", "igakuqa", "--data-dir", str(IGAKU), "--predictions", str(tmp_path / "no")],
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    with pytest.raises(NotFoundError):
        load_predictions(tmp_path / "no")
