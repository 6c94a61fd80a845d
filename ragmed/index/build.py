"""Building and extending an index: sources streamed in batches, checkpointed, swapped in when complete.

A build works in ``<index_dir>/.<name>.build/``. Nodes are read and chunked lazily, then each batch of
``settings.embed.build_batch`` nodes is embedded, tokenized and appended — vectors and token ids to raw files, records
to the SQLite node store — and the batch is committed with a checkpoint in the same SQLite transaction.
Memory holds one batch, whatever the corpus size. A build that is killed leaves the index as it was and
its work folder behind: ``ragmed index build ... --resume`` cuts the files back to the last checkpoint,
skips the nodes already written and carries on; a build without ``--resume`` starts over. When every
batch is in, the components are built from the files on disk (FAISS, BM25, the normalizer), the manifest
records each file's size and sha256, and the folder replaces the index with two renames.

``index add`` costs what the new sources cost: only they are read, embedded and tokenized; their
nodes, their FP16 vectors and their BM25 documents go to new files (a node-store segment, a vector
file, lexical segments) beside the old ones, which are hard-linked, never copied or rewritten; the new
vectors are added to the trained FAISS index. A source whose content changed has its old nodes removed:
then the node store is rewritten as one file and the dense and lexical indexes are rebuilt from what is
kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

import ragmed.index.dense as dense_mod
import ragmed.index.glossary as glossary_mod
import ragmed.index.lexical as lexical_mod
import ragmed.index.nodes as nodes_mod
from ragmed import __version__
from ragmed.embeddings import Embedder, load_embedder
from ragmed.errors import CorpusFormatError, InputError, ManbyoFormatError
from ragmed.index.loaded import RagmedIndex
from ragmed.index.store import (
    FORMAT,
    Component,
    FileEntry,
    Manifest,
    SourceInfo,
    check_target,
    clean_stale,
    file_entry,
    files_under,
    index_dir,
    recover,
    remove_tree,
    sha256_file,
    swap_in,
    validate_name,
    write_lock,
)
from ragmed.ingest.corpus import CorpusOptions, discover, iter_chunks, iter_file, iter_hf_dataset
from ragmed.ingest.manbyo import ManbyoEntry, load_manbyo
from ragmed.settings import Settings, get_settings


def embed_text(record: dict[str, Any]) -> str:
    """What gets embedded: a dictionary row's surface form (its standard name is matched by BM25 and
    the normalizer), or a corpus chunk's text."""
    meta = record["metadata"]
    return meta["surface"] if meta.get("kind") == "manbyo" else record["text"]


def lexical_text(record: dict[str, Any]) -> str:
    """What BM25 sees: dictionary fields without their labels, or the chunk with its title."""
    meta = record["metadata"]
    if meta.get("kind") == "manbyo":
        name = "" if meta["standard_name"] == "-1" else meta["standard_name"]
        return " ".join(
            x for x in (meta["surface"], meta.get("reading", ""), name, meta["icd10"]) if x and x != "-1"
        )
    return f"{meta.get('title', '')} {record['text']}"


class InputSource(BaseModel):
    """One input, resolved: the operator's path (absolute), its kind, content hash, and for corpus files
    the folder it was found in (nodes name it relative to that folder)."""

    kind: str
    path: str
    sha256: str = ""
    root: str | None = None

    @property
    def name(self) -> str:
        if self.path.startswith("hf:"):
            return self.path
        p = Path(self.path)
        return p.relative_to(self.root).as_posix() if self.root else p.name


