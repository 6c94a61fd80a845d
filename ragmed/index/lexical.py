"""The lexical component: BM25 (bm25s) over analyzer tokens, memory-mapped.

A build keeps every document's token ids (``tokens/``: ids and lengths as raw int32 files plus the
vocabulary, one token a line), so BM25 is recomputed after ``index add`` without tokenizing the old
documents again, and a killed build resumes where its tokens end. bm25s computes the score matrix and
saves it (``bm25/``); a search reads only the matrix columns of its query tokens from the memory-mapped
arrays (the arithmetic of bm25s's ``get_scores``, checked against bm25s in the tests), so neither the
corpus nor the matrix is loaded into RAM and scipy is not imported by one-shot commands.

Each chunk is analysed in its own language (``metadata["language"]``, decided per chunk at ingest):
``ja`` is fugashi + unidic-lite (NFKC, lower-case, content words); ``en`` is Lucene's English analyzer as
pyserini uses it for MedRAG's corpora (lower-case, possessives dropped, Lucene's 33 stop words, Porter
stemming through PyStemmer). Both write into one vocabulary, and a query is analysed by every analyzer
the index holds documents for (its tokens united), so one query reaches Japanese and English chunks.
The analyzers' settings (the stop-word list included) are saved in the component's parameters: a query
is always analysed the way the index was built. Big builds tokenize in worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragmed.errors import IndexCorruptError, InputError
from ragmed.tokenize import english_words, tokenize

DIR = "bm25"
TOKENS = "tokens"
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


# --------------------------------------------------------------------------- token store (build side)


class TokenStore:
    """Documents' token ids, appended batch by batch: ``ids.i32``, ``lens.i32`` and ``vocab.txt``."""

    def __init__(self, root: Path) -> None:
        self.root = root / TOKENS
        self.root.mkdir(parents=True, exist_ok=True)
        self.ids_path, self.lens_path, self.vocab_path = (
            self.root / n for n in ("ids.i32", "lens.i32", "vocab.txt")
        )
        for p in (self.ids_path, self.lens_path, self.vocab_path):
            p.touch(exist_ok=True)
        self.vocab: dict[str, int] = {}
        with self.vocab_path.open(encoding="utf-8") as fh:
            for line in fh:
                self.vocab[line.rstrip("\n")] = len(self.vocab)

    def state(self) -> dict[str, int]:
        return {
            "docs": self.lens_path.stat().st_size // 4,
            "ids": self.ids_path.stat().st_size // 4,
            "vocab": len(self.vocab),
            "vocab_bytes": self.vocab_path.stat().st_size,
        }

    def restore(self, state: dict[str, int]) -> None:
        """Cut the files back to a checkpoint (a killed build may have written past it)."""
        for path, size in ((self.ids_path, state["ids"] * 4), (self.lens_path, state["docs"] * 4)):
            with path.open("r+b") as fh:
                fh.truncate(size)
        with self.vocab_path.open("r+b") as fh:
            fh.truncate(state["vocab_bytes"])
        self.vocab = dict(list(self.vocab.items())[: state["vocab"]])

    def add(self, docs: Sequence[Sequence[str]]) -> None:
        new: list[str] = []
        ids: list[int] = []
        for tokens in docs:
            for tok in tokens:
                tid = self.vocab.get(tok)
                if tid is None:
                    tid = self.vocab[tok] = len(self.vocab)
                    new.append(tok)
                ids.append(tid)
        with self.ids_path.open("ab") as fh:
            fh.write(np.asarray(ids, dtype=np.int32).tobytes())
        with self.lens_path.open("ab") as fh:
            fh.write(np.asarray([len(d) for d in docs], dtype=np.int32).tobytes())
        if new:
            with self.vocab_path.open("a", encoding="utf-8") as fh:
                fh.write("".join(t.replace("\n", " ") + "\n" for t in new))

    def sync(self) -> None:
        for p in (self.ids_path, self.lens_path, self.vocab_path):
            with p.open("rb") as fh:
                os.fsync(fh.fileno())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ids = (
            np.fromfile(self.ids_path, dtype=np.int32)
            if self.ids_path.stat().st_size
            else np.zeros(0, np.int32)
        )
        lens = (
            np.fromfile(self.lens_path, dtype=np.int32)
            if self.lens_path.stat().st_size
            else np.zeros(0, np.int32)
        )
        return ids, lens

    def keep(self, positions: np.ndarray) -> None:
        """Keep only the documents at ``positions`` (a replaced source's documents dropped)."""
        ids, lens = self.arrays()
        starts = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
        parts = [ids[starts[p] : starts[p + 1]] for p in positions]
        (np.concatenate(parts) if parts else np.zeros(0, np.int32)).astype(np.int32).tofile(self.ids_path)
        lens[positions].astype(np.int32).tofile(self.lens_path)


