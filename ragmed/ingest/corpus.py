"""Ingest: Japanese medical corpora → documents → chunked node records, streamed.

Reads a directory or files of .txt, .md, .jsonl, .csv and .pdf, or a Hugging Face dataset by name
when online. Everything is read lazily, so a build holds one batch in memory whatever the corpus
size: .jsonl/.csv row by row (a row over :data:`MAX_RECORD_CHARS` is an error naming its line), and a
large .txt/.md in blocks of :data:`TEXT_BLOCK_CHARS` cut at sentence ends (a 200 MB file with no line
break is chunked in bounded memory).

MedRAG's corpus files (textbooks, StatPearls, PubMed, Wikipedia: .jsonl rows ``id, title, content,
contents``) are recognised by their fields: each row is a snippet MedRAG already cut, kept whole as one
chunk with MedRAG's id (longer than :data:`PRECHUNKED_MAX_CHARS`, it is split like any text).

Every chunk records its language (``metadata["language"]``: ``ja`` or ``en``, decided per chunk), so
BM25 analyses it with that language's analyzer.

Chunking is Japanese-aware: sentences end at 。！？!? and newlines (the default English splitter
would never split Japanese text), chunks are capped in characters or in fugashi tokens, with
overlap, and every chunk keeps its source, title and character span. ``source`` is the file's path
relative to the corpus folder it was found in (or its name when given directly): prompts and API
citations never show where the server keeps its files.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import BaseModel

from ragmed.errors import CorpusFormatError, DownloadError, InputError, SetupError
from ragmed.ingest.files import hidden, text_encoding
from ragmed.tokenize import detect_language, morphemes

if TYPE_CHECKING:
    from llama_index.core import Document
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import TextNode

SUFFIXES = (".txt", ".md", ".jsonl", ".csv", ".pdf")
_SENTENCE = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+|\n+|$)")

#: Longest .jsonl line / .csv row read (characters): a bigger one is an error that names its line.
MAX_RECORD_CHARS = 16 << 20
#: .txt/.md files are read in blocks of this many characters, each cut at its last sentence end.
TEXT_BLOCK_CHARS = 1 << 20
#: A snippet a corpus delivers already cut (MedRAG's rows) stays one chunk up to this many characters.
PRECHUNKED_MAX_CHARS = 4000
#: The fields that make a .jsonl row one of MedRAG's snippets.
MEDRAG_FIELDS = ("id", "title", "content", "contents")


class CorpusOptions(BaseModel):
    """How to read structured files and how to chunk."""

    text_field: str = "text"
    title_field: str = "title"
    id_field: str = "id"
    chunk_size: int = 400
    chunk_overlap: int = 80
    chunk_unit: str = "chars"  # "chars" or "tokens" (fugashi tokens)


@dataclass
class Doc:
    """A document, or one block of a large one (``offset``: where ``text`` starts in the document)."""

    id: str
    text: str
    metadata: dict[str, Any]
    offset: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def split_sentences(text: str, max_len: int | None = None) -> list[str]:
    """Japanese sentence split that keeps every character (so offsets stay exact).

    ``max_len`` cuts a longer "sentence" (a run with no sentence end) into pieces of that length, so
    the splitter never falls back to character-by-character merging (13 s per MB).
    """
    parts = [s for s in _SENTENCE.findall(text) if s]
    if max_len is None:
        return parts
    out: list[str] = []
    for s in parts:
        out += [s[i : i + max_len] for i in range(0, len(s), max_len)] if len(s) > max_len else [s]
    return out


def _meta(source: str, title: str, doc_id: str, **extra: object) -> dict[str, Any]:
    return {"kind": "corpus", "source": source, "title": title, "doc_id": doc_id, **extra}


def _title_from_text(text: str, fallback: str) -> str:
    for line in text[:4096].splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:80]
    return fallback


# --------------------------------------------------------------------------- reading text


def _sniff_encoding(path: Path) -> str:
    """The file's :func:`~ragmed.ingest.files.text_encoding`, decided on its first 64 KB."""
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    try:
        return text_encoding(head)
    except UnicodeDecodeError:
        raise CorpusFormatError(f"{path}: not UTF-8, UTF-16 or cp932 text") from None


def _open_text(path: Path) -> TextIO:
    return path.open(encoding=_sniff_encoding(path), newline="")


def _decode_error(path: Path, exc: UnicodeDecodeError) -> CorpusFormatError:
    return CorpusFormatError(
        f"{path}: not UTF-8, UTF-16 or cp932 text ({exc.reason} near byte {exc.start} of a block)"
    )