def plan_sources(
    manbyo: Sequence[str | Path], corpus: Sequence[str | Path], progress: bool = False
) -> list[InputSource]:
    """Every input file (folders expanded, sorted) with its sha256; a missing one is an error."""
    from tqdm.auto import tqdm

    found: list[tuple[str, Path, Path | None]] = []
    for raw in manbyo:
        path = Path(raw)
        if not path.is_file():
            raise ManbyoFormatError(f"{path}: no such file")
        found.append(("manbyo", path, None))
    out: list[InputSource] = []
    for raw in corpus:
        if str(raw).startswith("hf:"):
            continue
        files = discover([raw])
        if not files and Path(raw).is_dir():
            raise CorpusFormatError(f"{raw}: the folder holds no .txt, .md, .jsonl, .csv or .pdf file")
        found += [("corpus", path, root) for path, root in files]
    total = sum(path.stat().st_size for _, path, _ in found)
    # hashing is a full read: worth a progress bar once there is more than a few seconds of it
    bar = tqdm(
        total=total,
        desc="hashing sources",
        unit="B",
        unit_scale=True,
        disable=not progress or total < 1 << 30,
    )
    for kind, path, root in found:
        out.append(
            InputSource(
                kind=kind,
                path=str(path.resolve()),
                sha256=sha256_file(path),
                root=str(root.resolve()) if root else None,
            )
        )
        bar.update(path.stat().st_size)
    bar.close()
    out += [InputSource(kind="corpus", path=str(raw)) for raw in corpus if str(raw).startswith("hf:")]
    return out


def iter_source(
    src: InputSource, opts: CorpusOptions, levels: Sequence[str] | None
) -> Iterator[dict[str, Any]]:
    """The node records of one source, lazily (a Manbyo file is read whole: it is bounded)."""
    if src.kind == "manbyo":
        for entry in load_manbyo(src.path, levels):
            yield entry.to_record()
        return
    if src.path.startswith("hf:"):
        yield from iter_chunks(iter_hf_dataset(src.path[3:], opts), opts)
        return
    path = Path(src.path)
    yield from iter_chunks(iter_file(path, opts, Path(src.root) if src.root else path.parent), opts)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StageTimer:
    """Seconds spent per build stage, summed over batches (``bench/scale.py`` reports them; a build
    without one records nothing)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings

    def __call__(self, stage: str) -> AbstractContextManager[None]:
        return self._measure(stage)

    @contextlib.contextmanager
    def _measure(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t


def _source_infos(sources: list[InputSource], per_source: dict[str, int], now: str) -> list[SourceInfo]:
    """The manifest's record of the sources a build or add read, with the nodes each gave."""
    return [
        SourceInfo(
            path=s.path,
            kind=s.kind,  # type: ignore[arg-type]
            sha256=s.sha256,
            nodes=per_source.get(s.path, 0),
            added=now,
            name=s.name,
        )
        for s in sources
    ]


def _stage(desc: str, fn: Callable[[], Any], progress: bool) -> Any:
    """Run one long step under a spinner with elapsed time (on stderr, so --json output stays clean)."""
    if not progress:
        return fn()
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        bar.add_task(desc, total=None)
        return fn()


