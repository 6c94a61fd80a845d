"""Scoring exactly as the datasets' own scripts do, plus a clearly labelled normalized variant.

IgakuQA (`scripts/evaluate_main.py`): split the prediction on ",", sort, compare with the sorted
gold list; no whitespace stripping ("a, c" is wrong). 116A71 is correct for everyone; 112B30 is
correct for "a" or "d". Accuracy = correct / all questions (0-point items stay in the
denominator); score = sum of points of correct items; total = sum of points.
IgakuQA119 (`src/grading_logic.py`): strip, lowercase, drop "[", "]", ",", " ", sort characters;
empty is wrong; 119E28 accepts "a" or "c".
The normalized variant (NFKC, spaces/brackets dropped, letters split) is NOT official.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from ragmed_eval.datasets import read_jsonl
from ragmed_eval.schema import SECTION_REQUIRED, Question

from ragmed.errors import DatasetError

#: Relative pass line of the 一般・臨床 section per exam year (share of its points). The exam sets it
#: anew every year (roughly 0.70-0.77); 0.70 is a placeholder default: pass the year's published
#: value with `thresholds=` / `--pass-threshold 2018=0.69`.
DEFAULT_GENERAL_THRESHOLD = 0.70
REQUIRED_THRESHOLD = 0.80
KINKI_LIMIT = 3


# ---------------------------------------------------------------- per-item rules


def official_igakuqa_correct(problem_id: str, prediction: str, answer_raw: Any) -> bool:
    """IgakuQA's evaluate_main.py, line for line (answer_raw is the file's `answer` value)."""
    pred = sorted(prediction.split(","))
    if problem_id == "116A71":
        return True
    if problem_id == "112B30" and (pred == ["a"] or pred == ["d"]):
        return True
    return pred == sorted(answer_raw)


def igakuqa119_normalize(s: Any) -> str:
    t = str(s).strip().lower() if s is not None else ""
    return "".join(sorted(t.replace("[", "").replace("]", "").replace(",", "").replace(" ", "")))


def official_igakuqa119_correct(problem_id: str, prediction: str, answer_raw: Any) -> bool:
    """IgakuQA119's grading_logic.grade_answers comparison."""
    m = igakuqa119_normalize(prediction)
    if not m:
        return False
    if problem_id == "119E28":
        return m in ("a", "c")
    return m == igakuqa119_normalize(answer_raw)


def strict_correct(q: Question, prediction: str) -> bool:
    """Other datasets: IgakuQA's strict format against the normalized gold."""
    if q.unanswerable:
        return prediction == "NA"
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
        return normalize_prediction(prediction) == ["na"]
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
    return strict_correct(q, prediction)


def kinki_hits(q: Question, prediction: str) -> list[str]:
    """Contraindicated choices (禁忌肢) the prediction picked."""
    if not q.kinki:
        return []
    picked = set(normalize_prediction(prediction, q.kind))
    return sorted(picked & set(q.kinki))


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


