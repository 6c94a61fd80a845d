"""Corpus loading and Japanese-aware chunking on real files of every supported type."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from ragmed.ingest.corpus import (
    CorpusFormatError,
    CorpusOptions,
    chunk_documents,
    iter_chunks,
    iter_documents,
    load_documents,
    split_sentences,
)

from .conftest import FIXTURES, SAMPLES


def test_split_sentences_keeps_every_character() -> None:
    text = "急性膵炎は炎症である。原因は？アルコール！\n胆石も多い"
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert parts == ["急性膵炎は炎症である。", "原因は？", "アルコール！", "\n", "胆石も多い"]


def test_loads_all_file_types() -> None:
    docs = load_documents([SAMPLES / "corpus", FIXTURES / "corpus" / "asthma.pdf"])
    by_source = {}
    for d in docs:
        by_source.setdefault(Path(d.metadata["source"]).suffix, []).append(d)
    assert {k: len(v) for k, v in by_source.items()} == {
        ".txt": 1,
        ".md": 1,
        ".jsonl": 4,
        ".csv": 2,
        ".pdf": 1,
    }
    md = by_source[".md"][0]
    assert md.metadata["title"] == "急性膵炎の診断と重症度判定"
    jsonl = {d.metadata["title"] for d in by_source[".jsonl"]}
    assert "市中肺炎の重症度評価" in jsonl
    pdf = by_source[".pdf"][0]
    assert "吸入ステロイド薬" in pdf.text and pdf.metadata["page"] == 1


def test_a_folder_copied_from_a_mac_or_a_repository_reads_only_its_documents(tmp_path: Path) -> None:
    # a folder a Mac copied holds an AppleDouble ._<name> (binary) beside each file and __MACOSX/ when
    # unzipped; a checkout holds .git/ and notebooks' .ipynb_checkpoints/; an open workbook Excel's ~$ file
    (tmp_path / "chunk_0.jsonl").write_text(
        '{"id": "p1", "title": "Pneumonia", "content": "Community-acquired pneumonia.", "contents": "x"}\n',
        encoding="utf-8",
    )
    fork = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\xff\xfe"
    (tmp_path / "._chunk_0.jsonl").write_bytes(fork)
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._chunk_0.jsonl").write_bytes(fork)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "description.txt").write_text("Unnamed repository", encoding="utf-8")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "notes-checkpoint.md").write_text("# draft", encoding="utf-8")
    (tmp_path / "~$table.csv").write_bytes(b"\x0bwho\x00")
    docs = load_documents([tmp_path])
    assert [d.metadata["title"] for d in docs] == ["Pneumonia"]
    # a file named on the command line is read, whatever its name
    with pytest.raises(CorpusFormatError, match="._chunk_0.jsonl"):
        load_documents([tmp_path / "._chunk_0.jsonl"])


def test_text_saved_on_a_japanese_desktop_reads_in_its_encoding(tmp_path: Path) -> None:
    """cp932 with CRLF (Windows' Japanese default), UTF-16 with its byte-order mark (Notepad's and Excel's
    "Unicode text", little- or big-endian) and UTF-8 with a BOM all read as the same text; bytes that are
    none of them are refused naming the file."""
    text = "急性膵炎の重症度判定\r\n予後因子は９項目である。\r\n"
    (tmp_path / "cp932.txt").write_bytes(text.encode("cp932"))
    (tmp_path / "utf16le.txt").write_bytes(text.encode("utf-16"))  # BOM first, little-endian here
    (tmp_path / "utf16be.md").write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    (tmp_path / "bom.txt").write_bytes(text.encode("utf-8-sig"))
    rows = "id,title,text\r\n1,膵炎,急性膵炎は膵の炎症である。\r\n"
    (tmp_path / "table.csv").write_bytes(rows.encode("utf-16"))
    docs = {d.metadata["source"]: d for d in load_documents([tmp_path])}
    assert set(docs) == {"cp932.txt", "utf16le.txt", "utf16be.md", "bom.txt", "table.csv"}
    for name in ("cp932.txt", "utf16le.txt", "utf16be.md", "bom.txt"):
        assert docs[name].text.replace("\r\n", "\n").strip() == text.replace("\r\n", "\n").strip(), name
        assert docs[name].metadata["title"] == "急性膵炎の重症度判定", name
    assert (docs["table.csv"].text, docs["table.csv"].metadata["title"]) == (
        "急性膵炎は膵の炎症である。",
        "膵炎",
    )
    (tmp_path / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x81\x00" * 10)  # a lead byte then NUL: no cp932
    with pytest.raises(CorpusFormatError, match=r"binary\.txt: not UTF-8, UTF-16 or cp932"):
        load_documents([tmp_path / "binary.txt"])


def test_configurable_fields(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"uid": "x1", "heading": "見出し", "body": "本文である。"}\n', encoding="utf-8")
    [doc] = load_documents([path], CorpusOptions(text_field="body", title_field="heading", id_field="uid"))
    # ids and sources name the file relative to its folder: prompts never show server paths
    assert (doc.text, doc.metadata["title"], doc.id_) == ("本文である。", "見出し", "docs.jsonl#x1")
    assert doc.metadata["source"] == "docs.jsonl"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "a"}\n{"text": \n', r"bad\.jsonl: line 2: invalid JSON"),
        ("nofield.jsonl", '{"body": "a"}\n', r"nofield\.jsonl: line 1: no string field 'text'"),
        ("nocol.csv", "id,body\n1,x\n", r"nocol\.csv: line 1: no column 'text'"),
        ("extra.csv", "id,text\n1,x\n2,y,z\n", r"extra\.csv: line 3: more fields than the header"),
        ("broken.pdf", "%PDF-1.4 garbage", r"broken\.pdf: not a readable PDF"),
        ("notes.docx", "x", r"notes\.docx: unsupported file type"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message):
        load_documents([path])


def test_missing_path() -> None:
    with pytest.raises(CorpusFormatError, match="no such file or directory"):
        load_documents(["/nonexistent/corpus"])


@pytest.mark.parametrize("unit", ["chars", "tokens"])
def test_chunks_respect_size_overlap_and_positions(tmp_path: Path, unit: str) -> None:
    sentences = [f"症例{i}では発熱と咳嗽が{i}日続き、胸部X線で浸潤影を認めた。" for i in range(40)]
    text = "".join(sentences)
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    opts = CorpusOptions(
        chunk_size=120 if unit == "chars" else 60,
        chunk_overlap=30 if unit == "chars" else 25,
        chunk_unit=unit,
    )
    nodes = chunk_documents(load_documents([path]), opts)
    assert len(nodes) > 5
    for n, node in enumerate(nodes):
        meta = node.metadata
        assert meta["chunk"] == n and node.node_id == f"long.txt:{n}"
        assert text[meta["start_char"] : meta["end_char"]] == node.text
        if unit == "chars":
            assert len(node.text) <= 120
    # consecutive chunks overlap (the next starts before the previous ends)
    assert any(
        b.metadata["start_char"] < a.metadata["end_char"] for a, b in zip(nodes, nodes[1:], strict=False)
    )
    # chunks end at sentence ends, not mid-sentence
    assert all(node.text.endswith("。") for node in nodes)


def test_bad_chunk_options() -> None:
    with pytest.raises(ValueError, match="chunk-overlap"):
        chunk_documents([], CorpusOptions(chunk_size=50, chunk_overlap=50))
    with pytest.raises(ValueError, match="chunk-unit"):
        chunk_documents([], CorpusOptions(chunk_unit="pages"))


def test_hf_dataset_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline (or an unknown name) → DownloadError, exit code 3; without `datasets` → SetupError."""
    from ragmed.errors import DownloadError, SetupError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read when `datasets` is first imported: no retries
    with pytest.raises((DownloadError, SetupError), match="hf:example/ApolloCorpus-ja-nonexistent"):
        load_documents(["hf:example/ApolloCorpus-ja-nonexistent"])