class Work:
    """The files of a build in progress: node store, vectors, lexical index; checkpointed together."""

    def __init__(
        self,
        root: Path,
        dim: int,
        vector_dtype: str,
        vectors_name: str = dense_mod.VECTORS,
        lexical_base: Path | None = None,
        *,
        lexical_commit: int,
        nodes_before: Sequence[Path] = (),
    ) -> None:
        """``nodes_before``: node-store segments (in ``root``) that the new nodes follow, in a segment of
        their own (``index add``); none: one store from position 0, or an existing ``nodes.sqlite``."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.node_segments = list(nodes_before)
        if nodes_before:
            before = nodes_mod.NodeStore(nodes_before)
            start = before.count
            following = nodes_mod.SEGMENTS.next(p.name for p in nodes_before)
            self.nodes = nodes_mod.NodeWriter(root / following, start, before)
        else:
            self.nodes = nodes_mod.NodeWriter(root / nodes_mod.FILE)
        self.vectors = dense_mod.VectorFile(root / vectors_name, dim, vector_dtype)
        self.lexical = lexical_mod.LexicalWriter(root, lexical_base, lexical_commit)
        self.base = 0  # nodes already in the store before this run's vectors (index add)

    def restore(self, tokenizer: lexical_mod.Tokenizer) -> dict[str, Any]:
        """Cut the files back to the last checkpoint; returns it. The lexical index commits less often
        than the checkpoints: what its last commit lacks is read back from the node store."""
        ckpt = self.nodes.get_info("checkpoint") or {"nodes": 0, "per_source": {}}
        if self.nodes.count != ckpt["nodes"]:
            raise InputError(
                f"{self.root}: the interrupted build's files disagree; run the build without --resume"
            )
        self.vectors.truncate(ckpt["nodes"] - self.base)
        self.lexical.truncate(ckpt["nodes"])  # committed past the checkpoint: cut
        have = self.lexical.committed()
        if have < ckpt["nodes"]:  # commits are in order: positions 0..have-1 are in
            self.refeed(tokenizer, have, ckpt["nodes"])
        return ckpt

    def refeed(self, tokenizer: lexical_mod.Tokenizer, start: int, stop: int, progress: bool = False) -> None:
        """Tokenize the stored nodes at positions ``start..stop-1`` into the lexical index again."""
        from tqdm.auto import tqdm

        with tqdm(
            total=stop - start, desc="tokenizing stored nodes", unit="node", disable=not progress
        ) as bar:
            for first, records in self.nodes.iter_batches(start, stop, 8192):
                self.lexical.add(
                    first, [nodes_mod.node_kind(r) for r in records], _tokens(tokenizer, records)
                )
                bar.update(len(records))
        self.lexical.commit(force=True)

    def write(
        self, records: list[dict[str, Any]], origins: list[str], vectors: np.ndarray, tokens: list[list[str]]
    ) -> None:
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            r = records[int(np.argmax(bad))]
            raise InputError(
                f"the embedding of node {r['id']!r} ({r['metadata'].get('source', '')}) is not finite: "
                "the embedding model returned NaN; nothing was written"
            )
        stored = np.ascontiguousarray(vectors, dtype=self.vectors.dtype)
        self.vectors.append(stored)
        self.lexical.add(self.nodes.count, [nodes_mod.node_kind(r) for r in records], tokens)
        self.nodes.append(records, origins, stored)

    def checkpoint(self, per_source: dict[str, int]) -> None:
        self.vectors.sync()
        self.lexical.commit()
        self.nodes.set_info("checkpoint", {"nodes": self.nodes.count, "per_source": per_source})
        self.nodes.commit()

    @property
    def node_paths(self) -> list[Path]:
        """Every node-store segment of the index being written, in position order."""
        return [*self.node_segments, self.nodes.path]

    def close(self) -> None:
        self.lexical.close()
        self.nodes.close()


def _tokens(tokenizer: lexical_mod.Tokenizer, records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Each record's BM25 tokens, by its language's analyzer."""
    return tokenizer(
        [lexical_text(r) for r in records], [r["metadata"].get("language", "ja") for r in records]
    )


