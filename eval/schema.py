"""The one question type every dataset is normalized to, and the prediction record runs write.

WHY one type: scorers, runners, the leakage guard and reports are written once against it, whatever
the source format (IgakuQA jsonl, IgakuQA119 json+csv, JMMLU csv, MedMCQA json, ...). Core types (exam
kind, choice letters, the exam answer) come from ``ragmed.schema``; nothing here redefines them.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from ragmed.schema import LETTERS, ExamAnswer, ExamKind

#: Section labels (Japanese, as the exam names them). 必修 = blocks B and E of the medical exam.
SECTION_REQUIRED = "必修"
SECTION_GENERAL = "一般・臨床"

#: Which licensing exam a question comes from: it decides the year table and the pass lines.
ExamBody = Literal["medical", "dental", "pharmacist"]


class Question(BaseModel):
    """One exam item, normalized.

    ``choices`` keep the source's text untouched (scorers and gestalt matching compare against it;
    prompts show it trimmed). ``gold`` holds letters for choice questions, or the
    exact answer string for numeric ones. Letters are a, b, c… by position unless ``choice_letters``
    says otherwise: IgakuQA119 keeps the letter written in the source when an OCR merge dropped one.
    ``answer_raw`` keeps the source's answer value because official scorers compare against it.
    """

    id: str
    dataset: str
    text: str
    choices: list[str] = Field(default_factory=list)
    #: The source's own letter per choice, when it is not simply a, b, c… by position.
    choice_letters: list[str] = Field(default_factory=list)
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
    #: The exam's own number ("112" for the 112th medical exam) and which exam it is.
    exam: ExamBody | None = None
    exam_number: int | None = None
    #: Language of text and choices ("ja", or "en" for IgakuQA's translations).
    lang: str = "ja"
    #: DenQA "NA" / YakugakuQA "解なし": the item has no valid answer.
    unanswerable: bool = False
    human_accuracy: float | None = None
    source: str | None = Field(None, description="file:line the item was read from")
    #: What the loader had to repair to read the item as its source means it (reported, never silent).
    repairs: list[str] = Field(default_factory=list)

    @property
    def text_only(self) -> bool:
        return not self.has_image

    def letters(self) -> list[str]:
        """Choice letters: the source's own when recorded, else a, b, c… by position."""
        return list(self.choice_letters) or [LETTERS[i] for i in range(len(self.choices))]

    def choice_text(self, letter: str) -> str | None:
        """The raw text of the choice with this letter (None when there is none)."""
        letters = self.letters()
        return self.choices[letters.index(letter)] if letter in letters else None

    def prompt_choices(self) -> list[str]:
        """Choice texts for the solver: as the source writes them (the prompt shows them trimmed, the
        gestalt fallback compares the raw texts as the harness does); written with their letter ("d. …")
        when the letters are not positional, so the model answers with the source's letters."""
        if not self.choice_letters:
            return list(self.choices)
        return [f"{letter}. {t.strip()}" for letter, t in zip(self.choice_letters, self.choices, strict=True)]


class SourceRef(BaseModel):
    """A retrieved chunk given to the model for one answer (without its text)."""

    node_id: str
    n: int | None = None
    source: str = ""
    title: str = ""
    score: float | None = None
    kind: str | None = None


class Prediction(BaseModel):
    """One system answer to one question: the line format of a run's ``predictions/<mode>.jsonl``.

    ``prediction`` follows IgakuQA's baseline format ("a,c", sorted letters joined by ","; or the
    numeric string), so run outputs and published baselines go through the same scorer. Robustness
    runs add the prompt template, the choice permutation and the few-shot count that produced it.
    """

    problem_id: str
    prediction: str
    mode: str | None = None
    letters: list[str] = Field(default_factory=list)
    method: str | None = None
    raw_text: str | None = None
    citations: list[dict[str, Any]] = Field(default_factory=list)
    sources: list[SourceRef] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    elapsed_ms: float | None = None
    model: str | None = None
    prompt_hash: str | None = None
    #: Robustness runs: template name, permutation index (0 = source order) and the letters the model
    #: actually saw for its answer before they were mapped back to the source's letters.
    template: str | None = None
    permutation: int | None = None
    shown_prediction: str | None = None
    shots: int | None = None
    error: str | None = None

    @classmethod
    def from_answer(
        cls,
        problem_id: str,
        mode: str,
        ans: ExamAnswer,
        *,
        started: float,
        prediction: str | None = None,
        **variant: Any,
    ) -> Prediction:
        """The record of one :class:`ragmed.schema.ExamAnswer` (``prediction`` overrides the answer's
        own when a permutation had to be mapped back to the source letters)."""
        return cls(
            problem_id=problem_id,
            prediction=ans.prediction if prediction is None else prediction,
            mode=mode,
            letters=list(ans.letters) if prediction is None else _letters(prediction, ans.kind),
            method=ans.method,
            raw_text=ans.raw_text,
            citations=[c.model_dump(exclude={"text"}) for c in ans.citations],
            sources=[
                SourceRef(
                    node_id=c.node_id, n=c.n, source=c.source, title=c.title, score=c.score, kind=c.kind
                )
                for c in ans.chunks
            ],
            usage=dict(ans.usage),
            timings=dict(ans.timings),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
            model=ans.model or None,
            prompt_hash=ans.prompt_hash or None,
            **variant,
        )


def _letters(prediction: str, kind: ExamKind) -> list[str]:
    return [] if kind == "numeric" or not prediction else prediction.split(",")
