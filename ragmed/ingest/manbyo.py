"""Ingest: the Manbyo disease dictionary (万病辞書, NAIST sociocom, CC BY 4.0).

Reads the official xlsx release and the CSV copies users keep (UTF-8, UTF-8 with BOM, cp932, UTF-16
with BOM), with either ICD column name. Every row becomes a :class:`ManbyoEntry` and then a node record (id, text,
metadata) whose text reads well to both BM25/embeddings and an LLM.

pandas and llama-index are imported only where a file is read or a ``TextNode`` asked for: the
disease normalizer imports this module in every one-shot command.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ragmed.errors import DownloadError, ManbyoFormatError
from ragmed.ingest.files import UTF16_BOMS, decode_text, hidden

if TYPE_CHECKING:
    import pandas as pd
    from llama_index.core.schema import TextNode

SOURCE_CREDIT = "万病辞書 MANBYO (NAIST Social Computing Lab), CC BY 4.0"
OFFICIAL_URL = "https://sociocom.naist.jp/manbyou-dic/"
OFFICIAL_ZIP_URL = "https://sociocom.naist.jp/manbyo-dic/MANBYO_202106.zip"
#: Where the release has been published, newest first: the lab's page has been spelled both
#: ``manbyo-dic`` and ``manbyou-dic``, and older releases lived under sociocom.jp/~data/.
KNOWN_URLS = (
    OFFICIAL_ZIP_URL,
    "https://sociocom.naist.jp/manbyou-dic/MANBYO_202106.zip",
    "https://sociocom.naist.jp/manbyo-dic/data/MANBYO_202106.zip",
    "https://sociocom.naist.jp/manbyou-dic/data/MANBYO_202106.zip",
    "http://sociocom.jp/~data/2018-manbyo/data/MANBYO_202106.zip",
    "http://sociocom.jp/~data/2018-manbyo/data/MANBYO_201907.zip",
)

COL_SURFACE = "出現形"
COL_READING = "出現形よみ"
COL_ICD = ("ICD10コード", "ICDコード")
COL_NAME = "標準病名"
COL_LEVEL = "信頼度LEVEL"
COL_FREQ = "頻度LEVEL"
#: the same optional columns as the lab's later working files spell them (DIC_C_MANBYO_作業_….csv: 出現形よみ1,
#: 信頼度レベル, 頻度レベル), tried when the release's own header is absent
COL_ALIASES = {
    COL_READING: ("出現形よみ1",),
    COL_LEVEL: ("信頼度レベル", "信頼度level"),
    COL_FREQ: ("頻度レベル", "頻度level"),
}
LEVELS = ("S", "A", "B", "C", "D", "E", "F")
NO_CODE = "-1"
_NO_NAME = re.compile("[\u2212\u2010-\u2015\uff0d]")  # minus signs and dashes written for the "-" of -1


def split_names(cell: str) -> list[str]:
    """The names of a 標準病名 cell: ``"嘔気，嘔吐症"`` → two, ``"-1"`` → none. Parts that name nothing
    are dropped: the release has cells with a trailing ``，`` (``２型糖尿病性腎症第２期，``) and cells whose
    other part is the no-name mark written full-width (``糖尿病，−１``: 43 rows of manbyo_dev.csv)."""
    if cell == NO_CODE:
        return []
    return [n for n in cell.split("，") if n and _NO_NAME.sub("-", nfkc(n)) != NO_CODE]


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
        return split_names(self.standard_name)

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

    def metadata(self) -> dict[str, Any]:
        return {
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

    def to_record(self) -> dict[str, Any]:
        """The node record an index stores: id, text, metadata."""
        return {"id": self.node_id, "text": self.to_text(), "metadata": self.metadata()}

    def to_node(self) -> TextNode:
        from llama_index.core.schema import TextNode

        meta = self.metadata()
        return TextNode(
            id_=self.node_id,
            text=self.to_text(),
            metadata=meta,
            excluded_embed_metadata_keys=list(meta),
            excluded_llm_metadata_keys=list(meta),
        )

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ManbyoEntry:
        """The entry back from a stored node's metadata (the normalizer is refitted from the index)."""
        return cls(
            surface=meta["surface"],
            reading=meta.get("reading", ""),
            icd10=meta["icd10"],
            standard_name=meta["standard_name"],
            level=meta.get("level", ""),
            freq=meta.get("freq", ""),
            source=meta.get("source", ""),
            row=int(meta.get("row", 0)),
        )


