"""The API's own logic over real HTTP with the in-process echo backend: sources, guards, limits, bugs.

Real uvicorn on 127.0.0.1, the official ``openai`` client and raw sockets; the upstream is the echo
backend, so these run in seconds. The real vLLM path is in test_api.py.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import openai
import pytest

from ragmed.errors import UpstreamError
from ragmed.generate.echo import EchoBackend
from ragmed.index import RagmedIndex
from ragmed.server.app import create_app
from ragmed.service import RagService
from ragmed.settings import Settings

from .test_api import serving

KEY = "k-123"
QUESTION = "急性膵炎の重症度判定は？"


def client(url: str, key: str | None = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key or "none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def echo() -> EchoBackend:
    return EchoBackend()


@pytest.fixture(scope="module")
def service(settings: Settings, demo_index: RagmedIndex, echo: EchoBackend) -> RagService:
    cfg = settings.with_overrides(generation__max_question_chars=500, serve__body_timeout=1.0)
    return RagService(demo_index, cfg, llm=echo)


@pytest.fixture(scope="module")
def url(service: RagService):
    with serving(service, api_key=KEY) as root:
        yield root


@pytest.fixture(scope="module")
def keyless_url(service: RagService):
    with serving(service) as root:
        yield root


def test_non_stream_returns_every_source_numbered_with_cited_flags(url: str) -> None:
    reply = client(url).chat.completions.create(
        model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}], extra_body={"ragmed": {"k": 3}}
    )
    extra = reply.model_extra
    sources = extra["sources"]
    assert [s["n"] for s in sources] == [1, 2, 3]
    assert reply.choices[0].message.content.endswith("[1]")  # echo cites its first source
    assert [s["cited"] for s in sources] == [True, False, False]
    assert [c["n"] for c in extra["citations"]] == [1] and extra["citations"][0]["text"] == sources[0]["text"]
    for s in sources:
        assert s["text"] and s["source"] and "language" in s and "standard_name" in s and "icd10" in s


def test_stream_carries_sources_first_and_citations_last(url: str) -> None:
    chunks = list(
        client(url).chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    first, last = chunks[0], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].finish_reason is None
    assert [s["n"] for s in first.model_extra["sources"]] == list(
        range(1, len(first.model_extra["sources"]) + 1)
    )
    assert last.choices[0].finish_reason == "stop" and [c["n"] for c in last.model_extra["citations"]] == [1]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("ECHO") and text.endswith("[1]")


def test_responses_api_carries_sources_and_citations(url: str, echo: EchoBackend) -> None:
    c = client(url)
    reply = c.responses.create(
        model="ragmed/demo", instructions="簡潔に。", input=QUESTION, extra_body={"ragmed": {"k": 3}}
    )
    assert reply.status == "completed" and reply.incomplete_details is None
    assert reply.output_text.startswith("ECHO") and reply.output_text.endswith("[1]")
    assert [s["n"] for s in reply.model_extra["sources"]] == [1, 2, 3]
    assert [x["n"] for x in reply.model_extra["citations"]] == [1]
    # instructions are a system message: the RAG model keeps its own (grounding rules), and says so, as
    # for chat's system messages; the upstream model, passed through, gets them
    assert any("system messages were ignored" in w for w in reply.model_extra["ragmed"]["warnings"])
    assert "簡潔に。" not in json.dumps(echo.requests[-1][0], ensure_ascii=False)
    c.responses.create(model="echo", instructions="簡潔に。", input="こんにちは")
    assert echo.requests[-1][0] == [
        {"role": "system", "content": "簡潔に。"},
        {"role": "user", "content": "こんにちは"},
    ]
    events = list(c.responses.create(model="ragmed/demo", input=QUESTION, stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [s["n"] for s in events[0].response.model_extra["sources"]] == list(
        range(1, len(events[0].response.model_extra["sources"]) + 1)
    )
    assert "citations" not in events[0].response.model_extra
    assert [x["n"] for x in events[-1].response.model_extra["citations"]] == [1]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text and text.endswith("[1]")


class FailingMidStream(EchoBackend):
    """The echo backend's first two words, then the upstream connection drops."""

    async def astream(self, messages, params):
        count = 0
        async for item in super().astream(messages, params):
            if count == 2:
                raise UpstreamError("The LLM at in-process echo backend dropped the connection.")
            count += 1
            yield item


