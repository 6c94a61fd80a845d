"""``index add`` writes new files instead of rewriting old ones: the new nodes go to a node-store segment
(``nodes-1.sqlite``, …) and their vectors to a vector file (``vectors-1.f16``, …) beside the old ones,
which are hard-linked. An index grown that way searches exactly like a full build of the same sources;
past ``MAX_SEGMENTS`` the newest files are merged; a replaced source makes the store one file again."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import ragmed.index.dense as dense_mod
import ragmed.index.segments as segments_mod
from ragmed.errors import IndexCorruptError, InputError
from ragmed.index import RagmedIndex, add_to_index, build_index
from ragmed.retrieve import Searcher
from ragmed.settings import Settings

from .conftest import FIXTURES
from .test_lexical import _same_ranking, _write_corpus

MANBYO = FIXTURES / "manbyo" / "manbyo_small.csv"
QUERIES = ("急性膵炎の重症度", "心房細動 抗凝固", "気胸 ドレナージ", "発熱 咳嗽 肺炎", "敗血症")
# IVF over full vectors (kept as FP16 files); nprobe covers every list, so search is exact and a grown
# index can be compared with a fully built one hit for hit
IVF = {"faiss_type": "ivf", "faiss_params": {"nprobe": 64}}


def _files(index: RagmedIndex, component: str) -> list[str]:
    return [f.path for f in index.manifest.components[component].files]


def _hits(index: RagmedIndex, query: str, mode: str) -> list[tuple[str, float]]:
    got = Searcher(index).retrieve(query, 10, mode, expand=False)
    return [(c.node_id, round(c.score, 4)) for c in got.chunks]


def _built(name: str, corpus: list[Path], settings: Settings, embedder) -> RagmedIndex:
    """A full build of the dictionary and ``corpus`` (what a grown index must equal)."""
    return build_index(
        name, manbyo=[MANBYO], corpus=corpus, settings=settings, embedder=embedder, progress=False, **IVF
    )


def _two_segments(tmp_path: Path, settings: Settings, embedder, first: int) -> RagmedIndex:
    """Index "ix": ``first`` notes from a.jsonl, then 20 from b.jsonl added (a second segment)."""
    build_index(
        "ix",
        corpus=[_write_corpus(tmp_path / "a.jsonl", first, 1)],
        settings=settings,
        embedder=embedder,
        progress=False,
        **IVF,
    )
    b = _write_corpus(tmp_path / "b.jsonl", 20, 2)
    return add_to_index("ix", corpus=[b], settings=settings, embedder=embedder, progress=False)[0]


def _same_index(grown: RagmedIndex, fresh: RagmedIndex) -> None:
    """Same nodes, vectors, counts, kind masks, and the same dense / hybrid / BM25 results."""
    assert len(grown) == len(fresh)
    assert grown.manifest.counts == fresh.manifest.counts
    assert grown.manifest.bm25["languages"] == fresh.manifest.bm25["languages"]
    ids = [r["id"] for r in fresh.iter_records()]
    assert sorted(r["id"] for r in grown.iter_records()) == sorted(ids)
    at = grown.positions(ids)
    assert grown.get([at[i] for i in ids]) == fresh.get(range(len(fresh)))
    # the same passages embedded in other batches differ in the last bits (padding)
    assert np.allclose(np.asarray(grown.vectors)[[at[i] for i in ids]], np.asarray(fresh.vectors), atol=2e-3)
    manbyo = grown.kind_mask({"manbyo"})
    assert sorted(np.flatnonzero(manbyo).tolist()) == sorted(
        at[i] for i, m in zip(ids, fresh.kind_mask({"manbyo"}), strict=True) if m
    )
    for q in QUERIES:
        for mode in ("dense", "hybrid"):
            left, right = _hits(grown, q, mode), _hits(fresh, q, mode)
            assert [s for _, s in left] == pytest.approx([s for _, s in right], abs=2e-3), (q, mode)
            assert [i for i, _ in left][:3] == [i for i, _ in right][:3], (q, mode)
    _same_ranking(grown, fresh)
    assert grown.verify() == []


def test_add_writes_new_segments_and_links_the_old_files(tmp_path: Path, embedder) -> None:
    settings = Settings(index_dir=tmp_path)
    a = _write_corpus(tmp_path / "a.jsonl", 200, 1)
    b = _write_corpus(tmp_path / "b.jsonl", 60, 2)
    c = _write_corpus(tmp_path / "c.jsonl", 40, 3)
    grown = _built("grown", [a], settings, embedder)
    inodes = {name: os.stat(grown.path / name).st_ino for name in ("nodes.sqlite", "vectors.f16")}
    sums = {f.path: f.sha256 for c in grown.manifest.components.values() for f in c.files}
    grown, _ = add_to_index("grown", corpus=[b], settings=settings, embedder=embedder, progress=False)
    grown, stats = add_to_index("grown", corpus=[c], settings=settings, embedder=embedder, progress=False)
    assert stats == {"added_nodes": 40, "removed_nodes": 0, "sources": 1}
    assert _files(grown, "nodes") == ["nodes.sqlite", "nodes-1.sqlite", "nodes-2.sqlite"]
    assert _files(grown, "dense") == ["dense.faiss", "vectors.f16", "vectors-1.f16", "vectors-2.f16"]
    # the first build's files are the very same files, not copies, and keep their checksums
    assert {name: os.stat(grown.path / name).st_ino for name in inodes} == inodes
    now = {f.path: f.sha256 for c in grown.manifest.components.values() for f in c.files}
    assert now["nodes.sqlite"] == sums["nodes.sqlite"] and now["vectors.f16"] == sums["vectors.f16"]
    assert isinstance(grown.dense.vectors, dense_mod.StackedRows)
    _same_index(grown, _built("fresh", [a, b, c], settings, embedder))

    # replacing a source renumbers the nodes: the store becomes one file, the vectors one file
    _write_corpus(b, 30, 4)
    grown, stats = add_to_index("grown", corpus=[b], settings=settings, embedder=embedder, progress=False)
    assert stats == {"added_nodes": 30, "removed_nodes": 60, "sources": 1}
    assert _files(grown, "nodes") == ["nodes.sqlite"]
    assert _files(grown, "dense") == ["dense.faiss", "vectors.f16"]
    _same_index(grown, _built("fresh", [a, c, b], settings, embedder))


def test_the_newest_segments_are_merged_past_the_limit(tmp_path: Path, embedder, monkeypatch) -> None:
    monkeypatch.setattr(segments_mod, "MAX_SEGMENTS", 3)
    settings = Settings(index_dir=tmp_path)
    parts = [_write_corpus(tmp_path / f"p{i}.jsonl", 30 + 10 * i, 10 + i) for i in range(5)]
    grown = _built("grown", parts[:1], settings, embedder)
    first = os.stat(grown.path / "nodes.sqlite").st_ino
    for part in parts[1:]:
        grown, _ = add_to_index("grown", corpus=[part], settings=settings, embedder=embedder, progress=False)
        assert len(_files(grown, "nodes")) <= 3 and len(_files(grown, "dense")) <= 4
    assert _files(grown, "nodes")[0] == "nodes.sqlite" and len(_files(grown, "nodes")) == 3
    assert os.stat(grown.path / "nodes.sqlite").st_ino == first, "the first segment is never rewritten"
    _same_index(grown, _built("fresh", parts, settings, embedder))


def test_an_id_already_in_an_older_segment_is_refused_and_the_index_kept(tmp_path: Path, embedder) -> None:
    settings = Settings(index_dir=tmp_path)
    _two_segments(tmp_path, settings, embedder, 50)
    (tmp_path / "other").mkdir()
    twin = _write_corpus(tmp_path / "other" / "a.jsonl", 10, 1)  # the same name and rows: the same ids
    with pytest.raises(InputError, match="two nodes share the id"):
        add_to_index("ix", corpus=[twin], settings=settings, embedder=embedder, progress=False)
    index = RagmedIndex.load("ix", settings, embedder)
    assert len(index) == 70 and index.verify() == []
    assert not (tmp_path / ".ix.build").exists()


def test_a_segment_that_does_not_follow_the_one_before_is_corruption(tmp_path: Path, embedder) -> None:
    settings = Settings(index_dir=tmp_path)
    index = _two_segments(tmp_path, settings, embedder, 40)
    assert len(index.store.segments) == 2 and index.get([45])[0]["id"].startswith("b.jsonl")
    with sqlite3.connect(index.path / "nodes-1.sqlite") as conn:
        conn.execute("UPDATE info SET value = '30' WHERE key = 'start'")
    conn.close()
    with pytest.raises(IndexCorruptError, match=r"nodes-1\.sqlite: starts at position 30"):
        RagmedIndex.load("ix", settings, embedder).get([0])


def test_stacked_rows_read_like_one_array() -> None:
    rng = np.random.default_rng(0)
    whole = rng.standard_normal((23, 4)).astype(np.float16)
    rows = dense_mod.StackedRows([whole[:10], whole[10:11], whole[11:]])
    assert rows.shape == (23, 4) and len(rows) == 23
    assert np.array_equal(np.asarray(rows), whole)
    assert np.array_equal(np.asarray(rows, dtype=np.float32), whole.astype(np.float32))
    for key in (0, 9, 10, 11, 22, -1, -23, np.int64(15)):
        assert np.array_equal(rows[key], whole[key])
    for key in (slice(None), slice(5, 15), slice(10, 11), slice(3, 3), slice(-5, None), slice(0, 23, 4)):
        assert np.array_equal(rows[key], whole[key]), key
    pick = [22, 0, 10, 10, 5, -1]
    assert np.array_equal(rows[pick], whole[pick])
    assert np.array_equal(rows[np.array(pick)], whole[pick])
    assert np.array_equal(np.stack(list(rows)), whole)
    for bad in (23, -24, [1, 23]):
        with pytest.raises(IndexError):
            rows[bad]


def test_segment_files_are_named_and_ordered_by_number_not_by_text(tmp_path: Path, monkeypatch) -> None:
    nodes = segments_mod.Segments("nodes", ".sqlite")
    names = ["nodes-10.sqlite", "nodes-2.sqlite", "lexical/nodes.sqlite", "nodes.sqlite", "vectors-1.f16"]
    assert nodes.files(names) == ["nodes.sqlite", "nodes-2.sqlite", "nodes-10.sqlite"]
    assert nodes.next(nodes.files(names)) == "nodes-11.sqlite"
    assert [nodes.number(n) for n in ("nodes-.sqlite", "nodesx.sqlite", "nodes-3.sqlite")] == [None, None, 3]
    # capping joins the newest files into one new file; the first files stay as they were
    files = [nodes.name(i) for i in range(4)]
    for i, name in enumerate(files):
        (tmp_path / name).write_text(str(i))
    joined: list[tuple[list[str], list[str], str]] = []

    def join(kept: list[Path], tail: list[Path], out: Path) -> None:
        joined.append(([p.name for p in kept], [p.name for p in tail], out.name))
        out.write_text("".join(p.read_text() for p in tail))

    assert nodes.cap(tmp_path, files, join) == files  # under the cap: untouched
    monkeypatch.setattr(segments_mod, "MAX_SEGMENTS", 3)
    now = nodes.cap(tmp_path, files, join)
    assert now == ["nodes.sqlite", "nodes-1.sqlite", "nodes-4.sqlite"]
    assert joined == [
        (["nodes.sqlite", "nodes-1.sqlite"], ["nodes-2.sqlite", "nodes-3.sqlite"], "nodes-4.sqlite")
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(now)
    assert (tmp_path / "nodes-4.sqlite").read_text() == "23"