def _lines(fh: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) with each line's length bounded by :data:`MAX_RECORD_CHARS`."""
    line_no = 0
    try:
        while True:
            line = fh.readline(MAX_RECORD_CHARS + 1)
            if not line:
                return
            line_no += 1
            if len(line) > MAX_RECORD_CHARS:
                raise CorpusFormatError(
                    f"{path}: line {line_no}: longer than {MAX_RECORD_CHARS >> 20} M characters; one row "
                    "must hold one passage or document — split it, or save the text as .txt"
                )
            yield line_no, line
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None


def _text_blocks(fh: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    """(offset, block) of a text file, each block ending at a sentence end where there is one."""
    offset, carry = 0, ""
    try:
        while True:
            data = fh.read(TEXT_BLOCK_CHARS)
            text = carry + data
            if not data:
                if text:
                    yield offset, text
                return
            tail = max(0, len(text) - TEXT_BLOCK_CHARS // 4)
            last = max(text.rfind(ch, tail) for ch in "。！？!?\n")
            cut = last + 1 if last >= 0 else len(text)
            block, carry = text[:cut], text[cut:]
            if block:
                yield offset, block
                offset += len(block)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None


# --------------------------------------------------------------------------- files → documents


def iter_file(path: Path, opts: CorpusOptions, root: Path | None = None) -> Iterator[Doc]:
    """Documents from one file, lazily; structured rows become one document each."""
    source = path.relative_to(root).as_posix() if root else path.name
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        with _open_text(path) as fh:
            title = ""
            for offset, block in _text_blocks(fh, path):
                if not title:
                    title = _title_from_text(block, path.stem)
                if offset == 0 and not block.strip():
                    continue
                yield Doc(source, block, _meta(source, title, source), offset)
        return
    if suffix == ".jsonl":
        with _open_text(path) as fh:
            for line_no, line in _lines(fh, path):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusFormatError(f"{path}: line {line_no}: invalid JSON ({exc.msg})") from None
                if isinstance(row, dict) and opts.text_field not in row and "content" in row:
                    doc = _medrag_doc(row, path, line_no, source)
                    if doc is not None:
                        yield doc
                    continue
                if not isinstance(row, dict) or not isinstance(row.get(opts.text_field), str):
                    raise CorpusFormatError(f"{path}: line {line_no}: no string field {opts.text_field!r}")
                doc_id = f"{source}#{row.get(opts.id_field, line_no)}"
                text = row[opts.text_field]
                title = str(row.get(opts.title_field) or _title_from_text(text, doc_id))
                yield Doc(doc_id, text, _meta(source, title, doc_id, line=line_no))
        return
    if suffix == ".csv":
        yield from _iter_csv(path, opts, source)
        return
    if suffix == ".pdf":
        yield from _iter_pdf(path, source)
        return
    raise CorpusFormatError(f"{path}: unsupported file type (use {', '.join(SUFFIXES)})")


def _medrag_doc(row: dict[str, Any], path: Path, line_no: int, source: str) -> Doc | None:
    """One of MedRAG's snippets (``id, title, content, contents``; PubMed rows also carry ``PMID``).

    ``content`` is the passage and ``contents`` is ``title. content`` (what MedRAG's BM25 reads): the
    passage is ``content`` (the title is kept apart and reaches BM25 through the title field); a row
    whose ``content`` is empty falls back to ``contents`` (title-only PubMed records); a row with no text
    at all is skipped. MedRAG's ``id`` stays the snippet's id, so citations can be traced back.
    """
    for key in ("id", "content"):
        if key not in row:
            raise CorpusFormatError(
                f"{path}: line {line_no}: a MedRAG row needs {', '.join(MEDRAG_FIELDS)}; no {key!r}"
            )
    content, contents = row.get("content"), row.get("contents")
    for key, value in (("content", content), ("contents", contents), ("title", row.get("title"))):
        if value is not None and not isinstance(value, str):
            raise CorpusFormatError(f"{path}: line {line_no}: field {key!r} is not a string")
    title = row.get("title") or ""
    if content and content.strip():
        text = content
    else:  # `contents` is "title. content": with no content it may hold nothing but the title
        text = contents or ""
        if title and text.startswith(title) and not text[len(title) :].lstrip(". ").strip():
            text = ""
    if not text.strip():
        return None
    snippet = str(row["id"])
    doc_id = f"{source}#{snippet}"
    title = title or _title_from_text(text, snippet)
    extra: dict[str, Any] = {"line": line_no, "snippet_id": snippet}
    if row.get("PMID") is not None:
        extra["pmid"] = str(row["PMID"])
    return Doc(doc_id, text, _meta(source, title, doc_id, **extra), extra={"prechunked": True})


def _iter_csv(path: Path, opts: CorpusOptions, source: str) -> Iterator[Doc]:
    csv.field_size_limit(MAX_RECORD_CHARS)
    with _open_text(path) as fh:
        reader = csv.DictReader(line for _, line in _lines(fh, path))
        try:
            fields = reader.fieldnames
            if fields is None or opts.text_field not in fields:
                raise CorpusFormatError(f"{path}: line 1: no column {opts.text_field!r} in {fields}")
            for row in reader:
                line_no = reader.line_num
                if None in row:
                    raise CorpusFormatError(f"{path}: line {line_no}: more fields than the header")
                text = row[opts.text_field] or ""
                if not text.strip():
                    continue
                doc_id = f"{source}#{row.get(opts.id_field) or line_no}"
                title = row.get(opts.title_field) or _title_from_text(text, doc_id)
                yield Doc(doc_id, text, _meta(source, title, doc_id, line=line_no))
        except csv.Error as exc:
            raise CorpusFormatError(f"{path}: line {reader.line_num + 1}: not a CSV row ({exc})") from None


def _iter_pdf(path: Path, source: str) -> Iterator[Doc]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        title = (reader.metadata.title if reader.metadata and reader.metadata.title else None) or path.stem
        for i, page in enumerate(reader.pages):
            text = page.extract_text() or ""
            if text.strip():
                yield Doc(f"{source}#p{i + 1}", text, _meta(source, title, f"{source}#p{i + 1}", page=i + 1))
    except (PdfReadError, OSError, ValueError) as exc:
        raise CorpusFormatError(f"{path}: not a readable PDF ({exc})") from exc


def discover(paths: Sequence[str | Path]) -> list[tuple[Path, Path | None]]:
    """(file, root) pairs for the given files/directories, sorted for reproducible builds; a folder's
    hidden files are skipped (a file named on the command line is read whatever its name)."""
    found: list[tuple[Path, Path | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += [
                (p, path)
                for p in sorted(path.rglob("*"))
                if p.suffix.lower() in SUFFIXES and p.is_file() and not hidden(p.relative_to(path))
            ]
        elif path.is_file():
            found.append((path, None))
        else:
            raise CorpusFormatError(f"{path}: no such file or directory")
    return found


def iter_hf_dataset(
    name: str, opts: CorpusOptions, split: str = "train", limit: int | None = None
) -> Iterator[Doc]:
    """A Hugging Face dataset by name (e.g. ApolloCorpus-ja); needs the network and `datasets`."""
    try:
        import datasets
    except ImportError as exc:
        raise SetupError(
            f"hf:{name}: the `datasets` package is needed for Hugging Face corpora: "
            "pip install 'ragmed[hf]' (or pip install datasets)"
        ) from exc
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except OSError as exc:  # offline: ConnectionError; unknown name: DatasetNotFoundError
        raise DownloadError(
            f"hf:{name}: could not load it from the Hugging Face hub ({exc.__class__.__name__}: {exc}). "
            "On a machine without internet, download the dataset elsewhere (or clone its repository), "
            "and pass its .jsonl/.csv files or folder with --corpus."
        ) from exc
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        if opts.text_field not in row and "content" in row:  # MedRAG/textbooks, MedRAG/pubmed …
            doc = _medrag_doc(row, Path(f"hf:{name}"), i, f"hf:{name}")
            if doc is not None:
                yield doc
            continue
        text = row.get(opts.text_field)
        if not isinstance(text, str):
            raise CorpusFormatError(f"hf:{name}: row {i}: no string field {opts.text_field!r}")
        doc_id = f"hf:{name}#{row.get(opts.id_field, i)}"
        yield Doc(doc_id, text, _meta(f"hf:{name}", str(row.get(opts.title_field) or doc_id), doc_id, row=i))


def iter_documents(paths: Sequence[str | Path], opts: CorpusOptions | None = None) -> Iterator[Doc]:
    """Every document under ``paths``, lazily; ``hf:NAME`` entries stream Hugging Face datasets."""
    opts = opts or CorpusOptions()
    for raw in paths:
        if isinstance(raw, str) and raw.startswith("hf:"):
            yield from iter_hf_dataset(raw[3:], opts)
            continue
        for path, root in discover([raw]):
            yield from iter_file(path, opts, root)


def _merge_blocks(docs: Iterable[Doc]) -> Iterator[Doc]:
    """Documents whole again (blocks of one file joined): for callers that want llama-index Documents."""
    current: Doc | None = None
    for d in docs:
        if current is not None and d.id == current.id and d.offset > 0:
            current.text += d.text
            continue
        if current is not None:
            yield current
        current = Doc(d.id, d.text, dict(d.metadata))
    if current is not None:
        yield current


def _to_document(d: Doc) -> Document:
    from llama_index.core import Document

    return Document(text=d.text, id_=d.id, metadata=d.metadata)


def load_file(path: Path, opts: CorpusOptions, root: Path | None = None) -> list[Document]:
    """Documents from one file as llama-index Documents (whole in memory: small files)."""
    return [_to_document(d) for d in _merge_blocks(iter_file(path, opts, root))]


def load_documents(paths: Sequence[str | Path], opts: CorpusOptions | None = None) -> list[Document]:
    """All documents under ``paths`` as llama-index Documents (whole in memory: use
    :func:`iter_chunk_records` for corpora of any size)."""
    return [_to_document(d) for d in _merge_blocks(iter_documents(paths, opts))]


def load_hf_dataset(
    name: str, opts: CorpusOptions, split: str = "train", limit: int | None = None
) -> list[Document]:
    return [_to_document(d) for d in iter_hf_dataset(name, opts, split, limit)]


# --------------------------------------------------------------------------- chunking


def make_splitter(opts: CorpusOptions) -> SentenceSplitter:
    """llama-index's splitter with Japanese sentence ends and a char or token budget."""
    if opts.chunk_unit not in ("chars", "tokens"):
        raise InputError(f"--chunk-unit must be 'chars' or 'tokens', not {opts.chunk_unit!r}")
    if opts.chunk_overlap >= opts.chunk_size:
        raise InputError("--chunk-overlap must be smaller than --chunk-size")
    from llama_index.core.node_parser import SentenceSplitter

    size = opts.chunk_size
    return SentenceSplitter(
        chunk_size=size,
        chunk_overlap=opts.chunk_overlap,
        separator=" ",  # "" makes llama-index fail ("empty separator") on a long run without any break
        paragraph_separator="\n\n",
        tokenizer=list if opts.chunk_unit == "chars" else morphemes,
        # a token covers at least one character: pieces of `size` characters fit either budget
        chunking_tokenizer_fn=lambda text: split_sentences(text, max_len=size),
        secondary_chunking_regex=r"[^、,，]+[、,，]?",
        include_metadata=False,
        include_prev_next_rel=False,
    )


def iter_chunks(docs: Iterable[Doc], opts: CorpusOptions | None = None) -> Iterator[dict[str, Any]]:
    """Node records ``{id, text, metadata}`` with stable ids ``<doc_id>:<n>`` and position metadata
    (chunk index, character span in the document), one document block at a time.

    The splitter is given the bare text: chunk budgets are about the passage, and titles or paths in
    metadata must not eat into them.
    """
    opts = opts or CorpusOptions()
    splitter = make_splitter(opts)
    doc_id, n = None, 0
    for doc in docs:
        if doc.id != doc_id or doc.offset == 0:
            doc_id, n = doc.id, 0
        if doc.extra.get("prechunked") and len(doc.text) <= PRECHUNKED_MAX_CHARS:
            meta = dict(doc.metadata)
            meta.update(chunk=n, start_char=0, end_char=len(doc.text), language=detect_language(doc.text))
            yield {"id": f"{doc.id}:{n}", "text": doc.text, "metadata": meta}
            n += 1
            continue
        cursor = 0
        for piece in splitter.split_text(doc.text):
            start = doc.text.find(piece, cursor)
            if start < 0:  # the splitter normalised whitespace; keep the chunk, position unknown
                start, end = -1, -1
            else:
                cursor = start + 1
                start, end = doc.offset + start, doc.offset + start + len(piece)
            meta = dict(doc.metadata)
            meta.update(chunk=n, start_char=start, end_char=end, language=detect_language(piece))
            yield {"id": f"{doc.id}:{n}", "text": piece, "metadata": meta}
            n += 1


def chunk_documents(docs: Iterable[Document], opts: CorpusOptions | None = None) -> list[TextNode]:
    """llama-index Documents → chunked TextNodes (see :func:`iter_chunks`)."""
    from llama_index.core.schema import TextNode

    as_docs = (Doc(d.id_, d.text, dict(d.metadata)) for d in docs)
    return [
        TextNode(
            id_=r["id"],
            text=r["text"],
            metadata=r["metadata"],
            excluded_embed_metadata_keys=list(r["metadata"]),
            excluded_llm_metadata_keys=list(r["metadata"]),
        )
        for r in iter_chunks(as_docs, opts)
    ]


def read_text(path: Path) -> str:
    """A whole small text file (UTF-8 with or without BOM, UTF-16 with its BOM, or cp932)."""
    with _open_text(path) as fh:
        try:
            return fh.read()
        except UnicodeDecodeError as exc:
            raise _decode_error(path, exc) from None


__all__ = [
    "MAX_RECORD_CHARS",
    "SUFFIXES",
    "TEXT_BLOCK_CHARS",
    "CorpusFormatError",
    "CorpusOptions",
    "Doc",
    "chunk_documents",
    "discover",
    "iter_chunks",
    "iter_documents",
    "iter_file",
    "load_documents",
    "load_file",
    "make_splitter",
    "split_sentences",
]
