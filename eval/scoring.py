"""Scoring exactly as each dataset's own script does, plus a clearly labelled normalized variant.

IgakuQA (``scripts/evaluate_main.py``): split the prediction on ",", sort, compare with the sorted gold
list; no whitespace stripping ("a, c" is wrong). 116A71 is correct for everyone; 112B30 is correct for
"a" or "d". Accuracy = correct / all questions (0-point items stay in the denominator); score = sum of
points of correct items; total = sum of points. The English translations are scored the same way.
IgakuQA119 (``src/grading_logic.py``): strip, lowercase, drop "[", "]", ",", " ", sort characters;
empty is wrong; 119E28 accepts "a" or "c" (see ``igakuqa119.py``, which also grades answer files).
DenQA (aistairc/medLLM_QA_benchmark ``scripts/evaluate_main.py``): NFKC the prediction, turn "、" and
"，" into ",", split on ",", strip each part, sort, compare with ``sorted(answer)``; the script's
116A71/112B30 special cases (copied from IgakuQA) are applied as it applies them; an "NA" gold is never
matched by a letter answer. Other datasets: IgakuQA's strict format against the gold letters; items
without a valid answer are never credited.
The normalized variant (NFKC, spaces/brackets dropped, letters split) is NOT official.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field
from ragmed_eval import igakuqa119
from ragmed_eval.readers import read_jsonl
from ragmed_eval.schema import SECTION_REQUIRED, Question

from ragmed.errors import DataFormatError, InputError, NotFoundError

#: The medical exam's fixed 必修 rule (80 % of its points) and 禁忌肢 limit, used where no year's
#: published lines are on file.
REQUIRED_SHARE = 0.80
KINKI_LIMIT = 3


# ---------------------------------------------------------------- per-item rules


def _evaluate_main(problem_id: str, pred: list[str], answer_raw: Any) -> bool:
    """The comparison both evaluate_main.py scripts share (DenQA's copied IgakuQA's special cases)."""
    if problem_id == "116A71":
        return True
    if problem_id == "112B30" and (pred == ["a"] or pred == ["d"]):
        return True
    return pred == sorted(answer_raw)


def official_igakuqa_correct(problem_id: str, prediction: str, answer_raw: Any) -> bool:
    """IgakuQA's evaluate_main.py, line for line (answer_raw is the file's ``answer`` value)."""
    return _evaluate_main(problem_id, sorted(prediction.split(",")), answer_raw)


def denqa_correct(problem_id: str, prediction: str, answer_raw: Any) -> bool:
    """aistairc/medLLM_QA_benchmark's evaluate_main.py, line for line, except that an ``"NA"`` gold (no
    valid answer) is never credited: the script compares ``sorted("NA")``, ``['A', 'N']``, so a reply
    "A,N" or "N, A" would score there."""
    if answer_raw == "NA" or answer_raw == ["NA"]:
        return False
    p = unicodedata.normalize("NFKC", prediction).replace("、", ",").replace("，", ",")
    return _evaluate_main(problem_id, sorted(part.strip() for part in p.split(",")), answer_raw)


def official_igakuqa119_correct(problem_id: str, prediction: Any, answer_raw: Any) -> bool:
    return igakuqa119.correct(problem_id, prediction, igakuqa119.as_pandas_reads(str(answer_raw)))


def igakuqa119_normalize(s: Any) -> str:
    return igakuqa119.normalize_answer(s)


def strict_correct(q: Question, prediction: str) -> bool:
    """Other datasets: IgakuQA's strict format against the gold letters."""
    if q.unanswerable:
        return False
    pred = sorted(prediction.split(","))
    if q.alternatives and any(pred == alt for alt in q.alternatives):
        return True
    return bool(q.gold) and pred == sorted(q.gold)


_BRACKETS = re.compile(r"[\[\]()（）「」『』【】\"'`]")


def normalize_prediction(prediction: str, kind: str = "single") -> list[str]:
    """Unofficial: NFKC, lowercase, drop spaces/brackets, split "a, c" / "ac" / "a、c" into letters."""
    s = unicodedata.normalize("NFKC", prediction or "").strip().lower()
    s = _BRACKETS.sub("", s)
    if kind == "numeric":
        return [re.sub(r"\s+", "", s)]
    s = re.sub(r"[\s,、;/]+", "", s)
    if re.fullmatch(r"[a-z]+", s):
        return sorted(set(s))
    return [s]