def _ingest(
    work: Work,
    sources: list[InputSource],
    opts: CorpusOptions,
    levels: Sequence[str] | None,
    embedder: Embedder,
    tokenizer: lexical_mod.Tokenizer,
    settings: Settings,
    progress: bool,
    resume_from: dict[str, Any] | None = None,
    timer: StageTimer | None = None,
) -> dict[str, int]:
    """Stream every source through embedding and tokenizing into ``work``; returns nodes per source."""
    from tqdm.auto import tqdm

    per_source: dict[str, int] = dict((resume_from or {}).get("per_source", {}))
    skip = int((resume_from or {}).get("nodes", 0)) - work.base
    bar = tqdm(desc="embedding + tokenizing", unit="node", disable=not progress, initial=max(skip, 0))
    records: list[dict[str, Any]] = []
    origins: list[str] = []

    timed = timer or StageTimer(None)

    def flush() -> None:
        with timed("embed"):
            vectors = embedder.embed_passages(
                [embed_text(r) for r in records], batch_size=settings.embed.batch_size
            )
        with timed("tokenize"):
            tokens = _tokens(tokenizer, records)
        with timed("write"):
            work.write(records, origins, vectors, tokens)
            work.checkpoint(per_source)
        bar.update(len(records))
        records.clear()
        origins.clear()

    seen = 0
    for src in sources:
        n = 0
        for record in _timed_iter(iter_source(src, opts, levels), timed, "read"):
            n += 1
            seen += 1
            if seen <= skip:
                continue
            records.append(record)
            origins.append(src.path)
            if len(records) >= settings.embed.build_batch:
                per_source[src.path] = n
                flush()
        per_source[src.path] = n
    if records:
        flush()
    bar.close()
    return per_source


def _timed_iter(items: Iterator[dict[str, Any]], timed: StageTimer, stage: str) -> Iterator[dict[str, Any]]:
    """``items``, with the time spent producing them (reading and chunking sources) added to ``stage``."""
    while True:
        with timed(stage):
            item = next(items, None)
        if item is None:
            return
        yield item


def _finish_dense(
    work: Work,
    kind: str,
    params: dict[str, Any],
    progress: bool,
    base: RagmedIndex | None,
    kept: np.ndarray | None,
) -> tuple[Component, int]:
    """Build (or extend) the dense component in ``work.root``."""
    root = work.root
    total = work.nodes.count
    if base is not None and kept is None:  # add without removal: extend the trained index
        base_params = base.manifest.components["dense"].params
        kind, p = base_params["type"], dict(base_params)
        _stage(
            "adding vectors to the dense index",
            lambda: dense_mod.add(base.path / dense_mod.FILE, work.vectors, root),
            progress,
        )
        vector_files: list[str] = []
        if dense_mod.keeps_vectors(kind):  # the old files linked, the new vectors a file of their own
            vector_files = dense_mod.SEGMENTS.files(f.path for f in base.manifest.components["dense"].files)
            for name in vector_files:
                os.link(base.path / name, root / name)
            nxt = dense_mod.SEGMENTS.next(vector_files)
            work.vectors.path.rename(root / nxt)
            vector_files = dense_mod.merge_vector_files(root, [*vector_files, nxt])
        else:
            work.vectors.path.unlink()
    else:
        if base is not None and kept is not None:  # a source replaced: all kept old vectors + new ones
            dtype = str(work.vectors.dtype)
            allv = dense_mod.VectorFile(root / "vectors.all", base.manifest.dimension, dtype)
            old = base.dense
            for start in range(0, len(kept), 65_536):
                part = kept[start : start + 65_536]
                if dense_mod.keeps_vectors(old.kind):
                    allv.append(np.asarray(old.vectors[part], dtype=np.float16))
                else:
                    allv.append(
                        np.stack([old.index.reconstruct(int(i)) for i in part])
                        if len(part)
                        else np.zeros((0, allv.dim))
                    )
            allv.append(work.vectors.read(0, work.vectors.count))
            work.vectors.path.unlink()
            allv.path.rename(root / dense_mod.VECTORS)
            work.vectors = dense_mod.VectorFile(root / dense_mod.VECTORS, allv.dim, dtype)
            kind = base.manifest.components["dense"].params["type"]
            params = {
                k: v
                for k, v in base.manifest.components["dense"].params.items()
                if k not in ("type", "built_on")
            }
        kind = dense_mod.resolve_type(kind, total)
        p = dense_mod.build(work.vectors, kind, params, root, progress)
        p["type"] = kind
        if not dense_mod.keeps_vectors(kind):
            work.vectors.path.unlink()
        elif work.vectors.path.name != dense_mod.VECTORS:
            work.vectors.path.rename(root / dense_mod.VECTORS)
        vector_files = [dense_mod.VECTORS] if dense_mod.keeps_vectors(kind) else []
    linked = _unchanged_entries(root, base, "dense")
    files = [file_entry(root, dense_mod.FILE)] + [linked.get(f) or file_entry(root, f) for f in vector_files]
    comp = Component(kind="faiss", files=files, count=total, params=p)
    return comp, total


