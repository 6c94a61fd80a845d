"""The dense component: passage vectors in FAISS, memory-mapped.

Types (``--faiss``):

* ``flat`` — exhaustive inner product over FP16 codes (``precision=fp32``: float32); exact.
* ``hnsw`` — HNSW graph over 8-bit scalar-quantized vectors (``efSearch``).
* ``ivf`` — inverted lists of full vectors (``nprobe``).
* ``ivfpq`` — OPQ rotation + IVF + product quantization: ~48 bytes a vector (``nprobe``).
* ``auto`` (default) — ``flat`` up to :data:`AUTO_FLAT_MAX` vectors, ``ivfpq`` beyond.

The index file is read with FAISS's memory-mapping flags, so loading costs a header read and the OS
pages in what a search touches. The approximate types keep the vectors as FP16 beside the index
(``vectors.f16``, memory-mapped) and re-score their top candidates exactly from it (``rescore``), so
their ranking within the candidates is the flat ranking. ``index add`` writes its vectors to a new file
(``vectors-1.f16``, …) beside the hard-linked old ones; they are read as one array. On a host whose faiss build sees GPUs, the IVF
types train and add on the GPU, and flat/IVF indexes are searched there.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from ragmed.errors import IndexCorruptError, InputError
from ragmed.index.segments import Segments
from ragmed.threads import single_threaded

FILE = "dense.faiss"
VECTORS = "vectors.f16"
TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
#: Largest index ``auto`` keeps flat: 1M × 384 FP16 codes are 0.77 GB and a scan takes ~25 ms.
AUTO_FLAT_MAX = 1_000_000
_ADD_BATCH = 65_536
SEGMENTS = Segments("vectors", ".f16")  # vectors.f16, vectors-1.f16, …


def merge_vector_files(root: Path, names: list[str]) -> list[str]:
    """Keep at most ``segments.MAX_SEGMENTS`` vector files: the newest are concatenated into one (their
    rows are few next to the first file's, which is never rewritten). Returns the files now in use."""

    def join(kept: list[Path], tail: list[Path], out: Path) -> None:
        with out.open("wb") as fh:
            for path in tail:
                with path.open("rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 24)

    return SEGMENTS.cap(root, names, join)


class StackedRows:
    """Several memory-mapped [n_i, dim] arrays read as one [sum n_i, dim] array: integer, slice and
    integer-array indexing, iteration, and ``np.asarray`` (which concatenates: small indexes only)."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), int(self.parts[0].shape[1]))
        self.dtype = self.parts[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self.parts:
            yield from part

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                pieces = []
                for part, lo in zip(self.parts, self.offsets[:-1], strict=True):
                    a, b = max(start, lo), min(stop, lo + len(part))
                    if a < b:
                        pieces.append(np.asarray(part[a - lo : b - lo]))
                return np.concatenate(pieces) if pieces else np.zeros((0, self.shape[1]), self.dtype)
            key = np.arange(start, stop, step)
        if isinstance(key, int | np.integer):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(key)
            seg = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return np.asarray(self.parts[seg][i - self.offsets[seg]])
        idx = np.asarray(key, dtype=np.int64)
        idx = np.where(idx < 0, idx + len(self), idx)
        if ((idx < 0) | (idx >= len(self))).any():
            raise IndexError("row index out of range")
        seg = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        for s in np.unique(seg):
            hit = seg == s
            out[hit] = self.parts[s][idx[hit] - self.offsets[s]]
        return out


def resolve_type(requested: str, n: int) -> str:
    if requested not in TYPES:
        raise InputError(f"unknown FAISS index type {requested!r}: use one of {', '.join(TYPES)}")
    if requested == "auto":
        return "flat" if n <= AUTO_FLAT_MAX else "ivfpq"
    return requested


#: Training vectors per IVF list: FAISS asks for 39–256; k-means time grows with the sample times the
#: lists, and at 10 M vectors (12,649 lists) 256 per list was a 3.2 M-vector sample, over an hour on 2
#: cores. 64 keeps the lists well-formed; recall is measured by bench/scale.py.
TRAIN_PER_LIST = 64


def default_params(kind: str, n: int, dim: int, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a type is built with (given ones kept), recorded in the manifest."""
    p = dict(params)
    if kind == "flat":
        p.setdefault("precision", "fp16")
        if p["precision"] not in ("fp16", "fp32"):
            raise InputError(f"flat precision must be fp16 or fp32, not {p['precision']!r}")
    elif kind == "hnsw":
        p.setdefault("hnsw_m", 32)
        p.setdefault("ef_construction", 80)
        p.setdefault("ef_search", 128)
        p.setdefault("rescore", 10)
    elif kind in ("ivf", "ivfpq"):
        nlist = int(p.get("nlist") or max(1, min(65_536, int(4 * np.sqrt(max(n, 1))))))
        p["nlist"] = max(1, min(nlist, max(1, n // 39)))  # FAISS wants >= 39 training points per list
        p.setdefault("nprobe", 16 if kind == "ivf" else 64)
        if kind == "ivfpq":
            m = int(p.get("pq_m") or _pq_m(dim))
            if dim % m:
                raise InputError(f"pq_m={m} must divide the dimension {dim}")
            p["pq_m"] = m
            # 2**bits centroids per sub-quantizer need at least as many training vectors; OPQ needs plenty
            p.setdefault("pq_bits", max(1, min(8, int(np.log2(max(n, 2))))))
            p.setdefault("opq", n >= 10_000)
            p.setdefault("opq_niter", 10)  # FAISS's 50 took 800 s on 72k vectors here; 10: 275 s, same recall
            # PQ distances order the candidates: at 10 M, 10 x k re-scored gave recall@10 0.949, 20 x k 0.991
            p.setdefault("rescore", 20)
    return p


def _pq_m(dim: int) -> int:
    """Sub-quantizers: 8 dimensions each (48 bytes for 384 dims), a divisor of ``dim``."""
    for m in (dim // 8, dim // 4, dim // 2, dim):
        if m and dim % m == 0:
            return m
    return dim


def factory_string(kind: str, dim: int, p: dict[str, Any]) -> str:
    if kind == "flat":
        return "SQfp16" if p["precision"] == "fp16" else "Flat"
    if kind == "hnsw":
        return f"HNSW{int(p['hnsw_m'])},SQ8"
    if kind == "ivf":
        return f"IVF{int(p['nlist'])},Flat"
    m = int(p["pq_m"])
    return f"{f'OPQ{m},' if p.get('opq') else ''}IVF{int(p['nlist'])},PQ{m}x{int(p.get('pq_bits', 8))}"


def keeps_vectors(kind: str) -> bool:
    """Whether the component keeps FP16 vectors beside the index (re-scoring, rebuilds, checks): all but
    flat, whose codes are the vectors."""
    return kind != "flat"


def gpus() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


class VectorFile:
    """Vectors being written: raw rows appended to a file (FP16, or FP32 for a flat fp32 index)."""

    def __init__(self, path: Path, dim: int, dtype: str) -> None:
        self.path, self.dim, self.dtype = path, dim, np.dtype(dtype)
        self.row_bytes = dim * self.dtype.itemsize
        path.touch(exist_ok=True)

    @property
    def count(self) -> int:
        return self.path.stat().st_size // self.row_bytes

    def truncate(self, rows: int) -> None:
        """Drop rows after ``rows`` (what a killed build appended past its last checkpoint)."""
        with self.path.open("r+b") as fh:
            fh.truncate(rows * self.row_bytes)

    def append(self, vectors: np.ndarray) -> None:
        with self.path.open("ab") as fh:
            fh.write(np.ascontiguousarray(vectors, dtype=self.dtype).tobytes())
            fh.flush()

    def sync(self) -> None:
        with self.path.open("rb") as fh:
            os.fsync(fh.fileno())

    @property
    def shape(self) -> tuple[int, int]:
        return (self.count, self.dim)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start..stop-1``, read rather than memory-mapped: the pages of a map count as the
        process's resident memory until it is unmapped, so a build scanning 10 M vectors through a map
        showed a 10 GB peak; read in batches it holds one batch."""
        with self.path.open("rb") as fh:
            fh.seek(start * self.row_bytes)
            data = fh.read(max(0, stop - start) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(-1, self.dim)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at the sorted ``positions`` as float32, reading the file once, in order, a batch at a time."""
        out = np.empty((len(positions), self.dim), dtype=np.float32)
        done = 0
        for start in range(0, self.count, _ADD_BATCH):
            stop = min(self.count, start + _ADD_BATCH)
            upto = int(np.searchsorted(positions, stop))
            if upto > done:
                out[done:upto] = self.read(start, stop)[positions[done:upto] - start]
                done = upto
        return out


def batches(rows: np.ndarray | VectorFile, size: int = _ADD_BATCH) -> Iterator[np.ndarray]:
    """``rows`` as float32 batches (a :class:`VectorFile` is read, not mapped)."""
    n = rows.shape[0]
    for start in range(0, n, size):
        stop = min(n, start + size)
        part = rows.read(start, stop) if isinstance(rows, VectorFile) else rows[start:stop]
        yield np.ascontiguousarray(part, dtype=np.float32)


def build(
    vectors: np.ndarray | VectorFile, kind: str, params: dict[str, Any], out: Path, progress: bool = False
) -> dict[str, Any]:
    """Write ``out/dense.faiss`` for ``vectors`` ([n, dim]: an array, or a vector file read in batches,
    which keeps a build's memory to the index and one batch); returns the params."""
    n, dim = vectors.shape
    p = default_params(kind, n, dim, params)
    index = faiss.index_factory(dim, factory_string(kind, dim, p), faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = int(p["ef_construction"])
    if kind == "ivfpq" and p.get("opq"):
        faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0)).niter = int(p["opq_niter"])
    on_gpu = gpus() > 0 and kind in ("ivf", "ivfpq")
    work = faiss.index_cpu_to_all_gpus(index) if on_gpu else index
    p["built_on"] = "gpu" if on_gpu else "cpu"
    if not index.is_trained and n:
        limit = min(n, max(TRAIN_PER_LIST * int(p.get("nlist", 1)), 100_000))
        pick = (
            np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))
            if limit < n
            else np.arange(n)
        )
        sample = (
            vectors.take(pick)
            if isinstance(vectors, VectorFile)
            else np.ascontiguousarray(vectors[pick], dtype=np.float32)
        )
        work.train(sample)
        del sample
    bar = tqdm(total=n, desc=f"dense index ({kind})", unit="vec", disable=not progress)
    for chunk in batches(vectors):
        work.add(chunk)
        bar.update(len(chunk))
    bar.close()
    if on_gpu:
        index = faiss.index_gpu_to_cpu(work)
    faiss.write_index(index, str(out / FILE))
    return p


def add(index_path: Path, vectors: np.ndarray | VectorFile, out: Path) -> None:
    """Append ``vectors`` to an existing trained index (``index add``: no retraining)."""
    index = faiss.read_index(str(index_path))
    for chunk in batches(vectors):
        index.add(chunk)
    faiss.write_index(index, str(out / FILE))


def _prefetch(path: Path) -> None:
    """Read a flat index's file once, sequentially, into the page cache (the data is discarded).

    A flat scan touches every page; faulting a cold memory map in page by page took 1.3 s for 52 MB
    here, a sequential read 0.04 s (and ~10 ms when the file is already cached). The map then finds
    every page cached, and the memory stays shared page cache rather than process memory.
    """
    buf = bytearray(8 << 20)
    try:
        with path.open("rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass
    except OSError:
        return  # a missing or unreadable file is reported by the read below, naming it


class DenseIndex:
    """A loaded dense component: the memory-mapped FAISS index, and the FP16 vectors when kept."""

    def __init__(
        self,
        root: Path,
        kind: str,
        params: dict[str, Any],
        count: int,
        dim: int,
        files: Sequence[str] = (VECTORS,),
    ) -> None:
        self.root, self.kind, self.params, self.count, self.dim = root, kind, params, count, dim
        self.files = SEGMENTS.files(files) or [VECTORS]
        path = root / FILE
        if kind == "flat":
            _prefetch(path)
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"{path}: not a readable FAISS index ({str(exc).splitlines()[-1][:160]}). "
                f"Run `ragmed index verify {root.resolve()}` and rebuild the index."
            ) from None
        if index.ntotal != count or index.d != dim:
            raise IndexCorruptError(
                f"{path}: holds {index.ntotal} vectors of dimension {index.d}, the manifest records {count} of "
                f"dimension {dim}. Rebuild the index."
            )
        self.device = "cpu"
        if gpus() and kind in ("flat", "ivf", "ivfpq"):
            if kind == "flat" and isinstance(index, faiss.IndexScalarQuantizer):
                flat = faiss.IndexFlatIP(index.d)  # GPUs have the bandwidth for fp32
                flat.add(index.reconstruct_n(0, index.ntotal))
                index = flat
            index = faiss.index_cpu_to_all_gpus(index)
            self.device = f"gpu x{gpus()}"
        self.index = index
        self._vectors: np.ndarray | None = None
        self._lock = threading.Lock()
        self._sampled = False
        self._rows: list[int] = []
        self._files: list[Any] | None = None
        self._offsets = np.zeros(1, dtype=np.int64)
        if keeps_vectors(kind):
            row = dim * 2
            for name in self.files:
                vpath = root / name
                size = vpath.stat().st_size if vpath.is_file() else -1
                if size < 0 or size % row:
                    raise IndexCorruptError(
                        f"{vpath}: missing or not whole FP16 vectors of dimension {dim}. Rebuild the index."
                    )
                self._rows.append(size // row)
            if sum(self._rows) != count:
                where = root / self.files[0] if len(self.files) == 1 else f"{root} ({', '.join(self.files)})"
                raise IndexCorruptError(
                    f"{where}: holds {sum(self._rows)} FP16 vectors of dimension {dim}, not {count}. "
                    "Rebuild the index."
                )
            self._offsets = np.cumsum([0] + [r for r in self._rows if r])

    @property
    def vectors(self) -> np.ndarray:
        """All vectors, [n, dim]: memory-mapped FP16 when kept, else reconstructed (small indexes)."""
        if self._vectors is None:
            with self._lock:
                if keeps_vectors(self.kind):
                    parts = [
                        np.memmap(self.root / name, dtype=np.float16, mode="r", shape=(rows, self.dim))
                        for name, rows in zip(self.files, self._rows, strict=True)
                        if rows
                    ]
                    if not parts:
                        self._vectors = np.zeros((0, self.dim), dtype=np.float16)
                    else:
                        self._vectors = parts[0] if len(parts) == 1 else StackedRows(parts)  # type: ignore[assignment]
                elif self.count:
                    self._vectors = self.index.reconstruct_n(0, self.count)
                else:
                    self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        return self._vectors

    @property
    def stored_dtype(self) -> np.dtype:
        """How vectors were stored (what the node store's vector checksums cover)."""
        return np.dtype(
            np.float32 if self.kind == "flat" and self.params.get("precision") == "fp32" else np.float16
        )

    def stored_rows(self, positions: list[int] | np.ndarray) -> np.ndarray:
        """The stored vectors at ``positions`` ([len, dim], stored dtype)."""
        if not len(positions):
            return np.zeros((0, self.dim), dtype=self.stored_dtype)
        if keeps_vectors(self.kind):
            return self._read_rows(np.asarray(positions, dtype=np.int64))
        return np.stack([self.index.reconstruct(int(p)) for p in positions]).astype(self.stored_dtype)

    def _read_rows(self, positions: np.ndarray) -> np.ndarray:
        """Kept FP16 rows at ``positions``, by positioned reads (a run of consecutive rows is one read).

        Not through the memory map: a fault on a map brings the neighbouring cached pages into the
        process too (fault-around), so re-scoring 500 scattered rows a query left 5.9 GB of the 7.7 GB
        vector file resident in the process after 200 queries at 10 M passages; read, it stays page
        cache that the kernel can drop, and the process holds what it asked for.
        """
        if self._files is None:
            with self._lock:
                if self._files is None:  # one per non-empty file, as self._offsets counts them
                    self._files = [
                        (self.root / name).open("rb", buffering=0)
                        for name, rows in zip(self.files, self._rows, strict=True)
                        if rows
                    ]
        row = self.dim * 2
        order = np.argsort(positions, kind="stable")
        pos = positions[order]
        if len(pos) and (pos[0] < 0 or pos[-1] >= self.count):
            raise IndexError(f"vector row out of range 0..{self.count - 1}")
        seg = np.searchsorted(self._offsets, pos, side="right") - 1
        # runs of consecutive (or repeated) positions within one file: one read each
        starts = np.r_[0, np.flatnonzero((np.diff(pos) > 1) | (np.diff(seg) != 0)) + 1]
        ends = np.r_[starts[1:], len(pos)]
        first, last, file_of = pos[starts], pos[ends - 1], seg[starts]
        within = first - self._offsets[file_of]
        fds = [f.fileno() for f in self._files]
        data = b"".join(
            os.pread(fds[f], n * row, w * row)
            for f, n, w in zip(file_of.tolist(), (last - first + 1).tolist(), within.tolist(), strict=True)
        )
        if len(data) != int((last - first + 1).sum()) * row:
            raise IndexCorruptError(
                f"{self.root}: a vector file is shorter than recorded. Rebuild the index."
            )
        block = np.frombuffer(data, dtype=np.float16).reshape(-1, self.dim)
        run = np.repeat(np.arange(len(starts)), ends - starts)
        base = np.r_[0, np.cumsum(last - first + 1)[:-1]]
        out = np.empty((len(positions), self.dim), dtype=np.float16)
        out[order] = block[base[run] + pos - first[run]]
        return out

    def _params(self, sel: Any, nprobe: int | None, ef_search: int | None) -> Any:
        if self.device != "cpu":
            return None
        if self.kind in ("ivf", "ivfpq"):
            p = faiss.SearchParametersIVF(sel=sel, nprobe=int(nprobe or self.params.get("nprobe", 16)))
            if isinstance(self.index, faiss.IndexPreTransform):
                return faiss.SearchParametersPreTransform(index_params=p)
            return p
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(
                sel=sel, efSearch=int(ef_search or self.params.get("ef_search", 64))
            )
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(
        self,
        query: np.ndarray,
        n: int,
        allowed: np.ndarray | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        rescore: int | None = None,
    ) -> list[tuple[int, float]]:
        """Top-``n`` (position, inner product) for one query; ``allowed`` is a boolean mask over positions
        (a FAISS selector on CPU, so filtered search still returns ``n`` hits)."""
        if not self.count or n <= 0:
            return []
        if not self._sampled:
            self._sample_check()
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        factor = int(self.params.get("rescore", 0) if rescore is None else rescore)
        want = min(self.count, n * factor if keeps_vectors(self.kind) and factor > 1 else n)
        sel = bitmap = None
        if allowed is not None and self.device == "cpu":
            bitmap = np.packbits(allowed, bitorder="little")
            sel = faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(bitmap))
        elif allowed is not None:  # GPUs take no selector: fetch more and filter
            want = min(self.count, want + int((~allowed).sum()))
        params = self._params(sel, nprobe, ef_search)
        with single_threaded():  # one query: a second OpenMP thread only adds spin-waiting
            scores, ids = (
                self.index.search(q, want, params=params)
                if params is not None
                else self.index.search(q, want)
            )
        del bitmap
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        if allowed is not None:
            hits = [(i, s) for i, s in hits if allowed[i]]
        if factor > 1 and keeps_vectors(self.kind) and hits:
            pos = np.array([i for i, _ in hits])
            order = np.argsort(pos)
            exact = np.empty(len(pos), dtype=np.float32)
            exact[order] = self._read_rows(pos[order]).astype(np.float32) @ q[0]
            hits = sorted(zip(pos.tolist(), exact.tolist(), strict=True), key=lambda h: (-h[1], h[0]))
        if any(s != s for _, s in hits):  # NaN: a stored vector is not finite
            bad = next(i for i, s in hits if s != s)
            raise IndexCorruptError(
                f"{self.root / FILE}: the vector at position {bad} is not finite (NaN). "
                f"Run `ragmed index verify {self.root.resolve()}` and rebuild the index."
            )
        return hits[:n]

    def _sample_check(self) -> None:
        """A few hundred stored vectors must be finite (cheap; ``verify`` checks them all)."""
        rows = np.unique(np.linspace(0, self.count - 1, num=min(self.count, 256)).astype(np.int64))
        if keeps_vectors(self.kind):
            sample = self._read_rows(rows).astype(np.float32)
        else:
            sample = np.stack([self.index.reconstruct(int(r)) for r in rows])
        if not np.isfinite(sample).all():
            bad = int(rows[np.argmin(np.isfinite(sample).all(axis=1))])
            raise IndexCorruptError(
                f"{self.root / FILE}: the vector at position {bad} is not finite (NaN). "
                f"Run `ragmed index verify {self.root.resolve()}` and rebuild the index."
            )
        self._sampled = True

    def deep_check(self) -> list[str]:
        """Full-scan checks for ``ragmed index verify``: every vector finite and of unit length."""
        problems = []
        vecs = self.vectors
        for start in range(0, self.count, _ADD_BATCH):
            part = np.asarray(vecs[start : start + _ADD_BATCH], dtype=np.float32)
            finite = np.isfinite(part).all(axis=1)
            if not finite.all():
                problems.append(f"{self.root / FILE}: vector {start + int(np.argmin(finite))} is not finite")
                break
            norms = np.linalg.norm(part, axis=1)
            bad = np.abs(norms - 1) > 0.01
            if bad.any():
                problems.append(
                    f"{self.root / FILE}: vector {start + int(np.argmax(bad))} is not unit length"
                )
                break
        return problems
