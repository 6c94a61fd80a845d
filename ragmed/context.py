"""Prompt budgeting and citations: token counting, context packing, fencing, citation parsing.

Context packing counts tokens with the model's own tokenizer when it can (vLLM's ``/tokenize``, a local
tokenizer folder, or the in-process engine) because Japanese costs very different numbers of tokens per
character across tokenizers; otherwise it falls back to the UTF-8 byte count, an upper bound for
byte-level BPE and byte-fallback tokenizers, and says so in the warnings. Everything the prompt holds —
fixed text, every message's role markers, the earlier conversation, the question and the passages — is
counted against ``context length − max_tokens``, so a packed prompt fits by construction.

Retrieved text is data, not instructions: each passage is rendered inside a fence whose id is random per
request (a document cannot forge its closing tag), and tag- or citation-like text inside a passage is
escaped, so a document cannot pose as another source or as the prompt's own markup.

Citations are the ``[n]`` markers the model wrote — only the prompt's own marker form (``[1]``,
``[1, 3]``, ``[2-4]`` with at most :data:`MAX_CITATION_RANGE` numbers), mapped back to the numbered
passages; numbers that point at nothing are dropped and reported, and a marker that follows text the
answer copied from a passage is flagged ``in_quote`` (it may be that document's own reference).
"""

from __future__ import annotations

import logging
import re
import secrets
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ragmed.errors import ContextTooSmallError, UpstreamError
from ragmed.schema import Chunk, Citation, ContextInfo, Message

if TYPE_CHECKING:
    from ragmed.generate.base import ChatBackend
    from ragmed.prompts import PromptTemplate

log = logging.getLogger(__name__)

#: Tokens the chat template adds once per prompt (BOS, generation prompt); generous for safety.
CHAT_OVERHEAD_TOKENS = 16
#: Tokens the chat template adds around each message (role markers, separators); generous for safety.
MESSAGE_OVERHEAD_TOKENS = 8
#: Tokens tokenization may differ by when two pieces are counted apart instead of together.
JOIN_SLACK_TOKENS = 2
#: Below this, a partially fitting passage is not worth truncating.
MIN_PARTIAL_TOKENS = 48
#: Assumed when neither the server nor the settings give the model's context length.
DEFAULT_CONTEXT_LENGTH = 4096
#: A question cut shorter than this is not worth sending.
MIN_QUESTION_TOKENS = 32
#: A citation range such as [2-4] may name at most this many sources; longer ones are not citations.
MAX_CITATION_RANGE = 5


# --------------------------------------------------------------------------- token counting


class TokenCounter(ABC):
    """Counts tokens of the model that will read the prompt; ``exact`` says whether it can."""

    exact: bool = False
    description: str = ""

    @abstractmethod
    def count(self, text: str) -> int:
        """Tokens in ``text``."""


class ByteEstimateCounter(TokenCounter):
    """UTF-8 bytes: no byte-level BPE or byte-fallback token covers less than one byte."""

    exact = False
    description = "estimate: UTF-8 bytes (upper bound for byte-level tokenizers)"

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))


