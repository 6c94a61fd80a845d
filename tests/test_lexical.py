"""The lexical index on disk (tantivy): ``index add`` grows it by new segments and scores exactly what a
full build scores; a resumed build cuts or re-feeds it to its checkpoint; indexes from before the engine
(bm25s's matrix) are still searched and become tantivy on their next ``add``."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import ragmed.index.build as build_mod
import ragmed.index.lexical as lexical_mod
from ragmed.index import RagmedIndex, add_to_index, build_index, lexical_text
from ragmed.index.store import files_under
from ragmed.retrieve import Searcher
from ragmed.settings import EmbedSettings, Settings

from .conftest import FIXTURES, SAMPLES

QUERIES = ("急性膵炎の重症度", "心房細動 抗凝固", "気胸 ドレナージ", "発熱 咳嗽 肺炎", "AMI 治療")
WORDS = [
    "急性膵炎",
    "心房細動",
    "気胸",
    "肺炎",
    "発熱",
    "咳嗽",
    "抗凝固療法",
    "胸腔ドレナージ",
    "造影CT",
    "敗血症",
]


def _write_corpus(path: Path, n: int, seed: int) -> Path:
    """``n`` short case notes, each a different mix of clinical words (deterministic by ``seed``)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, rng.randint(2, 5))
        rows.append(json.dumps({"id": f"{seed}-{i}", "text": f"症例{i}は{'と'.join(words)}で受診した。"}))
    path.write_text("\n".join(rows), encoding="utf-8")
    return path


def _by_id(index: RagmedIndex, query: str, n: int = 25) -> list[tuple[str, float]]:
    """The lexical top ``n`` as (node id, score): positions differ between an added and a built index."""
    hits = index.lexical.search(index.lexical.query_tokens(query), n)
    ids = [r["id"] for r in index.get([p for p, _ in hits])]
    return [(i, round(s, 4)) for i, (_, s) in zip(ids, hits, strict=True)]


def _same_ranking(a: RagmedIndex, b: RagmedIndex, rel: float = 1e-5) -> None:
    for q in QUERIES:
        left, right = _by_id(a, q), _by_id(b, q)
        assert [s for _, s in left] == pytest.approx([s for _, s in right], rel=rel), q
        # equal scores come in position order, and positions differ: the documents above the last
        # score are the same, and the ones at it are a choice among equals
        last = left[-1][1] if left else 0.0
        above = {i for i, s in left if s > last * (1 + 2 * rel)}
        assert above == {i for i, s in right if s > last * (1 + 2 * rel)}, q


def test_add_grows_the_lexical_index_by_segments_and_scores_like_a_full_build(
    tmp_path: Path, embedder
) -> None:
    settings = Settings(index_dir=tmp_path)
    a = _write_corpus(tmp_path / "a.jsonl", 200, 1)
    b = _write_corpus(tmp_path / "b.jsonl", 60, 2)
    c = _write_corpus(tmp_path / "c.jsonl", 40, 3)
    manbyo = FIXTURES / "manbyo" / "manbyo_small.csv"
    grown = build_index(
        "grown", manbyo=[manbyo], corpus=[a], settings=settings, embedder=embedder, progress=False
    )
    old_files = {
        f.path: f.sha256 for f in grown.manifest.components["lexical"].files if f.path.endswith(".term")
    }
    assert old_files
    grown, stats = add_to_index("grown", corpus=[b, c], settings=settings, embedder=embedder, progress=False)
    assert stats["added_nodes"] == 100
    lexical = grown.manifest.components["lexical"]
    assert lexical.kind == "tantivy" and lexical.params["docs"] == len(grown)
    now = {f.path: f.sha256 for f in lexical.files}
    assert all(now.get(p) == h for p, h in old_files.items()), "the old segments are kept as they were"
    fresh = build_index(
        "fresh", manbyo=[manbyo], corpus=[a, b, c], settings=settings, embedder=embedder, progress=False
    )
    _same_ranking(grown, fresh)
    assert grown.verify() == []

    # a changed source: its nodes go, positions are renumbered and the lexical index is rebuilt
    _write_corpus(b, 30, 4)
    grown, stats = add_to_index("grown", corpus=[b], settings=settings, embedder=embedder, progress=False)
    assert stats == {"added_nodes": 30, "removed_nodes": 60, "sources": 1}
    fresh = build_index(
        "fresh", manbyo=[manbyo], corpus=[a, c, b], settings=settings, embedder=embedder, progress=False
    )
    _same_ranking(grown, fresh)
    assert grown.verify() == []


class DyingEmbedder:
    """The real embedder, interrupted (as by Ctrl-C) at its ``die_at``-th batch."""

    def __init__(self, inner, die_at: int) -> None:
        self.inner, self.die_at, self.calls = inner, die_at, 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed_passages(self, texts, progress=False, batch_size=64):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return self.inner.embed_passages(texts, progress, batch_size)


