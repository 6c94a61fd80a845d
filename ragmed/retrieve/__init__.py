"""Retrieve stage: the :class:`Retriever` / :class:`Linker` seams and ragmed's hybrid search."""

from ragmed.retrieve.base import Linker, Retriever
from ragmed.retrieve.hybrid import DictionaryLinker, HybridRetriever, Searcher, rrf

__all__ = ["DictionaryLinker", "HybridRetriever", "Linker", "Retriever", "Searcher", "rrf"]
