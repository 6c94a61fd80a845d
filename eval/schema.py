"""The one question type every dataset is normalized to, and the prediction record runs write.

WHY one type: scorers, runners, the leakage guard and reports are written once against it, whatever
the source format (IgakuQA jsonl, IgakuQA119 json+csv, JMMLU csv, JMedBench jsonl, ...).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ragmed.schema import ExamKind

#: Section labels (Japanese, as the exam names them). 必修 = blocks B and E of the Japanese exam.
SECTION_REQUIRED = "必修"
SECTION_GENERAL = "一般・臨床"


class Question(BaseModel):
    """One exam item, normalized.

    `gold` holds letters ("a".."h") for choice questions, or the exact answer string for numeric
    ones. `answer_raw` keeps the source's answer value untouched because IgakuQA's official scorer
    compares against it literally (e.g. the string "a or d").
    """

    id: str
    dataset: str
    text: str
    choices: list[str] = Field(default_factory=list)
    gold: list[str] = Field(default_factory=list)
    answer_raw: Any = None
    #: Alternative accepted answers (each a sorted letter list), e.g. 112B30 "a or d" -> [["a"], ["d"]].
    alternatives: list[list[str]] = Field(default_factory=list)
    points: int = 1
    kind: ExamKind = "single"
    n_answers: int | None = None
    has_image: bool = False
    category: str | None = None
    kinki: list[str] = Field(default_factory=list)
    section: str | None = None
    year: int | None = None
    block: str | None = None
    #: DenQA "NA": the item has no valid answer.
    unanswerable: bool = False
    human_accuracy: float | None = None
    source: str | None = Field(None, description="file:line the item was read from")

    @property
    def text_only(self) -> bool:
        return not self.has_image

    def letters(self) -> list[str]:
        """Choice letters implied by position: a, b, c, ..."""
        return [chr(ord("a") + i) for i in range(len(self.choices))]


class Prediction(BaseModel):
    """One system answer to one question: the line format of runs' predictions.jsonl.

    `prediction` follows IgakuQA's baseline format ("a,c", sorted letters joined by ","; or the
    numeric string), so run outputs and published baselines go through the same scorer.
    """

    problem_id: str
    prediction: str
    mode: str | None = None
    raw_text: str | None = None
    method: str | None = None
    citations: list[Any] = Field(default_factory=list)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    usage: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