class _Docs(Sequence[list[int]]):
    """Each document's token ids, produced on demand from the flat arrays (bm25s iterates 3 times)."""

    def __init__(self, ids: np.ndarray, lens: np.ndarray) -> None:
        self.ids, self.lens = ids, lens
        self.starts = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.lens)

    def __getitem__(self, i: int) -> list[int]:  # type: ignore[override]
        return self.ids[self.starts[i] : self.starts[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(len(self.lens)):
            yield self.ids[self.starts[i] : self.starts[i + 1]].tolist()


def build(store: TokenStore, out: Path, progress: bool = False) -> dict[str, Any]:
    """Compute BM25 over the stored tokens with bm25s and save it in ``out/bm25``."""
    import bm25s

    ids, lens = store.arrays()
    vocab = dict(store.vocab)
    if "" not in vocab:  # bm25s scores documents without tokens through an empty token
        vocab[""] = len(vocab)
    bm25 = bm25s.BM25()
    docs = _Docs(ids, lens)
    if len(docs):
        bm25.index(
            bm25s.tokenization.Tokenized(ids=docs, vocab=vocab),
            show_progress=progress,
            create_empty_token=False,
        )
    else:
        bm25.scores = {"data": np.zeros(0, np.float32), "indices": np.zeros(0, np.int32),
                       "indptr": np.zeros(len(vocab) + 1, np.int64), "num_docs": 0}  # fmt: skip
        bm25.vocab_dict = vocab
    bm25.save(str(out / DIR), show_progress=False)
    return {"k1": bm25.k1, "b": bm25.b, "method": bm25.method, "vocab": len(vocab), "tokens": int(len(ids))}


# --------------------------------------------------------------------------- the loaded component


class Lexical:
    """BM25 scores from bm25s's saved arrays, memory-mapped; the vocabulary is read on first use."""

    def __init__(self, root: Path, count: int, params: dict[str, Any]) -> None:
        self.root, self.count = root / DIR, count
        self.analyzers = Analyzers.from_params(params)
        #: documents per language (an index from before per-language analysis: all Japanese)
        self.languages: dict[str, int] = dict(params.get("languages") or {"ja": count})
        try:
            params = json.loads((self.root / "params.index.json").read_text(encoding="utf-8"))
            self.data = np.load(self.root / "data.csc.index.npy", mmap_mode="r")
            self.indices = np.load(self.root / "indices.csc.index.npy", mmap_mode="r")
            self.indptr = np.load(self.root / "indptr.csc.index.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise self.corrupt(f"unreadable BM25 arrays ({exc})") from None
        if params.get("method", "lucene") not in ("lucene", "robertson", "atire"):
            raise self.corrupt(f"BM25 variant {params.get('method')!r} is not one ragmed writes")
        if int(params.get("num_docs", -1)) != count or len(self.data) != len(self.indices):
            raise self.corrupt(f"BM25 over {params.get('num_docs')} documents, the manifest records {count}")
        self._vocab: dict[str, int] | None = None

    def corrupt(self, what: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"{self.root}: {what}. Run `ragmed index verify {self.root.parent.resolve()}` and rebuild the index."
        )

    @property
    def vocab(self) -> dict[str, int]:
        if self._vocab is None:
            path = self.root / "vocab.index.json"
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

    def query_tokens(self, text: str) -> list[str]:
        """``text`` analysed by the analyzer of every language the index holds documents in."""
        held = [lang for lang, n in self.languages.items() if n]
        return self.analyzers.query_tokens(text, held or None)

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query ``tokens`` (bm25s's ``get_scores``)."""
        scores = np.zeros(self.count, dtype=np.float32)
        vocab = self.vocab
        for tok in tokens:
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

    def deep_check(self) -> list[str]:
        problems = []
        if len(self.vocab) + 1 != len(self.indptr):
            problems.append(f"{self.root}: vocabulary and matrix columns differ")
        if len(self.indices) and int(np.max(self.indices)) >= self.count:
            problems.append(f"{self.root}: document numbers past {self.count}")
        if not np.isfinite(np.asarray(self.data)).all():
            problems.append(f"{self.root}: scores that are not finite")
        return problems