def normalized_correct(q: Question, prediction: str) -> bool:
    if q.dataset == "igakuqa" and q.id == "116A71":
        return True
    if q.unanswerable:
        return False
    pred = normalize_prediction(prediction, q.kind)
    if q.alternatives and any(pred == alt for alt in q.alternatives):
        return True
    if q.kind == "numeric":
        return bool(q.gold) and pred == [unicodedata.normalize("NFKC", g).strip() for g in q.gold]
    return bool(q.gold) and pred == sorted(q.gold)


def is_correct(q: Question, prediction: str, *, normalized: bool = False) -> bool:
    if normalized:
        return normalized_correct(q, prediction)
    if q.dataset == "igakuqa":
        return official_igakuqa_correct(q.id, prediction, q.answer_raw)
    if q.dataset == "igakuqa119":
        return official_igakuqa119_correct(q.id, prediction, q.answer_raw)
    if q.dataset == "denqa":
        return denqa_correct(q.id, prediction, q.answer_raw)
    return strict_correct(q, prediction)


def rule_name(dataset: str, normalized: bool = False) -> str:
    if normalized:
        return "normalized (UNOFFICIAL: NFKC, spaces and brackets dropped)"
    return {
        "igakuqa": "official IgakuQA (scripts/evaluate_main.py)",
        "igakuqa119": "official IgakuQA119 (src/grading_logic.py)",
        "denqa": "official DenQA (medLLM_QA_benchmark scripts/evaluate_main.py)",
    }.get(dataset, "strict (IgakuQA format: sorted letters joined by ',')")


def kinki_hits(q: Question, prediction: str) -> list[str]:
    """Contraindicated choices (禁忌肢) the prediction picked."""
    if not q.kinki:
        return []
    picked = set(normalize_prediction(prediction, q.kind))
    return sorted(picked & set(q.kinki))


# ---------------------------------------------------------------- pass lines


@cache
def pass_lines() -> dict[str, dict[int, dict[str, Any]]]:
    """The published pass lines (``eval/data/pass_lines.yaml``), with their sources."""
    path = Path(str(resources.files("ragmed_eval"))) / "data" / "pass_lines.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {exam: {int(k): v for k, v in years.items()} for exam, years in data.items()}


# ---------------------------------------------------------------- aggregates


class Agg(BaseModel):
    correct: int = 0
    n: int = 0
    score: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def add(self, correct: bool, points: int) -> None:
        self.n += 1
        self.total += points
        if correct:
            self.correct += 1
            self.score += points

    def to_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct,
            "n": self.n,
            "accuracy": self.accuracy,
            "score": self.score,
            "total": self.total,
        }


class ItemResult(BaseModel):
    id: str
    prediction: str | None
    gold: list[str]
    correct: bool
    points: int
    year: int | None = None
    block: str | None = None
    section: str | None = None
    category: str | None = None
    has_image: bool = False
    kinki_hits: list[str] = Field(default_factory=list)
    missing: bool = False
    exam: str | None = None
    exam_number: int | None = None


def _line_check(agg: Agg, line: dict[str, int] | None, share: float | None) -> dict[str, Any]:
    """Apply a published line (``{line, total}``) or a share of the points to a section."""
    rate = agg.score / agg.total if agg.total else 0.0
    out: dict[str, Any] = {**agg.to_dict(), "rate": rate}
    if not agg.total:
        return {**out, "threshold": share, "passed": None, "applied": "no items"}
    if share is not None and line is None:
        return {**out, "threshold": share, "passed": rate >= share, "applied": f"share {share:.3f}"}
    if line is None:
        return {**out, "threshold": None, "passed": None, "applied": "no published line for this exam"}
    threshold = line["line"] / line["total"]
    out.update(line=line["line"], line_total=line["total"], threshold=threshold)
    if agg.total == line["total"]:
        return {**out, "passed": agg.score >= line["line"], "applied": "published points"}
    return {**out, "passed": rate >= threshold, "applied": "share of the published line (totals differ)"}


