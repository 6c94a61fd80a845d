"""Loaders: every registered format normalizes to Question; bad rows name file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ragmed_eval.datasets import REGISTRY, DatasetNotFound, load_dataset, parse_kinki

from ragmed.errors import DatasetError

FIX = Path(__file__).parent / "fixtures" / "exams"


def test_igakuqa_fields():
    qs = {q.id: q for q in load_dataset("igakuqa", FIX / "igakuqa")}
    assert len(qs) == 13
    a2 = qs["112A2"]
    assert (a2.kind, a2.n_answers, a2.gold, a2.year, a2.block, a2.section) == (
        "multi",
        2,
        ["a", "c"],
        2018,
        "A",
        "一般・臨床",
    )
    assert (
        qs["112A1"].kinki == ["d", "e"]
        and qs["112A1"].category == "呼吸器"
        and qs["112A1"].human_accuracy == 81.0
    )
    assert qs["112B31"].kinki == ["b"] and qs["112E1"].kinki == ["a"]
    assert qs["112B30"].alternatives == [["a"], ["d"]] and qs["112B30"].points == 3
    assert qs["112B30"].section == "必修" and qs["112B30"].has_image
    assert qs["112A4"].letters()[-1] == "f"
    assert qs["112A5"].kind == "numeric" and qs["112A5"].gold == ["26"]
    assert qs["112A3"].points == 0
    assert qs["116A73"].gold == ["h"] and qs["116A74"].n_answers == 3
    assert len(load_dataset("igakuqa", FIX / "igakuqa", subset="text_only")) == 11
    assert {q.year for q in load_dataset("igakuqa:2022", FIX / "igakuqa")} == {2022}


def test_other_datasets():
    assert [q.gold for q in load_dataset("jmmlu:anatomy", FIX / "jmmlu")] == [["a"], ["b"]]
    assert len(load_dataset("jmmlu", FIX / "jmmlu")) == 3
    jm = load_dataset("jmedbench:medmcqa_jp", FIX / "jmedbench")
    assert [q.gold for q in jm] == [["a"], ["b"]] and jm[0].dataset == "jmedbench:medmcqa_jp"
    dq = {q.id: q for q in load_dataset("denqa", FIX / "denqa")}
    assert dq["116DA2"].unanswerable and dq["116DA1"].gold == ["a"]
    g = load_dataset("mcq", FIX / "generic" / "mcq.jsonl")
    assert [q.gold for q in g] == [["b"], ["a", "d"]]
    q119 = {q.id: q for q in load_dataset("igakuqa119", FIX / "igakuqa119")}
    assert q119["119A1"].choices[0] == "甲" and q119["119A2"].gold == ["c", "e"] and q119["119A2"].has_image
    assert q119["119A3"].kind == "numeric"
    assert {"igakuqa", "igakuqa119", "jmmlu", "jmedbench", "denqa", "mcq"} <= set(REGISTRY)


def test_kinki_encodings():
    assert parse_kinki("de", path=Path("m"), line=1) == ["d", "e"]
    assert parse_kinki("ｂ", path=Path("m"), line=1) == ["b"]
    assert parse_kinki(" e", path=Path("m"), line=1) == ["e"]
    assert parse_kinki(["Ｃ", "a"], path=Path("m"), line=1) == ["a", "c"]
    with pytest.raises(DatasetError, match="m:7"):
        parse_kinki("x?", path=Path("m"), line=7)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "igakuqa"
    shutil.copytree(FIX / "igakuqa", dst)
    return dst


def test_malformed_rows_name_file_and_line(tmp_path):
    root = _copy(tmp_path)
    f = root / "data" / "2018" / "112-E.jsonl"
    f.write_text(f.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"112-E.jsonl:2: invalid JSON"):
        load_dataset("igakuqa", root)


def test_unknown_answer_encoding_is_reported(tmp_path):
    root = _copy(tmp_path)
    f = root / "data" / "2018" / "112-E.jsonl"
    row = json.loads(f.read_text(encoding="utf-8"))
    row["answer"] = ["a and b"]
    f.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"112-E.jsonl:1: unknown answer encoding"):
        load_dataset("igakuqa", root)
    row["answer"] = ["z"]
    f.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"112-E.jsonl:1"):
        load_dataset("igakuqa", root)


def test_bad_jmmlu_answer(tmp_path):
    (tmp_path / "anatomy.csv").write_text("q,1,2,3,4,A\nq2,1,2,3,4,E\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"anatomy.csv:2: unknown answer encoding"):
        load_dataset("jmmlu:anatomy", tmp_path)


def test_missing_dir_offline_message(tmp_path):
    with pytest.raises(DatasetNotFound, match="github.com/jungokasai/IgakuQA"):
        load_dataset("igakuqa", tmp_path / "nope")