def test_a_long_line_without_any_break_is_chunked(tmp_path: Path) -> None:
    """400+ characters with no sentence end, comma or space (llama-index's "empty separator")."""
    path = tmp_path / "run.txt"
    text = "あ" * 450 + "急性膵炎" * 200
    path.write_text(text, encoding="utf-8")
    records = list(iter_chunks(iter_documents([path])))
    assert len(records) >= 3 and all(len(r["text"]) <= 400 for r in records)
    for r in records:
        m = r["metadata"]
        assert text[m["start_char"] : m["end_char"]] == r["text"]


def test_a_huge_single_line_text_is_chunked_in_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single-line .txt far bigger than one block: read block by block (memory holds a block, not the
    file), chunks keep exact offsets in the whole document and ids run on across blocks."""
    import ragmed.ingest.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "TEXT_BLOCK_CHARS", 50_000)
    path = tmp_path / "huge.txt"
    # no sentence end anywhere: one 4 MB line (numbered, so every chunk's text occurs once)
    text = "".join(f"症例は発熱と咳嗽で受診した{i:08d}" + "x" * 29 for i in range(80_000))
    path.write_text(text, encoding="utf-8")
    tracemalloc.start()
    count, last_end = 0, 0
    with path.open(encoding="utf-8") as whole:
        for r in iter_chunks(iter_documents([path])):
            m = r["metadata"]
            assert r["id"] == f"huge.txt:{count}" and m["start_char"] >= last_end - 400
            whole.seek(0)
            if count % 997 == 0:  # spot-check offsets against the file
                assert whole.read(m["end_char"])[m["start_char"] :] == r["text"]
            last_end = m["end_char"]
            count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert last_end == len(text) and count >= 10_000
    assert peak < 40 << 20, f"peak {peak >> 20} MB for a {path.stat().st_size >> 20} MB file"


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "long.jsonl",
            lambda n: '{"text": "ok"}\n{"text": "' + "x" * n + '"}\n',
            r"long\.jsonl: line 2: longer than",
        ),
        ("long.csv", lambda n: "id,text\n1,ok\n2," + "x" * n + "\n", r"long\.csv: line 3: longer than"),
    ],
)
def test_rows_over_the_limit_name_their_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name, make, message
) -> None:
    import ragmed.ingest.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "MAX_RECORD_CHARS", 10_000)
    path = tmp_path / name
    path.write_text(make(50_000), encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=message):
        list(iter_documents([path]))


def test_rows_are_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "一行目。"}\n{"text": "二行目。"}\nnot json\n', encoding="utf-8")
    docs = iter_documents([path])
    assert next(docs).text == "一行目。" and next(docs).text == "二行目。"
    with pytest.raises(CorpusFormatError, match=r"rows\.jsonl: line 3: invalid JSON"):
        next(docs)
