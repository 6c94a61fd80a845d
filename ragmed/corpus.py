"""Ingest: Japanese medical corpora → llama-index Documents → chunked nodes.

Reads a directory or files of .txt, .md, .jsonl, .csv and .pdf, or a Hugging Face dataset by name
when online. Chunking is Japanese-aware: sentences end at 。！？!? and newlines (the default
English splitter would never split Japanese text), chunks are capped in characters or in
fugashi tokens, with overlap, and every chunk keeps its source id, title and position.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode
from pydantic import BaseModel

from ragmed.errors import CorpusFormatError, InputError
from ragmed.tokenize import morphemes

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".pdf")
_SENTENCE = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+|\n+|$)")


class CorpusOptions(BaseModel):
    """How to read structured files and how to chunk."""

    text_field: str = "text"
    title_field: str = "title"
    id_field: str = "id"
    chunk_size: int = 400
    chunk_overlap: int = 80
    chunk_unit: str = "chars"  # "chars" or "tokens" (fugashi tokens)


def split_sentences(text: str) -> list[str]:
    """Japanese sentence split that keeps every character (so offsets stay exact)."""
    return [s for s in _SENTENCE.findall(text) if s]


def _doc(text: str, source: str, title: str, doc_id: str, **extra: object) -> Document:
    meta = {"kind": "corpus", "source": source, "title": title, "doc_id": doc_id, **extra}
    return Document(text=text, id_=doc_id, metadata=meta)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp932"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CorpusFormatError(f"{path}: not UTF-8 or cp932 text")


def _title_from_text(text: str, fallback: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:80]
    return fallback


def load_file(path: Path, opts: CorpusOptions, root: Path | None = None) -> list[Document]:
    """Documents from one file; structured rows become one document each."""
    source = str(path.relative_to(root)) if root else str(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        text = _read_text(path)
        return [_doc(text, source, _title_from_text(text, path.stem), source)] if text.strip() else []
    if suffix == ".jsonl":
        docs = []
        for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusFormatError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get(opts.text_field), str):
                raise CorpusFormatError(f"{path}: line {line_no}: no string field {opts.text_field!r}")
            doc_id = f"{source}#{row.get(opts.id_field, line_no)}"
            title = str(row.get(opts.title_field) or _title_from_text(row[opts.text_field], doc_id))
            docs.append(_doc(row[opts.text_field], source, title, doc_id, line=line_no))
        return docs
    if suffix == ".csv":
        reader = csv.DictReader(_read_text(path).splitlines())
        if reader.fieldnames is None or opts.text_field not in reader.fieldnames:
            raise CorpusFormatError(f"{path}: line 1: no column {opts.text_field!r} in {reader.fieldnames}")
        docs = []
        for line_no, row in enumerate(reader, start=2):
            if None in row:
                raise CorpusFormatError(f"{path}: line {line_no}: more fields than the header")
            text = row[opts.text_field] or ""
            if not text.strip():
                continue
            doc_id = f"{source}#{row.get(opts.id_field) or line_no}"
            title = row.get(opts.title_field) or _title_from_text(text, doc_id)
            docs.append(_doc(text, source, title, doc_id, line=line_no))
        return docs
    if suffix == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(str(path))
            pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        except (PdfReadError, OSError, ValueError) as exc:
            raise CorpusFormatError(f"{path}: not a readable PDF ({exc})") from exc
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else None) or path.stem
        return [_doc(t, source, title, f"{source}#p{n}", page=n) for n, t in pages if t.strip()]
    raise CorpusFormatError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")


def discover(paths: Sequence[str | Path]) -> list[tuple[Path, Path | None]]:
    """(file, root) pairs for the given files/directories, sorted for reproducible builds."""
    found: list[tuple[Path, Path | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += [
                (p, path) for p in sorted(path.rglob("*")) if p.suffix.lower() in SUFFIXES and p.is_file()
            ]
        elif path.is_file():
            found.append((path, None))
        else:
            raise CorpusFormatError(f"{path}: no such file or directory")
    return found


def load_hf_dataset(
    name: str, opts: CorpusOptions, split: str = "train", limit: int | None = None
) -> list[Document]:
    """A Hugging Face dataset by name (e.g. ApolloCorpus-ja); needs the network and `datasets`."""
    try:
        import datasets
    except ImportError as exc:
        raise CorpusFormatError(
            f"hf:{name}: the `datasets` package is needed for Hugging Face corpora: pip install datasets"
        ) from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many types when offline
        raise CorpusFormatError(
            f"hf:{name}: could not load from the Hugging Face hub ({exc.__class__.__name__}). This machine "
            "may be offline: download the dataset elsewhere, export it as .jsonl, and pass the file."
        ) from exc
    docs = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        text = row.get(opts.text_field)
        if not isinstance(text, str):
            raise CorpusFormatError(f"hf:{name}: row {i}: no string field {opts.text_field!r}")
        doc_id = f"hf:{name}#{row.get(opts.id_field, i)}"
        docs.append(_doc(text, f"hf:{name}", str(row.get(opts.title_field) or doc_id), doc_id, row=i))
    return docs


def load_documents(paths: Sequence[str | Path], opts: CorpusOptions | None = None) -> list[Document]:
    """All documents under ``paths``; ``hf:NAME`` entries load Hugging Face datasets."""
    opts = opts or CorpusOptions()
    docs: list[Document] = []
    for raw in paths:
        if isinstance(raw, str) and raw.startswith("hf:"):
            docs += load_hf_dataset(raw[3:], opts)
            continue
        for path, root in discover([raw]):
            docs += load_file(path, opts, root)
    return docs


def make_splitter(opts: CorpusOptions) -> SentenceSplitter:
    """llama-index's splitter with Japanese sentence ends and a char or token budget."""
    if opts.chunk_unit not in ("chars", "tokens"):
        raise InputError(f"--chunk-unit must be 'chars' or 'tokens', not {opts.chunk_unit!r}")
    if opts.chunk_overlap >= opts.chunk_size:
        raise InputError("--chunk-overlap must be smaller than --chunk-size")
    return SentenceSplitter(
        chunk_size=opts.chunk_size,
        chunk_overlap=opts.chunk_overlap,
        separator="",
        paragraph_separator="\n\n",
        tokenizer=list if opts.chunk_unit == "chars" else morphemes,
        chunking_tokenizer_fn=split_sentences,
        secondary_chunking_regex=r"[^、,，]+[、,，]?",
        include_metadata=False,
        include_prev_next_rel=False,
    )


def chunk_documents(docs: Iterable[Document], opts: CorpusOptions | None = None) -> list[TextNode]:
    """Nodes with stable ids ``<doc_id>:<n>`` and position metadata (chunk index, char span).

    The splitter is given the bare text: chunk budgets are about the passage, and titles or
    paths in metadata must not eat into them.
    """
    opts = opts or CorpusOptions()
    splitter = make_splitter(opts)
    nodes: list[TextNode] = []
    for doc in docs:
        cursor = 0
        for n, piece in enumerate(splitter.split_text(doc.text)):
            start = doc.text.find(piece, cursor)
            if start < 0:  # the splitter normalised whitespace; keep the chunk, position unknown
                start, end = -1, -1
            else:
                end = start + len(piece)
                cursor = start + 1
            meta = dict(doc.metadata)
            meta.update(chunk=n, start_char=start, end_char=end)
            nodes.append(
                TextNode(
                    id_=f"{doc.id_}:{n}",
                    text=piece,
                    metadata=meta,
                    excluded_embed_metadata_keys=list(meta),
                    excluded_llm_metadata_keys=list(meta),
                )
            )
    return nodes
