"""The lexical component: BM25 over analyzer tokens, in tantivy's on-disk segments.

Documents are tokenized here (by their language's analyzer) and written to a tantivy index as
space-separated terms with their position and kind. tantivy keeps term frequencies and document lengths
and computes BM25 (Lucene's formula, k1 1.2, b 0.75) at query time from corpus-wide statistics, so:

* a build streams: the writer holds a bounded buffer and writes segments as it fills, whatever the
  corpus size; it commits with the build's checkpoints, and a resumed build re-feeds what the last
  commit lacks from the node store;
* ``index add`` costs what the new documents cost: the old segments are hard-linked into the new index
  (tantivy never rewrites a segment file) and the new documents become new segments;
* a search reads memory-mapped postings; a query with common words scores only the documents holding
  its rare words and proves that no other document can enter the top ``n`` (:class:`TantivyLexical`),
  so the common words of a query do not cost a scan of every document holding them.

Indexes built before this engine hold bm25s's score matrix (``bm25/``); they are still searched
(:class:`Bm25sLexical`) and ``index add`` rebuilds their lexical index as tantivy from the node store.

Each chunk is analysed in its own language (``metadata["language"]``, decided per chunk at ingest):
``ja`` is fugashi + unidic-lite (NFKC, lower-case, content words); ``en`` is Lucene's English analyzer as
pyserini uses it for MedRAG's corpora (lower-case, possessives dropped, Lucene's 33 stop words, Porter
stemming through PyStemmer). Both write into one field, and a query is analysed by every analyzer
the index holds documents for (its tokens united), so one query reaches Japanese and English chunks.
The analyzers' settings (the stop-word list included) are saved in the component's parameters: a query
is always analysed the way the index was built. Big builds tokenize in worker processes.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragmed.errors import IndexCorruptError, InputError
from ragmed.tokenize import english_words, tokenize

#: Batches of at least this many characters are tokenized in worker processes (when the host has
#: several cores): short dictionary rows tokenize faster in-process than they travel to a worker.
PARALLEL_MIN_CHARS = 200_000


class Analyzer(Protocol):
    """Turns text into the tokens BM25 indexes and queries with."""

    name: str
    description: str

    def tokenize(self, text: str) -> list[str]: ...

    def config(self) -> dict[str, Any]: ...


class JapaneseAnalyzer:
    name = "ja"
    description = "fugashi+unidic-lite, NFKC, lower"

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)

    def config(self) -> dict[str, Any]:
        return {}


class EnglishAnalyzer:
    """Lucene's EnglishAnalyzer (pyserini's default, which MedRAG's BM25 uses): lower-case, possessive
    's dropped, stop words removed, Porter stems. Non-Latin text yields no tokens."""

    name = "en"
    description = "Latin words, NFKC, lower, Lucene stop words, Porter stemmer (PyStemmer)"

    def __init__(self, stopwords: Iterable[str] | None = None, stemmer: str = "porter") -> None:
        if stopwords is None:
            from bm25s.stopwords import STOPWORDS_EN  # Lucene's list; read at build time only

            stopwords = STOPWORDS_EN
        self.stopwords = frozenset(stopwords)
        self.stemmer = stemmer
        self._local = threading.local()

    def _stem(self, words: list[str]) -> list[str]:
        stem = getattr(self._local, "stemmer", None)
        if stem is None:  # PyStemmer objects are not thread-safe: one per thread
            import Stemmer

            stem = self._local.stemmer = Stemmer.Stemmer(self.stemmer)
        return list(stem.stemWords(words))

    def tokenize(self, text: str) -> list[str]:
        return self._stem([w for w in english_words(text) if w not in self.stopwords])

    def config(self) -> dict[str, Any]:
        return {"stopwords": sorted(self.stopwords), "stemmer": self.stemmer}


LANGUAGES = ("ja", "en")


def make_analyzer(name: str, config: dict[str, Any] | None = None) -> Analyzer:
    """The analyzer called ``name``, with the settings an index saved (``config``) or today's."""
    if name == "ja":
        return JapaneseAnalyzer()
    if name == "en":
        return EnglishAnalyzer(**(config or {}))
    raise InputError(f"unknown analyzer {name!r}: one of {', '.join(LANGUAGES)}")


