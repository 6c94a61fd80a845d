"""Datasets that differ only in file layout, field names and answer encoding, read from a YAML definition.

WHY data, not code (as lm-evaluation-harness's task YAMLs): JMMLU, MMLU, MedQA, MedMCQA, JMedBench,
YakugakuQA and a generic MCQ file are the same loader with a different mapping. A definition lists the
formats its dataset is published in (e.g. MedQA's own jsonl and the japanese-lm-med-harness file), each
with file patterns, field names and one answer encoding; the first format whose files exist is read.
A user's own definition file works the same way (``--dataset path/to/task.yaml``).

Answer encodings: ``letter`` (one of A–H, any case), ``letters`` (a list like ["a","c"] or "a,c"),
``index0`` / ``index1`` (integer positions), ``text`` (the gold choice's text, as the harness files
store it), ``auto`` (int -> index0, letters -> letters; digits in a string are refused as ambiguous).
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError
from ragmed_eval.readers import parse_points, read_csv_rows, read_json, read_jsonl
from ragmed_eval.schema import Question

from ragmed.errors import DatasetError, DatasetNotFound, InputError
from ragmed.schema import LETTERS

Encoding = Literal["letter", "letters", "index0", "index1", "text", "auto"]


class FormatSpec(BaseModel):
    """One published file format of a dataset."""

    name: str
    files: list[str]
    type: Literal["csv", "jsonl", "json"]
    header: bool = True
    columns: list[str] | None = None
    id: str | None = None
    question: list[str]
    #: Field(s) holding the choices as a list or a {letter: text} mapping (the first one present).
    choices: list[str] = Field(default_factory=list)
    #: One field per choice, in order (CSV columns A, B, C, D; MedMCQA's opa..opd).
    choice_fields: list[str] = Field(default_factory=list)
    #: A regular expression over header names whose columns are the choices (a generic CSV).
    choice_columns: str | None = None
    answer: list[str]
    answer_encoding: Encoding
    none_values: list[str] = Field(default_factory=list)
    missing_answer: str | None = None
    points: str | None = None
    category: str | None = None
    text_only: str | None = None
    lang: str | None = None


class DatasetInfo(BaseModel):
    """What the CLI lists and the README documents for one dataset, whatever reads it."""

    name: str
    title: str
    description: str
    source_url: str
    license: str
    rule: str
    layout: str
    lang: str = "ja"
    options: list[str] = Field(default_factory=list)
    fetch: dict[str, str] = Field(default_factory=dict)


class TaskSpec(DatasetInfo):
    """A dataset definition (``eval/tasks/<name>.yaml``)."""

    default_option: str | None = None
    option_alias: dict[str, str] = Field(default_factory=dict)
    formats: list[FormatSpec]
    path: str = ""


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


def parse_spec(raw: bytes, origin: str) -> TaskSpec:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"{origin}: not valid UTF-8 YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{origin}: a task definition is a YAML mapping")
    for fmt in data.get("formats") or []:
        if isinstance(fmt, dict):
            for key in ("question", "choices", "answer"):
                if key in fmt:
                    fmt[key] = _as_list(fmt[key])
    try:
        spec = TaskSpec(**data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise InputError(f"{origin}: {problems}") from None
    spec.path = origin
    return spec


def _tasks_dir() -> Path:
    return Path(str(resources.files("ragmed_eval"))) / "tasks"


@cache
def builtin_specs() -> dict[str, TaskSpec]:
    """The definitions shipped in ``eval/tasks/``."""
    out = {}
    for f in sorted(_tasks_dir().glob("*.yaml")):
        spec = parse_spec(f.read_bytes(), str(f))
        out[spec.name] = spec
    return out


def spec_from_file(path: Path) -> TaskSpec:
    if not path.is_file():
        raise DatasetNotFound(f"task definition {path} not found")
    return parse_spec(path.read_bytes(), str(path))


# --------------------------------------------------------------------------- reading


def _get(obj: dict[str, Any], names: list[str]) -> Any:
    for n in names:
        if n in obj and obj[n] is not None:
            return obj[n]
    return None


def _letter_index(s: str, n: int) -> int | None:
    c = unicodedata.normalize("NFKC", s).strip().lower()
    if len(c) == 1 and c in LETTERS[:n]:
        return LETTERS.index(c)
    return None


def parse_gold(value: Any, choices: list[str], enc: Encoding, *, path: Path, line: int) -> list[str]:
    """Gold letters of ``value`` under ``enc``; anything that does not fit names the file and line."""
    n = len(choices)

    def bad(why: str = "") -> DatasetError:
        return DatasetError(
            path, line, f"unknown answer encoding {value!r} ({enc}{': ' + why if why else ''})"
        )

    if enc == "auto":
        if isinstance(value, int) and not isinstance(value, bool):
            enc = "index0"
        else:
            vals = value if isinstance(value, list) else [value]
            if any(unicodedata.normalize("NFKC", str(v)).strip().isdigit() for v in vals):
                raise DatasetError(
                    path, line, f"ambiguous answer {value!r}: give letters, or an int index in JSON"
                )
            enc = "letters"
    if enc in ("index0", "index1"):
        vals = value if isinstance(value, list) else [value]
        out = []
        for v in vals:
            s = unicodedata.normalize("NFKC", str(v)).strip()
            if isinstance(v, bool) or not re.fullmatch(r"\d+", s):
                raise bad("not an integer")
            i = int(s) - (1 if enc == "index1" else 0)
            if not 0 <= i < n:
                raise bad(f"out of range for {n} choices")
            out.append(LETTERS[i])
        return sorted(set(out))
    if enc == "letter":
        i = _letter_index(str(value), n) if isinstance(value, str) else None
        if i is None:
            raise bad(f"expected one of {LETTERS[:n].upper()}")
        return [LETTERS[i]]
    if enc == "letters":
        vals = value if isinstance(value, list) else re.split(r"[\s,、，]+", str(value).strip())
        out = []
        for v in vals:
            s = re.sub(r"[\s,、，]+", "", unicodedata.normalize("NFKC", str(v)).lower())
            if not s or not re.fullmatch(r"[a-z]+", s) or any(LETTERS.index(c) >= n for c in s):
                raise bad(f"letters a-{LETTERS[n - 1] if n else '?'}")
            out.extend(s)
        return sorted(set(out))
    # text: the gold choice's own text (the harness files store it), exactly one choice must match.
    hits = [i for i, c in enumerate(choices) if c == value]
    if len(hits) != 1:
        raise bad("not exactly one choice has this text")
    return [LETTERS[hits[0]]]


def _rows(fmt: FormatSpec, f: Path) -> list[tuple[int, dict[str, Any]]]:
    if fmt.type == "jsonl":
        return list(read_jsonl(f))
    if fmt.type == "json":
        data = read_json(f)
        items = data if isinstance(data, list) else None
        if items is None:
            raise DatasetError(f, None, "expected a JSON list of objects")
        out = []
        for i, obj in enumerate(items):
            if not isinstance(obj, dict):
                raise DatasetError(f, None, f"item {i}: expected an object")
            out.append((i + 1, obj))
        return out
    rows = list(read_csv_rows(f))
    if fmt.header:
        if not rows:
            return []
        names = [h.strip() for h in rows[0][1]]
        out = []
        for line, row in rows[1:]:
            if len(row) != len(names):
                raise DatasetError(
                    f, line, f"expected {len(names)} columns ({','.join(names)}), got {len(row)}"
                )
            out.append((line, dict(zip(names, row, strict=True))))
        return out
    cols = fmt.columns or []
    out = []
    for line, row in rows:
        if len(row) != len(cols):
            raise DatasetError(f, line, f"expected {len(cols)} columns {','.join(cols)}, got {len(row)}")
        out.append((line, dict(zip(cols, row, strict=True))))
    return out


def _choices(fmt: FormatSpec, obj: dict[str, Any], *, path: Path, line: int) -> list[str]:
    if fmt.choice_columns:
        cols = [k for k in obj if re.fullmatch(fmt.choice_columns, k)]
        return [str(obj[k]) for k in sorted(cols) if str(obj[k]) != ""]
    if fmt.choice_fields:
        missing = [c for c in fmt.choice_fields if c not in obj]
        if missing:
            raise DatasetError(path, line, f"missing field(s) {missing}")
        return [str(obj[c]) for c in fmt.choice_fields]
    value = _get(obj, fmt.choices)
    if isinstance(value, dict):  # MedQA: {"A": …, "B": …}
        return [str(value[k]) for k in sorted(value)]
    if not isinstance(value, list) or not value:
        raise DatasetError(path, line, f"field {'/'.join(fmt.choices)} must be a non-empty list of choices")
    return [str(c) for c in value]


def _resolve(
    spec: TaskSpec, root: Path, options: list[str | None], *, require_all: bool = True
) -> tuple[FormatSpec, list[tuple[str | None, Path]]]:
    """The first format whose files exist for every option (or, unless ``require_all``, for any), and
    those files."""
    if root.is_file():
        for fmt in spec.formats:
            if fmt.type == root.suffix.lstrip(".") or (fmt.type == "json" and root.suffix == ".json"):
                return fmt, [(options[0] if len(options) == 1 else None, root)]
        raise DatasetNotFound(f"{spec.name}: {root} is not a {'/'.join(f.type for f in spec.formats)} file")
    tried: list[str] = []
    for fmt in spec.formats:
        found: list[tuple[str | None, Path]] = []
        ok = True
        for opt in options:
            value = spec.option_alias.get(opt or "", opt or "")
            hits: list[Path] = []
            for pattern in fmt.files:
                rel = pattern.replace("{option}", value)
                tried.append(rel)
                hits = sorted(p for p in root.glob(rel) if p.is_file())
                if hits:
                    break
            if not hits and require_all:
                ok = False
                break
            known = {f for _, f in found}
            found += [(opt if "{option}" in pattern else None, h) for h in hits if h not in known]
        if ok and found:
            return fmt, found
    raise DatasetNotFound(
        f"{spec.name}: no files under {root} in a known layout (tried {', '.join(dict.fromkeys(tried))}); "
        f"get it from {spec.source_url}"
    )


def load_task(spec: TaskSpec, root: Path, option: str | None = None) -> list[Question]:
    if option and spec.options and option not in spec.options and option != "all":
        raise InputError(f"{spec.name}: unknown option {option!r}; known: {', '.join(spec.options)}")
    chosen = option or spec.default_option
    options: list[str | None] = list(spec.options) if chosen in ("all", "any") else [chosen]
    fmt, files = _resolve(spec, root, options, require_all=chosen != "any")
    out: list[Question] = []
    seen: dict[str, str] = {}
    for opt, f in files:
        for line, obj in _rows(fmt, f):
            q = _question(spec, fmt, obj, opt, f, line)
            if q.id in seen:
                raise DatasetError(f, line, f"duplicate id {q.id} (first at {seen[q.id]})")
            seen[q.id] = q.source or ""
            out.append(q)
    return out


def option_in_name(spec: TaskSpec, opt: str | None) -> bool:
    """Subsets that are their own task keep the option in the dataset name ("jmedbench:medmcqa_jp")."""
    return bool(opt) and spec.default_option not in ("all",) and opt != spec.default_option


def _question(
    spec: TaskSpec, fmt: FormatSpec, obj: dict[str, Any], opt: str | None, f: Path, line: int
) -> Question:
    text = _get(obj, fmt.question)
    if text is None:
        raise DatasetError(f, line, f"missing field {'/'.join(fmt.question)}")
    choices = _choices(fmt, obj, path=f, line=line)
    if len(choices) > len(LETTERS):
        raise DatasetError(f, line, f"{len(choices)} choices; at most {len(LETTERS)}")
    value = _get(obj, fmt.answer)
    unanswerable = False
    if value is None:
        raise DatasetError(f, line, fmt.missing_answer or f"missing field {'/'.join(fmt.answer)}")
    if value in fmt.none_values or (
        isinstance(value, list) and value and all(v in fmt.none_values for v in value)
    ):
        gold, unanswerable = [], True
    else:
        gold = parse_gold(value, choices, fmt.answer_encoding, path=f, line=line)
    values = {"option": opt or "", "line": line, "stem": f.stem}
    if fmt.id and "{" in fmt.id:
        qid = fmt.id.format(**values)
    elif fmt.id and obj.get(fmt.id) not in (None, ""):
        qid = str(obj[fmt.id])
    else:
        qid = f"{f.stem}-{line}"
    category = None
    if fmt.category:
        category = fmt.category.format(**values) if "{" in fmt.category else (obj.get(fmt.category) or None)
    has_image = False
    if fmt.text_only and fmt.text_only in obj:
        has_image = not bool(obj[fmt.text_only])
    return Question(
        id=qid,
        dataset=spec.name if not option_in_name(spec, opt) else f"{spec.name}:{opt}",
        text=str(text),
        choices=choices,
        gold=gold,
        answer_raw=value,
        points=parse_points(obj[fmt.points], path=f, line=line)
        if obj.get(fmt.points) not in (None, "")
        else 1,
        kind="multi" if len(gold) > 1 else "single",
        n_answers=max(1, len(gold)),
        has_image=has_image,
        category=str(category) if category is not None else None,
        lang=fmt.lang or spec.lang,
        unanswerable=unanswerable,
        source=f"{f}:{line}",
    )
