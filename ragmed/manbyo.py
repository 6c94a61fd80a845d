"""Ingest: the Manbyo disease dictionary (万病辞書, NAIST sociocom, CC BY 4.0).

Reads the official xlsx release and the CSV copies users keep (UTF-8, UTF-8 with BOM, cp932),
with either ICD column name. Every row becomes a :class:`ManbyoEntry` and then a llama-index
``TextNode`` whose text reads well to both BM25/embeddings and an LLM.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
from llama_index.core.schema import TextNode
from pydantic import BaseModel

from ragmed.errors import DownloadError, ManbyoFormatError

SOURCE_CREDIT = "万病辞書 MANBYO (NAIST Social Computing Lab), CC BY 4.0"
OFFICIAL_URL = "https://sociocom.naist.jp/manbyou-dic/"
OFFICIAL_ZIP_URL = "https://sociocom.naist.jp/manbyo-dic/MANBYO_202106.zip"

COL_SURFACE = "出現形"
COL_READING = "出現形よみ"
COL_ICD = ("ICD10コード", "ICDコード")
COL_NAME = "標準病名"
COL_LEVEL = "信頼度LEVEL"
COL_FREQ = "頻度LEVEL"
LEVELS = ("S", "A", "B", "C", "D", "E", "F")
NO_CODE = "-1"


class ManbyoEntry(BaseModel):
    """One dictionary row: a surface form linked to standard name(s) and ICD-10 code(s)."""

    surface: str
    reading: str = ""
    icd10: str = NO_CODE  # as in the file: up to 3 codes joined by ",", or "-1"
    standard_name: str  # as in the file: names joined by "，", or "-1"
    level: str = ""
    freq: str = ""
    source: str = ""
    row: int = 0  # 1-based row number in the file (header = row 1)

    @property
    def icd10_codes(self) -> list[str]:
        return [] if self.icd10 == NO_CODE else [c for c in self.icd10.split(",") if c]

    @property
    def standard_names(self) -> list[str]:
        return [] if self.standard_name == NO_CODE else [n for n in self.standard_name.split("，") if n]

    @property
    def node_id(self) -> str:
        return f"manbyo:{Path(self.source).name}:{self.row}"

    def to_text(self) -> str:
        """Text for retrieval and for the LLM's context."""
        surface = self.surface + (f"（{self.reading}）" if self.reading else "")
        name = "（標準病名なし）" if self.standard_name == NO_CODE else self.standard_name
        lines = [f"病名表記: {surface}", f"標準病名: {name}", f"ICD-10: {self.icd10}"]
        if self.level:
            lines.append(f"信頼度: {self.level}")
        return "\n".join(lines)

    def to_node(self) -> TextNode:
        meta = {
            "kind": "manbyo",
            "surface": self.surface,
            "reading": self.reading,
            "standard_name": self.standard_name,
            "icd10": self.icd10,
            "level": self.level,
            "freq": self.freq,
            "source": self.source,
            "row": self.row,
            "title": self.standard_name if self.standard_name != NO_CODE else self.surface,
        }
        return TextNode(
            id_=self.node_id,
            text=self.to_text(),
            metadata=meta,
            excluded_embed_metadata_keys=list(meta),
            excluded_llm_metadata_keys=list(meta),
        )


def nfkc(text: str) -> str:
    """Clinical-text normalization: full-width ＣＭＶ → CMV, half-width kana → full-width."""
    return unicodedata.normalize("NFKC", text).strip()


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        try:
            return pd.read_excel(path, dtype=str, keep_default_na=False, engine="openpyxl")
        except (zipfile.BadZipFile, ValueError, KeyError) as exc:
            raise ManbyoFormatError(f"{path}: not a readable xlsx workbook ({exc})") from exc
    if suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith((".xlsx", ".csv"))]
            if not members:
                raise ManbyoFormatError(f"{path}: the zip holds no .xlsx or .csv file")
            data = zf.read(members[0])
        inner = Path(members[0])
        if inner.suffix.lower() == ".xlsx":
            return pd.read_excel(io.BytesIO(data), dtype=str, keep_default_na=False, engine="openpyxl")
        return _read_csv_bytes(data, f"{path}:{inner.name}")
    return _read_csv_bytes(path.read_bytes(), str(path))