class Analyzers:
    """The analyzers of one index, by language: documents are tokenized by their own language's, a
    query by all of them."""

    def __init__(self, analyzers: dict[str, Analyzer]) -> None:
        self.by_language = analyzers

    @classmethod
    def default(cls) -> Analyzers:
        return cls({lang: make_analyzer(lang) for lang in LANGUAGES})

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Analyzers:
        """From a lexical component's parameters; an index from before per-language analysis holds
        ``{"analyzer": "ja"}`` only."""
        saved = params.get("analyzers")
        if saved is None:
            return cls({"ja": make_analyzer(str(params.get("analyzer", "ja")))})
        return cls({lang: make_analyzer(lang, cfg) for lang, cfg in saved.items()})

    def params(self) -> dict[str, Any]:
        return {lang: a.config() for lang, a in self.by_language.items()}

    def describe(self) -> dict[str, str]:
        return {lang: a.description for lang, a in self.by_language.items()}

    def for_language(self, language: str | None) -> Analyzer:
        return self.by_language.get(language or "ja") or self.by_language["ja"]

    def query_tokens(self, text: str, languages: Iterable[str] | None = None) -> list[str]:
        """The tokens of ``text`` under each analyzer (of ``languages``, default all), united in order."""
        out: dict[str, None] = {}
        for lang, analyzer in self.by_language.items():
            if languages is None or lang in languages:
                out.update(dict.fromkeys(analyzer.tokenize(text)))
        return list(out)


# --------------------------------------------------------------------------- tokenizing


def _worker_init() -> None:
    """A forked worker builds its own MeCab tagger (the parent's is not shared across processes)."""
    import ragmed.tokenize

    ragmed.tokenize._local = threading.local()


_WORKER_ANALYZERS: dict[str, Analyzer] = {}


def _tokenize_chunk(args: tuple[str, str, list[str]]) -> list[list[str]]:
    name, config, texts = args
    analyzer = _WORKER_ANALYZERS.get(name + config)
    if analyzer is None:
        analyzer = _WORKER_ANALYZERS[name + config] = make_analyzer(name, json.loads(config))
    return [analyzer.tokenize(t) for t in texts]