def nfkc(text: str) -> str:
    """Clinical-text normalization: full-width ＣＭＶ → CMV, half-width kana → full-width."""
    return unicodedata.normalize("NFKC", text).strip()


#: Largest Manbyo file read (the full release is ~30 MB as csv, less as xlsx): anything bigger is not
#: the dictionary, and reading it whole would only exhaust memory.
MAX_FILE_BYTES = 512 << 20


def _read_xlsx(source: Path | io.BytesIO, label: str) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_excel(source, dtype=str, keep_default_na=False, engine="openpyxl")
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        raise ManbyoFormatError(f"{label}: not a readable xlsx workbook ({exc})") from exc


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ManbyoFormatError(
            f"{path}: {size >> 20} MB is larger than any Manbyo release ({MAX_FILE_BYTES >> 20} MB at most): "
            "is this the dictionary?"
        )
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path, str(path))
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [
                    n
                    for n in zf.namelist()
                    if n.lower().endswith((".xlsx", ".csv"))
                    # a zip made on a Mac carries __MACOSX/._MANBYO….xlsx resource forks (no workbook), and
                    # one made from an open workbook Excel's ~$ lock file
                    and not hidden(PurePosixPath(n))
                ]
                if not members:
                    raise ManbyoFormatError(f"{path}: the zip holds no .xlsx or .csv file")
                info = zf.getinfo(members[0])
                if info.file_size > MAX_FILE_BYTES:
                    raise ManbyoFormatError(f"{path}:{members[0]}: {info.file_size >> 20} MB uncompressed")
                data = zf.read(members[0])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise ManbyoFormatError(
                f"{path}: not a readable zip archive ({exc}); pass the release .zip, its .xlsx or a .csv"
            ) from exc
        inner = Path(members[0])
        if inner.suffix.lower() == ".xlsx":
            return _read_xlsx(io.BytesIO(data), f"{path}:{inner.name}")
        return _read_csv_bytes(data, f"{path}:{inner.name}")
    return _read_csv_bytes(path.read_bytes(), str(path))


def _delimiter(header: str) -> str:
    """A tab where the header is tab-separated (Excel's "Unicode text" and TSV exports), else a comma."""
    return "\t" if header.count("\t") > header.count(",") else ","


def _read_csv_bytes(data: bytes, label: str) -> pd.DataFrame:
    import pandas as pd

    try:
        text = decode_text(data)
    except UnicodeDecodeError:
        raise ManbyoFormatError(f"{label}: not UTF-8, UTF-16 or cp932 text") from None
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(text.split("\n", 1)[0]))
    try:
        header = next(reader)
    except StopIteration:
        raise ManbyoFormatError(f"{label}: the file is empty") from None
    except csv.Error as exc:
        raise ManbyoFormatError(f"{label}: row 1: not a CSV header ({exc})") from None
    rows = []
    line_no = 1
    try:
        for line_no, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise ManbyoFormatError(
                    f"{label}: row {line_no}: {len(fields)} fields, the header has {len(header)}"
                )
            rows.append([line_no, *fields])
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise ManbyoFormatError(f"{label}: row {line_no + 1}: not a Manbyo CSV row ({exc})") from None
    frame = pd.DataFrame(rows, columns=["__row__", *[h.strip() for h in header]])
    return frame


def _read_frame(path: Path) -> pd.DataFrame:
    """The table with stripped header names and a first column ``__row__``: each row's line in the file
    (a CSV's own count, blank lines included), or its spreadsheet row."""
    frame = _read_table(path)
    frame.columns = [str(c).strip() for c in frame.columns]
    if "__row__" not in frame.columns:
        frame.insert(0, "__row__", range(2, len(frame) + 2))
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
    frame = _read_frame(path)
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
        found = next((c for c in (name, *COL_ALIASES.get(name, ())) if c in frame.columns), None)
        return frame[found].astype(str).tolist() if found else [""] * len(frame)

    entries: list[ManbyoEntry] = []
    seen_levels: dict[str, int] = {}
    rows_read = 0
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
        rows_read += 1
        seen_levels[level] = seen_levels.get(level, 0) + 1
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
                source=path.name,  # what prompts and citations show; the full path is the operator's
                row=int(row),
            )
        )
    if wanted is not None and rows_read and not entries:
        found = ", ".join(f"{lv or 'empty'}: {n}" for lv, n in sorted(seen_levels.items()))
        raise ManbyoFormatError(
            f"{path}: --levels {','.join(sorted(wanted))} keeps none of its {rows_read} rows "
            f"({COL_LEVEL} found — {found}). Choose levels the file has, or drop --levels to keep every row."
        )
    return entries


