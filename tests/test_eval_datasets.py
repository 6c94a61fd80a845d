"""Loaders: every registered format, in its repository's layout, normalizes to Question; bad rows name
file and line; the odd corners of the real files (choice-less IgakuQA119 items with inline options,
OCR-merged options, DenQA's "NA" and "2 つ選べ", JMMLU's stray spaces) load as the source means them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ragmed_eval.cli import app
from ragmed_eval.datasets import list_datasets, load_dataset, registry, resolve
from ragmed_eval.igakuqa import parse_kinki
from ragmed_eval.igakuqa119 import parse_inline_options, repair_choices
from ragmed_eval.readers import n_select
from typer.testing import CliRunner

from ragmed.errors import DatasetError, DatasetNotFound, InputError, RagmedError
from ragmed.exam import choices_text, parse_choices

FIX = Path(__file__).parent / "fixtures" / "exams"


def test_igakuqa_fields():
    qs = {q.id: q for q in load_dataset("igakuqa", FIX / "igakuqa")}
    assert len(qs) == 13
    a2 = qs["112A2"]
    assert (a2.kind, a2.n_answers, a2.gold, a2.year, a2.block, a2.section, a2.exam_number) == (
        "multi",
        2,
        ["a", "c"],
        2018,
        "A",
        "一般・臨床",
        112,
    )
    assert qs["112A1"].kinki == ["d", "e"] and qs["112A1"].category == "呼吸器"
    assert qs["112A1"].human_accuracy == 81.0
    assert qs["112B31"].kinki == ["b"] and qs["112E1"].kinki == ["a"]
    assert qs["112B30"].alternatives == [["a"], ["d"]] and qs["112B30"].points == 3
    assert qs["112B30"].section == "必修" and qs["112B30"].has_image
    assert qs["112A4"].letters()[-1] == "f"
    assert qs["112A5"].kind == "numeric" and qs["112A5"].gold == ["26"]
    assert qs["112A3"].points == 0
    assert qs["116A73"].gold == ["h"] and qs["116A74"].n_answers == 3
    assert len(load_dataset("igakuqa", FIX / "igakuqa", subset="text_only")) == 11
    harness = load_dataset("igakuqa", FIX / "igakuqa", subset="harness")  # text-only, five choices
    assert {q.id for q in harness} == {
        "112A1",
        "112A2",
        "112A3",
        "112B1",
        "112B31",
        "112E1",
        "116A71",
        "116A74",
    }
    assert {q.year for q in load_dataset("igakuqa:2022", FIX / "igakuqa")} == {2022}


def test_igakuqa_english_translations():
    ja = {q.id: q for q in load_dataset("igakuqa", FIX / "igakuqa")}
    en = {q.id: q for q in load_dataset("igakuqa", FIX / "igakuqa", lang="en")}
    assert en.keys() == ja.keys()
    a1 = en["112A1"]
    assert a1.lang == "en" and a1.text.startswith("Fictitious case") and a1.choices[1] == "Acute bronchitis"
    assert a1.source and a1.source.endswith("112-A_translate.jsonl:1")
    # Gold, points, 禁忌肢 and metadata are the Japanese file's (IgakuQA's scorer reads them there);
    # the misspelt `asnwer` key of some rows is ignored.
    for pid in ja:
        assert (en[pid].gold, en[pid].points, en[pid].kinki, en[pid].alternatives) == (
            ja[pid].gold,
            ja[pid].points,
            ja[pid].kinki,
            ja[pid].alternatives,
        )
    assert en["112A5"].kind == "numeric" and en["112A5"].choices == []
    with pytest.raises(InputError, match="published in ja only"):
        load_dataset("jmmlu", FIX / "jmmlu", lang="en")


def test_igakuqa_translation_mismatch_is_named(tmp_path):
    root = tmp_path / "igakuqa"
    shutil.copytree(FIX / "igakuqa", root)
    f = root / "data" / "2018" / "112-E_translate.jsonl"
    row = json.loads(f.read_text(encoding="utf-8"))
    row["choices_en"] = row["choices_en"][:3]
    f.write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"112-E_translate.jsonl:1: 112E1: 3 English choices for 5"):
        load_dataset("igakuqa", root, lang="en")
    f.unlink()
    with pytest.raises(DatasetNotFound, match="112-E_translate.jsonl not found"):
        load_dataset("igakuqa", root, lang="en")


def test_igakuqa119_real_file_corners():
    qs = {q.id: q for q in load_dataset("igakuqa119", FIX / "igakuqa119")}
    assert len(qs) == 10
    assert qs["119A1"].choices[0] == "甲" and qs["119A1"].choice_letters == []
    assert qs["119A2"].gold == ["c", "e"] and qs["119A2"].has_image and qs["119A2"].kind == "multi"
    assert qs["119A3"].kind == "numeric" and qs["119A3"].gold == ["42"]
    # c and d merged by OCR ("c. 架空病丙d架空病丁"): split at the embedded d marker; gold c is c's text.
    a22 = qs["119A22"]
    assert a22.letters() == ["a", "b", "c", "d", "e"] and a22.choices[2:4] == ["架空病丙", "架空病丁"]
    assert a22.choice_text("c") == "架空病丙" and any("split at the d marker" in r for r in a22.repairs)
    # c lost (its marker read as "0"): the source's letters stay, d is still d, the gold d its text.
    c19 = qs["119C19"]
    assert c19.letters() == ["a", "b", "d", "e"] and c19.choice_text("d") == "架空の届出"
    assert c19.gold == ["d"] and c19.prompt_choices()[2] == "d. 架空の届出"
    assert any("no option c" in r for r in c19.repairs)
    # Full-width prefixes ("ａ．") are the same letters.
    assert qs["119C20"].choices[0] == "全角の一" and qs["119C20"].choice_letters == []
    # choices: [] with the options inline in the text; "Cフロセミド"-style upper-case markers too.
    e45, e48 = qs["119E45"], qs["119E48"]
    assert e45.choices[4] == "「周りに同じ症状の人はいますか」" and e45.gold == ["e"] and e45.kind == "single"
    assert e45.text.endswith("適切な問診はどれか。") and "a「" not in e45.text
    assert e48.choices == ["架空薬一", "架空薬二", "架空薬三", "架空薬四", "架空薬五"]
    assert {q.id: q.points for q in qs.values()}["119E45"] == 3 and qs["119A1"].points == 1
    assert qs["119E28"].alternatives == [["a"], ["c"]]


def test_inline_options_and_merge_repair_units():
    assert parse_inline_options("どれか。") is None
    assert parse_inline_options("a cat and b dog") is None  # English words are not option markers
    text, opts = parse_inline_options("設問。 ａ甲 ｂ乙 ｃ丙")
    assert (text, opts) == ("設問。", ["甲", "乙", "丙"])
    letters, texts, repairs = repair_choices("X", ["a", "b", "c", "d"], ["甲", "乙", "丙", "丁e戊"], ["b"])
    assert letters == ["a", "b", "c", "d"] and not repairs  # nothing missing, nothing split
    letters, texts, repairs = repair_choices("X", ["a", "b", "c", "d"], ["甲", "乙", "丙", "丁e戊"], ["e"])
    assert letters[-1] == "e" and texts[-2:] == ["丁", "戊"] and repairs
    with pytest.raises(ValueError, match="out of order"):
        repair_choices("X", ["a", "c", "b"], ["甲", "乙", "丙"], ["a"])


def test_denqa_reads_only_its_own_file_with_dental_years():
    # The repository root holds JJSIMQA (float points) and an IgakuQA copy: DenQA reads neither.
    qs = {q.id: q for q in load_dataset("denqa", FIX / "medllm")}
    assert len(qs) == 9 and all(q.dataset == "denqa" for q in qs.values())
    assert {q.id: q.year for q in qs.values()}["116A1"] == 2023 and qs["117A1"].year == 2024
    assert qs["116A1"].exam == "dental" and qs["116A1"].section is None
    # "2 つ選べ" (a space) and "２つ選べ" (full width) state the answer count; "すべて選べ" leaks no count.
    assert (qs["116A2"].kind, qs["116A2"].n_answers) == ("multi", 2)
    assert (qs["116A3"].kind, qs["116A3"].n_answers) == ("multi", 2)
    assert (qs["116A4"].kind, qs["116A4"].n_answers) == ("multi", None)
    assert (qs["117A1"].n_answers, qs["116A5"].unanswerable, qs["116A5"].n_answers) == (3, True, 2)
    assert qs["117A2"].choices[0] == "波 動"  # the source's spacing is kept
    assert [q.id for q in load_dataset("denqa:117", FIX / "medllm")] == ["117A1", "117A2", "117A87"]
    assert len(load_dataset("denqa", FIX / "medllm" / "data" / "ja" / "DenQA")) == 9
    with pytest.raises(DatasetNotFound, match="DenQA/denqa.jsonl not found"):
        load_dataset("denqa", FIX / "igakuqa")


def test_n_select_variants():
    assert n_select("正しいのはどれか。2つ選べ。") == 2
    assert n_select("正しいのはどれか。 2 つ選べ。") == 2
    assert n_select("正しいのはどれか。３つ選べ。") == 3
    assert n_select("正しいのはどれか。二つ選べ。") == 2
    assert n_select("正しいのはどれか。") is None


def test_jmmlu_all_medical_subjects_as_one_task_raw_text_kept(tmp_path: Path):
    qs = load_dataset(
        "jmmlu", FIX / "jmmlu"
    )  # the folder also holds college_biology.csv: not medical, not read
    assert len(qs) == 7 and {q.category for q in qs} == {s for s in resolve("jmmlu")[0].options}
    assert set(resolve("jmmlu")[0].options) == {
        "anatomy",
        "clinical_knowledge",
        "college_medicine",
        "medical_genetics",
        "professional_medicine",
    }
    five = tmp_path / "JMMLU"  # a checkout holding only the five medical subjects is whole
    five.mkdir()
    for f in (FIX / "jmmlu").glob("*.csv"):
        if f.stem != "college_biology":
            shutil.copy(f, five / f.name)
    assert len(load_dataset("jmmlu", tmp_path)) == 7
    assert all(q.dataset == "jmmlu" for q in qs)
    a1 = next(q for q in qs if q.id == "anatomy-1")
    assert a1.choices[1] == " 上腕三頭筋" and a1.choices[2] == "三角筋 "  # raw for scoring
    assert a1.prompt_choices()[1:3] == [" 上腕三頭筋", "三角筋 "]  # to the solver as written …
    shown = choices_text(parse_choices(a1.prompt_choices())).splitlines()
    assert shown[1:3] == ["b. 上腕三頭筋", "c. 三角筋"]  # … and trimmed in the prompt
    mono = next(q for q in qs if q.id == "medical_genetics-2")
    assert mono.choices[3] == "45,X" and mono.gold == ["d"]  # quoted commas stay inside one choice
    assert [q.gold for q in load_dataset("jmmlu:anatomy", FIX / "jmmlu")] == [["a"], ["b"]]


def test_harness_parity_tasks_in_their_published_formats():
    mq = load_dataset("medqa", FIX / "medqa")
    assert [q.gold for q in mq] == [["b"], ["a"]] and len(mq[0].choices) == 5 and mq[0].lang == "en"
    assert len(load_dataset("medqa:4_options", FIX / "medqa")[0].choices) == 4
    h = load_dataset("medqa", FIX / "harness")[0]  # answer given as the gold choice's text
    assert h.gold == ["b"] and h.choices[1] == "ECG"
    assert load_dataset("medqa", FIX / "medllm")[0].gold == ["c"]
    mc = load_dataset("medmcqa", FIX / "medmcqa")
    assert [q.gold for q in mc] == [["c"], ["a"]] and mc[0].category == "Anatomy" and mc[0].id == "11aa-22bb"
    with pytest.raises(DatasetError, match=r"test.json:1: no 'cop'.*use the dev split"):
        load_dataset("medmcqa:test", FIX / "medmcqa")
    assert load_dataset("medmcqa", FIX / "harness")[0].gold == ["c"]
    mm = load_dataset("mmlu", FIX / "mmlu")
    assert len(mm) == 12 and {q.category for q in mm} == set(resolve("mmlu")[0].options)
    assert next(q for q in mm if q.id == "anatomy-2").choices[1] == "q, r"
    assert load_dataset("mmlu", FIX / "medllm")[0].gold == ["d"]


def test_other_registered_datasets():
    jm = load_dataset("jmedbench:medmcqa_jp", FIX / "jmedbench")
    assert [q.gold for q in jm] == [["a"], ["b"]] and jm[0].dataset == "jmedbench:medmcqa_jp"
    assert len(load_dataset("jmedbench", FIX / "jmedbench")) == 2  # the test split only
    train = load_dataset("jmedbench_train:medmcqa_jp", FIX / "jmedbench")
    assert [q.gold for q in train] == [["b"], ["a"], ["a"]] and train[0].id == "mm-train-1"
    yq = {q.id: q for q in load_dataset("yakugakuqa", FIX / "yakugakuqa")}
    assert yq["109001"].gold == ["c"] and yq["109002"].gold == ["a", "d"] and yq["109003"].unanswerable
    assert yq["109003"].has_image
    g = load_dataset("mcq", FIX / "generic" / "mcq.jsonl")
    assert [q.gold for q in g] == [["b"], ["a", "d"]]
    c = load_dataset("mcq", FIX / "generic" / "mcq.csv")
    assert [(q.gold, q.points, len(q.choices)) for q in c] == [(["c"], 1, 3), (["a", "d"], 2, 4)]
    names = set(registry())
    assert {
        "igakuqa",
        "igakuqa119",
        "denqa",
        "jmmlu",
        "jmedbench",
        "mcq",
        "medqa",
        "medmcqa",
        "mmlu",
    } <= names
    assert all(s.source_url and s.license and s.rule for s in list_datasets())


def test_user_task_definition(tmp_path):
    data = tmp_path / "nmle"
    data.mkdir()
    (data / "nmle.json").write_text(
        json.dumps([{"q": "架空設問。", "opts": ["甲", "乙", "丙"], "ans": 2}], ensure_ascii=False),
        encoding="utf-8",
    )
    spec = tmp_path / "nmle.yaml"
    spec.write_text(
        "name: nmle\ntitle: t\ndescription: d\nsource_url: u\nlicense: l\nrule: r\nlayout: nmle.json\n"
        "formats:\n  - name: f\n    files: [nmle.json]\n    type: json\n    question: q\n    choices: opts\n"
        "    answer: ans\n    answer_encoding: index1\n",
        encoding="utf-8",
    )
    (q,) = load_dataset(str(spec), data)
    assert (q.dataset, q.gold, q.source) == ("nmle", ["b"], f"{data / 'nmle.json'}:1")


def test_kinki_encodings():
    assert parse_kinki("de", path=Path("m"), line=1) == ["d", "e"]
    assert parse_kinki("ｂ", path=Path("m"), line=1) == ["b"]
    assert parse_kinki(" e", path=Path("m"), line=1) == ["e"]
    assert parse_kinki(["Ｃ", "a"], path=Path("m"), line=1) == ["a", "c"]
    with pytest.raises(DatasetError, match="m:7"):
        parse_kinki("x?", path=Path("m"), line=7)


def _copy(tmp_path: Path, name: str = "igakuqa") -> Path:
    dst = tmp_path / name
    shutil.copytree(FIX / name, dst)
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


def test_igakuqa119_bad_gold_names_the_csv_line(tmp_path):
    root = _copy(tmp_path, "igakuqa119")
    csv = root / "results" / "correct_answers.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace("119A1,b", "119A1,b?"), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"correct_answers.csv:2: unknown answer encoding 'b\?' for 119A1"):
        load_dataset("igakuqa119", root)


def test_bad_jmmlu_answer(tmp_path):
    (tmp_path / "anatomy.csv").write_text("q,1,2,3,4,A\nq2,1,2,3,4,E\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"anatomy.csv:2: unknown answer encoding 'E'"):
        load_dataset("jmmlu:anatomy", tmp_path)
    with pytest.raises(DatasetNotFound, match="clinical_knowledge"):
        load_dataset("jmmlu", tmp_path)  # one task means every subject's file


def test_user_mistakes_are_ragmed_errors(tmp_path):
    with pytest.raises(DatasetNotFound, match="github.com/jungokasai/IgakuQA"):
        load_dataset("igakuqa", tmp_path / "nope")
    with pytest.raises(InputError, match="unknown dataset 'igaku'"):
        load_dataset("igaku", FIX / "igakuqa")
    with pytest.raises(InputError, match="unknown option 'nursing'"):
        load_dataset("jmmlu:nursing", FIX / "jmmlu")
    with pytest.raises(InputError, match="unknown subset"):
        load_dataset("igakuqa", FIX / "igakuqa", subset="images")


def test_cli_datasets_lists_and_checks():
    res = CliRunner().invoke(app, ["datasets", "--json"])
    assert res.exit_code == 0, res.output
    rows = {d["name"]: d for d in json.loads(res.stdout)["datasets"]}
    assert "CC BY-SA 4.0" in rows["jmmlu"]["license"] and "evaluate_main.py" in rows["denqa"]["rule"]
    res = CliRunner().invoke(
        app, ["datasets", "--dataset", "igakuqa119", "--data-dir", str(FIX / "igakuqa119"), "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["n"] == 10 and info["points"] == 18 and len(info["repairs"]) == 4
    res = CliRunner().invoke(app, ["datasets", "--dataset", "nope", "--data-dir", str(FIX)])
    assert res.exit_code == 2 and "unknown dataset" in res.output
    assert issubclass(InputError, RagmedError)


def test_fetch_by_name_or_a_clear_offline_error(tmp_path):
    """Online, `ragmed eval fetch` clones JMMLU; offline (this project's machines) it says where to get it."""
    to = tmp_path / "JMMLU"
    res = CliRunner().invoke(app, ["fetch", "jmmlu", "--to", str(to)])
    if res.exit_code == 0:
        assert len(load_dataset("jmmlu", to)) > 0
    else:
        assert res.exit_code == 2 and "github.com/nlp-waseda/JMMLU" in res.output and not to.exists()
    res = CliRunner().invoke(app, ["fetch", "mcq", "--to", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no public download" in res.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    res = CliRunner().invoke(app, ["fetch", "jmmlu", "--to", str(tmp_path / "full")])
    assert res.exit_code == 2 and "not empty" in res.output
