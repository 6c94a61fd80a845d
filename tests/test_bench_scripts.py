"""The benchmark scripts that guard a promise run here too, at small sizes, so they work when it matters:
the abuse mix must leave the server up with every request answered as expected, and the GPU script must
run end to end (on the CPU, toy sizes) before any lent device time is spent on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: int = 600) -> dict:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_abuse_mix_leaves_the_server_up_and_every_request_answered() -> None:
    report = run("bench/abuse.py", "--rounds", "1", "--concurrency", "8")
    assert report["server_alive"] and report["health_after"] == 200
    kinds = report["kinds"]
    assert kinds["all_answered_as_expected"]
    assert kinds["oversized"]["statuses"] == {"413": kinds["oversized"]["requests"]}
    assert kinds["short body"]["statuses"] == {"408": 1}


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_in_smoke_mode() -> None:
    report = run("bench/gpu.py", "--smoke")
    assert report["smoke"] and report["dense"]["flat"]["batch_64"]["qps"] > 0
    assert all(
        report["embedding"][m]["texts_per_s"] > 0
        for m in ("ruri-v3-310m-shape", "multilingual-e5-large-shape")
    )


def test_scale_benchmark_builds_queries_and_adds_at_a_toy_size(tmp_path: Path) -> None:
    """bench/scale.py end to end at 2000 passages: a real index and the flat in-RAM baseline side by side."""
    report = run(
        "bench/scale.py",
        "--sizes",
        "2000",
        "--queries",
        "20",
        "--add",
        "200",
        "--embed-sample",
        "0",
        "--baseline-size",
        "2000",
        "--out",
        str(tmp_path),
        timeout=120,
    )
    (size,) = report["sizes"]
    assert size["passages"] == 2000 and size["build"]["nodes"] == 2000 and size["faiss"]["type"] == "flat"
    assert {"read", "embed", "tokenize", "write", "dense", "bm25"} <= set(size["build"]["stages_s"])
    assert (
        set(size["disk_bytes"]) == {"nodes", "dense", "lexical", "total"}
        and size["disk_bytes"]["total"] > 1e6
    )
    search = size["search"]
    for mode in ("dense", "bm25", "hybrid"):
        assert 0 < search[mode]["p50_ms"] <= search[mode]["p99_ms"] < 1000
    assert search["dense_recall_at_10"] >= 0.95, "flat FP16 search is exact up to rounding"
    assert search["hybrid_nonempty"] == 1.0, "the Japanese queries match the generated passages lexically"
    assert 50 < search["rss_mb"] < search["peak_rss_mb"] + 1 < 2000
    assert size["add"]["added_nodes"] == 200 and size["add"]["add_s"] > 0
    flat = size["flat_in_ram_baseline"]
    assert flat["build"]["nodes"] == 2000 and flat["add"]["added_nodes"] == 200
    assert flat["search"]["dense_recall_at_10"] >= 0.95 and flat["search"]["hybrid"]["p50_ms"] > 0
    assert report["projection"] is None, "one size: nothing to fit"
    assert not any(tmp_path.iterdir()), "without --keep the work folder is emptied"
