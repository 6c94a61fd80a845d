"""How the CLI shows things: rich tables for people, JSON shapes for programs (``--json``).

The JSON shapes are pydantic models so that ``ragmed schema`` can publish them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field
from rich.table import Table

from ragmed.cli.base import out
from ragmed.normalize.results import FLAGS
from ragmed.schema import Chunk, Citation, Source

#: ``ragmed search --json``: the fields of each hit, in order.
HIT_FIELDS = (
    "rank",
    "score",
    "text",
    "source",
    "node_id",
    "metadata",
    "dense_score",
    "bm25_score",
    "rerank_score",
)


class SearchHit(BaseModel):
    """One line of ``ragmed search --json`` (a JSON list of these per query)."""

    rank: int
    score: float
    text: str
    source: str
    node_id: str
    metadata: dict[str, Any]
    dense_score: float | None = None
    bm25_score: float | None = None
    rerank_score: float | None = None


class NameHit(BaseModel):
    """One line of ``ragmed normalize --json``: a standard name for a term, or a linked mention
    (``--text``: ``metadata`` then also holds mention, start, end, the flags of ``FLAGS`` and candidates)."""

    rank: int
    score: float
    text: str
    source: str = ""
    node_id: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


def hit_json(chunk: Chunk) -> dict[str, Any]:
    return SearchHit(
        rank=chunk.rank or 0,
        score=chunk.score or 0.0,
        text=chunk.text,
        source=chunk.source,
        node_id=chunk.node_id,
        metadata=chunk.metadata,
        dense_score=chunk.dense_score,
        bm25_score=chunk.bm25_score,
        rerank_score=chunk.rerank_score,
    ).model_dump()


def show_hits(query: str, hits: list[dict[str, Any]]) -> None:
    table = Table(title=query, show_lines=True)
    for col in ("#", "score", "source", "name / title", "ICD-10", "text"):
        table.add_column(col, overflow="fold")
    for h in hits:
        m = h["metadata"]
        table.add_row(
            str(h["rank"]),
            f"{h['score']:.4f}",
            h["source"],
            str(m.get("standard_name") or m.get("title", "")),
            str(m.get("icd10", "")),
            h["text"][:160],
        )
    out.print(table)


def name_json(index: Any, c: Any) -> dict[str, Any]:
    """A normalizer candidate as a :class:`NameHit` (the dictionary row that supports it, when known)."""
    record = index.by_id([c.node_id]).get(c.node_id)
    meta = {
        "standard_name": c.standard_name,
        "standard_names": c.standard_names,
        "icd10": c.icd10,
        "level": c.level,
        "surface": c.surface,
    }
    return NameHit(
        rank=c.rank,
        score=float(c.score),
        text=record["text"] if record else c.standard_name,
        source=record["metadata"].get("source", "") if record else "",
        node_id=c.node_id,
        metadata=meta,
    ).model_dump()


def mention_rows(index: Any, text: str, k: int) -> list[dict[str, Any]]:
    """Linked mentions in ``text``: the best name per mention, its span, flags and all candidates."""
    linked = [m for m in index.normalizer.find_mentions(text, k=k) if m.candidates]
    rows = []
    for rank, m in enumerate(linked, start=1):
        row = name_json(index, m.candidates[0])
        row.update(rank=rank, text=m.text)
        row["metadata"].update(
            mention=m.text,
            start=m.start,
            end=m.end,
            **m.flags(),
            candidates=[name_json(index, c) for c in m.candidates],
        )
        rows.append(row)
    return rows


def show_names(query: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=query)
    for col in ("#", "score", "standard name", "ICD-10", "level", "matched surface", "mention"):
        table.add_column(col)
    for r in rows:
        m = r["metadata"]
        mention = m.get("mention", "")
        flags = [w for w in FLAGS if m.get(w)]
        if flags:
            mention += f" ({', '.join(flags)})"
        table.add_row(
            str(r["rank"]),
            f"{r['score']:.3f}",
            m["standard_name"],
            m["icd10"],
            m.get("level", ""),
            m["surface"],
            mention,
        )
    out.print(table)


def show_info(info: dict[str, Any], as_json: bool) -> None:
    from ragmed.cli.base import print_json

    if as_json:
        print_json(info)
        return
    table = Table(title=f"index {info['name']}", show_header=False)
    for key in ("path", "ragmed_version", "created", "updated", "dimension", "device", "fingerprint"):
        table.add_row(key, str(info.get(key, "")))
    emb = info["embedding"]
    table.add_row(
        "embedding", f"{emb['name']} (query {emb['query_prefix']!r}, passage {emb['passage_prefix']!r})"
    )
    table.add_row("faiss", json.dumps(info["faiss"]))
    bm25 = info.get("bm25") or {}
    if bm25.get("languages"):
        table.add_row("bm25 chunks by language", json.dumps(bm25["languages"]))
    for lang, desc in (bm25.get("analyzers") or {}).items():
        table.add_row(f"bm25 analyzer ({lang})", desc)
    table.add_row("counts", json.dumps(info["counts"]))
    for s in info["sources"]:
        table.add_row(f"source ({s['kind']})", f"{s['path']}  {s['nodes']} nodes  sha256 {s['sha256'][:12]}")
    out.print(table)


def show_sources(items: Sequence[Source | Citation], title: str = "Sources") -> None:
    """The table beside an answer: n, source, title/standard name, ICD-10, score (and cited)."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for col in ("n", "source", "title / standard name", "ICD-10", "score", "cited"):
        table.add_column(col, overflow="fold")
    for c in items:
        name = c.title
        if c.standard_name and c.standard_name not in (c.title, "-1"):
            name = f"{c.title} ({c.standard_name})"
        cited = getattr(c, "cited", True)
        table.add_row(
            f"[{c.n}]",
            c.source,
            name,
            c.icd10 if c.icd10 and c.icd10 != "-1" else "",
            "" if c.score is None else f"{c.score:.4f}",
            "✓" if cited else "",
        )
    out.print(table)
