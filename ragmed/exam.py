r"""Exam mode: multiple-choice and numeric questions answered in a form a scorer can check.

Free text is a poor exam answer ("正解は b と思われますが…"), so the answer is forced into shape with
vLLM structured outputs: a ``choice`` over the letters for single answers, a ``regex`` of sorted,
distinct, comma-joined letters ("a,c" — IgakuQA's official format, no spaces) for multiple answers
and a number pattern for numeric items. Servers that cannot constrain (older vLLM silently ignores
fields it does not know; others reject them) still give usable answers through two fallbacks, in
order: letters parsed from the text, then "gestalt" matching of the text against the choice texts.
``method`` records which won.

Solving is written once, as :func:`solve`: a generator of :class:`~ragmed.pipeline.LLMCall`\ s with no
I/O of its own (retrieval and packing go through :meth:`RagPipeline.prepare` with an :class:`ExamPrompt`),
run by :func:`~ragmed.pipeline.drive` or :func:`~ragmed.pipeline.adrive` (:class:`ExamSolver`).
"""

from __future__ import annotations

import difflib
import itertools
import re
import time
import unicodedata
from collections.abc import Generator, Sequence

from ragmed.errors import InputError, UpstreamRejected
from ragmed.generate.base import ChatBackend
from ragmed.pipeline import (
    OWN_TIMINGS,
    LLMCall,
    PromptBuilder,
    PromptParts,
    RagPipeline,
    adrive,
    drive,
    ms_since,
)
from ragmed.prompts import PromptTemplate
from ragmed.schema import (
    CHOICE_PREFIX,
    EXAM_KINDS,
    LETTERS,
    ChatResult,
    Choice,
    Citation,
    ExamAnswer,
    ExamExample,
    ExamKind,
    ExamMethod,
    Message,
    SamplingParams,
    Source,
)

NUMBER_RE = r"-?[0-9]+(\.[0-9]+)?"
#: max_tokens of an unconstrained retry: room for a sentence the fallbacks can parse.
UNCONSTRAINED_TOKENS = 32


# --------------------------------------------------------------------------- choices and constraints


def parse_choices(choices: Sequence[str]) -> list[Choice]:
    """``["a. …", "b. …"]`` keep their letters; plain texts get a, b, c… by position.

    Prefixed letters are used only when every choice carries one and they are distinct; otherwise
    position decides (IgakuQA's lists are unprefixed, IgakuQA119's are prefixed). The letter prefix is
    recognised after NFKC (``ｂ．`` is ``b.``), but the text keeps the source's own characters: the
    gestalt fallback compares the model's reply with the choices as written, as the harness does.
    """
    if len(choices) > len(LETTERS):
        raise InputError(f"too many choices ({len(choices)}); at most {len(LETTERS)}")
    trimmed = [c.strip() for c in choices]
    matches = [CHOICE_PREFIX.match(unicodedata.normalize("NFKC", c)) for c in trimmed]
    if matches and all(matches):
        letters = [m.group(1).lower() for m in matches if m]
        if len(set(letters)) == len(letters):
            return [
                Choice(letter=letter, text=_after_prefix(c, m.end()))
                for letter, c, m in zip(letters, trimmed, matches, strict=True)
                if m
            ]
    # unprefixed texts stay exactly as given, stray spaces included (JMMLU's): the harness's gestalt
    # compares the raw choice texts; prompts show them trimmed (choices_text)
    return [Choice(letter=LETTERS[i], text=c) for i, c in enumerate(choices)]


def _after_prefix(text: str, normalized_end: int) -> str:
    """``text`` without its letter prefix, whose NFKC form is ``normalized_end`` characters long."""
    for cut in range(1, len(text) + 1):
        if len(unicodedata.normalize("NFKC", text[:cut])) >= normalized_end:
            return text[cut:].strip()
    return ""


def multi_regex(letters: Sequence[str], n_answers: int | None = None) -> str:
    """Regex matching exactly the sorted, distinct, comma-joined letter sets (of size ``n_answers``)."""
    ordered = sorted(set(letters))
    if n_answers is not None:
        if not 1 <= n_answers <= len(ordered):
            raise InputError(f"n_answers={n_answers} but there are {len(ordered)} choices")
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
) -> tuple[str, ExamMethod]:
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


