"""Exam mode: multiple-choice and numeric questions answered in a form a scorer can check.

Free text is a poor exam answer ("正解は b と思われますが…"), so the answer is forced into shape with
vLLM structured outputs: a ``choice`` over the letters for single answers, a ``regex`` of sorted,
distinct, comma-joined letters ("a,c" — IgakuQA's official format, no spaces) for multiple answers
and a number pattern for numeric items. Servers that cannot constrain (older vLLM silently ignores
fields it does not know; others reject them) still give usable answers through two fallbacks, in
order: letters parsed from the text, then "gestalt" matching of the text against the choice texts
(difflib ratio both ways, averaged — japanese-lm-med-harness's rule). ``method`` records which won.
"""

from __future__ import annotations

import difflib
import itertools
import re
import time
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from ragmed.llm import ChatResult, LLMRequestError, Message, SamplingParams
from ragmed.rag import Citation, LinkedDisease, RetrievedChunk, pack_context

if TYPE_CHECKING:
    from ragmed.rag import Prepared, RagPipeline

ExamKind = Literal["single", "multi", "numeric"]
Method = Literal["constrained", "parsed", "gestalt"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
NUMBER_RE = r"-?[0-9]+(\.[0-9]+)?"
_PREFIX = re.compile(r"^\s*([a-zA-Z])\s*[.．。:：、,)）]\s*")


class Choice(BaseModel):
    letter: str
    text: str


class ExamAnswer(BaseModel):
    """One exam answer. ``prediction`` is what scorers compare: "a,c" (sorted) or a numeric string."""

    letters: list[str]
    prediction: str
    raw_text: str
    method: Method
    citations: list[Citation] = Field(default_factory=list)
    chunks: list[RetrievedChunk] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    prompt_hash: str = ""
    model: str = ""
    kind: ExamKind = "single"
    reasoning: str | None = None
    linked: list[LinkedDisease] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- choices and constraints


def parse_choices(choices: Sequence[str]) -> list[Choice]:
    """``["a. …", "b. …"]`` keep their letters; plain texts get a, b, c… by position.

    Prefixed letters are used only when every choice carries one and they are distinct; otherwise
    position decides (IgakuQA's lists are unprefixed, IgakuQA119's are prefixed).
    """
    if len(choices) > len(LETTERS):
        raise ValueError(f"too many choices ({len(choices)}); at most {len(LETTERS)}")
    normalized = [unicodedata.normalize("NFKC", c).strip() for c in choices]
    matches = [_PREFIX.match(c) for c in normalized]
    if matches and all(matches):
        letters = [m.group(1).lower() for m in matches if m]
        if len(set(letters)) == len(letters):
            return [
                Choice(letter=letter, text=c[m.end() :].strip())
                for letter, c, m in zip(letters, normalized, matches, strict=True)
                if m
            ]
    return [Choice(letter=LETTERS[i], text=c) for i, c in enumerate(normalized)]


def multi_regex(letters: Sequence[str], n_answers: int | None = None) -> str:
    """Regex matching exactly the sorted, distinct, comma-joined letter sets (of size ``n_answers``)."""
    ordered = sorted(set(letters))
    if n_answers is not None:
        if not 1 <= n_answers <= len(ordered):
            raise ValueError(f"n_answers={n_answers} but there are {len(ordered)} choices")
        return "(" + "|".join(",".join(combo) for combo in itertools.combinations(ordered, n_answers)) + ")"
    alternatives = [
        first + "".join(f"(,{later})?" for later in ordered[i + 1 :]) for i, first in enumerate(ordered)
    ]
    return "(" + "|".join(alternatives) + ")"


def constraint(kind: ExamKind, letters: Sequence[str], n_answers: int | None) -> SamplingParams:
    """Greedy sampling constrained to a valid answer of this kind."""
    if kind == "single":
        return SamplingParams(temperature=0.0, max_tokens=4, choice=list(letters))
    if kind == "multi":
        return SamplingParams(
            temperature=0.0, max_tokens=2 * len(letters) + 2, regex=multi_regex(letters, n_answers)
        )
    return SamplingParams(temperature=0.0, max_tokens=16, regex=NUMBER_RE)


def valid(prediction: str, kind: ExamKind, letters: Sequence[str], n_answers: int | None) -> bool:
    """Is ``prediction`` exactly a well-formed answer (what a constrained server must return)?"""
    if kind == "numeric":
        return re.fullmatch(NUMBER_RE, prediction) is not None
    if kind == "single":
        return prediction in letters
    return re.fullmatch(multi_regex(letters, n_answers), prediction) is not None


# --------------------------------------------------------------------------- fallbacks


def parse_letters(
    text: str, letters: Sequence[str], kind: ExamKind, n_answers: int | None = None
) -> str | None:
    """Letters (or a number) written in free text; None when nothing usable is found.

    Looks at an explicit answer marker first (答え: / 正解: / Answer:), then the first line, then
    everything; a letter counts only when it is not part of a longer Latin word.
    """
    norm = unicodedata.normalize("NFKC", text).lower()
    marker = re.search(r"(?:答え|解答|正解|answer)\s*(?:は|:)?\s*(.+)", norm)
    scopes = [marker.group(1).splitlines()[0]] if marker else []
    lines = [ln for ln in norm.splitlines() if ln.strip()]
    scopes += lines[:1] + [norm]
    for scope in scopes:
        if kind == "numeric":
            m = re.search(NUMBER_RE, scope)
            if m:
                return m.group(0)
            continue
        allowed = "".join(letters)
        found = re.findall(rf"(?<![a-z])([{allowed}])(?![a-z])", scope)
        picked = sorted(dict.fromkeys(found))
        if not picked:
            continue
        if kind == "single":
            return found[0]
        if n_answers is None or len(picked) == n_answers:
            return ",".join(picked)
    return None


def gestalt(text: str, choices: Sequence[Choice], n: int = 1) -> list[str]:
    """Letters of the ``n`` choices most similar to ``text``: japanese-lm-med-harness's rule exactly.

    As its ``eval_bench.py`` evaluates: the response loses every "." and surrounding whitespace, the
    choice texts are used as given (no other normalization on either side); each choice scores the
    mean of ``SequenceMatcher(None, choice, response).ratio()`` and the reverse; the top ``n`` are
    taken by repeated max (the first on ties), removing the picked text by value as the harness does.
    """
    response = text.replace(".", "").strip()
    texts = [c.text for c in choices]
    letters = [c.letter for c in choices]
    scores = [
        (
            difflib.SequenceMatcher(None, t, response).ratio()
            + difflib.SequenceMatcher(None, response, t).ratio()
        )
        / 2
        for t in texts
    ]
    picked: list[str] = []
    for _ in range(min(max(1, n), len(texts))):
        best = scores.index(max(scores))
        picked.append(letters[best])
        first_equal = texts.index(texts[best])  # list.remove drops the first equal text
        del texts[first_equal], letters[first_equal]
        scores.pop(best)
    return sorted(picked)


def extract(
    text: str, choices: Sequence[Choice], kind: ExamKind, n_answers: int | None, constrained: bool
) -> tuple[str, Method]:
    """Prediction and how it was obtained, trusting a constrained reply only when it is well formed."""
    letters = [c.letter for c in choices]
    stripped = text.strip()
    if constrained and valid(stripped, kind, letters, n_answers):
        return stripped, "constrained"
    parsed = parse_letters(stripped, letters, kind, n_answers)
    if parsed is not None:
        return parsed, "parsed"
    if kind == "numeric" or not choices:
        return "", "parsed"
    picked = gestalt(stripped, choices, n=1 if kind == "single" else (n_answers or 1))
    return ",".join(picked), "gestalt"


# --------------------------------------------------------------------------- prompting


def _instruction(pipeline: RagPipeline, kind: ExamKind, letters: Sequence[str], n_answers: int | None) -> str:
    tpl = pipeline.template
    joined = ", ".join(letters)
    if kind == "numeric":
        return tpl.render("exam_numeric")
    if kind == "single":
        return tpl.render("exam_single", letters=joined)
    if n_answers is None:
        return tpl.render("exam_multi_any", letters=joined)
    return tpl.render("exam_multi", n=n_answers, letters=joined)


class ExamPrepared(BaseModel):
    base: Any  # Prepared
    choices: list[Choice]
    instruction: str


def prepare_exam(
    pipeline: RagPipeline,
    question: str,
    choices: Sequence[str],
    kind: ExamKind,
    n_answers: int | None,
    rag: bool,
    reasoning: bool,
) -> ExamPrepared:
    """Retrieval (question + choice texts as the query), packing and the exam chat messages."""
    from ragmed.rag import Prepared, _ms

    if kind not in ("single", "multi", "numeric"):
        raise ValueError(f"unknown exam kind {kind!r}: single, multi or numeric")
    if kind != "numeric" and not choices:
        raise ValueError(f"a {kind!r} question needs choices")
    opts = parse_choices(choices) if kind != "numeric" else []
    letters = [c.letter for c in opts]
    tpl = pipeline.template
    instruction = _instruction(pipeline, kind, letters, n_answers)
    first_instruction = tpl.render("exam_reasoning") if reasoning else instruction
    choices_text = "\n".join(f"{c.letter}. {c.text}" for c in opts)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    retrieved: list[RetrievedChunk] = []
    linked: list[LinkedDisease] = []
    trace: dict[str, Any] = {}
    if rag:
        query = question + ("\n" + " ".join(c.text for c in opts) if opts else "")
        retrieved, linked, trace = pipeline.retrieve(query, timings)
    t = time.perf_counter()
    length, notes = pipeline.context_length()
    warnings += notes
    reasoning_tokens = pipeline.settings.exam_reasoning_tokens if reasoning else 0
    answer_tokens = constraint(kind, letters, n_answers).max_tokens
    fixed = tpl.exam_system + tpl.render(
        "exam_user",
        context_block=tpl.render("exam_context", context="") if rag else "",
        question="",
        choices=choices_text,
        instruction=first_instruction,
    )
    if reasoning:
        fixed += tpl.render("exam_after_reasoning", instruction=instruction)
    packed = pack_context(
        retrieved if rag else [],
        question,
        fixed,
        tpl,
        pipeline.counter,
        length,
        reasoning_tokens + answer_tokens,
    )
    warnings += [w for w in packed.warnings if rag or "chunks packed" not in w]
    user = tpl.render(
        "exam_user",
        context_block=tpl.render("exam_context", context=packed.context) + "\n\n" if rag else "",
        question=packed.question,
        choices=choices_text,
        instruction=first_instruction,
    )
    messages: list[Message] = [
        {"role": "system", "content": tpl.exam_system},
        {"role": "user", "content": user},
    ]
    timings["packing_ms"] = _ms(t)
    numbered = {c.node_id: c.n for c in packed.chunks}
    base = Prepared(
        question=question,
        messages=messages,
        packed=packed if rag else None,
        retrieved=[c.model_copy(update={"n": numbered.get(c.node_id)}) for c in retrieved],
        linked=linked,
        trace=trace,
        timings=timings,
        warnings=warnings,
        params=constraint(kind, letters, n_answers).model_copy(update={"seed": pipeline.settings.seed}),
    )
    return ExamPrepared(base=base, choices=opts, instruction=instruction)


def _unconstrained(params: SamplingParams) -> SamplingParams:
    # Room to write a sentence the fallbacks can parse.
    return params.model_copy(update={"choice": None, "regex": None, "json_schema": None, "max_tokens": 32})


def _add_usage(total: dict[str, int], result: ChatResult) -> None:
    for key, value in result.usage.items():
        total[key] = total.get(key, 0) + value


def _finish(
    pipeline: RagPipeline,
    prep: ExamPrepared,
    kind: ExamKind,
    n_answers: int | None,
    result: ChatResult,
    constrained: bool,
    reasoning_text: str | None,
    usage: dict[str, int],
    llm_ms: float,
    warnings: list[str],
) -> ExamAnswer:
    from ragmed.rag import _ms

    t = time.perf_counter()
    base: Prepared = prep.base
    prediction, method = extract(result.text, prep.choices, kind, n_answers, constrained)
    if constrained and method != "constrained":
        warnings.append(
            f"The server returned {result.text.strip()[:40]!r}, outside the allowed answers: it does not "
            f"apply structured outputs ({pipeline.settings.llm_structured_outputs!r}); fell back to {method}."
        )
    timings = dict(base.timings)
    timings["llm_ms"] = round(llm_ms, 3)
    timings["parse_ms"] = _ms(t)
    own = ("link_ms", "retrieval_ms", "rerank_ms", "packing_ms", "parse_ms")
    timings["ragmed_ms"] = round(sum(timings.get(k, 0.0) for k in own), 3)
    timings["total_ms"] = round(timings["ragmed_ms"] + llm_ms, 3)
    packed = base.packed.chunks if base.packed else []
    return ExamAnswer(
        letters=[] if kind == "numeric" or not prediction else prediction.split(","),
        prediction=prediction,
        raw_text=result.text,
        method=method,
        citations=[Citation.from_chunk(c) for c in packed],
        chunks=base.retrieved,
        usage=usage,
        timings=timings,
        prompt_hash=pipeline.template.sha256,
        model=result.model,
        kind=kind,
        reasoning=reasoning_text,
        linked=base.linked,
        warnings=list(base.warnings) + warnings,
    )


def answer_exam(
    pipeline: RagPipeline,
    question: str,
    choices: Sequence[str],
    kind: ExamKind = "single",
    n_answers: int | None = None,
    rag: bool = True,
    reasoning: bool = False,
) -> ExamAnswer:
    """Solve one exam item (see :meth:`ragmed.rag.RagPipeline.answer_exam`)."""
    prep = prepare_exam(pipeline, question, choices, kind, n_answers, rag, reasoning)
    base: Prepared = prep.base
    messages = list(base.messages)
    usage: dict[str, int] = {}
    warnings: list[str] = []
    reasoning_text: str | None = None
    t = time.perf_counter()
    if reasoning:
        free = pipeline.llm.chat(
            messages, pipeline.sampling(max_tokens=pipeline.settings.exam_reasoning_tokens)
        )
        _add_usage(usage, free)
        reasoning_text = free.text
        messages += _after_reasoning(pipeline, free.text, prep.instruction)
    constrained = pipeline.settings.llm_structured_outputs != "none"
    params = base.params if constrained else _unconstrained(base.params)
    try:
        result = pipeline.llm.chat(messages, params)
    except LLMRequestError as exc:
        warnings.append(f"The server refused the structured-output request ({exc}); answered unconstrained.")
        constrained = False
        result = pipeline.llm.chat(messages, _unconstrained(params))
    _add_usage(usage, result)
    llm_ms = (time.perf_counter() - t) * 1000
    return _finish(
        pipeline, prep, kind, n_answers, result, constrained, reasoning_text, usage, llm_ms, warnings
    )


async def aanswer_exam(
    pipeline: RagPipeline,
    question: str,
    choices: Sequence[str],
    kind: ExamKind = "single",
    n_answers: int | None = None,
    rag: bool = True,
    reasoning: bool = False,
) -> ExamAnswer:
    """Async :func:`answer_exam`: retrieval in a worker thread, LLM calls on the event loop."""
    import asyncio

    prep = await asyncio.to_thread(prepare_exam, pipeline, question, choices, kind, n_answers, rag, reasoning)
    base: Prepared = prep.base
    messages = list(base.messages)
    usage: dict[str, int] = {}
    warnings: list[str] = []
    reasoning_text: str | None = None
    t = time.perf_counter()
    if reasoning:
        free = await pipeline.llm.achat(
            messages, pipeline.sampling(max_tokens=pipeline.settings.exam_reasoning_tokens)
        )
        _add_usage(usage, free)
        reasoning_text = free.text
        messages += _after_reasoning(pipeline, free.text, prep.instruction)
    constrained = pipeline.settings.llm_structured_outputs != "none"
    params = base.params if constrained else _unconstrained(base.params)
    try:
        result = await pipeline.llm.achat(messages, params)
    except LLMRequestError as exc:
        warnings.append(f"The server refused the structured-output request ({exc}); answered unconstrained.")
        constrained = False
        result = await pipeline.llm.achat(messages, _unconstrained(params))
    _add_usage(usage, result)
    llm_ms = (time.perf_counter() - t) * 1000
    return _finish(
        pipeline, prep, kind, n_answers, result, constrained, reasoning_text, usage, llm_ms, warnings
    )


def _after_reasoning(pipeline: RagPipeline, reasoning_text: str, instruction: str) -> list[Message]:
    return [
        {"role": "assistant", "content": reasoning_text},
        {
            "role": "user",
            "content": pipeline.template.render("exam_after_reasoning", instruction=instruction),
        },
    ]