def _copy_nodes(segments: list[Path], out: Path) -> None:
    """The node store as one file at ``out``: a copy, or the segments merged."""
    if len(segments) == 1:
        shutil.copyfile(segments[0], out)
    else:
        nodes_mod.merge(segments, out)


def _unchanged_entries(root: Path, base: RagmedIndex | None, component: str) -> dict[str, FileEntry]:
    """The base index's entries for ``component``'s files that ``root`` holds as the very same file (a
    hard link: same inode), so their sha256 need not be computed again."""
    if base is None or component not in base.manifest.components:
        return {}
    out = {}
    for f in base.manifest.components[component].files:
        old, new = base.path / f.path, root / f.path
        with contextlib.suppress(OSError):
            if new.exists() and os.path.samefile(old, new) and new.stat().st_size == f.bytes:
                out[f.path] = f
    return out


def _manifest_stats(manifest: Manifest) -> dict[str, dict[str, int]]:
    """Nodes per kind and per language as an index's manifest records them."""
    kinds = {k: int(manifest.counts.get(k, 0)) for k in ("manbyo", "corpus")}
    languages = manifest.components["lexical"].params.get("languages") or manifest.bm25.get("languages", {})
    return {"kinds": {k: n for k, n in kinds.items() if n}, "languages": dict(languages)}


def _dictionary_entries(paths: list[Path], count: int) -> list[ManbyoEntry]:
    """The dictionary rows of the node store being built (what the normalizer and glossary learn from)."""
    store = nodes_mod.NodeStore(paths, count)
    try:
        return [ManbyoEntry.from_metadata(r["metadata"]) for r in store.iter_records(kind="manbyo")]
    finally:
        store.close()


def _fit_normalizer(
    entries: list[ManbyoEntry],
    root: Path,
    base: RagmedIndex | None,
    new_entries: int,
    refit: bool,
    progress: bool,
) -> Component | None:
    """The disease normalizer, fitted on the dictionary rows of the node store (or extended)."""
    if not entries:
        return None
    from ragmed.normalize import DiseaseNormalizer

    if base is not None and not refit and base.normalizer is not None:
        normalizer = base.normalizer
        if new_entries:
            added = entries[len(entries) - new_entries :]
            _stage(
                f"adding {len(added)} dictionary rows to the disease normalizer",
                lambda: normalizer.add(added),
                progress,
            )
    else:
        normalizer = _stage(
            f"fitting the disease normalizer on {len(entries)} dictionary rows",
            lambda: DiseaseNormalizer.fit(entries),
            progress,
        )
    normalizer.save(root)
    return Component(kind="normalizer", files=files_under(root, "normalizer"), count=len(entries))


def _build_glossary(entries: list[ManbyoEntry], root: Path, progress: bool) -> Component | None:
    """English terms for the dictionary's standard names (cross-lingual expansion)."""
    if not entries:
        return None
    params = _stage(
        "English ICD-10 titles for the dictionary", lambda: glossary_mod.build(entries, root), progress
    )
    return Component(kind="glossary", files=files_under(root, glossary_mod.FILE), params=params)


