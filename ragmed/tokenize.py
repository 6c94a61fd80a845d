"""Japanese tokenization for BM25: fugashi (MeCab) with the bundled unidic-lite dictionary.

Text is NFKC-normalized and lower-cased first so that full-width ＣＭＶ, half-width kana and
English case variants meet the same tokens. Particles, auxiliary verbs and punctuation carry no
retrieval signal and are dropped.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterable

import fugashi

_DROP_POS = {"助詞", "助動詞", "補助記号", "空白"}
_local = threading.local()


def _tagger() -> fugashi.Tagger:
    # MeCab taggers are not thread-safe; one per thread (the API serves from a thread pool).
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        tagger = _local.tagger = fugashi.Tagger()
    return tagger


def normalize_text(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str) -> list[str]:
    """Content-word surface forms of ``text`` (NFKC, lower-case)."""
    return [
        w.surface
        for w in _tagger()(normalize_text(text))
        if w.feature.pos1 not in _DROP_POS and w.surface.strip()
    ]


def tokenize_many(texts: Iterable[str]) -> list[list[str]]:
    return [tokenize(t) for t in texts]


def morphemes(text: str) -> list[str]:
    """Every morpheme, punctuation included: the unit for token-budgeted chunking."""
    return [w.surface for w in _tagger()(text)]