@pytest.mark.parametrize("ahead", [False, True])
def test_resume_brings_the_lexical_index_to_the_checkpoint(tmp_path: Path, embedder, ahead: bool) -> None:
    """Batches of 50, lexical commits every 75 documents, interrupted in the 4th batch: the lexical
    index committed 100 of the 150 checkpointed nodes, and resuming re-feeds the other 50 from the node
    store. ``ahead``: as if killed between a lexical commit and its checkpoint (20 documents past it),
    which resuming deletes."""
    settings = Settings(index_dir=tmp_path, embed=EmbedSettings(build_batch=50, lexical_commit=75))
    corpus = _write_corpus(tmp_path / "c.jsonl", 300, 5)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            "r", corpus=[corpus], settings=settings, embedder=DyingEmbedder(embedder, 4), progress=False
        )
    work = tmp_path / ".r.build"
    writer = lexical_mod.LexicalWriter(work)
    assert writer.committed() == 100
    if ahead:
        writer.add(150, ["corpus"] * 20, [["ゴミ", f"t{i}"] for i in range(20)])
        writer.commit(force=True)
        assert writer.committed() == 120
    writer.close()
    resumed = build_index(
        "r", corpus=[corpus], settings=settings, embedder=embedder, progress=False, resume=True
    )
    assert resumed.manifest.components["lexical"].params["docs"] == len(resumed) == 300
    assert resumed.lexical.search(["ゴミ"], 5) == []
    fresh = build_index("f", corpus=[corpus], settings=settings, embedder=embedder, progress=False)
    # deleted documents count in tantivy's statistics until their segment merges: near-equal scores
    _same_ranking(resumed, fresh, rel=0.03 if ahead else 1e-5)
    assert resumed.verify() == []