def is_manbyo_table(path: Path) -> bool:
    """Is ``path`` a table in the release's layout (a workbook, the release zip, or a CSV whose header names
    出現形) rather than a plain list of terms? A held-out slice of the dictionary is kept as such a table,
    and read as lines it would be asked as its header and its comma-joined rows."""
    if path.suffix.lower() in (".xlsx", ".xlsm", ".zip"):
        return True
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if head[:2] in UTF16_BOMS:
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="ignore")
    else:
        text = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="ignore")
        if COL_SURFACE not in text:
            text = head.split(b"\n", 1)[0].decode("cp932", errors="ignore")
    lines = text.splitlines()
    try:
        header = next(csv.reader(lines[:1], delimiter=_delimiter(lines[0])), []) if lines else []
        return COL_SURFACE in (f.strip() for f in header)
    except csv.Error:
        return False


def read_surfaces(path: str | Path) -> list[str]:
    """The 出現形 of every row of a Manbyo table (xlsx, zip or CSV; other columns optional, rows without a
    standard name allowed), in the table's order, blank rows skipped as pandas skips them: the surface
    forms to normalize, one answer per row."""
    path = Path(path)
    if not path.is_file():
        raise ManbyoFormatError(f"{path}: no such file")
    frame = _read_frame(path)
    if COL_SURFACE not in frame.columns:
        found = ", ".join(str(c) for c in frame.columns[1:])
        raise ManbyoFormatError(f"{path}: no {COL_SURFACE} column to read terms from; found {found}")
    surfaces = [str(v).strip() for v in frame[COL_SURFACE].tolist()]
    others = [c for c in frame.columns if c not in ("__row__", COL_SURFACE)]
    kept = []
    for row, surface, *rest in zip(
        frame["__row__"].tolist(), surfaces, *(frame[c].astype(str).tolist() for c in others), strict=True
    ):
        if surface:
            kept.append(surface)
        elif any(v.strip() for v in rest):
            raise ManbyoFormatError(f"{path}: row {row}: empty {COL_SURFACE}")
    return kept


def entries_to_nodes(entries: Iterable[ManbyoEntry]) -> list[TextNode]:
    return [e.to_node() for e in entries]


def fetch_manbyo(
    dest_dir: Path, url: str | None = None, timeout: float = 30.0, urls: Sequence[str] = KNOWN_URLS
) -> Path:
    """Download the release zip into ``dest_dir``: from ``url``, or from each of ``urls`` in turn (the
    spellings the official address has had). Offline, the error lists what was tried and what to do."""
    import httpx

    urls = [url] if url else list(urls)
    tried: list[str] = []
    dest_dir.mkdir(parents=True, exist_ok=True)
    for candidate in urls:
        target = dest_dir / Path(candidate).name
        tmp = target.with_suffix(".part")
        try:
            with httpx.stream("GET", candidate, timeout=timeout, follow_redirects=True) as resp:
                resp.raise_for_status()
                with tmp.open("wb") as fh:
                    for chunk in resp.iter_bytes():
                        fh.write(chunk)
            tmp.replace(target)
            return target
        except (httpx.HTTPError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            tried.append(f"{candidate} ({exc.__class__.__name__}: {exc})")
    raise DownloadError(
        "could not download the Manbyo dictionary; tried:\n  "
        + "\n  ".join(tried)
        + f"\nDownload the release zip by hand from {OFFICIAL_URL} (licence CC BY 4.0), then pass it directly: "
        "`ragmed index build --name NAME --manbyo path/to/MANBYO_202106.zip` (zip, xlsx or csv)."
    )
