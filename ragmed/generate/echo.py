"""A deterministic in-process backend for tests and dry runs: it answers from its own prompt.

WHY: the pipeline, the API and the UI are mostly ragmed's own logic (packing, citations, streaming,
error shapes). Testing that logic should not need a 3-minute vLLM start; the tests against the real
vLLM server stay, and prove the real path. Like simonw/llm's ``MockModel`` or lm-evaluation-harness's
``DummyLM``, this backend is honest about what it is: ``model`` is ``"echo"``.

What it answers:
* unconstrained: ``"ECHO <digest>: <the question line>"`` plus ``" [1]"`` when the prompt holds a first
  numbered source (so citation handling is exercised), streamed word by word;
* ``choice``: one of the choices, picked by a hash of the prompt (same prompt, same pick);
* ``regex``: the first (hash-picked) string the regex matches, built from its parse tree;
* ``json_schema``: ``{}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from ragmed.generate.base import ChatBackend
from ragmed.schema import ChatResult, Message, SamplingParams

try:  # Python 3.11+: the regex parser lives in re._parser
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    import sre_parse  # type: ignore[no-redef]

_FIRST_SOURCE = re.compile(r'\[1\]|n="1"')


def _digest(messages: list[Message]) -> int:
    joined = "\x1e".join(f"{m.get('role')}:{m.get('content')}" for m in messages)
    return int.from_bytes(hashlib.sha256(joined.encode("utf-8")).digest()[:8], "big")


def regex_example(pattern: str, seed: int = 0) -> str:
    """A short string that ``pattern`` fully matches (branches picked by ``seed``, minimal repeats)."""

    def walk(items: Any, seed: int) -> str:
        out: list[str] = []
        for op, arg in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(arg))
            elif name == "IN":
                options: list[str] = []
                for kind, value in arg:
                    if str(kind) == "LITERAL":
                        options.append(chr(value))
                    elif str(kind) == "RANGE":
                        options.append(chr(value[0]))
                    elif str(kind) == "CATEGORY":
                        options.append("0" if "DIGIT" in str(value) else "a")
                if options:
                    out.append(options[seed % len(options)])
            elif name == "BRANCH":
                branches = arg[1]
                out.append(walk(branches[seed % len(branches)], seed // len(branches)))
            elif name == "SUBPATTERN":
                out.append(walk(arg[-1], seed))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, _, body = arg
                out.append(walk(body, seed) * low)
            elif name == "ANY":
                out.append("a")
            elif name == "CATEGORY":
                out.append("0" if "DIGIT" in str(arg) else "a")
            # AT (anchors) and others add no characters
        return "".join(out)

    text = walk(sre_parse.parse(pattern), seed)
    if re.fullmatch(pattern, text) is None:
        raise ValueError(f"echo backend: cannot build an example for regex {pattern!r}")
    return text


class EchoBackend(ChatBackend):
    """Answers deterministically from the prompt, in process; see the module docstring."""

    def __init__(self, context_length: int = 8192, max_delta_words: int = 1, delay_s: float = 0.0) -> None:
        self._context_length = context_length
        self.max_delta_words = max_delta_words
        self.delay_s = delay_s  # pause before each delta: a slow model, for streaming and cancellation tests
        self.requests: list[tuple[list[Message], SamplingParams]] = []  # what it was asked, for tests
        self.completed = 0  # answers streamed to the end
        self.abandoned = 0  # answers whose reader went away (cancelled or closed early)

    @property
    def model(self) -> str:
        return "echo"

    @property
    def where(self) -> str:
        return "in-process echo backend"

    def count_tokens(self, text: str) -> int | None:
        return len(text.encode("utf-8"))  # one token per byte: an upper bound for real tokenizers

    def context_length(self) -> int | None:
        return self._context_length

    def reply(self, messages: list[Message], params: SamplingParams) -> str:
        """The full answer to ``messages`` under ``params``."""
        seed = _digest(messages)
        if params.choice is not None:
            return params.choice[seed % len(params.choice)]
        if params.regex is not None:
            return regex_example(params.regex, seed)
        if params.json_schema is not None:
            return "{}"
        user = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        lines = [ln.strip() for ln in user.splitlines() if ln.strip()]
        question = next((ln for ln in reversed(lines) if "?" in ln or "？" in ln), lines[-1] if lines else "")
        prompt = "\n".join(m.get("content") or "" for m in messages)
        cite = " [1]" if _FIRST_SOURCE.search(prompt) else ""
        return f"ECHO {seed % 10**8:08d}: {question[:200]}{cite}"

    async def astream(
        self, messages: list[Message], params: SamplingParams
    ) -> AsyncIterator[str | ChatResult]:
        started = time.perf_counter()
        self.requests.append((list(messages), params))
        text = self.reply(messages, params)
        words = re.findall(r"\S+\s*", text) or [text]
        finish = "stop"
        used = len(text.encode("utf-8"))
        if used > params.max_tokens:  # honour max_tokens like a server would, counting bytes as tokens
            text = text.encode("utf-8")[: params.max_tokens].decode("utf-8", "ignore")
            words, finish, used = [text], "length", params.max_tokens
        done = False
        try:
            for i in range(0, len(words), self.max_delta_words):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield "".join(words[i : i + self.max_delta_words])
            prompt_tokens = sum(len((m.get("content") or "").encode("utf-8")) for m in messages)
            done = True
            yield ChatResult(
                text=text,
                model=self.model,
                finish_reason=finish,
                usage={
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": used,
                    "total_tokens": prompt_tokens + used,
                },
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        finally:
            if done:
                self.completed += 1
            else:
                self.abandoned += 1