def instruction(tpl: PromptTemplate, kind: ExamKind, letters: Sequence[str], n_answers: int | None) -> str:
    """What the model is told to answer, in the template's words."""
    joined = ", ".join(letters)
    if kind == "numeric":
        return tpl.render("exam_numeric")
    if kind == "single":
        return tpl.render("exam_single", letters=joined)
    if n_answers is None:
        return tpl.render("exam_multi_any", letters=joined)
    return tpl.render("exam_multi", n=n_answers, letters=joined)


def choices_text(choices: Sequence[Choice]) -> str:
    return "\n".join(f"{c.letter}. {c.text.strip()}" for c in choices)


class ExamPrompt(PromptBuilder):
    """The exam item (question, lettered choices, answer instruction), after solved examples (few-shot)
    as earlier chat turns, with the retrieved context as optional reference material."""

    def __init__(
        self,
        choices: Sequence[Choice],
        instruction: str,
        first_instruction: str,
        examples: Sequence[ExamExample] = (),
    ) -> None:
        self.choices = list(choices)
        self.instruction = instruction
        self.first_instruction = first_instruction
        self.examples = list(examples)
        self.fixed_messages = 2 + 2 * len(self.examples)

    def _example_turns(self, tpl: PromptTemplate) -> list[Message]:
        turns: list[Message] = []
        for ex in self.examples:
            opts = parse_choices(ex.choices) if ex.kind != "numeric" else []
            said = instruction(tpl, ex.kind, [c.letter for c in opts], ex.n_answers)
            user = tpl.render(
                "exam_user",
                context_block="",
                question=ex.question,
                choices=choices_text(opts),
                instruction=said,
            )
            turns += [{"role": "user", "content": user}, {"role": "assistant", "content": ex.answer}]
        return turns

    def fixed_text(self, tpl: PromptTemplate, *, rag: bool, diseases: str) -> str:
        shots = "".join(m["content"] for m in self._example_turns(tpl))
        return (
            tpl.exam_system
            + shots
            + tpl.render(
                "exam_user",
                context_block=tpl.render("exam_context", context="") if rag else "",
                question="",
                choices=choices_text(self.choices),
                instruction=self.first_instruction,
            )
        )

    def messages(self, tpl: PromptTemplate, parts: PromptParts) -> list[Message]:
        user = tpl.render(
            "exam_user",
            context_block=tpl.render("exam_context", context=parts.context) + "\n\n" if parts.rag else "",
            question=parts.question,
            choices=choices_text(self.choices),
            instruction=self.first_instruction,
        )
        return [
            {"role": "system", "content": tpl.exam_system},
            *self._example_turns(tpl),
            {"role": "user", "content": user},
        ]


def _add_usage(total: dict[str, int], result: ChatResult) -> None:
    for key, value in result.usage.items():
        total[key] = total.get(key, 0) + value