def test_an_upstream_failure_mid_stream_is_reported_in_band(
    settings: Settings, demo_index: RagmedIndex
) -> None:
    """After the first byte the status is sent: the failure is an event of each stream's own kind."""
    with serving(RagService(demo_index, settings, llm=FailingMidStream()), api_key=KEY) as root:
        events = list(client(root).responses.create(model="ragmed/demo", input=QUESTION, stream=True))
        kinds = [e.type for e in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds[4:] == ["response.output_text.delta"] * 2 + ["error", "response.failed"]
        assert events[-2].code == "upstream_error" and "dropped" in events[-2].message
        assert events[-1].response.status == "failed" and "dropped" in events[-1].response.error.message
        with pytest.raises(openai.APIError, match="dropped"):  # chat's stream: an error payload, then [DONE]
            list(
                client(root).chat.completions.create(
                    model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}], stream=True
                )
            )


def test_malformed_json_without_a_key_is_401_not_400(url: str) -> None:
    reply = httpx.post(f"{url}/v1/chat/completions", content=b"{not json")
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "missing_api_key"


def test_keyless_server_checks_the_host_header(keyless_url: str) -> None:
    port = keyless_url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert httpx.get(f"{keyless_url}/v1/models", headers={"Host": host}).status_code == 200
    rebound = httpx.get(f"{keyless_url}/v1/models", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "invalid_host"


def test_body_shorter_than_its_content_length_times_out(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n".encode()
            + b'Content-Length: 500\r\n\r\n{"model": "ragmed/demo"'
        )
        started = time.monotonic()
        reply = b""
        while b"request_timeout" not in reply:
            part = sock.recv(65536)
            if not part:
                break
            reply += part
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
    assert time.monotonic() - started < 8


def test_lone_surrogates_are_400s(url: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    body = '{"model": "ragmed/demo", "input": "AMI\\ud800"}'
    reply = httpx.post(f"{url}/v1/embeddings", content=body.encode(), headers=headers)
    assert reply.status_code == 400, reply.text
    assert "surrogate" in reply.json()["error"]["message"]
    chat = '{"model": "ragmed/demo", "messages": [{"role": "user", "content": "AMI\\udfff"}]}'
    reply = httpx.post(f"{url}/v1/chat/completions", content=chat.encode(), headers=headers)
    assert reply.status_code == 400 and "surrogate" in reply.json()["error"]["message"]


def test_overlong_question_is_413_before_any_work(url: str, echo: EchoBackend) -> None:
    before = len(echo.requests)
    with pytest.raises(openai.APIStatusError) as info:
        client(url).chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": "A" * 250_000}]
        )
    assert info.value.status_code == 413 and "RAGMED_MAX_QUESTION_CHARS" in info.value.body["message"]
    assert len(echo.requests) == before  # nothing reached the model


def test_a_planted_bug_is_a_500_with_a_logged_traceback(
    url: str, service: RagService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(service, "pipeline", broken)
    with caplog.at_level(logging.ERROR, logger="ragmed.server.app"):
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "ragmed/demo", "messages": [{"role": "user", "content": QUESTION}]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
    assert "ZeroDivisionError" in reply.json()["error"]["message"]
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)
    monkeypatch.undo()
    assert client(url).models.list().data  # still serving


def test_a_client_that_leaves_stops_the_generation(settings: Settings, demo_index: RagmedIndex) -> None:
    """A client that times out (non-stream) or closes the stream after its first chunk: the answer being
    generated for it is abandoned, not finished for nobody."""
    slow = EchoBackend(delay_s=0.4)
    body = {"model": "ragmed/demo", "messages": [{"role": "user", "content": QUESTION}]}
    headers = {"Authorization": f"Bearer {KEY}"}

    def wait_abandoned(before: int) -> None:
        deadline = time.monotonic() + 10
        while slow.abandoned == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert slow.abandoned == before + 1, "the answer kept generating for nobody"

    with serving(RagService(demo_index, settings, llm=slow), api_key=KEY) as root:
        before = slow.abandoned
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{root}/v1/chat/completions", json=body, headers=headers, timeout=httpx.Timeout(10, read=0.8)
            )
        wait_abandoned(before)
        before = slow.abandoned
        with httpx.stream(
            "POST", f"{root}/v1/chat/completions", json=body | {"stream": True}, headers=headers, timeout=10
        ) as reply:
            first = next(reply.iter_lines())
            assert '"sources"' in first
        wait_abandoned(before)
    assert slow.completed == 0


def test_app_without_key_serves_docs(service: RagService) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(service, api_key="", check_host=False)) as tc:
        assert tc.get("/openapi.json").status_code == 200
        assert json.loads(tc.get("/health").text)["index"]["name"] == "demo"


def test_dictionary_lookup_text_is_bounded(service: RagService) -> None:
    from ragmed.errors import TooLargeError

    with pytest.raises(TooLargeError, match="RAGMED_MAX_QUESTION_CHARS"):
        service.dictionary("A" * 250_000)
    assert any(r.standard_name == "高血圧症" for r in service.dictionary("既往にHTあり。"))
