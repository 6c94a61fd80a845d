"""Small readers and parsers every loader shares: jsonl/json/csv with file:line errors, exam ids, years.

WHY apart from the registry: the odd-format loaders (igakuqa.py, igakuqa119.py) and the data-driven one
(tabular.py) all need them, and the registry imports those loaders; keeping the helpers here means no
module imports its own importer.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragmed_eval.schema import SECTION_GENERAL, SECTION_REQUIRED

from ragmed.errors import DatasetError

_ID_RE = re.compile(r"^(?P<exam>\d{3})(?P<block>[A-Z])(?P<num>\d+)$")

#: Exam number -> calendar year, per licensing exam. The dental exam's numbering is its own: the 116th
#: dental exam was held in January 2023, the 116th medical exam in February 2022.
EXAM_YEAR: dict[str, dict[int, int]] = {
    "medical": {112: 2018, 113: 2019, 114: 2020, 115: 2021, 116: 2022, 117: 2023, 118: 2024, 119: 2025},
    "dental": {113: 2020, 114: 2021, 115: 2022, 116: 2023, 117: 2024, 118: 2025},
}

# "2つ選べ", "2 つ選べ" (DenQA writes a space), full-width "２つ選べ", kanji "二つ選べ".
_N_SELECT = re.compile(r"([1-9１-９一二三四五])\s*つ\s*選べ")
_KANJI_NUM = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5}


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object); blank lines are skipped, bad JSON names file and line."""
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(path, lineno, f"invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DatasetError(path, lineno, "expected a JSON object")
            yield lineno, obj


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DatasetError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DatasetError(path, None, f"not UTF-8 text ({e.reason})") from None


def read_csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, row) of a CSV file, quoted newlines counted; empty rows skipped."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        while True:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DatasetError(path, reader.line_num, f"bad CSV: {e}") from None
            if row and any(c.strip() for c in row):
                yield line, row


def parse_problem_id(
    pid: str, exam: str = "medical"
) -> tuple[int | None, int | None, str | None, int | None]:
    """'112A1' -> (112, 2018, 'A', 1); other shapes -> all None. ``exam`` picks the year table."""
    m = _ID_RE.match(pid)
    if not m:
        return None, None, None, None
    number = int(m["exam"])
    return number, EXAM_YEAR.get(exam, {}).get(number), m["block"], int(m["num"])


def section_of(block: str | None) -> str | None:
    """The medical exam's sections: blocks B and E are 必修, the others 一般・臨床."""
    if block is None:
        return None
    return SECTION_REQUIRED if block in ("B", "E") else SECTION_GENERAL


def n_select(text: str) -> int | None:
    """The number of answers the question asks for ("2つ選べ", "2 つ選べ", "２つ選べ"), if stated."""
    m = _N_SELECT.search(text)
    if not m:
        return None
    ch = m.group(1)
    return _KANJI_NUM.get(ch) or int(unicodedata.normalize("NFKC", ch))


def parse_points(value: Any, *, path: Path, line: int | None) -> int:
    try:
        p = int(str(value).strip())
    except ValueError:
        raise DatasetError(path, line, f"points {value!r} is not an integer") from None
    if p < 0:
        raise DatasetError(path, line, f"points {value!r} is negative")
    return p
