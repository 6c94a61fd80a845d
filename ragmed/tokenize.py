"""Japanese tokenization for BM25: fugashi (MeCab) with the bundled unidic-lite dictionary.

Text is NFKC-normalized and lower-cased first so that full-width ＣＭＶ, half-width kana and
English case variants meet the same tokens. Particles, auxiliary verbs and punctuation carry no
retrieval signal and are dropped.

MeCab is never handed an unbounded input: ~190,000 Latin letters in one call crash the process
(a segfault inside MeCab, seen with ``"a" * 193750`` and with many shorter runs joined by spaces).
Text reaches the tagger in calls of at most :data:`MAX_CALL_CHARS` characters, cut at a space or
punctuation where there is one, and a run of more than :data:`MAX_RUN_CHARS` characters with no break
(no word is that long) is cut into pieces of that length.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator

import fugashi

_DROP_POS = {"助詞", "助動詞", "補助記号", "空白"}
_local = threading.local()

#: Most characters handed to MeCab in one call (the crash needs ~190,000).
MAX_CALL_CHARS = 16_384
#: Longest run without a space or punctuation handed to MeCab as is.
MAX_RUN_CHARS = 1_024
_BREAK_CHARS = r"\s。、．，！？!?,.;；:："
_BREAK = re.compile(f"[{_BREAK_CHARS}]")
_LONG_RUN = re.compile(f"[^{_BREAK_CHARS}]{{{MAX_RUN_CHARS + 1},}}")


def _tagger() -> fugashi.Tagger:
    # MeCab taggers are not thread-safe; one per thread (the API serves from a thread pool).
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        tagger = _local.tagger = fugashi.Tagger()
    return tagger


def warm() -> None:
    """Create this thread's tagger now (a one-time cost that should not land in a query's timings)."""
    _tagger()


def normalize_text(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _split_runs(piece: str) -> Iterator[str]:
    last = 0
    for m in _LONG_RUN.finditer(piece):
        if m.start() > last:
            yield piece[last : m.start()]
        for j in range(m.start(), m.end(), MAX_RUN_CHARS):
            yield piece[j : min(j + MAX_RUN_CHARS, m.end())]
        last = m.end()
    if last < len(piece):
        yield piece[last:]


def bounded_pieces(text: str) -> Iterator[str]:
    """``text`` in consecutive pieces MeCab can take safely (see the module docstring); joined, they
    give ``text`` back."""
    if len(text) <= MAX_RUN_CHARS:
        if text:
            yield text
        return
    start, n = 0, len(text)
    while start < n:
        end = min(n, start + MAX_CALL_CHARS)
        if end < n:
            window = text[start + MAX_CALL_CHARS // 2 : end]
            breaks = list(_BREAK.finditer(window))
            if breaks:
                end = start + MAX_CALL_CHARS // 2 + breaks[-1].end()
        yield from _split_runs(text[start:end])
        start = end


def _words(text: str) -> Iterator[fugashi.UnidicNode]:
    tagger = _tagger()
    for piece in bounded_pieces(text):
        yield from tagger(piece)


def tokenize(text: str) -> list[str]:
    """Content-word surface forms of ``text`` (NFKC, lower-case).

    Reads MeCab's text output (one morpheme a line: surface, readings, lemma, ``pos1-pos2-…``) instead
    of fugashi's node objects, which parse all 29 feature fields of every morpheme in Python: the same
    tokens, 1.5–2.5× faster, and tokenizing is most of an index build."""
    tagger = _tagger()
    out: list[str] = []
    for piece in bounded_pieces(normalize_text(text)):
        for line in tagger.parse(piece).split("\n"):
            fields = line.split("\t", 5)
            if len(fields) > 4 and fields[4].split("-", 1)[0] not in _DROP_POS and fields[0].strip():
                out.append(fields[0])
    return out


def tokenize_many(texts: Iterable[str]) -> list[list[str]]:
    return [tokenize(t) for t in texts]


def morphemes(text: str) -> list[str]:
    """Every morpheme, punctuation included: the unit for token-budgeted chunking."""
    return [w.surface for w in _words(text)]


def spelled(text: str) -> list[tuple[str, str, str, str]]:
    """(surface, katakana spelling, part of speech, lemma) of every morpheme of ``text`` as it is (no
    normalization): すい臓 → スイゾウ, 名詞, 膵臓; the spelling and lemma are the surface where the
    dictionary has none (an unknown word). Read from MeCab's text output, like :func:`tokenize`."""
    tagger = _tagger()
    out: list[tuple[str, str, str, str]] = []
    for piece in bounded_pieces(text):
        for line in tagger.parse(piece).split("\n"):
            fields = line.split("\t", 5)
            if len(fields) > 4 and fields[0]:
                surface = fields[0]
                out.append((surface, fields[2] or surface, fields[4].split("-", 1)[0], fields[3] or surface))
    return out


# --------------------------------------------------------------------------- language and English words

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
#: A text is Japanese when at least this share of its letters are kana or kanji. One kanji carries
#: about as much as a short English word, so a Japanese text full of English terms (CT, MRI, HbA1c)
#: stays Japanese, and an English abstract quoting one Japanese name stays English.
JA_MIN_SHARE = 0.15
_EN_WORD = re.compile(r"[a-z0-9]+(?:['’][a-z]+)*")


def detect_language(text: str) -> str:
    """``"ja"`` or ``"en"``, from the share of kana/kanji among the letters (the two languages ragmed
    indexes; a text with no letters at all counts as Japanese, the dictionary's language)."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    if cjk + latin == 0:
        return "ja"
    return "ja" if cjk / (cjk + latin) >= JA_MIN_SHARE else "en"


def english_words(text: str) -> list[str]:
    """Latin-script words of ``text`` (NFKC, lower-case, possessive 's dropped); other scripts are
    skipped, so a Japanese query yields just its English terms."""
    return [w.split("'")[0].split("’")[0] for w in _EN_WORD.findall(normalize_text(text))]
