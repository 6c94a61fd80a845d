"""Leakage guard: does the retrieval index already contain the exam items?

WHY: a RAG score means nothing if the corpus holds the exam questions (or their answer keys) —
retrieval would just look the answer up. We measure, for every question, the share of its
character n-grams found in each chunk (containment; exact, so no false negatives for verbatim
copies), and a MinHash (datasketch) Jaccard estimate as a second, order-insensitive signal.
Character n-grams because Japanese has no spaces; NFKC and whitespace removal so full-width/
half-width and line-break variants still match. N-grams shared by many questions (stock phrases
such as 「最も考えられるのはどれか。」) are dropped so they cannot trigger a match on their own.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from datasketch import MinHash
from pydantic import BaseModel, Field
from ragmed_eval.schema import Question

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    return _WS.sub("", unicodedata.normalize("NFKC", text or "")).lower()


def char_ngrams(text: str, n: int) -> set[str]:
    t = normalize_text(text)
    if len(t) < n:
        return {t} if t else set()
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def _minhash(grams: Iterable[str], num_perm: int = 64) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=1)
    for g in grams:
        m.update(g.encode("utf-8"))
    return m


def _node_text(node: Any) -> str:
    text = getattr(node, "text", None)
    if text is None and hasattr(node, "get_content"):
        text = node.get_content()
    if text is None and isinstance(node, dict):
        text = node.get("text", "")
    return str(text or "")


def _node_id(node: Any) -> str:
    nid = getattr(node, "node_id", None)
    if nid is None and isinstance(node, dict):
        nid = node.get("id") or node.get("node_id")
    return str(nid)


def _node_meta(node: Any) -> dict[str, Any]:
    meta = getattr(node, "metadata", None)
    if meta is None and isinstance(node, dict):
        meta = node.get("metadata", {})
    return dict(meta or {})


class LeakageHit(BaseModel):
    question_id: str
    node_id: str
    containment: float = Field(description="share of the question's n-grams found in the chunk")
    jaccard_minhash: float
    answer_in_chunk: bool = Field(
        description="the chunk also holds the gold choice text (question+answer leak)"
    )
    source: str | None = None
    excerpt: str = ""


class LeakageReport(BaseModel):
    n_questions: int
    n_nodes: int
    ngram: int
    threshold: float
    hits: list[LeakageHit] = Field(default_factory=list)
    skipped_short: list[str] = Field(default_factory=list)
    excluded: bool = False

    @property
    def contaminated_questions(self) -> list[str]:
        return sorted({h.question_id for h in self.hits})

    @property
    def answer_leaks(self) -> list[str]:
        return sorted({h.question_id for h in self.hits if h.answer_in_chunk})

    @property
    def node_ids(self) -> set[str]:
        return {h.node_id for h in self.hits}

    @property
    def clean(self) -> bool:
        return not self.hits

    def summary(self) -> dict[str, Any]:
        return {
            "n_questions": self.n_questions,
            "n_nodes": self.n_nodes,
            "ngram": self.ngram,
            "threshold": self.threshold,
            "contaminated_questions": self.contaminated_questions,
            "question_answer_leaks": self.answer_leaks,
            "contaminated_node_ids": sorted(self.node_ids),
            "n_hits": len(self.hits),
            "skipped_short": self.skipped_short,
            "excluded": self.excluded,
            "verdict": "clean" if self.clean else ("excluded" if self.excluded else "CONTAMINATED"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "hits": [h.model_dump() for h in self.hits]}


def check_leakage(
    questions: Sequence[Question],
    nodes: Iterable[Any],
    *,
    ngram: int = 12,
    threshold: float = 0.5,
    min_grams: int = 8,
    common_df: int = 3,
) -> LeakageReport:
    """Find chunks that contain an exam item.

    A (question, chunk) pair is flagged when at least `threshold` of the question's distinctive
    character `ngram`-grams occur in the chunk; `answer_in_chunk` marks chunks that also hold the
    text of a gold choice (or the numeric answer). Questions with fewer than `min_grams` distinctive
    n-grams are listed in `skipped_short` instead of being guessed at. Runs in one pass over the
    nodes with a hash lookup per n-gram, so it scales to large corpora.
    """
    grams: dict[str, set[str]] = {q.id: char_ngrams(q.text, ngram) for q in questions}
    df = Counter(g for gs in grams.values() for g in gs)
    for qid in grams:
        grams[qid] = {g for g in grams[qid] if df[g] < common_df}
    skipped = sorted(qid for qid, gs in grams.items() if len(gs) < min_grams)
    postings: dict[str, list[str]] = defaultdict(list)
    for qid, gs in grams.items():
        if qid in skipped:
            continue
        for g in gs:
            postings[g].append(qid)
    q_minhash = {qid: _minhash(gs) for qid, gs in grams.items() if qid not in skipped}
    answers: dict[str, list[str]] = {}
    for q in questions:
        if q.kind == "numeric":
            texts = list(q.gold)
        else:
            letters = [*q.gold, *(a[0] for a in q.alternatives if a)]
            texts = [t for t in (q.choice_text(g) for g in letters) if t]
        answers[q.id] = [normalize_text(t) for t in texts if normalize_text(t)]

    hits: list[LeakageHit] = []
    n_nodes = 0
    for node in nodes:
        n_nodes += 1
        text = _node_text(node)
        ngs = char_ngrams(text, ngram)
        counts: Counter[str] = Counter()
        for g in ngs:
            for qid in postings.get(g, ()):
                counts[qid] += 1
        if not counts:
            continue
        norm = None
        for qid, c in counts.items():
            contain = c / len(grams[qid])
            if contain < threshold:
                continue
            norm = norm if norm is not None else normalize_text(text)
            meta = _node_meta(node)
            hits.append(
                LeakageHit(
                    question_id=qid,
                    node_id=_node_id(node),
                    containment=round(contain, 4),
                    jaccard_minhash=round(q_minhash[qid].jaccard(_minhash(ngs)), 4),
                    answer_in_chunk=any(a in norm for a in answers.get(qid, [])),
                    source=str(meta.get("source") or meta.get("file_name") or meta.get("title") or "")
                    or None,
                    excerpt=text[:160],
                )
            )
    hits.sort(key=lambda h: (h.question_id, -h.containment))
    return LeakageReport(
        n_questions=len(questions),
        n_nodes=n_nodes,
        ngram=ngram,
        threshold=threshold,
        hits=hits,
        skipped_short=skipped,
    )
