"""RAG pipeline: prompt templates, packing, citations, and end-to-end answers from the real vLLM server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from rich.console import Console

from ragmed.llm import LLMClient
from ragmed.prompts import PromptTemplateError, list_templates, load_template
from ragmed.rag import (
    Answer,
    BackendTokenCounter,
    ByteEstimateCounter,
    ContextTooSmallError,
    HFTokenCounter,
    RagmedQueryEngine,
    RagPipeline,
    RetrievedChunk,
    cited_numbers,
    dedupe_and_order,
    make_token_counter,
    pack_context,
    resolve_citations,
    run_ask,
)
from ragmed.settings import Settings

TEMPLATE = load_template("clinical_ja")


@pytest.fixture()
def unused_url() -> str:
    """A URL on which nothing listens (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def chunk(node_id: str, text: str, score: float | None, **meta: str) -> RetrievedChunk:
    return RetrievedChunk(node_id=node_id, text=text, score=score, source=meta.get("source", f"{node_id}.txt"),
                          title=meta.get("title", node_id), icd10=meta.get("icd10"))  # fmt: skip


class GivenNodes(BaseRetriever):
    """The retriever seam: returns the nodes it was given (a user's own llama-index retriever)."""

    def __init__(self, nodes: list[NodeWithScore]) -> None:
        super().__init__()
        self.nodes = nodes
        self.queries: list[str] = []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        return list(self.nodes)


def invented_nodes() -> list[NodeWithScore]:
    # Invented content (not from any real source).
    rows = [
        ("n1", "架空病Xの第一選択薬はテスト薬Aである。", 0.9, "icd-guide.txt", "架空病X診療の手引き", "Z999"),
        ("n2", "架空病Xでは発熱と関節痛がみられる。", 0.7, "symptoms.md", "架空病Xの症状", "Z999"),
        ("n3", "架空病Xの第一選択薬はテスト薬Aである。", 0.5, "copy.txt", "重複", "Z999"),
    ]
    return [
        NodeWithScore(node=TextNode(id_=i, text=t, metadata={"source": s, "title": ti, "icd10": c, "kind": "corpus"}), score=sc)
        for i, t, sc, s, ti, c in rows
    ]  # fmt: skip


# --------------------------------------------------------------------------- templates


def test_builtin_template_loads_with_hash_and_placeholders() -> None:
    assert "clinical_ja" in list_templates()
    assert len(TEMPLATE.sha256) == 64 and TEMPLATE.version == TEMPLATE.sha256[:12]
    rendered = TEMPLATE.render("user", context="[1] 資料", diseases="", question="質問文")
    assert "[1] 資料" in rendered and "質問文" in rendered


def test_template_by_path_hash_follows_content(tmp_path: Path) -> None:
    src = Path(TEMPLATE.path).read_text(encoding="utf-8")
    copy = tmp_path / "mine.yaml"
    copy.write_text(src, encoding="utf-8")
    assert load_template(copy).sha256 == TEMPLATE.sha256
    copy.write_text(src.replace("簡潔かつ正確に", "丁寧に", 1), encoding="utf-8")
    assert load_template(copy).sha256 != TEMPLATE.sha256


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.replace("{question}", "{questoin}", 1), "unknown placeholder"),
        (lambda s: s.replace("context_item:", "context_itme:", 1), "context_itme"),
        (lambda s: s + "\nbad: [unclosed\n", "not valid UTF-8 YAML"),
    ],
)
def test_bad_template_names_file_and_field(tmp_path: Path, change, expected: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(change(Path(TEMPLATE.path).read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(PromptTemplateError, match=expected) as info:
        load_template(bad)
    assert str(bad) in str(info.value)


def test_unknown_template_name_lists_available() -> None:
    with pytest.raises(PromptTemplateError, match="clinical_ja"):
        load_template("no_such_template")


# --------------------------------------------------------------------------- packing and citations


def test_dedupe_keeps_best_copy_and_orders_by_score() -> None:
    chunks = [
        chunk("b", "同じ本文", 0.2),
        chunk("a", "別の本文", 0.5),
        chunk("c", "同じ　本文", 0.9),
        chunk("a", "別の本文", 0.1),
    ]
    out, dropped = dedupe_and_order(chunks)
    assert [c.node_id for c in out] == ["c", "a"] and dropped == 2


def test_pack_respects_budget_and_numbers_chunks() -> None:
    counter = ByteEstimateCounter()
    chunks = [chunk(f"c{i}", f"資料{i}の本文。" * 20, 1.0 - i / 10) for i in range(6)]
    per_chunk = counter.count(chunks[0].text)
    packed = pack_context(
        chunks, "質問", "固定部分", TEMPLATE, counter, context_length=3 * per_chunk + 400, max_tokens=100
    )
    assert packed.info.prompt_tokens <= packed.info.budget == 3 * per_chunk + 300
    assert [c.n for c in packed.chunks] == list(range(1, len(packed.chunks) + 1))
    assert 2 <= len(packed.chunks) <= 4 and packed.info.dropped == 6 - len(packed.chunks)
    assert packed.context.startswith("[1] c0")
    assert any("Context budget" in w for w in packed.warnings)
    assert any("estimates" in w for w in packed.warnings)  # the byte counter says it is not exact


def test_question_over_budget_is_truncated_with_warning() -> None:
    counter = ByteEstimateCounter()
    question = "とても長い質問文です。" * 200
    packed = pack_context(
        [chunk("a", "本文", 1.0)], question, "", TEMPLATE, counter, context_length=600, max_tokens=100
    )
    assert packed.question.endswith("…") and len(packed.question) < len(question)
    assert packed.info.prompt_tokens <= packed.info.budget
    assert any("truncated" in w for w in packed.warnings)


def test_cited_numbers_forms() -> None:
    assert cited_numbers("A[1]。B［２］、C[1, 3] D[4-5] E【6】 F[2]") == [1, 2, 3, 4, 5, 6]
    assert cited_numbers("引用なし (1) 1]") == []


def test_citations_map_to_packed_chunks_and_drop_dangling() -> None:
    packed = [
        chunk("x", "本文X", 0.9).model_copy(update={"n": 1}),
        chunk("y", "本文Y", 0.8).model_copy(update={"n": 2}),
    ]
    citations, invalid = resolve_citations("Yによる[2]。Xも[1][7]。", packed)
    assert [(c.n, c.node_id, c.text) for c in citations] == [(2, "y", "本文Y"), (1, "x", "本文X")]
    assert invalid == [7]


# --------------------------------------------------------------------------- failures without a server


def test_unreachable_server_run_ask_exits_nonzero_with_hint(unused_url: str) -> None:
    settings = Settings(llm_base_url=unused_url, llm_max_retries=0, llm_timeout=5)
    out, err = Console(record=True, width=200), Console(record=True, width=200)
    code = run_ask("架空病Xの治療は？", settings=settings, rag=False, console=out, err_console=err)
    message = err.export_text()
    assert code != 0
    assert unused_url in message and "ragmed llm serve-local" in message and "vllm serve" in message


def test_missing_index_lists_available(settings: Settings, demo_index, unused_url: str) -> None:
    err = Console(record=True, width=300)
    code = run_ask(
        "質問", index="no-such-index", settings=settings.with_overrides(llm_base_url=unused_url),
        console=Console(record=True), err_console=err,
    )  # fmt: skip
    message = err.export_text()
    assert code != 0 and "no-such-index" in message and "Available" in message and "demo" in message


# --------------------------------------------------------------------------- with the real vLLM server


@pytest.fixture(scope="module")
def llm(vllm_server) -> LLMClient:
    return LLMClient(vllm_server.base_url, timeout=120, max_retries=1)


@pytest.fixture(scope="module")
def small(settings: Settings) -> Settings:
    return settings.with_overrides(max_tokens=24, exam_reasoning_tokens=24)


@pytest.mark.vllm
def test_answer_with_own_retriever(llm: LLMClient, small: Settings) -> None:
    retriever = GivenNodes(invented_nodes())
    pipe = RagPipeline(llm, retriever, settings=small)
    answer = pipe.answer("架空病Xの第一選択薬は？")
    assert retriever.queries == ["架空病Xの第一選択薬は？"]
    assert answer.text.strip() and answer.model == llm.model
    assert answer.prompt_hash == TEMPLATE.sha256 and answer.context.exact  # vLLM's /tokenize counted
    assert answer.context.duplicates == 1 and answer.context.packed == 2
    assert [c.n for c in answer.chunks if c.n] == [1, 2]
    assert answer.usage["prompt_tokens"] > 0 and answer.usage["completion_tokens"] > 0
    # The prompt the server saw holds the numbered context: its token count matches our packing estimate.
    assert answer.usage["prompt_tokens"] <= answer.context.prompt_tokens
    for key in ("retrieval_ms", "packing_ms", "llm_ms", "parse_ms", "ragmed_ms"):
        assert answer.timings[key] >= 0
    assert all(c.n in (1, 2) for c in answer.citations)


@pytest.mark.vllm
def test_local_tokenizer_matches_server_tokenize(llm: LLMClient) -> None:
    """The served model's folder is on this machine: its tokenizer.json counts exactly like /tokenize."""
    local = make_token_counter(llm)
    assert isinstance(local, HFTokenCounter) and local.exact
    server = BackendTokenCounter(llm)
    for text in ("急性心筋梗塞（AMI）の初期治療は？", TEMPLATE.system, "Sepsis: lactate ≥ 2 mmol/L"):
        assert local.count(text) == server.count(text)


@pytest.mark.vllm
def test_no_rag_sends_no_context(llm: LLMClient, small: Settings) -> None:
    retriever = GivenNodes(invented_nodes())
    pipe = RagPipeline(llm, retriever, settings=small)
    prep = pipe.prepare("架空病Xの第一選択薬は？", rag=False)
    sent = json.dumps(prep.messages, ensure_ascii=False)
    assert "テスト薬A" not in sent and "参考資料" not in sent and retriever.queries == []
    answer = pipe.answer("架空病Xの第一選択薬は？", rag=False)
    assert not answer.rag and answer.chunks == [] and answer.citations == []
    with_rag = pipe.answer("架空病Xの第一選択薬は？")
    assert answer.usage["prompt_tokens"] < with_rag.usage["prompt_tokens"]


@pytest.mark.vllm
def test_stream_yields_deltas_then_answer(llm: LLMClient, small: Settings, demo_index) -> None:
    pipe = RagPipeline.from_index(demo_index, settings=small, llm=llm)
    items = list(pipe.stream("AMIの初期治療は？"))
    final = items[-1]
    assert isinstance(final, Answer) and all(isinstance(i, str) for i in items[:-1])
    assert "".join(items[:-1]) == final.text and len(items) > 2
    # Disease linking via the Manbyo dictionary in the demo index: AMI → 急性心筋梗塞 (I21.9).
    assert any(d.standard_name == "急性心筋梗塞" for d in final.linked)
    assert final.chunks and all(c.source for c in final.chunks)


@pytest.mark.vllm
def test_async_variants_and_query_engine(llm: LLMClient, small: Settings) -> None:
    pipe = RagPipeline(llm, GivenNodes(invented_nodes()), settings=small)

    async def both() -> tuple[Answer, list]:
        answers = await asyncio.gather(pipe.aanswer("架空病Xの症状は？"), pipe.aanswer("架空病Xの薬は？"))
        streamed = [item async for item in pipe.astream("架空病Xの症状は？")]
        return answers, streamed

    answers, streamed = asyncio.run(both())
    assert all(a.text.strip() for a in answers) and isinstance(streamed[-1], Answer)
    engine = pipe.as_query_engine()
    assert isinstance(engine, RagmedQueryEngine)
    response = engine.query("架空病Xの症状は？")
    assert response.response and len(response.source_nodes) == 3
    assert response.metadata["answer"]["prompt_hash"] == TEMPLATE.sha256


@pytest.mark.vllm
def test_tiny_context_truncates_instead_of_crashing(llm: LLMClient, small: Settings) -> None:
    pipe = RagPipeline(llm, GivenNodes(invented_nodes()), settings=small, context_length=1200)
    answer = pipe.answer("架空病Xについて詳しく教えてください。" * 60)
    assert any("truncated" in w for w in answer.warnings)
    assert answer.usage["prompt_tokens"] + answer.usage["completion_tokens"] <= 1200
    with pytest.raises(ContextTooSmallError, match="600 tokens"):  # not even the template fits
        RagPipeline(llm, GivenNodes(invented_nodes()), settings=small, context_length=600).answer("質問")


@pytest.mark.vllm
def test_run_ask_streams_and_lists_sources(vllm_server, small: Settings, demo_index) -> None:
    settings = small.with_overrides(llm_base_url=vllm_server.base_url)
    out = Console(record=True, width=200)
    assert (
        run_ask("急性膵炎の重症度判定は？", index="demo", settings=settings, console=out, err_console=out)
        == 0
    )
    text = out.export_text()
    assert text.strip()
    out = Console(record=True, width=400)
    assert (
        run_ask("急性膵炎の重症度判定は？", index="demo", settings=settings, json_output=True, console=out)
        == 0
    )
    data = json.loads(out.export_text())
    assert data["chunks"] and data["usage"]["completion_tokens"] > 0 and "retrieval_ms" in data["timings"]


@pytest.mark.vllm
def test_forced_citation_resolves_to_the_real_chunk(llm: LLMClient, small: Settings, demo_index) -> None:
    """SmolLM2 never writes [n] on its own; a regex constraint makes the real server write one, so
    citation parsing is proven on real model output: [1] maps to the first packed chunk, and a
    marker beyond the context ([7]) is dropped and reported."""
    pipe = RagPipeline.from_index(demo_index, settings=small, llm=llm)
    params = pipe.sampling(max_tokens=40, regex=r"[A-Za-z ]{1,12}\[1\][A-Za-z ]{0,8}\[7\]\.")
    answer = pipe.answer("急性膵炎の重症度判定に用いる基準は？", params=params)
    assert "[1]" in answer.text and "[7]" in answer.text
    first = next(c for c in answer.chunks if c.n == 1)
    [cited] = answer.citations
    assert cited.n == 1 and cited.source == first.source and cited.text == first.text
    assert answer.invalid_citations == [7]
