"""Latin-letter eponyms and loanwords read as the katakana the standard names write them in.

Clinical Japanese writes many eponyms and loanwords in Latin letters — ``Ｍｅｎｉｅｒｅ病``,
``Ｃｏｗｄｅｎ病``, ``Ｅｈｌｅｒｓ−Ｄａｎｌｏｓ症候群``, ``Ｌｅｇｉｏｎｅｌｌａ`` — where the standard name has
katakana (メニエール病, カウデン病, エーラス・ダンロス症候群, レジオネラ症). Each eponym is rare, so neither the
learned rewrite rules nor the character encoders generalise to an unseen one. Here a Latin word of the
query is read aloud by ``kanalizer`` (VOICEVOX's English-word-to-katakana model: Meniere → メニエール,
Addison → アディソン), and the reading is matched, with ``rapidfuzz``, against the katakana runs of the
standard names, both spelled out in romaji (``jaconv``) after folding the spellings loanwords vary in
(long vowels, ッ, ティ/チ, ズ/ス): アディソン → アジソン. What comes out is a rewrite of the query (the word
replaced by the run), scored by the ranker like the learned rules' rewrites; a word whose nearest run is
not close enough gives none. An English reading far from the Japanese one is missed (Wernicke read
ワーニッケ, not ウェルニッケ).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from ragmed.normalize.text import normalize_key

MIN_WORD = 3  # shorter Latin runs are abbreviations, not words to read aloud
MAX_WORD = 20  # longer runs are phrases written without spaces (bluetoesyndrome), not one word
MIN_SIMILARITY = 72.0  # rapidfuzz ratio (0–100) of the romaji a reading needs with a run
PER_WORD = 2  # runs kept per word
CACHE = 50_000  # words whose runs are remembered
_WORD = re.compile(r"[a-zß-öø-ÿ]+")  # accented letters too: Ménière, Sjögren, Behçet
_RUN = re.compile(r"[ア-ヺ][ア-ヺー]+")
_VOWEL = re.compile(r"[aeiouy]")
# loanword spellings that vary (in key space: small kana are already full size, ヴ is ブ)
_FOLD = (
    ("ー", ""),
    ("ッ", ""),
    ("テイ", "チ"),
    ("デイ", "ジ"),
    ("ウイ", "イ"),
    ("ウエ", "エ"),
    ("ウオ", "オ"),
    ("ズ", "ス"),
    ("ヂ", "ジ"),
    ("ヅ", "ス"),
)


def romaji(run: str) -> str:
    """A katakana run (a matching key) folded and spelled out: アディソン and アジソン both become ``ajison``."""
    import jaconv

    for a, b in _FOLD:
        run = run.replace(a, b)
    return jaconv.kana2alphabet(jaconv.kata2hira(run))


def runs_of(key: str) -> list[str]:
    """The katakana runs of a name key (パスツレラ of パスツレラ症; プラダー and ウイリー of プラダー・ウイリー症候群)."""
    return [m.group() for m in _RUN.finditer(key)]


class KatakanaRuns:
    """The katakana runs of the standard names (as matching keys), looked up by a Latin word's reading."""

    def __init__(self, runs: list[str]) -> None:
        self.runs = runs
        self._romaji: list[str] | None = None
        self._read: dict[str, tuple[tuple[str, float], ...]] = {}

    @classmethod
    def build(cls, name_keys: Iterable[str]) -> KatakanaRuns:
        return cls(sorted({run for key in name_keys for run in runs_of(key)}))

    def _keys(self) -> list[str]:
        if self._romaji is None:
            self._romaji = [romaji(run) for run in self.runs]
        return self._romaji

    def read(self, word: str) -> tuple[tuple[str, float], ...]:
        """The runs nearest ``word`` (lower case; accents are dropped) read aloud, with their
        similarity, best first."""
        word = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
        if word not in self._read:
            if len(self._read) >= CACHE:
                self._read.clear()
            self._read[word] = self._lookup(word)
        return self._read[word]

    def _lookup(self, word: str) -> tuple[tuple[str, float], ...]:
        if not MIN_WORD <= len(word) <= MAX_WORD or not _VOWEL.search(word) or not self.runs:
            return ()
        import kanalizer
        from rapidfuzz import fuzz, process

        # a reading cut short (a long word) is kept as it is: it then matches nothing
        reading = normalize_key(kanalizer.convert(word, on_incomplete="ignore"))
        hits = process.extract(
            romaji(reading), self._keys(), scorer=fuzz.ratio, limit=PER_WORD, score_cutoff=MIN_SIMILARITY
        )
        return tuple((self.runs[i], float(score)) for _, score, i in hits)

    def rewrites(self, key: str) -> list[tuple[int, int, str, float]]:
        """(start, end, katakana, similarity): each Latin word of ``key`` replaced by a run it reads as;
        hyphenated words (``ehlers-danlos``) also together, joined by ・ as the names write them."""
        out: list[tuple[int, int, str, float]] = []
        words = list(_WORD.finditer(key))
        for m in words:
            for run, score in self.read(m.group()):
                out.append((m.start(), m.end(), run, score))
        for m1, m2 in zip(words, words[1:], strict=False):
            if key[m1.end() : m2.start()] in ("-", "・"):
                r1, r2 = self.read(m1.group()), self.read(m2.group())
                if r1 and r2:
                    score = min(r1[0][1], r2[0][1])
                    out.append((m1.start(), m2.end(), f"{r1[0][0]}・{r2[0][0]}", score))
        return out