class ScoreReport(BaseModel):
    dataset: str
    scoring: str
    official: bool
    subset: str
    items: list[ItemResult]
    missing: list[str] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)

    def _group(self, key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, Agg] = defaultdict(Agg)
        for it in self.items:
            k = getattr(it, key)
            groups["(none)" if k is None else str(k)].add(it.correct, it.points)
        return {k: groups[k].to_dict() for k in sorted(groups)}

    def overall(self) -> dict[str, Any]:
        a = Agg()
        for it in self.items:
            a.add(it.correct, it.points)
        return a.to_dict()

    def pass_verdict(self) -> dict[str, Any]:
        """Per exam year: the exam's published lines (``pass_lines.yaml``) applied with its point rules.

        Medical: 必修 (B+E) and 一般・臨床 (A, C, D, F) against the year's lines, at most ``kinki_max``
        禁忌肢 picks. A user's ``--pass-threshold YEAR=0.70`` replaces the 一般・臨床 line by a share.
        Dental: the lines are reported, the verdict is None (DenQA lacks the area/question-type map).
        """
        out: dict[str, Any] = {}
        groups: dict[tuple[str, int], list[ItemResult]] = defaultdict(list)
        for it in self.items:
            if it.year is not None and it.exam is not None and it.exam_number is not None:
                groups[(it.exam, it.exam_number)].append(it)
        lines = pass_lines()
        partial = self.subset not in ("all", "") or bool(self.missing)
        for (exam, number), rows in sorted(groups.items(), key=lambda kv: (kv[1][0].year, kv[0])):
            year = rows[0].year
            published = lines.get(exam, {}).get(number)
            source = (
                {k: published[k] for k in ("announcement", "sources", "verified") if k in published}
                if published
                else None
            )
            if exam != "medical":
                total = Agg()
                for it in rows:
                    total.add(it.correct, it.points)
                out[str(year)] = {
                    "exam": exam,
                    "exam_number": number,
                    "overall": total.to_dict(),
                    "lines": {k: v for k, v in (published or {}).items() if isinstance(v, dict)},
                    "passed": None,
                    "partial": True,
                    "reason": "the dental lines need each item's area (領域A/B, 必修) and question type (臨床実地 "
                    "scores 3); the dataset does not record them",
                    "source": source,
                }
                continue
            req, gen = Agg(), Agg()
            kinki = 0
            for it in rows:
                (req if it.section == SECTION_REQUIRED else gen).add(it.correct, it.points)
                kinki += len(it.kinki_hits)
            override = self.thresholds.get(str(year), self.thresholds.get("*"))
            required = _line_check(
                req, published["required"] if published else None, None if published else REQUIRED_SHARE
            )
            general = _line_check(
                gen, None if override is not None else (published or {}).get("general_clinical"), override
            )
            limit = int(published.get("kinki_max", KINKI_LIMIT)) if published else KINKI_LIMIT
            verdict: dict[str, Any] = {
                "exam": exam,
                "exam_number": number,
                "required": required,
                "general_clinical": general,
                "kinki": {"count": kinki, "limit": limit, "passed": kinki <= limit},
                "partial": partial,
                "source": source,
            }
            parts = [required["passed"], general["passed"], kinki <= limit]
            if not req.total or not gen.total or None in parts:
                verdict["passed"] = None
                verdict["partial"] = partial or not req.total or not gen.total
            else:
                verdict["passed"] = all(parts)
            out[str(year)] = verdict
        return out

    def to_dict(self, *, items: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "dataset": self.dataset,
            "scoring": self.scoring,
            "official": self.official,
            "subset": self.subset,
            "overall": self.overall(),
            "by_year": self._group("year"),
            "by_block": self._group("block"),
            "by_section": self._group("section"),
            "by_category": self._group("category"),
            "pass": self.pass_verdict(),
            "missing": self.missing,
            **self.extra,
        }
        if items:
            d["items"] = [it.model_dump() for it in self.items]
        return d


