"""IgakuQA (jungokasai/IgakuQA), its English translations, and DenQA (aistairc/medLLM_QA_benchmark).

Odd formats, hence Python: one jsonl per exam block with siblings for metadata (禁忌肢, category) and the
English translation; answers are lists of letters, the string "a or d", numeric strings, or DenQA's
"NA"; the number to choose is stated in the question ("2つ選べ", DenQA also "2 つ選べ").
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from ragmed_eval.readers import n_select, parse_points, parse_problem_id, read_jsonl, section_of
from ragmed_eval.schema import Question

from ragmed.errors import DatasetError, DatasetNotFound
from ragmed.schema import LETTERS, ExamKind

_OR_RE = re.compile(r"^([a-h])(?:\s+or\s+([a-h]))+$")
_ALL = re.compile(r"(?:すべて|全て)\s*選べ")


def parse_kinki(value: Any, *, path: Path, line: int) -> list[str]:
    """禁忌肢 cells are inconsistent ("de", "ｂ", " e", ["d"]): NFKC, strip, split into letters."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        s = unicodedata.normalize("NFKC", str(item)).strip().lower()
        s = re.sub(r"[\s,、・/]+", "", s)
        if not s:
            continue
        if not re.fullmatch(r"[a-h]+", s):
            raise DatasetError(path, line, f"unknown kinki encoding {item!r}")
        out.extend(s)
    return sorted(set(out))


def parse_answer(
    answer: Any, choices: list[str], *, path: Path, line: int, allow_na: bool = False
) -> tuple[list[str], list[list[str]], ExamKind, bool]:
    """Return (gold, alternatives, kind, unanswerable) for an IgakuQA-style ``answer`` value.

    Known encodings: a list of letters; a list holding "a or d"; numeric strings (a list element or a
    bare string) for questions without choices; "NA" (DenQA). Anything else is an error.
    """
    if allow_na and (answer == "NA" or answer == ["NA"]):
        return [], [], "single" if choices else "numeric", True
    if isinstance(answer, str):
        if choices:
            raise DatasetError(path, line, f"answer {answer!r} is a string but the question has choices")
        return [answer], [], "numeric", False
    if not isinstance(answer, list) or not answer:
        raise DatasetError(path, line, f"unknown answer encoding {answer!r}")
    if not choices:
        if not all(isinstance(a, str) and re.fullmatch(r"-?[0-9０-９.．]+", a) for a in answer):
            raise DatasetError(path, line, f"unknown numeric answer encoding {answer!r}")
        return [str(a) for a in answer], [], "numeric", False
    valid = set(LETTERS[: len(choices)])
    if len(answer) == 1 and isinstance(answer[0], str) and " or " in answer[0]:
        alts = re.findall(r"[a-h]", answer[0])
        if not _OR_RE.match(answer[0]) or not set(alts) <= valid:
            raise DatasetError(path, line, f"unknown answer encoding {answer!r}")
        return [], [[a] for a in alts], "single", False
    for a in answer:
        if not isinstance(a, str) or a not in valid:
            raise DatasetError(
                path, line, f"unknown answer encoding {answer!r} (letters a-{LETTERS[len(choices) - 1]})"
            )
    gold = sorted(answer)
    return gold, [], "multi" if len(gold) > 1 else "single", False