class BackendTokenCounter(TokenCounter):
    """The backend's own tokenizer (vLLM ``/tokenize`` or in-process vLLM)."""

    exact = True

    def __init__(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.description = f"exact: tokenizer of {backend.model} via {backend.where}"

    def count(self, text: str) -> int:
        n = self.backend.count_tokens(text)
        if n is None:  # the server stopped offering it; an estimate beats a crash
            return ByteEstimateCounter().count(text)
        return n


class HFTokenCounter(TokenCounter):
    """A Hugging Face tokenizer from a local folder (no downloads): ``tokenizer.json`` through the fast
    ``tokenizers`` library when present (microseconds, no HTTP), else transformers."""

    exact = True

    def __init__(self, path: str | Path) -> None:
        folder = Path(path)
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._encode: Callable[[str], int] = lambda text: len(
                fast.encode(text, add_special_tokens=False).ids
            )
        else:
            from transformers import AutoTokenizer

            slow = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self._encode = lambda text: len(slow.encode(text, add_special_tokens=False))
        self.description = f"exact: tokenizer in {folder}"
        self._cached = lru_cache(maxsize=4096)(self._encode)  # the system prompt etc. recur every call

    def count(self, text: str) -> int:
        return self._cached(text)


def make_token_counter(backend: ChatBackend | None, tokenizer: str | Path | None = None) -> TokenCounter:
    """Best available counter, in order: a configured tokenizer folder; the served model's own folder
    when it is on this machine (vLLM reports it as ``root``); the backend's tokenizer (vLLM's
    ``/tokenize``, one HTTP call per new text); else the UTF-8 byte estimate."""
    if tokenizer:
        return HFTokenCounter(tokenizer)
    if backend is not None:
        try:
            backend.context_length()  # discovers the model (and its folder) once
            root = backend.model_root
            if root and (Path(root) / "tokenizer.json").is_file():
                return HFTokenCounter(root)
            if backend.count_tokens("トークン数") is not None:
                return BackendTokenCounter(backend)
        except UpstreamError as exc:
            log.warning("token counting via %s failed (%s); using an estimate", backend.where, exc)
    return ByteEstimateCounter()


# --------------------------------------------------------------------------- fencing

_TAG_LIKE = re.compile(r"<(/?)(document\b)", re.IGNORECASE)
_MARKER_LIKE = re.compile(
    r"[\[［【〔]\s*([0-9０-９]{1,4}(?:\s*[-–〜~,、，;]\s*[0-9０-９]{1,4})*)\s*[\]］】〕]"
)


def new_fence() -> str:
    """A random id for this request's passage fences: no stored document can contain it by design."""
    return secrets.token_hex(6)


def escape_passage(text: str) -> str:
    """Passage text made unable to pose as prompt markup: ``<document``/``</document`` become
    full-width ``＜document``, and citation-like markers (``[2]``, ``【3】``, ``［1-4］``) become ``〔2〕``,
    which is neither the prompt's source marker nor parsed as a citation."""
    text = _TAG_LIKE.sub(lambda m: "＜" + m.group(1) + m.group(2), text)
    return _MARKER_LIKE.sub(lambda m: "〔" + m.group(1) + "〕", text)


# --------------------------------------------------------------------------- packing


def dedupe_and_order(chunks: Sequence[Chunk]) -> tuple[list[Chunk], int]:
    """Drop repeated nodes and repeated texts (keeping the best-scored copy); best score first."""
    ordered = sorted(
        enumerate(chunks), key=lambda ic: (ic[1].score is None, -(ic[1].score or 0.0), ic[0])
    )  # stable: retriever order breaks ties
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    out: list[Chunk] = []
    for _, chunk in ordered:
        key = "".join(unicodedata.normalize("NFKC", chunk.text).split())
        if chunk.node_id in seen_ids or key in seen_text:
            continue
        seen_ids.add(chunk.node_id)
        seen_text.add(key)
        out.append(chunk)
    return out, len(chunks) - len(out)


def truncate_to_tokens(text: str, limit: int, counter: TokenCounter, suffix: str = "…") -> str:
    """Longest prefix of ``text`` (plus ``suffix``) within ``limit`` tokens; binary search on chars."""
    if counter.count(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if counter.count(text[:mid] + suffix) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + suffix if lo else ""


class Packed(BaseModel):
    """Result of packing: the numbered chunks that fit, the context text, the (maybe cut) question and
    the earlier turns that fit."""

    chunks: list[Chunk]
    context: str
    question: str
    history: list[Message] = Field(default_factory=list)
    info: ContextInfo
    warnings: list[str] = Field(default_factory=list)


def fixed_cost(fixed_text: str, messages: int, counter: TokenCounter) -> int:
    """Tokens of the prompt's fixed text plus the chat template around ``messages`` messages."""
    return counter.count(fixed_text) + CHAT_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS * messages


def pack_context(
    chunks: Sequence[Chunk],
    question: str,
    fixed_text: str,
    template: PromptTemplate,
    counter: TokenCounter,
    context_length: int,
    max_tokens: int,
    *,
    history: Sequence[Message] = (),
    fixed_messages: int = 2,
    fence: str | None = None,
    with_context: bool = True,
) -> Packed:
    """Fit the question, the most recent earlier turns and as many best chunks as possible into
    ``context_length - max_tokens`` tokens.

    ``fixed_text`` is everything else the prompt holds (system prompt, template text, choices), spread
    over ``fixed_messages`` messages. An over-long question is truncated with a warning; earlier turns
    get at most half of what remains after it (oldest dropped first); a chunk that half fits is cut,
    later ones dropped. Raises :class:`ContextTooSmallError` when not even the fixed text and a short
    question fit.
    """
    warnings: list[str] = []
    fence = fence or new_fence()
    unique, duplicates = dedupe_and_order(chunks) if with_context else ([], 0)
    budget = context_length - max_tokens
    # The empty-context notice is reserved up front: it is sent when no chunk fits.
    used = fixed_cost(fixed_text, fixed_messages, counter)
    if with_context:
        used += counter.count(template.empty_context)
    q_tokens = counter.count(question)
    if used + q_tokens > budget:
        room = budget - used
        if room < MIN_QUESTION_TOKENS:
            raise ContextTooSmallError(
                f"The model's context ({context_length} tokens) cannot hold the prompt template ({used} tokens "
                f"with chat overhead), the answer ({max_tokens} tokens) and the question: use a model with a "
                "longer context, lower --max-tokens, or a shorter prompt template."
            )
        cut = truncate_to_tokens(question, room, counter)
        warnings.append(
            f"The question ({q_tokens} tokens) does not fit the model's context ({context_length} tokens, "
            f"{max_tokens} kept for the answer); it was truncated to {len(cut)} characters."
        )
        question, q_tokens = cut, counter.count(cut)
    used += q_tokens
    kept: list[Message] = []
    if history:
        room = (budget - used) // 2
        spent = 0
        for message in reversed(list(history)):
            cost = counter.count(message.get("content") or "") + MESSAGE_OVERHEAD_TOKENS
            if spent + cost > room:
                break
            kept.insert(0, {"role": message["role"], "content": message.get("content") or ""})
            spent += cost
        used += spent
        if len(kept) < len(history):
            warnings.append(
                f"The earlier conversation does not fit the model's context: {len(history) - len(kept)} of "
                f"{len(history)} earlier message(s) were left out (oldest first)."
            )
    packed: list[Chunk] = []
    items: list[str] = []
    dropped = 0
    for chunk in unique:
        n = len(packed) + 1
        header = template.render(
            "context_item",
            n=n,
            title=chunk.title or chunk.source,
            source=chunk.source,
            text="",
            icd10=chunk.icd10 or "",
            standard_name=chunk.standard_name or "",
            kind=chunk.kind or "",
            language=chunk.language or "",
            fence=fence,
        )
        body = escape_passage(chunk.text)
        cost = counter.count(header) + counter.count(body) + JOIN_SLACK_TOKENS
        truncated = False
        if used + cost > budget:
            room = budget - used - counter.count(header) - JOIN_SLACK_TOKENS
            if room < MIN_PARTIAL_TOKENS:
                dropped = len(unique) - len(packed)
                break
            body, truncated = truncate_to_tokens(body, room, counter), True
            cost = counter.count(header) + counter.count(body) + JOIN_SLACK_TOKENS
        used += cost
        items.append(
            template.render(
                "context_item",
                n=n,
                title=chunk.title or chunk.source,
                source=chunk.source,
                text=body,
                icd10=chunk.icd10 or "",
                standard_name=chunk.standard_name or "",
                kind=chunk.kind or "",
                language=chunk.language or "",
                fence=fence,
            )
        )
        text = chunk.text if not truncated else body.removesuffix("…")
        packed.append(chunk.model_copy(update={"n": n, "text": text, "truncated": truncated}))
        if truncated:
            dropped = len(unique) - len(packed)
            break
    if dropped or any(c.truncated for c in packed):
        warnings.append(
            f"Context budget reached: {len(packed)} of {len(unique)} chunks packed"
            + (" (the last one cut)" if packed and packed[-1].truncated else "")
            + "."
        )
    if not counter.exact:
        warnings.append(f"Token counts are estimates ({counter.description}).")
    return Packed(
        chunks=packed,
        context="\n\n".join(items) if items else template.empty_context,
        question=question,
        history=kept,
        info=ContextInfo(
            prompt_tokens=used,
            budget=budget,
            context_length=context_length,
            exact=counter.exact,
            counter=counter.description,
            packed=len(packed),
            dropped=dropped,
            duplicates=duplicates,
        ),
        warnings=warnings,
    )


# --------------------------------------------------------------------------- citations

# The prompt's own marker form only (after NFKC, ［１］ is [1]): [1], [1, 3], [2-4], [1][3].
_CITE = re.compile(r"\[\s*(\d{1,4}(?:\s*(?:[,、，;]|-|–|〜|~)\s*\d{1,4})*)\s*\]")
_RANGE = re.compile(r"\s*(?:-|–|〜|~)\s*")
_QUOTE_WINDOW = 24  # characters before a marker compared with the passages
_QUOTE_MIN = 12  # shorter windows are too generic to call a quotation


class Marker(BaseModel):
    """One citation marker in an answer (positions in the NFKC-normalized text)."""

    start: int
    end: int
    numbers: list[int]
    rejected: list[str] = Field(default_factory=list)  # parts that are not citations (oversized ranges)


def find_markers(text: str) -> list[Marker]:
    """Citation markers in ``text`` in order; a range over :data:`MAX_CITATION_RANGE` numbers is rejected."""
    out: list[Marker] = []
    for match in _CITE.finditer(unicodedata.normalize("NFKC", text)):
        numbers: list[int] = []
        rejected: list[str] = []
        for part in re.split(r"\s*[,、，;]\s*", match.group(1)):
            bounds = _RANGE.split(part)
            if len(bounds) == 2:
                lo, hi = int(bounds[0]), int(bounds[1])
                if lo <= hi and hi - lo < MAX_CITATION_RANGE:
                    numbers += range(lo, hi + 1)
                else:
                    rejected.append(part.strip())
            else:
                numbers += [int(b) for b in bounds]
        out.append(Marker(start=match.start(), end=match.end(), numbers=numbers, rejected=rejected))
    return out


def cited_numbers(text: str) -> list[int]:
    """The numbers cited in ``text`` in order of first use (``[1]``, ``[1, 3]``, ``[2-4]``, ``［１］``)."""
    found: list[int] = []
    for marker in find_markers(text):
        for n in marker.numbers:
            if n not in found:
                found.append(n)
    return found


def _after_quote(answer: str, marker: Marker, passages: Sequence[str]) -> bool:
    window = answer[max(0, marker.start - _QUOTE_WINDOW) : marker.start].strip()
    if len(window) < _QUOTE_MIN:
        return False
    pattern = re.compile(re.escape(window) + r"\s*[\[［【〔(（]\s*[0-9０-９]")
    return any(pattern.search(p) for p in passages)


class CitationResult(BaseModel):
    """Citations resolved against the packed passages."""

    citations: list[Citation]
    invalid: list[int] = Field(default_factory=list)  # numbers that point at no passage
    rejected: list[str] = Field(default_factory=list)  # marker parts that are not citations


def resolve_citations(text: str, packed: Sequence[Chunk]) -> CitationResult:
    """Map ``[n]`` back to packed chunks; numbers with no chunk and rejected ranges come back apart."""
    by_n = {c.n: c for c in packed if c.n is not None}
    answer = unicodedata.normalize("NFKC", text)
    passages = [unicodedata.normalize("NFKC", c.text) for c in packed]
    citations: list[Citation] = []
    seen: set[int] = set()
    invalid: list[int] = []
    rejected: list[str] = []
    for marker in find_markers(text):
        rejected += marker.rejected
        quoted = _after_quote(answer, marker, passages)
        for n in marker.numbers:
            if n in seen or n in invalid:
                continue
            if n in by_n:
                seen.add(n)
                citations.append(Citation.from_chunk(by_n[n], in_quote=quoted))
            else:
                invalid.append(n)
    return CitationResult(citations=citations, invalid=invalid, rejected=rejected)