def score(
    questions: Iterable[Question],
    predictions: dict[str, str],
    *,
    normalized: bool = False,
    subset: str = "all",
    thresholds: dict[str, float] | None = None,
) -> ScoreReport:
    """Score ``predictions`` (problem_id -> "a,c") against ``questions``.

    Questions without a prediction count as wrong and are listed in ``missing`` (IgakuQA's script
    would refuse the file; we score and say so).
    """
    qs = list(questions)
    items: list[ItemResult] = []
    missing: list[str] = []
    for q in qs:
        pred = predictions.get(q.id)
        if pred is None:
            missing.append(q.id)
        ok = pred is not None and is_correct(q, pred, normalized=normalized)
        items.append(
            ItemResult(
                id=q.id,
                prediction=pred,
                gold=q.gold or ([" or ".join(a[0] for a in q.alternatives)] if q.alternatives else []),
                correct=ok,
                points=q.points,
                year=q.year,
                block=q.block,
                section=q.section,
                category=q.category,
                has_image=q.has_image,
                kinki_hits=kinki_hits(q, pred) if pred is not None else [],
                missing=pred is None,
                exam=q.exam,
                exam_number=q.exam_number,
            )
        )
    dataset = qs[0].dataset if qs else ""
    return ScoreReport(
        dataset=dataset,
        scoring=rule_name(dataset, normalized),
        official=not normalized,
        subset=subset or "all",
        items=items,
        missing=missing,
        thresholds=thresholds or {},
    )


# ---------------------------------------------------------------- prediction files


@dataclass
class PredictionSet:
    """Predictions read from disk, and (for IgakuQA119 answer files) the rows its grader keeps."""

    predictions: dict[str, str]
    files: list[str] = field(default_factory=list)
    answer_files: igakuqa119.AnswerFiles | None = None


def load_prediction_file(path: Path, out: dict[str, str] | None = None) -> dict[str, str]:
    """Read one IgakuQA-format prediction file (``problem_id``, ``prediction`` per line)."""
    out = {} if out is None else out
    for lineno, obj in read_jsonl(path):
        pid, pred = obj.get("problem_id"), obj.get("prediction")
        if pid is None or pred is None:
            raise DataFormatError(path, lineno, "each line needs 'problem_id' and 'prediction'")
        if not isinstance(pred, str):
            raise DataFormatError(path, lineno, f"'prediction' must be a string like \"a,c\", got {pred!r}")
        if str(pid) in out:
            raise DataFormatError(path, lineno, f"duplicate prediction for {pid}")
        out[str(pid)] = pred
    return out


def load_prediction_set(path: str | Path, system: str | None = None) -> PredictionSet:
    """Predictions from a jsonl file, IgakuQA's ``baseline_results/{year}/NNN-X_{system}.jsonl``, or
    IgakuQA119's ``answers/<model>/119X_<model>.json`` (a file, the model's folder, or ``answers/``
    with ``--system``)."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"predictions path {p} does not exist")
    if (p.is_file() and igakuqa119.is_answer_file(p)) or (
        p.is_dir() and any(igakuqa119.is_answer_file(f) for f in p.rglob("119?_*.json"))
    ):
        files = igakuqa119.find_answer_files(p, system)
        if not files:
            raise NotFoundError(f"no IgakuQA119 answer files 119X_{system or '*'}.json under {p}")
        answers = igakuqa119.read_answer_files(files)
        return PredictionSet(answers.predictions(), [str(f) for f in files], answers)
    if p.is_file():
        return PredictionSet(load_prediction_file(p), [str(p)])
    if system is None:
        raise InputError("--system is needed to pick files NNN-X_{system}.jsonl in a predictions folder")
    files = sorted(
        f for f in p.rglob(f"*_{system}.jsonl") if re.fullmatch(rf"\d+-[A-Z]_{re.escape(system)}", f.stem)
    )
    if not files:
        raise NotFoundError(f"no prediction files *_{system}.jsonl under {p}")
    preds: dict[str, str] = {}
    for f in files:
        load_prediction_file(f, preds)
    return PredictionSet(preds, [str(f) for f in files])


def load_predictions(path: str | Path, system: str | None = None) -> dict[str, str]:
    return load_prediction_set(path, system).predictions


def parse_thresholds(values: list[str] | None) -> dict[str, float]:
    """'2018=0.69' items -> {'2018': 0.69}; a bare number applies to every year ('*')."""
    out: dict[str, float] = {}
    for v in values or []:
        year, sep, val = v.partition("=")
        try:
            if sep:
                out[year.strip()] = float(val)
            else:
                out["*"] = float(year)
        except ValueError:
            raise InputError(f"bad --pass-threshold {v!r}; use YEAR=0.70") from None
    return out


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, indent=2)
