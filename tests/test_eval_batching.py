"""BatchingBackend: concurrent achat calls become grouped chat_batch calls, answers routed back."""

from __future__ import annotations

import asyncio

import pytest
from ragmed_eval.batching import BatchingBackend

from ragmed.errors import UpstreamRejected
from ragmed.generate.echo import EchoBackend
from ragmed.schema import ChatResult, SamplingParams


class EchoBatchLLM(EchoBackend):
    """The echo backend with a batch call that answers each conversation with its last message and
    records the batches it was given (vllm.LLM is not importable on CPU hosts). The batcher is under test."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, str]] = []

    def chat_batch(self, conversations, params):
        if params.max_tokens == 13:
            raise RuntimeError("engine failure")
        if any(len(c[-1]["content"]) > 20 for c in conversations):  # as vLLM refuses a prompt too long
            raise ValueError("prompt is longer than max_model_len")
        self.calls.append((len(conversations), params.model_dump_json()))
        return [ChatResult(text=c[-1]["content"], model="echo") for c in conversations]


def test_batches_group_by_params_and_route_answers():
    inner = EchoBatchLLM()
    b = BatchingBackend(inner, max_batch=64, max_wait_s=0.05)
    single = SamplingParams(max_tokens=2, choice=["a", "b", "c", "d", "e"])
    multi = SamplingParams(max_tokens=4, regex="[a-e],[a-e]")

    async def go():
        tasks = [
            b.achat([{"role": "user", "content": f"q{i}"}], single if i % 3 else multi) for i in range(30)
        ]
        return await asyncio.gather(*tasks)

    results = asyncio.run(go())
    assert [r.text for r in results] == [f"q{i}" for i in range(30)]
    assert sum(n for n, _ in inner.calls) == 30
    assert len(inner.calls) <= 4  # 30 concurrent calls -> a couple of batches, not 30 requests
    assert len({p for _, p in inner.calls}) == 2  # one batch per distinct sampling setting


def test_batch_errors_reach_every_caller():
    b = BatchingBackend(EchoBatchLLM(), max_batch=8, max_wait_s=0.01)

    async def go():
        return await asyncio.gather(
            *(b.achat([{"role": "user", "content": "x"}], SamplingParams(max_tokens=13)) for _ in range(3)),
            return_exceptions=True,
        )

    out = asyncio.run(go())
    assert all(isinstance(e, RuntimeError) for e in out)
    with pytest.raises(RuntimeError):
        asyncio.run(b.achat([{"role": "user", "content": "x"}], SamplingParams(max_tokens=13)))


def test_a_refused_prompt_fails_alone_as_an_upstream_rejection():
    """vLLM refuses a whole call for one over-long prompt (ValueError): the others are answered, that one
    question gets UpstreamRejected (a RagmedError the runner records); a bug (RuntimeError) stays itself."""
    b = BatchingBackend(EchoBatchLLM(), max_batch=8, max_wait_s=0.05)

    async def go():
        msgs = ["short", "x" * 30, "also short"]
        return await asyncio.gather(
            *(b.achat([{"role": "user", "content": m}], SamplingParams(max_tokens=2)) for m in msgs),
            return_exceptions=True,
        )

    ok1, refused, ok2 = asyncio.run(go())
    assert (ok1.text, ok2.text) == ("short", "also short")
    assert isinstance(refused, UpstreamRejected) and isinstance(refused.__cause__, ValueError)