def _to_bm25s(index: RagmedIndex) -> None:
    """Rewrite ``index``'s lexical component as the engine before tantivy wrote it: bm25s's matrix in
    ``bm25/`` and the token ids in ``tokens/``, kind ``bm25s`` in the manifest."""
    import bm25s

    docs = [
        index.lexical.analyzers.for_language(r["metadata"].get("language")).tokenize(lexical_text(r))
        for r in index.records
    ]
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in d] for d in docs]
    vocab.setdefault("", len(vocab))
    model = bm25s.BM25()
    model.index(
        bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False, create_empty_token=False
    )
    model.save(str(index.path / "bm25"), show_progress=False)
    (index.path / "tokens").mkdir()
    (index.path / "tokens" / "ids.i32").write_bytes(np.asarray(sum(ids, []), dtype=np.int32).tobytes())
    shutil.rmtree(index.path / "lexical")
    manifest = json.loads((index.path / "manifest.json").read_text(encoding="utf-8"))
    comp = manifest["components"]["lexical"]
    comp["kind"] = "bm25s"
    comp["files"] = [
        f.model_dump() for f in files_under(index.path, "bm25") + files_under(index.path, "tokens")
    ]
    comp["params"] = {k: v for k, v in comp["params"].items() if k in ("analyzers", "languages")}
    (index.path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_an_index_from_before_tantivy_is_searched_and_add_rebuilds_it(tmp_path: Path, embedder) -> None:
    settings = Settings(index_dir=tmp_path)
    corpus = _write_corpus(tmp_path / "a.jsonl", 120, 6)
    manbyo = SAMPLES / "manbyo_sample.csv"
    old = build_index(
        "old", manbyo=[manbyo], corpus=[corpus], settings=settings, embedder=embedder, progress=False
    )
    top = _by_id(old, "急性膵炎の重症度", 1)[0][0]
    _to_bm25s(old)
    old = RagmedIndex.load(tmp_path / "old", settings, embedder)
    assert type(old.lexical).__name__ == "Bm25sLexical"
    assert _by_id(old, "急性膵炎の重症度", 1)[0][0] == top
    only = old.lexical.search(old.lexical.query_tokens("急性膵炎の重症度"), 5, kinds={"manbyo"})
    assert only and all(r["metadata"]["kind"] == "manbyo" for r in old.get([p for p, _ in only]))
    assert Searcher(old).search("急性膵炎の重症度", k=3)
    assert old.verify() == []

    more = _write_corpus(tmp_path / "b.jsonl", 30, 7)
    grown, stats = add_to_index("old", corpus=[more], settings=settings, embedder=embedder, progress=False)
    assert stats["added_nodes"] == 30 and grown.manifest.components["lexical"].kind == "tantivy"
    assert not (grown.path / "bm25").exists() and not (grown.path / "tokens").exists()
    fresh = build_index(
        "fresh", manbyo=[manbyo], corpus=[corpus, more], settings=settings, embedder=embedder, progress=False
    )
    _same_ranking(grown, fresh)
    assert grown.verify() == []


def test_terms_with_spaces_stay_whole() -> None:
    """The index splits documents on spaces: a token holding whitespace (none of ragmed's analyzers makes
    one, a custom one might) is joined by ``_`` on both sides, and empty tokens are dropped."""
    assert lexical_mod.doc_text(["急性", "心筋"]) == "急性 心筋"
    assert lexical_mod.doc_text(["a b", "c\u3000d", "", "e"]) == "a_b c_d e"
    assert lexical_mod.term("a b") == "a_b" and lexical_mod.term("x") == "x"
    assert build_mod.lexical_text({"text": "t", "metadata": {"kind": "corpus", "title": "T"}}) == "T t"


def test_common_terms_are_answered_in_two_exact_steps(tmp_path: Path, embedder, monkeypatch) -> None:
    """Queries mixing rare and common words (Zipf-like document frequencies, 0.3 % to 90 %): scoring only
    the documents that hold a rare word, with the common words' best scores as the ceiling for the rest,
    gives exactly the plain disjunction's top n — with kind filters and excluded positions too — and
    both the proven and the fallen-back plans are exercised."""
    rng = random.Random(7)
    vocab = [f"語{i:02d}" for i in range(60)]
    weights = [1 / (i + 1) ** 1.1 for i in range(60)]
    rows = []
    for i in range(300):
        words = rng.choices(vocab, weights, k=rng.randint(3, 12))
        rows.append(json.dumps({"id": f"z{i}", "text": " ".join(words)}, ensure_ascii=False))
    corpus = tmp_path / "z.jsonl"
    corpus.write_text("\n".join(rows), encoding="utf-8")
    index = build_index(
        "z",
        manbyo=[FIXTURES / "manbyo" / "manbyo_small.csv"],
        corpus=[corpus],
        settings=Settings(index_dir=tmp_path),
        embedder=embedder,
        progress=False,
    )
    lexical = index.lexical
    assert isinstance(lexical, lexical_mod.TantivyLexical)
    queries = [rng.sample(vocab[:8], 2) + rng.sample(vocab[20:], rng.randint(1, 3)) for _ in range(40)]
    exclude = set(range(len(index) - 300, len(index) - 290))

    def answers(budgets: tuple[float, ...]) -> list[list[tuple[int, float]]]:
        monkeypatch.setattr(lexical_mod, "SPLIT_BUDGETS", budgets)
        out = []
        for words in queries:
            tokens = lexical.query_tokens(" ".join(words))
            for kinds, skip in ((None, ()), ({"corpus"}, exclude)):
                hits = lexical.search(tokens, 10, kinds=kinds, exclude=skip)
                out.append(sorted(((p, round(s, 4)) for p, s in hits), key=lambda h: (-h[1], h[0])))
        return out

    plain = answers(())
    assert lexical.plans["split"] == 0
    split = answers((0.01, 0.05))
    assert lexical.plans["split"] >= 10 and lexical.plans["fallback"] >= 1, lexical.plans
    assert split == plain
    assert all(len(a) == 10 for a in plain)
    assert all(p not in exclude for a in plain[1::2] for p, _ in a)


@pytest.mark.parametrize("side", ["writer", "loaded"])
def test_readers_reload_only_when_asked(tmp_path: Path, side: str) -> None:
    """tantivy's default reader reloads from a watcher thread, and each reload creates
    ``.tantivy-meta.lock``: a failed ``index add`` deleting its build folder while that thread made its
    first look left the folder behind (seen once in CI, under load). An index folder never changes in
    place here, so our readers reload only when asked and the thread has nothing to do."""
    import time

    first = lexical_mod.LexicalWriter(tmp_path)
    first.add(0, ["corpus"], [["急性", "膵炎"]])
    params = first.finish()
    if side == "writer":
        opened = lexical_mod.LexicalWriter(tmp_path)
        index = opened.index
    else:
        index = lexical_mod.TantivyLexical(tmp_path, 1, params).index
    first.add(1, ["corpus"], [["気胸"]])
    first.commit(force=True)
    time.sleep(1.5)  # three of the watcher's polls (every 500 ms)
    assert index.searcher().num_docs == 1
    if side == "writer":
        assert opened.committed() == 2  # when asked


def test_a_failed_build_folder_is_deleted_even_while_a_thread_writes_into_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file a library thread creates while the folder is being deleted (what tantivy's watcher did)
    makes the first pass fail on a non-empty folder: the next pass deletes it."""
    import os

    from ragmed.index.store import remove_tree

    root = tmp_path / ".x.build"
    (root / "lexical").mkdir(parents=True)
    (root / "lexical" / "meta.json").write_text("{}", encoding="utf-8")
    rmdir, late = os.rmdir, []

    def racing_rmdir(path, *args, **kwargs):  # the thread's file lands just before the folder goes
        if str(path) == "lexical" and not late:
            late.append(1)
            (root / "lexical" / ".tantivy-meta.lock").touch()
        return rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", racing_rmdir)
    assert remove_tree(root)
    assert late and not root.exists()