def solve(
    pipeline: RagPipeline,
    question: str,
    choices: Sequence[str],
    kind: ExamKind = "single",
    n_answers: int | None = None,
    rag: bool = True,
    reasoning: bool = False,
    examples: Sequence[ExamExample] = (),
) -> Generator[LLMCall, ChatResult, ExamAnswer]:
    """Solve one exam item: yields the LLM calls it needs, returns the :class:`ExamAnswer`.

    Retrieval searches the question plus the choice texts. With ``reasoning`` a free-text step comes
    first (``generation.exam_reasoning_tokens``), then the constrained answer. A server that refuses the
    structured-output request (:class:`UpstreamRejected` thrown in by the driver) is asked again
    unconstrained, and the fallbacks read its text.
    """
    if kind not in EXAM_KINDS:
        raise InputError(f"unknown exam kind {kind!r}: single, multi or numeric")
    if kind != "numeric" and not choices:
        raise InputError(f"a {kind!r} question needs choices")
    opts = parse_choices(choices) if kind != "numeric" else []
    letters = [c.letter for c in opts]
    tpl = pipeline.template
    settings = pipeline.settings
    said = instruction(tpl, kind, letters, n_answers)
    prompt = ExamPrompt(opts, said, tpl.render("exam_reasoning") if reasoning else said, examples)
    answer_params = constraint(kind, letters, n_answers).model_copy(update={"seed": settings.generation.seed})
    budget_params = answer_params.model_copy(
        update={
            "max_tokens": answer_params.max_tokens
            + (settings.generation.exam_reasoning_tokens if reasoning else 0)
        }
    )
    query = question + ("\n" + " ".join(c.text.strip() for c in opts) if opts else "")
    prep = pipeline.prepare(question, rag, budget_params, query=query, prompt=prompt)
    messages = list(prep.messages)
    usage: dict[str, int] = {}
    warnings: list[str] = []
    reasoning_text: str | None = None
    t = time.perf_counter()
    if reasoning:
        free = yield LLMCall(
            messages, pipeline.sampling(max_tokens=settings.generation.exam_reasoning_tokens)
        )
        _add_usage(usage, free)
        reasoning_text = free.text
        messages += [
            {"role": "assistant", "content": free.text},
            {"role": "user", "content": tpl.render("exam_after_reasoning", instruction=said)},
        ]
    constrained = settings.llm.structured_outputs != "none"
    params = answer_params if constrained else answer_params.unconstrained(UNCONSTRAINED_TOKENS)
    try:
        result = yield LLMCall(messages, params)
    except UpstreamRejected as exc:
        warnings.append(f"The server refused the structured-output request ({exc}); answered unconstrained.")
        constrained = False
        result = yield LLMCall(messages, params.unconstrained(UNCONSTRAINED_TOKENS))
    _add_usage(usage, result)
    llm_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    prediction, method = extract(result.text, opts, kind, n_answers, constrained)
    if constrained and method != "constrained":
        warnings.append(
            f"The server returned {result.text.strip()[:40]!r}, outside the allowed answers: it does not "
            f"apply structured outputs ({settings.llm.structured_outputs!r}); fell back to {method}."
        )
    timings = dict(prep.timings)
    timings["llm_ms"] = round(llm_ms, 3)
    timings["parse_ms"] = ms_since(t)
    timings["ragmed_ms"] = round(sum(timings.get(k, 0.0) for k in OWN_TIMINGS), 3)
    timings["total_ms"] = round(timings["ragmed_ms"] + llm_ms, 3)
    packed = prep.packed.chunks if prep.packed else []
    return ExamAnswer(
        letters=[] if kind == "numeric" or not prediction else prediction.split(","),
        prediction=prediction,
        raw_text=result.text,
        method=method,
        sources=[Source.from_chunk(c) for c in packed],
        citations=[Citation.from_chunk(c) for c in packed],
        chunks=prep.retrieved,
        usage=usage,
        timings=timings,
        prompt_hash=tpl.sha256,
        model=result.model,
        kind=kind,
        shots=len(examples),
        reasoning=reasoning_text,
        linked=prep.linked,
        warnings=list(prep.warnings) + warnings,
    )


class ExamSolver:
    """Exam items answered through a :class:`RagPipeline` (its retriever, template and LLM)."""

    def __init__(self, pipeline: RagPipeline) -> None:
        self.pipeline = pipeline

    @property
    def llm(self) -> ChatBackend:
        return self.pipeline.llm

    def answer_exam(self, question: str, choices: Sequence[str], **kwargs: object) -> ExamAnswer:
        """Solve one item (keywords as :func:`solve`), sync."""
        return drive(solve(self.pipeline, question, choices, **kwargs), self.pipeline.llm)  # type: ignore[arg-type]

    async def aanswer_exam(self, question: str, choices: Sequence[str], **kwargs: object) -> ExamAnswer:
        """Solve one item (keywords as :func:`solve`) on an event loop."""
        return await adrive(solve(self.pipeline, question, choices, **kwargs), self.pipeline.llm)  # type: ignore[arg-type]
