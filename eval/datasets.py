"""Dataset registry: every exam/benchmark is a named loader that returns normalized `Question`s.

WHY a registry (as in lm-evaluation-harness): the CLI, runner and UI pick tasks by name
("igakuqa", "jmmlu:anatomy", "jmedbench:medmcqa_jp") without knowing formats. Loaders read local
paths only; a missing path raises `DatasetNotFound` saying where to get the data, because ragmed
hosts are often offline. Malformed rows raise `DatasetError` naming file and line; answer encodings
we do not know are reported, never guessed.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragmed_eval.schema import SECTION_GENERAL, SECTION_REQUIRED, Question

from ragmed.errors import DatasetError, DatasetNotFound
from ragmed.schema import LETTERS

Loader = Callable[[Path, "str | None"], list[Question]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    loader: Loader
    description: str
    source_url: str
    layout: str
    options: tuple[str, ...] = ()


REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, *, description: str, source_url: str, layout: str, options: tuple[str, ...] = ()):
    """Decorator adding a loader to the registry."""

    def deco(fn: Loader) -> Loader:
        REGISTRY[name] = DatasetSpec(name, fn, description, source_url, layout, options)
        return fn

    return deco


def list_datasets() -> list[DatasetSpec]:
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def load_dataset(name: str, data_dir: str | Path, *, subset: str | None = None) -> list[Question]:
    """Load dataset `name` ("igakuqa", "jmmlu:anatomy", ...) from `data_dir`.

    `subset="text_only"` drops items that refer to an image not in the data.
    """
    base, _, option = name.partition(":")
    spec = REGISTRY.get(base.lower())
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DatasetNotFound(
            f"{spec.name}: data directory {root} does not exist. ragmed reads datasets from local paths "
            f"only; get it from {spec.source_url} (layout: {spec.layout}) and pass --data-dir."
        )
    questions = spec.loader(root, option or None)
    if not questions:
        raise DatasetNotFound(
            f"{spec.name}: no questions found under {root} (expected layout: {spec.layout})"
        )
    return apply_subset(questions, subset)


def apply_subset(questions: list[Question], subset: str | None) -> list[Question]:
    if subset in (None, "", "all"):
        return questions
    if subset == "text_only":
        return [q for q in questions if not q.has_image]
    if subset == "image":
        return [q for q in questions if q.has_image]
    raise ValueError(f"unknown subset {subset!r} (use all, text_only or image)")


# ---------------------------------------------------------------- helpers

_ID_RE = re.compile(r"^(?P<exam>\d{3})(?P<block>[A-Z])(?P<num>\d+)$")
#: Exam number -> calendar year of the Japanese national medical licensing exam.
EXAM_YEAR = {112: 2018, 113: 2019, 114: 2020, 115: 2021, 116: 2022, 117: 2023, 118: 2024, 119: 2025}
_N_SELECT = re.compile(r"([1-9１-９一二三四五])つ選べ")
_KANJI_NUM = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object); blank lines are skipped, bad JSON names file and line."""
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(path, lineno, f"invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DatasetError(path, lineno, "expected a JSON object")
            yield lineno, obj


def parse_problem_id(pid: str) -> tuple[int | None, str | None, int | None]:
    """'112A1' -> (2018, 'A', 1); unknown shapes -> (None, None, None)."""
    m = _ID_RE.match(pid)
    if not m:
        return None, None, None
    exam = int(m["exam"])
    return EXAM_YEAR.get(exam), m["block"], int(m["num"])


def section_of(block: str | None) -> str | None:
    if block is None:
        return None
    return SECTION_REQUIRED if block in ("B", "E") else SECTION_GENERAL


def n_select(text: str) -> int | None:
    """The exam states how many to pick ("2つ選べ"); use that rather than the gold count."""
    m = _N_SELECT.search(text)
    if not m:
        return None
    ch = m.group(1)
    return _KANJI_NUM.get(ch) or int(unicodedata.normalize("NFKC", ch))


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


def _points(value: Any, *, path: Path, line: int) -> int:
    try:
        p = int(str(value).strip())
    except ValueError:
        raise DatasetError(path, line, f"points {value!r} is not an integer") from None
    if p < 0:
        raise DatasetError(path, line, f"points {value!r} is negative")
    return p


_OR_RE = re.compile(r"^([a-h])(?:\s+or\s+([a-h]))+$")


def parse_igakuqa_answer(
    answer: Any, choices: list[str], *, path: Path, line: int, allow_na: bool = False
) -> tuple[list[str], list[list[str]], str, bool]:
    """Return (gold, alternatives, kind, unanswerable) for an IgakuQA-style `answer` value.

    Known encodings: list of letters; a list holding "a or d"; numeric strings (as a list element or
    a bare string) for questions without choices; "NA" (DenQA). Anything else is an error.
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


def _igakuqa_question(
    obj: dict[str, Any], *, path: Path, line: int, dataset: str, allow_na: bool = False
) -> Question:
    for key in ("problem_id", "problem_text", "choices", "answer"):
        if key not in obj:
            raise DatasetError(path, line, f"missing field {key!r}")
    pid = str(obj["problem_id"])
    choices = obj["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise DatasetError(path, line, "field 'choices' must be a list of strings")
    gold, alts, kind, na = parse_igakuqa_answer(
        obj["answer"], choices, path=path, line=line, allow_na=allow_na
    )
    year, block, _ = parse_problem_id(pid)
    text = str(obj["problem_text"])
    n = n_select(text) or (len(gold) if kind != "numeric" and gold else 1)
    if kind != "numeric" and n > 1:
        kind = "multi"
    return Question(
        id=pid,
        dataset=dataset,
        text=text,
        choices=choices,
        gold=gold,
        answer_raw=obj["answer"],
        alternatives=alts,
        points=_points(obj.get("points", "1"), path=path, line=line),
        kind=kind,
        n_answers=n if kind != "numeric" else None,
        has_image=not bool(obj.get("text_only", True)),
        section=section_of(block),
        year=year,
        block=block,
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
        q.human_accuracy = float(ha) if ha else None


def _igakuqa_root(root: Path) -> Path:
    return root / "data" if (root / "data").is_dir() else root


def _is_question_file(p: Path) -> bool:
    return p.suffix == ".jsonl" and not p.stem.endswith(("_metadata", "_translate"))


# ---------------------------------------------------------------- loaders


@register(
    "igakuqa",
    description="Japanese national medical licensing exam 2018-2022 (112th-116th), 2000 questions",
    source_url="https://github.com/jungokasai/IgakuQA",
    layout="data/{2018..2022}/{112..116}-{A..F}.jsonl (+ _metadata.jsonl)",
    options=("2018", "2019", "2020", "2021", "2022"),
)
def load_igakuqa(root: Path, option: str | None = None, *, dataset: str = "igakuqa", allow_na: bool = False):
    data = _igakuqa_root(root)
    years = sorted(p for p in data.iterdir() if p.is_dir() and re.fullmatch(r"\d{4}", p.name))
    if option:
        years = [p for p in years if p.name == option]
    files = [f for y in years for f in sorted(y.iterdir()) if _is_question_file(f)]
    if not years:  # flat folder of block files
        files = sorted(f for f in data.iterdir() if _is_question_file(f))
    questions: list[Question] = []
    seen: dict[str, str] = {}
    for f in files:
        block_qs = [
            _igakuqa_question(obj, path=f, line=ln, dataset=dataset, allow_na=allow_na)
            for ln, obj in read_jsonl(f)
        ]
        for q in block_qs:
            if q.id in seen:
                raise DatasetError(f, None, f"duplicate problem_id {q.id} (first in {seen[q.id]})")
            seen[q.id] = q.source or ""
        meta = f.with_name(f.stem + "_metadata.jsonl")
        if meta.exists():
            _merge_metadata(block_qs, meta)
        questions.extend(block_qs)
    return questions


@register(
    "denqa",
    description="Japanese national dental exam (IgakuQA fields; answer 'NA' = no valid answer)",
    source_url="https://github.com/aistairc/medLLM_QA_benchmark",
    layout="*.jsonl with IgakuQA fields (any folder depth)",
)
def load_denqa(root: Path, option: str | None = None) -> list[Question]:
    files = sorted(f for f in root.rglob("*.jsonl") if _is_question_file(f))
    if option:
        files = [f for f in files if option in f.as_posix()]
    out: list[Question] = []
    for f in files:
        qs = [
            _igakuqa_question(o, path=f, line=ln, dataset="denqa", allow_na=True) for ln, o in read_jsonl(f)
        ]
        meta = f.with_name(f.stem + "_metadata.jsonl")
        if meta.exists():
            _merge_metadata(qs, meta)
        out.extend(qs)
    return out


_CHOICE_PREFIX = re.compile(r"^\s*([a-zA-Zａ-ｚＡ-Ｚ])\s*[.．、:：)）]\s*")


@register(
    "igakuqa119",
    description="119th exam (2025), 400 questions, 500 points",
    source_url="https://github.com/docto-rin/IgakuQA119",
    layout="questions/119{A..F}_json.json + results/correct_answers.csv (問題番号,解答)",
)
def load_igakuqa119(root: Path, option: str | None = None) -> list[Question]:
    qdir = root / "questions" if (root / "questions").is_dir() else root
    gold_path = root / "results" / "correct_answers.csv"
    if not gold_path.exists():
        gold_path = root / "correct_answers.csv"
    if not gold_path.exists():
        raise DatasetNotFound(f"igakuqa119: gold file results/correct_answers.csv not found under {root}")
    gold: dict[str, tuple[str, int]] = {}
    with open(gold_path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["問題番号", "解答"]:
            raise DatasetError(gold_path, 1, f"expected header 問題番号,解答, got {header!r}")
        for lineno, row in enumerate(reader, 2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) < 2:
                raise DatasetError(gold_path, lineno, "expected 2 columns")
            gold[row[0].strip()] = (row[1].strip(), lineno)
    out: list[Question] = []
    for f in sorted(qdir.glob("119*_json.json")):
        if option and option.upper() not in f.name:
            continue
        try:
            items = json.loads(f.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise DatasetError(f, e.lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(items, list):
            raise DatasetError(f, None, "expected a JSON list of questions")
        for i, it in enumerate(items):
            where = f"item {i}"
            if not isinstance(it, dict) or "number" not in it or "question" not in it:
                raise DatasetError(f, None, f"{where}: needs 'number' and 'question'")
            pid = str(it["number"])
            raw_choices = it.get("choices") or []
            choices = [_CHOICE_PREFIX.sub("", str(c), count=1) for c in raw_choices]
            if pid not in gold:
                raise DatasetError(gold_path, None, f"no gold answer for {pid} ({f} {where})")
            ans, gline = gold[pid]
            year, block, num = parse_problem_id(pid)
            if choices:
                letters = unicodedata.normalize("NFKC", ans).lower().replace(",", "").replace(" ", "")
                if not re.fullmatch(r"[a-z]+", letters) or any(
                    LETTERS.index(c) >= len(choices) for c in letters
                ):
                    raise DatasetError(gold_path, gline, f"unknown answer encoding {ans!r} for {pid}")
                g = sorted(letters)
                kind = "multi" if len(g) > 1 or (n_select(str(it["question"])) or 1) > 1 else "single"
            else:
                if not re.fullmatch(r"[0-9.]+", ans):
                    raise DatasetError(gold_path, gline, f"unknown numeric answer {ans!r} for {pid}")
                g, kind = [ans], "numeric"
            out.append(
                Question(
                    id=pid,
                    dataset="igakuqa119",
                    text=str(it["question"]),
                    choices=choices,
                    gold=g,
                    answer_raw=ans,
                    alternatives=[["a"], ["c"]] if pid == "119E28" else [],
                    points=3 if block in ("B", "E") and num is not None and 26 <= num <= 50 else 1,
                    kind=kind,
                    n_answers=(n_select(str(it["question"])) or len(g)) if kind != "numeric" else None,
                    has_image=bool(it.get("has_image", False)),
                    section=section_of(block),
                    year=year,
                    block=block,
                    source=f"{f}:{where}",
                )
            )
    return out


JMMLU_MEDICAL = (
    "professional_medicine",
    "clinical_knowledge",
    "college_medicine",
    "anatomy",
    "medical_genetics",
)


@register(
    "jmmlu",
    description="JMMLU medical subjects (4-choice, headerless CSV question,A,B,C,D,answer)",
    source_url="https://github.com/nlp-waseda/JMMLU",
    layout="[JMMLU/]{subject}.csv",
    options=JMMLU_MEDICAL,
)
def load_jmmlu(root: Path, option: str | None = None) -> list[Question]:
    subjects = [option] if option else list(JMMLU_MEDICAL)
    base = root / "JMMLU" if (root / "JMMLU").is_dir() else root
    out: list[Question] = []
    for subj in subjects:
        f = base / f"{subj}.csv"
        if not f.exists():
            if option:
                raise DatasetNotFound(f"jmmlu: {f} not found")
            continue
        with open(f, encoding="utf-8-sig", newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row:
                    continue
                if len(row) != 6:
                    raise DatasetError(
                        f, lineno, f"expected 6 columns question,A,B,C,D,answer, got {len(row)}"
                    )
                ans = unicodedata.normalize("NFKC", row[5]).strip()
                if ans not in ("A", "B", "C", "D"):
                    raise DatasetError(f, lineno, f"unknown answer encoding {row[5]!r} (expected A-D)")
                out.append(
                    Question(
                        id=f"{subj}-{lineno}",
                        dataset="jmmlu",
                        text=row[0],
                        choices=row[1:5],
                        gold=[ans.lower()],
                        answer_raw=row[5],
                        category=subj,
                        source=f"{f}:{lineno}",
                    )
                )
    return out


@register(
    "jmedbench",
    description="JMedBench multiple-choice configs (jsonl: question, options, answer_idx)",
    source_url="https://huggingface.co/datasets/Coldog2333/JMedBench",
    layout="{config}/{test,train}.jsonl",
    options=(
        "medmcqa_jp",
        "usmleqa_jp",
        "medqa_jp",
        "mmlu_medical_jp",
        "jmmlu_medical",
        "igakuqa",
        "pubmedqa_jp",
    ),
)
def load_jmedbench(root: Path, option: str | None = None) -> list[Question]:
    configs = [option] if option else sorted(p.name for p in root.iterdir() if (p / "test.jsonl").exists())
    out: list[Question] = []
    for cfg in configs:
        f = root / cfg / "test.jsonl"
        if not f.exists():
            raise DatasetNotFound(f"jmedbench: {f} not found")
        for lineno, obj in read_jsonl(f):
            for key in ("question", "options", "answer_idx"):
                if key not in obj:
                    raise DatasetError(f, lineno, f"missing field {key!r}")
            opts, idx = obj["options"], obj["answer_idx"]
            if not isinstance(opts, list) or not opts:
                raise DatasetError(f, lineno, "field 'options' must be a non-empty list")
            idxs = idx if isinstance(idx, list) else [idx]
            if not all(isinstance(i, int) and 0 <= i < len(opts) for i in idxs):
                raise DatasetError(
                    f, lineno, f"unknown answer encoding answer_idx={idx!r} for {len(opts)} options"
                )
            gold = sorted(LETTERS[i] for i in idxs)
            out.append(
                Question(
                    id=str(obj.get("sample_id", f"{cfg}-{lineno}")),
                    dataset=f"jmedbench:{cfg}",
                    text=str(obj["question"]),
                    choices=[str(o) for o in opts],
                    gold=gold,
                    answer_raw=idx,
                    kind="multi" if len(gold) > 1 else "single",
                    category=cfg,
                    source=f"{f}:{lineno}",
                )
            )
    return out


def _generic_answer(value: Any, n: int, *, path: Path, line: int) -> list[str]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < n:
            raise DatasetError(path, line, f"answer index {value} out of range for {n} choices")
        return [LETTERS[value]]
    vals = value if isinstance(value, list) else [value]
    out: list[str] = []
    for v in vals:
        s = unicodedata.normalize("NFKC", str(v)).strip().lower()
        s = re.sub(r"[\s,、]+", "", s)
        if s.isdigit():
            raise DatasetError(path, line, f"ambiguous answer {v!r}: give letters, or an int index in JSON")
        if not re.fullmatch(r"[a-z]+", s) or any(LETTERS.index(c) >= n for c in s):
            raise DatasetError(path, line, f"unknown answer encoding {v!r}")
        out.extend(s)
    return sorted(set(out))


@register(
    "mcq",
    description="Generic multiple-choice file: jsonl {id,question,choices,answer[,points,category]} or csv "
    "with header id,question,A..H,answer",
    source_url="(your own file)",
    layout="a .jsonl or .csv file, or a folder of them",
)
def load_generic(root: Path, option: str | None = None) -> list[Question]:
    files = [root] if root.is_file() else sorted([*root.glob("*.jsonl"), *root.glob("*.csv")])
    out: list[Question] = []
    for f in files:
        if f.suffix == ".jsonl":
            for ln, obj in read_jsonl(f):
                text = obj.get("question", obj.get("text"))
                choices = obj.get("choices", obj.get("options"))
                ans = obj.get("answer", obj.get("answer_idx", obj.get("gold")))
                if text is None or choices is None or ans is None:
                    raise DatasetError(f, ln, "needs question, choices and answer fields")
                if not isinstance(choices, list):
                    raise DatasetError(f, ln, "field 'choices' must be a list")
                gold = _generic_answer(ans, len(choices), path=f, line=ln)
                out.append(
                    Question(
                        id=str(obj.get("id", f"{f.stem}-{ln}")),
                        dataset="mcq",
                        text=str(text),
                        choices=[str(c) for c in choices],
                        gold=gold,
                        answer_raw=ans,
                        points=_points(obj.get("points", 1), path=f, line=ln),
                        kind="multi" if len(gold) > 1 else "single",
                        category=obj.get("category"),
                        source=f"{f}:{ln}",
                    )
                )
        else:
            with open(f, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                cols = reader.fieldnames or []
                letter_cols = [c for c in cols if len(c) == 1 and c.upper() in "ABCDEFGH"]
                if "question" not in cols or "answer" not in cols or not letter_cols:
                    raise DatasetError(f, 1, f"header needs question, A.., answer; got {cols}")
                for ln, row in enumerate(reader, 2):
                    choices = [row[c] for c in letter_cols if row.get(c)]
                    gold = _generic_answer(row["answer"], len(choices), path=f, line=ln)
                    out.append(
                        Question(
                            id=row.get("id") or f"{f.stem}-{ln}",
                            dataset="mcq",
                            text=row["question"],
                            choices=choices,
                            gold=gold,
                            answer_raw=row["answer"],
                            points=_points(row.get("points") or 1, path=f, line=ln),
                            kind="multi" if len(gold) > 1 else "single",
                            category=row.get("category") or None,
                            source=f"{f}:{ln}",
                        )
                    )
    return out