class Tokenizer:
    """Tokenizes batches, each text by its language's analyzer, in worker processes for big batches;
    close() stops the workers."""

    def __init__(self, analyzers: Analyzers, workers: int | None = None) -> None:
        self.analyzers = analyzers
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._pool: Any = None

    def __call__(self, texts: Sequence[str], languages: Sequence[str] | None = None) -> list[list[str]]:
        langs = list(languages) if languages is not None else ["ja"] * len(texts)
        out: list[list[str]] = [[] for _ in texts]
        for lang in dict.fromkeys(langs):
            where = [i for i, x in enumerate(langs) if x == lang]
            analyzer = self.analyzers.for_language(lang)
            for i, tokens in zip(where, self._run(analyzer, [texts[i] for i in where]), strict=True):
                out[i] = tokens
        return out

    def _run(self, analyzer: Analyzer, texts: list[str]) -> list[list[str]]:
        if self.workers <= 1 or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
            return [analyzer.tokenize(t) for t in texts]
        if self._pool is None:
            # fork: no re-import of the caller's __main__ (spawn would run an unguarded script again);
            # each worker builds its own tagger
            self._pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_worker_init)
        size = max(1, len(texts) // (self.workers * 4))
        config = json.dumps(analyzer.config())
        parts = [(analyzer.name, config, texts[i : i + size]) for i in range(0, len(texts), size)]
        out: list[list[str]] = []
        for part in self._pool.map(_tokenize_chunk, parts):
            out += part
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None


# --------------------------------------------------------------------------- the index on disk (tantivy)

#: The folder of the lexical index (tantivy's segments) inside an index.
DIR = "lexical"
POS, KIND, TEXT = "pos", "kind", "text"
#: tantivy's BM25: Lucene's formula and defaults (idf ln(1 + (N - n + 0.5) / (n + 0.5)), document
#: lengths stored as one byte each, as Lucene does).
K1, B = 1.2, 0.75
#: What the writer buffers before it writes a segment (its memory, whatever the corpus size).
WRITER_HEAP = 256 * 1024 * 1024
#: The folder of an index from before the tantivy engine (bm25s's score matrix; ``tokens/`` beside it).
LEGACY_DIR = "bm25"

_OTHER_SPACE = re.compile(r"[^\S ]")


def term(token: str) -> str:
    """A token as an index term: whitespace inside it joined by ``_`` (the index splits on spaces)."""
    return "_".join(token.split())


def doc_text(tokens: Sequence[str]) -> str:
    """The tokens as the space-separated text tantivy's whitespace tokenizer splits back into them."""
    text = " ".join(tokens)
    if "" in tokens or text.count(" ") != len(tokens) - 1 or _OTHER_SPACE.search(text):
        text = " ".join(t for t in map(term, tokens) if t)
    return text


def _schema() -> Any:
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_unsigned_field(POS, indexed=True, fast=True)
    sb.add_text_field(KIND, tokenizer_name="raw", index_option="basic")
    sb.add_text_field(TEXT, tokenizer_name="whitespace", index_option="freq")
    return sb.build()


def index_files(root: Path) -> list[str]:
    """The files of the lexical index under ``root`` (relative), without tantivy's lock files."""
    folder = root / DIR
    return sorted(
        p.relative_to(root).as_posix()
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".tantivy-")
    )


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` holding ``src``'s files: segments hard-linked (tantivy never rewrites a segment file, so the
    old index keeps its own), the small JSON files tantivy rewrites copied."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if not p.is_file() or p.name.startswith(".tantivy-"):
            continue
        if p.suffix == ".json":
            shutil.copy2(p, dst / p.name)
        else:
            try:
                os.link(p, dst / p.name)
            except OSError:  # another file system, or links not allowed: copy
                shutil.copy2(p, dst / p.name)


def manual_reload(index: Any) -> None:
    """Reload ``index``'s reader only when asked. tantivy's default reader reloads from a thread that
    watches ``meta.json``, and each reload creates ``.tantivy-meta.lock``: a failed build's folder being
    deleted while that thread first looked was left behind holding the file. An index folder never
    changes in place here (a build swaps in a new folder; a writer reloads after its own commits)."""
    index.config_reader("manual")


class LexicalWriter:
    """Writes an index's BM25 postings with tantivy: documents appended by position, committed with the
    build's checkpoints. Memory is the writer's buffer, whatever the corpus size; the scores are computed
    at query time from term frequencies, so adding documents never recomputes the old ones."""

    def __init__(self, root: Path, base: Path | None = None, commit_every: int = 200_000) -> None:
        """A writer in ``root``; with ``base`` (an index folder), starting from that index's postings.
        A checkpoint commits once ``commit_every`` documents are new (settings.embed.lexical_commit)."""
        import tantivy

        self.path = root / DIR
        if base is not None and not self.path.exists():
            _link_tree(base / DIR, self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.schema = _schema()
        try:
            self.index = tantivy.Index(self.schema, path=str(self.path), reuse=True)
            manual_reload(self.index)
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.path}: cannot open the lexical index ({exc})") from None
        self._writer: Any = None
        self.uncommitted = 0
        self.commit_every = commit_every

    @property
    def writer(self) -> Any:
        if self._writer is None:
            self._writer = self.index.writer(WRITER_HEAP, max(1, min(4, os.cpu_count() or 1)))
        return self._writer

    def committed(self) -> int:
        """Documents in the last commit."""
        self.index.reload()
        return int(self.index.searcher().num_docs)

    def add(self, start: int, kinds: Sequence[str], tokens: Sequence[Sequence[str]]) -> None:
        """Documents at positions ``start, start+1, …`` (not yet committed)."""
        import tantivy

        writer = self.writer
        for i, (kind, toks) in enumerate(zip(kinds, tokens, strict=True)):
            doc = tantivy.Document()
            doc.add_unsigned(POS, start + i)
            doc.add_text(KIND, kind)
            doc.add_text(TEXT, doc_text(toks))
            writer.add_document(doc)
        self.uncommitted += len(tokens)

    def commit(self, force: bool = False) -> None:
        """Commit when enough is new (or ``force``): what a checkpoint calls."""
        if self.uncommitted and (force or self.uncommitted >= self.commit_every):
            self.writer.commit()
            self.uncommitted = 0

    def truncate(self, count: int) -> None:
        """Delete the documents at positions ≥ ``count`` (a killed build committed past its checkpoint)."""
        import tantivy

        query = tantivy.Query.range_query(
            self.schema, POS, tantivy.FieldType.Unsigned, lower_bound=count, use_inverted_index=True
        )
        self.index.reload()
        if self.index.searcher().search(query, 1, count=True).count:
            self.writer.delete_documents_by_query(query)
            self.writer.commit()

    def finish(self) -> dict[str, Any]:
        """Commit, wait for segment merges, and describe the index (the component's parameters)."""
        self.commit(force=True)
        if self._writer is not None:
            self._writer.wait_merging_threads()
            self._writer = None
        for lock in self.path.glob(".tantivy-*.lock"):
            lock.unlink(missing_ok=True)
        self.index.reload()
        searcher = self.index.searcher()
        return {"engine": "tantivy", "k1": K1, "b": B, "docs": int(searcher.num_docs),
                "segments": int(searcher.num_segments)}  # fmt: skip

    def close(self) -> None:
        """Drop uncommitted documents (an aborted build) and let go of the index, whose folder is
        about to be deleted."""
        if self._writer is not None:
            with contextlib.suppress(ValueError):
                self._writer.rollback()
            self._writer = None
        self.index = None


# --------------------------------------------------------------------------- the loaded component


class Lexical(ABC):
    """The BM25 component of a loaded index: its analyzers, and the top documents for query tokens."""

    def __init__(self, root: Path, count: int, params: dict[str, Any], folder: str) -> None:
        self.index_root, self.path, self.count = root, root / folder, count
        self.analyzers = Analyzers.from_params(params)
        #: documents per language (an index from before per-language analysis: all Japanese)
        self.languages: dict[str, int] = dict(params.get("languages") or {"ja": count})

    def corrupt(self, what: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"{self.path}: {what}. Run `ragmed index verify {self.index_root.resolve()}` and "
            "rebuild the index."
        )

    def query_tokens(self, text: str) -> list[str]:
        """``text`` analysed by the analyzer of every language the index holds documents in."""
        held = [lang for lang, n in self.languages.items() if n]
        return self.analyzers.query_tokens(text, held or None)

    @abstractmethod
    def search(
        self,
        tokens: Sequence[str],
        n: int,
        kinds: Iterable[str] | None = None,
        exclude: Iterable[int] = (),
    ) -> list[tuple[int, float]]:
        """The top ``n`` (position, BM25 score) for ``tokens``, best first (ties by position), of nodes
        whose kind is in ``kinds`` (all when None), none at an ``exclude`` position."""

    @abstractmethod
    def deep_check(self) -> list[str]:
        """Full checks for ``ragmed index verify``."""


#: A query's rarest terms are "rare" while their documents add up to at most this fraction of the index,
#: the others "common" (see :class:`TantivyLexical`); when the first split cannot prove its answer, the
#: next, with more rare terms and so a lower ceiling, is tried before the plain query.
SPLIT_BUDGETS = (0.005, 0.02)


class TantivyLexical(Lexical):
    """BM25 over tantivy's memory-mapped segments: exact Lucene BM25, a query a disjunction of its terms.

    The Python bindings give no top-k pruning (a one-term query for 性 scans its 6.2 M postings at 10 M
    documents), so a disjunction costs every posting of every term: ~40 ms p50 at 10 M, most of it in
    template words and suffixes that half the documents hold. So a query with common terms is answered in
    two steps, MaxScore-style, exactly. (1) Only documents holding a *rare* term are scored, in full:
    tantivy walks the rare terms' postings and skips to each document in the common terms' postings
    (each common term nested as an optional clause, so skip lists are used rather than a union's
    window scan). (2) A document holding no rare term scores at most the sum of the common terms' best
    single-term scores (each found once by a one-term search, cached for the loaded index); when the
    n-th score of step 1 is above that sum, no such document can enter the top n, and the answer is
    exact; otherwise the plain disjunction runs. Scores equal the plain query's up to float summation
    order.
    """

    def __init__(self, root: Path, count: int, params: dict[str, Any]) -> None:
        import tantivy

        super().__init__(root, count, params, DIR)
        try:
            self.index = tantivy.Index.open(str(self.path))
            manual_reload(self.index)
            self.searcher = self.index.searcher()
        except (OSError, ValueError) as exc:
            raise self.corrupt(f"unreadable lexical index ({exc})") from None
        self.schema = self.index.schema
        if int(self.searcher.num_docs) != count:
            raise self.corrupt(f"{self.searcher.num_docs} documents, the manifest records {count}")
        self._best: dict[str, float] = {}  # a term's best single-term score in this index
        self.plans = {"plain": 0, "split": 0, "fallback": 0}  # how queries were answered (bench, tests)

    def _term(self, t: str) -> Any:
        import tantivy

        return tantivy.Query.term_query(self.schema, TEXT, t, index_option="freq")

    def _best_score(self, t: str) -> float:
        best = self._best.get(t)
        if best is None:
            hits = self._run(self._term(t), 1)
            best = self._best.setdefault(t, float(hits[0][0]) if hits else 0.0)
        return best

    def _run(self, query: Any, limit: int) -> list[tuple[float, Any]]:
        try:
            # count=False: counting every match is extra work nobody reads
            return list(self.searcher.search(query, limit, count=False).hits)
        except ValueError as exc:
            raise self.corrupt(f"search failed ({exc})") from None

    def _ranked(self, hits: list[tuple[float, Any]], skip: set[int], n: int) -> list[tuple[int, float]]:
        try:
            positions = self.searcher.fast_field_values(POS, [addr for _, addr in hits])
        except ValueError as exc:
            raise self.corrupt(f"search failed ({exc})") from None
        out = sorted(
            ((int(p), float(s)) for (s, _), p in zip(hits, positions, strict=True) if p not in skip),
            key=lambda ps: (-ps[1], ps[0]),
        )
        return out[:n]

    def _splits(self, terms: list[str]) -> list[tuple[list[str], list[str]]]:
        """The (rare, common) splits to try, in order; none when the plain disjunction is cheap anyway."""
        if len(terms) < 2 or not SPLIT_BUDGETS:
            return []
        dfs = {t: int(self.searcher.doc_freq(TEXT, t)) for t in terms}
        if sum(dfs.values()) <= 4 * SPLIT_BUDGETS[0] * self.count:
            return []
        out: list[tuple[list[str], list[str]]] = []
        for fraction in SPLIT_BUDGETS:
            rare: list[str] = []
            total = 0
            for t in sorted(terms, key=lambda t: (dfs[t], t)):
                if rare and total + dfs[t] > fraction * self.count:
                    break
                rare.append(t)
                total += dfs[t]
            common = [t for t in terms if t not in rare]
            if common and total and all(rare != r for r, _ in out):
                out.append((rare, common))
        return out

    def search(
        self,
        tokens: Sequence[str],
        n: int,
        kinds: Iterable[str] | None = None,
        exclude: Iterable[int] = (),
    ) -> list[tuple[int, float]]:
        import tantivy

        terms = [t for t in dict.fromkeys(map(term, tokens)) if t]
        kinds = None if kinds is None else sorted(set(kinds))
        if not terms or n <= 0 or kinds == []:
            return []
        q, should, must = tantivy.Query, tantivy.Occur.Should, tantivy.Occur.Must
        kind_filter = (
            None
            if kinds is None
            else q.const_score_query(
                q.boolean_query([(should, q.term_query(self.schema, KIND, k)) for k in kinds]), 0.0
            )
        )

        def filtered(query: Any) -> Any:
            return query if kind_filter is None else q.boolean_query([(must, query), (must, kind_filter)])

        skip = set(exclude)
        want = n + len(skip)
        splits = self._splits(terms)
        for rare, common in splits:
            query = (
                q.boolean_query([(should, self._term(t)) for t in rare])
                if len(rare) > 1
                else self._term(rare[0])
            )
            for t in common:
                query = q.boolean_query([(must, query), (should, self._term(t))])
            out = self._ranked(self._run(filtered(query), want), skip, n)
            ceiling = sum(self._best_score(t) for t in common)  # a document without a rare term
            if len(out) == n and out[-1][1] > ceiling * (1 + 1e-6) + 1e-6:
                self.plans["split"] += 1
                return out
        self.plans["fallback" if splits else "plain"] += 1
        plain = q.boolean_query([(should, self._term(t)) for t in terms])
        return self._ranked(self._run(filtered(plain), want), skip, n)

    def deep_check(self) -> list[str]:
        import tantivy

        problems = []
        inside = tantivy.Query.range_query(
            self.schema, POS, tantivy.FieldType.Unsigned, 0, max(self.count - 1, 0), use_inverted_index=True
        )
        found = self.searcher.search(inside, 1, count=True).count if self.count else 0
        if found != self.count or int(self.searcher.num_docs) != self.count:
            problems.append(
                f"{self.path}: {self.searcher.num_docs} documents, {found} of them at positions "
                f"0..{self.count - 1}; the manifest records {self.count}"
            )
        return problems


class Bm25sLexical(Lexical):
    """An index built before the tantivy engine: bm25s's score matrix, memory-mapped (read-only; ``index
    add`` rebuilds it as tantivy)."""

    def __init__(
        self,
        root: Path,
        count: int,
        params: dict[str, Any],
        kind_mask: Callable[[Iterable[str]], np.ndarray],
    ) -> None:
        super().__init__(root, count, params, LEGACY_DIR)
        self.kind_mask = kind_mask
        try:
            saved = json.loads((self.path / "params.index.json").read_text(encoding="utf-8"))
            self.data = np.load(self.path / "data.csc.index.npy", mmap_mode="r")
            self.indices = np.load(self.path / "indices.csc.index.npy", mmap_mode="r")
            self.indptr = np.load(self.path / "indptr.csc.index.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise self.corrupt(f"unreadable BM25 arrays ({exc})") from None
        if saved.get("method", "lucene") not in ("lucene", "robertson", "atire"):
            raise self.corrupt(f"BM25 variant {saved.get('method')!r} is not one ragmed writes")
        if int(saved.get("num_docs", -1)) != count or len(self.data) != len(self.indices):
            raise self.corrupt(f"BM25 over {saved.get('num_docs')} documents, the manifest records {count}")
        self._vocab: dict[str, int] | None = None

    @property
    def vocab(self) -> dict[str, int]:
        if self._vocab is None:
            path = self.path / "vocab.index.json"
            try:
                vocab = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise self.corrupt(f"unreadable vocabulary {path.name} ({exc})") from None
            if len(vocab) + 1 != len(self.indptr):
                raise self.corrupt(
                    f"{len(vocab)} tokens in {path.name} for {len(self.indptr) - 1} matrix columns"
                )
            self._vocab = vocab
        return self._vocab

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document (bm25s's ``get_scores`` over the memory-mapped columns)."""
        scores = np.zeros(self.count, dtype=np.float32)
        vocab = self.vocab
        for tok in dict.fromkeys(tokens):
            tid = vocab.get(tok)
            if tid is None:
                continue
            start, end = int(self.indptr[tid]), int(self.indptr[tid + 1])
            if end > len(self.indices) or start > end:
                raise self.corrupt(f"column {tid} points past the end of the arrays")
            cols = np.asarray(self.indices[start:end])
            if len(cols) and int(cols.max()) >= self.count:
                raise self.corrupt(f"a document number past {self.count} in column {tid}")
            scores[cols] += self.data[start:end]
        return scores

    def search(
        self,
        tokens: Sequence[str],
        n: int,
        kinds: Iterable[str] | None = None,
        exclude: Iterable[int] = (),
    ) -> list[tuple[int, float]]:
        if not tokens or n <= 0 or not self.count:
            return []
        scores = self.scores(tokens)
        if kinds is not None:
            scores[~self.kind_mask(kinds)] = 0.0
        skip = list(exclude)
        if skip:
            scores[skip] = 0.0
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(d), float(scores[d])) for d in top if scores[d] > 0]

    def deep_check(self) -> list[str]:
        problems = []
        if len(self.vocab) + 1 != len(self.indptr):
            problems.append(f"{self.path}: vocabulary and matrix columns differ")
        if len(self.indices) and int(np.max(self.indices)) >= self.count:
            problems.append(f"{self.path}: document numbers past {self.count}")
        if not np.isfinite(np.asarray(self.data)).all():
            problems.append(f"{self.path}: scores that are not finite")
        return problems


def open_lexical(
    root: Path,
    kind: str,
    count: int,
    params: dict[str, Any],
    kind_mask: Callable[[Iterable[str]], np.ndarray],
) -> Lexical:
    """The lexical component of the index in ``root``, by the engine its manifest names."""
    if kind == "tantivy":
        return TantivyLexical(root, count, params)
    if kind == "bm25s":
        return Bm25sLexical(root, count, params, kind_mask)
    raise IndexCorruptError(f"{root}: lexical component of kind {kind!r}, which this version does not read")
