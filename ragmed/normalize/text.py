"""Matching keys for disease names: the one place that decides when two spellings are the same."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from ragmed.manbyo import nfkc
from ragmed.manbyo import split_names as split_names  # one definition, in the ingest layer

# Standard names are written with the JIS-level spellings of the MEDIS disease-name master, while
# clinical wording uses the full kanji (胆嚢 vs 胆のう: ~900 surfaces vs ~1,000 names in Manbyo).
# Katakana small vowels and ヴ are spelt either way in clinical text (ウィルス/ウイルス, ヴィタミン), and
# dashes come in several code points; folding them on both sides makes those slips identical.
ORTHOGRAPHY = {"嚢": "のう", "頸": "頚", "膣": "腟", "蔓": "つる"}
ORTHOGRAPHY.update({"ァ": "ア", "ィ": "イ", "ゥ": "ウ", "ェ": "エ", "ォ": "オ", "ヴ": "ブ"})
ORTHOGRAPHY.update({"−": "-", "‐": "-", "–": "-", "—": "-", "―": "-"})


def normalize_key(text: str) -> str:
    """Matching key: NFKC (full-width ＤＭ → DM), lower case, no whitespace, name-master spellings."""
    return "".join(ORTHOGRAPHY.get(ch, ch) for ch in "".join(nfkc(text).lower().split()))


def is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def is_latin_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def word_cuts(text: str, letter: Callable[[str], bool] = is_latin) -> list[bool]:
    """For each cut point ``0..len(text)``: does it fall inside a run of ``letter`` chars? A span
    ``text[a:b]`` cuts a word when ``cuts[a] or cuts[b]``: "HT" inside "HTML" is no mention, and a rule
    or surface learned from a letter written alone (Ｐ → 歯周炎) says nothing about that letter inside an
    acronym (ＩＰＦ). Made once per text: a query's few hundred spans test it by index."""
    flags = [letter(ch) for ch in text]
    return [False, *(x and y for x, y in zip(flags, flags[1:], strict=False)), False]


def unit_like(original: str, before: str) -> bool:
    """``original`` (a matched span as the user wrote it) reads as a unit of measure, not as the disease
    abbreviation it spells once lower-cased: mL, dL, pH, mEq (a lower-case letter first and a capital
    after it; disease abbreviations are written in capitals), or the part after the slash of pg/ml,
    mg/dl (``before``: the text just before the span)."""
    word = nfkc(original)
    if not (word.isascii() and word.isalpha()):
        return False
    if word[0].islower() and any(ch.isupper() for ch in word[1:]):
        return True
    prev = nfkc(before).rstrip()
    return prev.endswith("/") and len(prev) >= 2 and prev[-2].isascii() and prev[-2].islower()


def normalize_with_offsets(text: str) -> tuple[str, list[tuple[int, int]]]:
    """:func:`normalize_key`-style folding of running ``text`` that remembers, for each output char,
    its span in the original (so mention offsets index what the user wrote).

    A base char and the combining marks after it (incl. half-width ﾞ/ﾟ) are normalized together so
    that ｶﾞ → ガ maps back to both original chars. Whitespace becomes one space (no mention spans it).
    """
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and (unicodedata.combining(text[j]) or text[j] in "\uff9e\uff9f"):
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j]).lower()
        if piece.isspace():
            piece = " "
        for ch in "".join(ORTHOGRAPHY.get(c, c) for c in piece):
            out.append(ch)
            spans.append((i, j))
        i = j
    return "".join(out), spans