class ScoreReport(BaseModel):
    dataset: str
    scoring: str
    official: bool
    subset: str
    items: list[ItemResult]
    missing: list[str] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)

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
        """The exam's rule per year: 必修 >= 80 % of its points, 一般・臨床 >= the year's line,
        and at most 3 禁忌肢 picks. Only meaningful for a full exam (flagged `partial` otherwise)."""
        out: dict[str, Any] = {}
        years = sorted({it.year for it in self.items if it.year is not None})
        for y in years:
            rows = [it for it in self.items if it.year == y]
            req, gen = Agg(), Agg()
            kinki = 0
            for it in rows:
                (req if it.section == SECTION_REQUIRED else gen).add(it.correct, it.points)
                kinki += len(it.kinki_hits)
            thr = self.thresholds.get(str(y), self.thresholds.get("*", DEFAULT_GENERAL_THRESHOLD))
            req_rate = req.score / req.total if req.total else 0.0
            gen_rate = gen.score / gen.total if gen.total else 0.0
            verdict = {
                "required": {
                    **req.to_dict(),
                    "rate": req_rate,
                    "threshold": REQUIRED_THRESHOLD,
                    "passed": req_rate >= REQUIRED_THRESHOLD,
                },
                "general_clinical": {
                    **gen.to_dict(),
                    "rate": gen_rate,
                    "threshold": thr,
                    "passed": gen_rate >= thr,
                },
                "kinki": {"count": kinki, "limit": KINKI_LIMIT, "passed": kinki <= KINKI_LIMIT},
                "partial": self.subset not in ("all", "") or bool(self.missing),
            }
            if not req.total or not gen.total:  # a block set without one section: no verdict possible
                verdict["required"]["passed"] = None if not req.total else verdict["required"]["passed"]
                verdict["general_clinical"]["passed"] = (
                    None if not gen.total else verdict["general_clinical"]["passed"]
                )
                verdict["passed"] = None
                verdict["partial"] = True
            else:
                verdict["passed"] = all(
                    verdict[k]["passed"] for k in ("required", "general_clinical", "kinki")
                )
            out[str(y)] = verdict
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
    """Score `predictions` (problem_id -> "a,c") against `questions`.

    Questions without a prediction count as wrong and are listed in `missing` (IgakuQA's script
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
                gold=q.gold or [" or ".join(a[0] for a in q.alternatives)] if q.alternatives else q.gold,
                correct=ok,
                points=q.points,
                year=q.year,
                block=q.block,
                section=q.section,
                category=q.category,
                has_image=q.has_image,
                kinki_hits=kinki_hits(q, pred) if pred is not None else [],
                missing=pred is None,
            )
        )
    dataset = qs[0].dataset if qs else ""
    if normalized:
        scoring = "normalized (UNOFFICIAL: NFKC, spaces and brackets dropped)"
    elif dataset == "igakuqa":
        scoring = "official IgakuQA (scripts/evaluate_main.py)"
    elif dataset == "igakuqa119":
        scoring = "official IgakuQA119 (src/grading_logic.py)"
    else:
        scoring = "strict (IgakuQA format: sorted letters joined by ',')"
    return ScoreReport(
        dataset=dataset,
        scoring=scoring,
        official=not normalized,
        subset=subset or "all",
        items=items,
        missing=missing,
        thresholds=thresholds or {},
    )


# ---------------------------------------------------------------- prediction files


def load_prediction_file(path: Path, out: dict[str, str] | None = None) -> dict[str, str]:
    """Read one IgakuQA-format prediction file (`problem_id`, `prediction` per line)."""
    out = {} if out is None else out
    for lineno, obj in read_jsonl(path):
        pid, pred = obj.get("problem_id"), obj.get("prediction")
        if pid is None or pred is None:
            raise DatasetError(path, lineno, "each line needs 'problem_id' and 'prediction'")
        if not isinstance(pred, str):
            raise DatasetError(path, lineno, f"'prediction' must be a string like \"a,c\", got {pred!r}")
        if str(pid) in out:
            raise DatasetError(path, lineno, f"duplicate prediction for {pid}")
        out[str(pid)] = pred
    return out


def load_predictions(path: str | Path, system: str | None = None) -> dict[str, str]:
    """Load predictions from a file, or from IgakuQA's `baseline_results/{year}/NNN-X_{system}.jsonl`."""
    p = Path(path)
    if p.is_file():
        return load_prediction_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"predictions path {p} does not exist")
    if system is None:
        raise ValueError("--system is needed to pick files NNN-X_{system}.jsonl in a predictions folder")
    files = sorted(
        f for f in p.rglob(f"*_{system}.jsonl") if re.fullmatch(rf"\d+-[A-Z]_{re.escape(system)}", f.stem)
    )
    if not files:
        raise FileNotFoundError(f"no prediction files *_{system}.jsonl under {p}")
    preds: dict[str, str] = {}
    for f in files:
        load_prediction_file(f, preds)
    return preds


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
            raise ValueError(f"bad --pass-threshold {v!r}; use YEAR=0.70") from None
    return out


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d, ensure_ascii=False, indent=2)