def _question(
    obj: dict[str, Any], *, path: Path, line: int, dataset: str, exam: str, allow_na: bool = False
) -> Question:
    for key in ("problem_id", "problem_text", "choices", "answer"):
        if key not in obj:
            raise DatasetError(path, line, f"missing field {key!r}")
    pid = str(obj["problem_id"])
    choices = obj["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DatasetError(path, line, "field 'choices' must be a list of strings")
    gold, alts, kind, na = parse_answer(obj["answer"], choices, path=path, line=line, allow_na=allow_na)
    number, year, block, _ = parse_problem_id(pid, exam)
    text = str(obj["problem_text"])
    n: int | None = None
    if kind != "numeric":
        stated = n_select(text)
        if stated is not None:
            n = stated
        elif _ALL.search(text):  # "すべて選べ": any number; the gold count must not leak into the prompt
            n, kind = None, "multi"
        else:
            n = len(gold) if gold else 1
        if n is not None and n > 1:
            kind = "multi"
    return Question(
        id=pid,
        dataset=dataset,
        text=text,
        choices=choices,
        gold=gold,
        answer_raw=obj["answer"],
        alternatives=alts,
        points=parse_points(obj.get("points", "1"), path=path, line=line),
        kind=kind,
        n_answers=n,
        has_image=not bool(obj.get("text_only", True)),
        section=section_of(block) if exam == "medical" else None,
        year=year,
        block=block,
        exam=exam,  # type: ignore[arg-type]
        exam_number=number,
        unanswerable=na,
        source=f"{path}:{line}",
    )


def _merge_metadata(questions: list[Question], meta_path: Path) -> None:
    by_id = {q.id: q for q in questions}
    for lineno, obj in read_jsonl(meta_path):
        pid = obj.get("problem_id")
        if pid is None:
            raise DatasetError(meta_path, lineno, "missing field 'problem_id'")
        q = by_id.get(str(pid))
        if q is None:
            raise DatasetError(meta_path, lineno, f"metadata for unknown problem_id {pid!r}")
        q.category = obj.get("category") or None
        q.kinki = parse_kinki(obj.get("kinki"), path=meta_path, line=lineno)
        ha = str(obj.get("human_accuracy") or "").strip().rstrip("%")
        try:
            q.human_accuracy = float(ha) if ha else None
        except ValueError:
            raise DatasetError(meta_path, lineno, f"human_accuracy {ha!r} is not a percentage") from None


def _translate(questions: list[Question], path: Path) -> None:
    """Swap in the English text and choices of ``NNN-X_translate.jsonl``; gold, points and 禁忌肢 stay
    the Japanese file's (IgakuQA's scorer reads them from there). Some rows also carry a misspelt
    ``asnwer`` key; it is ignored."""
    by_id = {q.id: q for q in questions}
    seen: set[str] = set()
    for lineno, obj in read_jsonl(path):
        pid = obj.get("problem_id")
        if pid is None or "problem_text_en" not in obj or "choices_en" not in obj:
            raise DatasetError(path, lineno, "each line needs problem_id, problem_text_en and choices_en")
        q = by_id.get(str(pid))
        if q is None:
            raise DatasetError(path, lineno, f"translation of unknown problem_id {pid!r}")
        choices = obj["choices_en"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise DatasetError(path, lineno, "field 'choices_en' must be a list of strings")
        if len(choices) != len(q.choices):
            raise DatasetError(
                path, lineno, f"{pid}: {len(choices)} English choices for {len(q.choices)} Japanese ones"
            )
        answer = obj.get("answer", q.answer_raw)
        if answer != q.answer_raw:
            q.repairs.append(
                f"English answer {answer!r} differs from the Japanese {q.answer_raw!r}: kept the latter"
            )
        q.text, q.choices, q.lang = str(obj["problem_text_en"]), choices, "en"
        q.source = f"{path}:{lineno}"
        seen.add(q.id)
    missing = [q.id for q in questions if q.id not in seen]
    if missing:
        raise DatasetError(path, None, f"no English translation for {', '.join(missing[:10])}")


def _data_root(root: Path) -> Path:
    for cand in (root / "data", root):
        if cand.is_dir() and any(p.is_dir() and re.fullmatch(r"\d{4}", p.name) for p in cand.iterdir()):
            return cand
    return root / "data" if (root / "data").is_dir() else root


def _is_question_file(p: Path) -> bool:
    return p.suffix == ".jsonl" and re.fullmatch(r"\d{3}-[A-Z]", p.stem) is not None


def load_igakuqa(root: Path, option: str | None = None, *, lang: str = "ja") -> list[Question]:
    """``data/{2018..2022}/{112..116}-{A..F}.jsonl`` (+ ``_metadata``, ``_translate`` siblings)."""
    if root.is_file():
        files = [root]
    else:
        data = _data_root(root)
        years = sorted(p for p in data.iterdir() if p.is_dir() and re.fullmatch(r"\d{4}", p.name))
        if option:
            years = [p for p in years if p.name == option]
        files = [f for y in years for f in sorted(y.iterdir()) if _is_question_file(f)]
        if not years:  # a flat folder of block files, or aistairc/medLLM_QA_benchmark's one-file copy
            files = sorted(f for f in data.iterdir() if _is_question_file(f))
            copy = root / "data" / "ja" / "IgakuQA" / "igakuqa.jsonl"
            if not files and copy.is_file() and lang == "ja":
                files = [copy]
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for f in files:
        block_qs = [
            _question(o, path=f, line=ln, dataset="igakuqa", exam="medical") for ln, o in read_jsonl(f)
        ]
        for q in block_qs:
            if q.id in seen:
                raise DatasetError(f, None, f"duplicate problem_id {q.id} (first in {seen[q.id]})")
            seen[q.id] = q.source or ""
        meta = f.with_name(f.stem + "_metadata.jsonl")
        if meta.exists():
            _merge_metadata(block_qs, meta)
        if lang == "en":
            tr = f.with_name(f.stem + "_translate.jsonl")
            if not tr.exists():
                raise DatasetNotFound(
                    f"igakuqa --lang en: {tr} not found (IgakuQA ships NNN-X_translate.jsonl)"
                )
            _translate(block_qs, tr)
        questions.extend(block_qs)
    return questions


def denqa_file(root: Path) -> Path:
    """DenQA's own file, wherever ``root`` points in the repository layout (never another dataset's)."""
    if root.is_file():
        return root
    for rel in ("data/ja/DenQA/denqa.jsonl", "ja/DenQA/denqa.jsonl", "DenQA/denqa.jsonl", "denqa.jsonl"):
        if (root / rel).is_file():
            return root / rel
    raise DatasetNotFound(
        f"denqa: data/ja/DenQA/denqa.jsonl not found under {root} "
        "(give a clone of aistairc/medLLM_QA_benchmark, its DenQA folder, or the file)"
    )


def load_denqa(root: Path, option: str | None = None) -> list[Question]:
    """DenQA: the dental licensing exams 116 (2023) and 117 (2024) in IgakuQA's fields."""
    f = denqa_file(root)
    out: list[Question] = []
    seen: set[str] = set()
    for ln, obj in read_jsonl(f):
        q = _question(obj, path=f, line=ln, dataset="denqa", exam="dental", allow_na=True)
        if q.id in seen:
            raise DatasetError(f, ln, f"duplicate problem_id {q.id}")
        seen.add(q.id)
        if option and str(q.exam_number) != option and str(q.year) != option:
            continue
        out.append(q)
    return out