def _finish(
    work: Work,
    manifest: Manifest,
    faiss_type: str,
    faiss_params: dict[str, Any],
    progress: bool,
    analyzers: lexical_mod.Analyzers,
    base: RagmedIndex | None = None,
    kept: np.ndarray | None = None,
    new_manbyo: int = 0,
    refit: bool = False,
    timer: StageTimer | None = None,
) -> Manifest:
    """Build the components from the work files and write the manifest."""
    timed = timer or StageTimer(None)
    root = work.root
    with timed("node_store"):
        stats = work.nodes.finish()
        count = work.nodes.count
        if work.node_segments and base is not None:  # a segment after the base index's: add its counts
            stats = nodes_mod.sum_stats(_manifest_stats(base.manifest), stats)
        node_files = nodes_mod.merge_segments(root, [p.name for p in work.node_paths])
        kinds, languages = stats["kinds"], stats["languages"]
    if count == 0:
        raise InputError("the sources hold no text to index: nothing was written")
    with timed("dense"):
        dense_comp, _ = _finish_dense(work, faiss_type, faiss_params, progress, base, kept)
    with timed("bm25"):
        lex_params = _stage("writing the BM25 index", work.lexical.finish, progress)
    if lex_params["docs"] != count:
        raise InputError(
            f"{root}: the lexical index holds {lex_params['docs']} documents for {count} nodes; "
            "run the build again without --resume"
        )
    lex_params["analyzers"] = analyzers.params()
    lex_params["languages"] = {lang: int(n) for lang, n in sorted(languages.items())}
    # segments hard-linked from the index being extended keep their checksums: not read again
    same = _unchanged_entries(root, base, "lexical")
    lexical = Component(
        kind="tantivy",
        files=[same.get(rel) or file_entry(root, rel) for rel in lexical_mod.index_files(root)],
        count=count,
        params=lex_params,
    )
    with timed("normalizer"):
        entries = _dictionary_entries([root / f for f in node_files], count)
    normalizer = _fit_normalizer(entries, root, base, new_manbyo, refit, progress)
    linked = _unchanged_entries(root, base, "nodes")
    components = {
        "nodes": Component(
            kind="sqlite", files=[linked.get(f) or file_entry(root, f) for f in node_files], count=count
        ),
        "dense": dense_comp,
        "lexical": lexical,
    }
    if normalizer is not None:
        components["normalizer"] = normalizer
    glossary = _build_glossary(entries, root, progress)
    if glossary is not None:
        components["glossary"] = glossary
    manifest.format = FORMAT
    manifest.components = components
    manifest.faiss = {k: v for k, v in dense_comp.params.items() if k != "built_on"}
    manifest.bm25 = {"analyzers": analyzers.describe(), "languages": lex_params["languages"]}
    manifest.counts = {
        "nodes": count,
        "manbyo": int(kinds.get("manbyo", 0)),
        "corpus": count - int(kinds.get("manbyo", 0)),
    }
    manifest.updated = _now()
    manifest.ragmed_version = __version__
    with timed("manifest"):
        (root / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return manifest


def target_path(name_or_path: str | Path, settings: Settings) -> Path:
    """Where a build writes: a validated name under the index folder, or an explicit path (``Path``)."""
    if isinstance(name_or_path, Path):
        return name_or_path
    return index_dir(settings) / validate_name(str(name_or_path))


def _plan(
    sources: list[InputSource],
    embedder: Embedder,
    opts: CorpusOptions,
    levels: list[str] | None,
    faiss_type: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    return {
        "sources": [s.model_dump() for s in sources],
        "embedding": embedder.describe(),
        "chunking": opts.model_dump(),
        "levels": levels,
        "faiss": {"type": faiss_type, **params},
        "analyzers": lexical_mod.Analyzers.default().params(),
    }


def _vector_dtype(faiss_type: str, params: dict[str, Any]) -> str:
    return "float32" if faiss_type in ("flat", "auto") and params.get("precision") == "fp32" else "float16"


def build_index(
    name_or_path: str | Path,
    manbyo: Sequence[str | Path] = (),
    corpus: Sequence[str | Path] = (),
    *,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    levels: Sequence[str] | None = None,
    corpus_opts: CorpusOptions | None = None,
    faiss_type: str = "auto",
    faiss_params: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
    timings: dict[str, float] | None = None,
) -> RagmedIndex:
    """Build (or rebuild) an index from Manbyo files and corpus paths, replacing it atomically.

    ``name_or_path``: a name (validated; under ``settings.index_dir``) or an explicit ``Path``. A build
    never replaces anything but an index. ``resume`` continues a killed build of the same inputs.
    ``embedder``: any :class:`Embedder` (default: the configured model). ``timings``, when given, receives
    the seconds spent per stage (hash_sources, read, embed, tokenize, write, dense, bm25, …).
    """
    settings = settings or get_settings()
    timed = StageTimer(timings)
    corpus_opts = corpus_opts or CorpusOptions()
    path = target_path(name_or_path, settings)
    if not manbyo and not corpus:
        raise InputError("nothing to index: give --manbyo and/or --corpus")
    dense_mod.resolve_type(faiss_type, 0)
    params = dict(faiss_params or {})
    levels_up = [lv.strip().upper() for lv in levels] if levels else None
    check_target(path, settings)
    with write_lock(path):
        recover(path)
        clean_stale(path)
        check_target(path, settings)
        with timed("hash_sources"):
            sources = plan_sources(manbyo, corpus, progress)
        embedder = embedder or load_embedder(
            settings.embed.model,
            settings.embed.device,
            settings.embed.query_encoder,
            settings.embed.passage_encoder,
        )
        plan = _plan(sources, embedder, corpus_opts, levels_up, faiss_type, params)
        root = path.parent / f".{path.name}.build"
        if resume:
            if not (root / nodes_mod.FILE).is_file():
                raise InputError(
                    f"nothing to resume: no interrupted build of {path.name!r} in {root.parent.resolve()}"
                )
        elif root.exists():
            shutil.rmtree(root)
        work = Work(
            root,
            embedder.dim,
            _vector_dtype(faiss_type, params),
            lexical_commit=settings.embed.lexical_commit,
        )
        tokenizer = lexical_mod.Tokenizer(lexical_mod.Analyzers.default())
        try:
            if resume:
                stored = work.nodes.get_info("plan")
                if stored != plan:
                    raise InputError(
                        f"the interrupted build of {path.name!r} had other inputs or settings (a source changed, or "
                        "different options): run the build without --resume to start over"
                    )
                ckpt = work.restore(tokenizer)
            else:
                work.nodes.set_info("plan", plan)
                work.nodes.commit()
                ckpt = None
            per_source = _ingest(
                work, sources, corpus_opts, levels_up, embedder, tokenizer, settings, progress, ckpt, timed
            )
        except BaseException:
            work.close()
            raise
        finally:
            tokenizer.close()
        now = _now()
        infos = _source_infos(sources, per_source, now)
        manifest = Manifest(
            name=path.name,
            created=now,
            updated=now,
            embedding=embedder.describe(),
            dimension=embedder.dim,
            faiss={"type": faiss_type, **params},
            chunking=corpus_opts.model_dump(),
            levels=levels_up,
            sources=infos,
        )
        try:
            _finish(work, manifest, faiss_type, params, progress, tokenizer.analyzers, timer=timed)
        except BaseException:
            with contextlib.suppress(Exception):
                work.close()
            raise
        with timed("swap"):
            swap_in(root, path)
    return RagmedIndex.load(path, settings, embedder)


def add_to_index(
    name_or_path: str | Path,
    manbyo: Sequence[str | Path] = (),
    corpus: Sequence[str | Path] = (),
    *,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[RagmedIndex, dict[str, int]]:
    """Add new sources without re-embedding what is already there.

    Sources already indexed with the same sha256 are skipped; a source whose content changed has its
    old nodes replaced. Returns the reloaded index and what changed. ``timings`` as in :func:`build_index`.
    """
    settings = settings or get_settings()
    timed = StageTimer(timings)
    index = RagmedIndex.load(name_or_path, settings, embedder)
    path = index.path
    with write_lock(path):
        clean_stale(path)
        embedder = index.embedder
        man = index.manifest.model_copy(deep=True)
        opts = CorpusOptions(**man.chunking) if man.chunking else CorpusOptions()
        known = {s.path: s.sha256 for s in man.sources}
        with timed("hash_sources"):
            sources = plan_sources(manbyo, corpus, progress)
        changed = {s.path for s in sources if s.path in known and known[s.path] != s.sha256 and s.sha256}
        new = [s for s in sources if s.path not in known or s.path in changed]
        if not new:
            return index, {"added_nodes": 0, "removed_nodes": 0, "sources": 0}
        root = path.parent / f".{path.name}.build"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        base_dense = man.components["dense"].params
        # the lexical index grows by new segments, unless nodes are removed (positions renumbered) or it
        # is a bm25s matrix from before the tantivy engine: then it is rebuilt from the node store
        relex = bool(changed) or man.components["lexical"].kind != "tantivy"
        segments = nodes_mod.SEGMENTS.files(f.path for f in man.components["nodes"].files)
        with timed("copy"):
            if relex:  # one store, renumbered or read back whole: copied (merged) to be appended to
                _stage(
                    "copying the node store",
                    lambda: _copy_nodes([path / f for f in segments], root / nodes_mod.FILE),
                    progress,
                )
            else:  # the old segments are linked; the new nodes get a segment of their own
                for name in segments:
                    os.link(path / name, root / name)
        work = Work(
            root,
            man.dimension,
            _vector_dtype(base_dense["type"], base_dense),
            vectors_name="vectors.new",
            lexical_base=None if relex else path,
            lexical_commit=settings.embed.lexical_commit,
            nodes_before=() if relex else [root / name for name in segments],
        )
        # the index's own analyzers (as saved), plus today's for a language it has none for yet
        saved = lexical_mod.Analyzers.from_params(man.components["lexical"].params)
        analyzers = lexical_mod.Analyzers(
            {**lexical_mod.Analyzers.default().by_language, **saved.by_language}
        )
        tokenizer = lexical_mod.Tokenizer(analyzers)
        kept: np.ndarray | None = None
        try:
            before = work.nodes.count
            if changed:
                kept = work.nodes.drop_origins(changed)
            work.base = work.nodes.count
            if relex:
                with timed("tokenize"):
                    work.refeed(tokenizer, 0, work.base, progress)
            removed = before - work.nodes.count
            new_manbyo_before = int(
                work.nodes.conn.execute("SELECT count(*) FROM nodes WHERE kind='manbyo'").fetchone()[0]
            )
            per_source = _ingest(
                work,
                new,
                opts,
                man.levels,
                embedder,
                tokenizer,
                settings,
                progress,
                {"nodes": work.base, "per_source": {}},
                timed,
            )
            new_manbyo = (
                int(work.nodes.conn.execute("SELECT count(*) FROM nodes WHERE kind='manbyo'").fetchone()[0])
                - new_manbyo_before
            )
        except BaseException:
            work.close()
            tokenizer.close()
            remove_tree(root)
            raise
        tokenizer.close()
        added = work.nodes.count - work.base
        now = _now()
        man.sources = [s for s in man.sources if s.path not in changed] + _source_infos(new, per_source, now)
        removed_manbyo = any(s.kind == "manbyo" and s.path in changed for s in index.manifest.sources)
        try:
            _finish(
                work,
                man,
                "auto",
                {},
                progress,
                base=index,
                kept=kept,
                new_manbyo=new_manbyo,
                refit=removed_manbyo,
                analyzers=analyzers,
                timer=timed,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                work.close()
            remove_tree(root)
            raise
        with timed("swap"):
            swap_in(root, path)
    stats = {"added_nodes": added, "removed_nodes": removed, "sources": len(new)}
    return RagmedIndex.load(path, settings, embedder), stats