def _read_csv_bytes(data: bytes, label: str) -> pd.DataFrame:
    for encoding in ("utf-8-sig", "cp932"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise ManbyoFormatError(f"{label}: not UTF-8 or cp932 text")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ManbyoFormatError(f"{label}: the file is empty") from None
    rows = []
    for line_no, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise ManbyoFormatError(
                f"{label}: row {line_no}: {len(fields)} fields, the header has {len(header)}"
            )
        rows.append([line_no, *fields])
    frame = pd.DataFrame(rows, columns=["__row__", *[h.strip() for h in header]])
    return frame


def load_manbyo(
    path: str | Path,
    levels: Sequence[str] | None = None,
) -> list[ManbyoEntry]:
    """Read a Manbyo xlsx/csv/zip file; keep only ``levels`` (e.g. S,A,B,C) when given.

    Raises :class:`ManbyoFormatError` naming the file (and row) for anything malformed; nothing
    is returned partially.
    """
    path = Path(path)
    if not path.exists():
        raise ManbyoFormatError(f"{path}: no such file")
    frame = _read_table(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    if "__row__" not in frame.columns:
        frame.insert(0, "__row__", range(2, len(frame) + 2))
    icd_col = next((c for c in COL_ICD if c in frame.columns), None)
    missing = [c for c in (COL_SURFACE, COL_NAME) if c not in frame.columns]
    if icd_col is None:
        missing.append(" or ".join(COL_ICD))
    if missing:
        raise ManbyoFormatError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns[1:]))}"
        )
    wanted = {lv.strip().upper() for lv in levels} if levels else None
    if wanted and not wanted <= set(LEVELS):
        raise ManbyoFormatError(f"unknown level(s) {sorted(wanted - set(LEVELS))}; use {','.join(LEVELS)}")

    def col(name: str) -> list[str]:
        return frame[name].astype(str).tolist() if name in frame.columns else [""] * len(frame)

    entries: list[ManbyoEntry] = []
    for row, surface, reading, icd, name, level, freq in zip(
        frame["__row__"].tolist(),
        col(COL_SURFACE),
        col(COL_READING),
        col(icd_col),
        col(COL_NAME),
        col(COL_LEVEL),
        col(COL_FREQ),
        strict=True,
    ):
        surface, name, icd, level = surface.strip(), name.strip(), icd.strip(), level.strip().upper()
        if not surface and not name and not icd:
            continue  # blank spreadsheet row
        where = f"{path}: row {row}"
        if not surface:
            raise ManbyoFormatError(f"{where}: empty {COL_SURFACE}")
        if not name:
            raise ManbyoFormatError(f"{where}: empty {COL_NAME} (use -1 for none)")
        if level and level not in LEVELS:
            raise ManbyoFormatError(f"{where}: {COL_LEVEL} {level!r} is not one of {','.join(LEVELS)}")
        codes = [c.strip() for c in icd.split(",") if c.strip()] if icd else []
        if len(codes) > 1 and NO_CODE in codes:
            codes = [c for c in codes if c != NO_CODE]
        if wanted is not None and level not in wanted:
            continue
        entries.append(
            ManbyoEntry(
                surface=surface,
                reading=reading.strip(),
                icd10=",".join(codes) if codes else NO_CODE,
                standard_name=name,
                level=level,
                freq=freq.strip(),
                source=str(path),
                row=int(row),
            )
        )
    return entries


def entries_to_nodes(entries: Iterable[ManbyoEntry]) -> list[TextNode]:
    return [e.to_node() for e in entries]


def fetch_manbyo(dest_dir: Path, url: str = OFFICIAL_ZIP_URL, timeout: float = 30.0) -> Path:
    """Download the official release zip into ``dest_dir``; explain what to do when offline."""
    import httpx

    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / Path(url).name
    try:
        with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp:
            resp.raise_for_status()
            tmp = target.with_suffix(".part")
            with tmp.open("wb") as fh:
                for chunk in resp.iter_bytes():
                    fh.write(chunk)
            tmp.replace(target)
    except (httpx.HTTPError, OSError) as exc:
        raise DownloadError(
            f"could not download the Manbyo dictionary from {url} ({exc.__class__.__name__}: {exc}).\n"
            f"This machine seems to be offline. Download the release zip by hand from {OFFICIAL_URL} "
            f"(licence CC BY 4.0), then pass it directly: "
            f"`ragmed index build --name NAME --manbyo path/to/MANBYO_202106.zip` (zip, xlsx or csv)."
        ) from exc
    return target
