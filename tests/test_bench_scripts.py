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
