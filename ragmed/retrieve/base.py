"""The retrieve stage's seams: what the pipeline needs from a retriever and from a disease linker.

WHY protocols: the pipeline answers from ragmed's own hybrid search, from any llama-index retriever
(through :mod:`ragmed.adapters.llama_index`) or from a user's class, and links diseases with the Manbyo
normalizer or anything else that finds mentions. It sees only these two shapes, and everything a retriever
knows about one query — hits, linked diseases, trace — comes back in one immutable :class:`Retrieval`
per call (no per-object "last trace" that concurrent requests would overwrite).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ragmed.schema import LinkedDisease, Retrieval


@runtime_checkable
class Retriever(Protocol):
    """Finds the chunks for one query. Must be safe to call from several threads at once."""

    def retrieve(self, query: str) -> Retrieval: ...


@runtime_checkable
class Linker(Protocol):
    """Finds disease mentions in a text and links each to a standard name (never Manbyo's "-1")."""

    def link(self, text: str) -> list[LinkedDisease]: ...
