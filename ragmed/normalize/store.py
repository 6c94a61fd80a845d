"""The normalizer on disk, in formats that cannot run code: .npy arrays (``allow_pickle=False``) and JSON.

Every file is listed in ``normalizer/manifest.json`` with its size (and, for arrays, shape and dtype),
checked on load — a stat and a header read per file, so loading stays cheap — and a file that does not
match is an :class:`~ragmed.errors.IndexCorruptError` naming the file and the fix. Arrays are
memory-mapped: the ~72k-row dictionary's matrices are not read until a query touches them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ragmed.errors import IndexCorruptError

FORMAT_VERSION = 2
LEGACY_PICKLE = "vectorizer.joblib"  # format 1 (ragmed ≤ 0.1): a pickled scikit-learn vectorizer


def rebuild_hint(folder: Path) -> str:
    index_dir = folder.parent
    return (
        f"rebuild the index: ragmed index build --name {index_dir.name} --manbyo <your Manbyo file> "
        "(plus the --corpus sources it had)"
    )


class Writer:
    """Writes files into one folder and records what it wrote for the manifest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, dict[str, Any]] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def array(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        if arr.dtype == object:
            raise TypeError(f"{name}: object arrays would need a pickle")
        path = self.folder / f"{name}.npy"
        np.save(path, arr, allow_pickle=False)
        self.files[path.name] = {
            "bytes": path.stat().st_size,
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
        }

    def csr(self, name: str, matrix: sp.csr_matrix) -> None:
        matrix = matrix.tocsr()
        matrix.sort_indices()
        self.array(f"{name}.data", matrix.data.astype(np.float32))
        self.array(f"{name}.indices", matrix.indices.astype(np.int32))
        self.array(f"{name}.indptr", matrix.indptr.astype(np.int64))
        self.array(f"{name}.shape", np.asarray(matrix.shape, dtype=np.int64))

    def json(self, name: str, obj: Any) -> None:
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
        self.files[path.name] = {"bytes": path.stat().st_size}

    def manifest(self, extra: dict[str, Any]) -> None:
        manifest = {"format": FORMAT_VERSION, **extra, "files": self.files}
        (self.folder / "manifest.json").write_text(
            json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"
        )


class Reader:
    """Reads what :class:`Writer` wrote, checking each file against the manifest."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        path = folder / "manifest.json"
        if (folder / LEGACY_PICKLE).exists():
            raise IndexCorruptError(
                f"{folder / LEGACY_PICKLE}: this disease normalizer was saved by an older ragmed as a "
                "Python pickle, which ragmed no longer opens (unpickling runs code from the file); "
                + rebuild_hint(folder)
            )
        if not path.exists():
            raise IndexCorruptError(
                f"{path}: missing, so the disease normalizer cannot be read; {rebuild_hint(folder)}"
            )
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{path}: not readable JSON ({exc}); {rebuild_hint(folder)}") from exc
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT_VERSION:
            found = self.manifest.get("format") if isinstance(self.manifest, dict) else None
            raise IndexCorruptError(
                f"{path}: normalizer format {found!r}, this ragmed reads format {FORMAT_VERSION}; "
                + rebuild_hint(folder)
            )
        self.files: dict[str, dict[str, Any]] = self.manifest.get("files", {})

    def _checked(self, filename: str) -> Path:
        path = self.folder / filename
        spec = self.files.get(filename)
        if spec is None:
            raise IndexCorruptError(
                f"{self.folder / 'manifest.json'}: does not list {filename}; {rebuild_hint(self.folder)}"
            )
        if not path.exists():
            raise IndexCorruptError(f"{path}: missing; {rebuild_hint(self.folder)}")
        size = path.stat().st_size
        if size != spec["bytes"]:
            raise IndexCorruptError(
                f"{path}: {size} bytes where the normalizer manifest recorded {spec['bytes']} "
                f"(truncated or replaced); {rebuild_hint(self.folder)}"
            )
        return path

    def array(self, name: str, mmap: bool = True) -> np.ndarray:
        filename = f"{name}.npy"
        path = self._checked(filename)
        spec = self.files[filename]
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise IndexCorruptError(
                f"{path}: not a plain .npy array ({exc}); {rebuild_hint(self.folder)}"
            ) from exc
        if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
            raise IndexCorruptError(
                f"{path}: array {arr.dtype}{list(arr.shape)} where the normalizer manifest recorded "
                f"{spec['dtype']}{spec['shape']}; {rebuild_hint(self.folder)}"
            )
        return arr

    def csr(self, name: str) -> sp.csr_matrix:
        shape = tuple(int(x) for x in self.array(f"{name}.shape", mmap=False))
        data, indices, indptr = (self.array(f"{name}.{part}") for part in ("data", "indices", "indptr"))
        if len(indptr) != shape[0] + 1 or len(data) != len(indices) or int(indptr[-1]) != len(data):
            raise IndexCorruptError(
                f"{self.folder / (name + '.indptr.npy')}: sparse matrix parts do not fit together; "
                + rebuild_hint(self.folder)
            )
        # scipy validates index bounds lazily; the manifest sizes above already caught truncation
        return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)

    def json(self, name: str) -> Any:
        path = self._checked(f"{name}.json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(
                f"{path}: not readable JSON ({exc}); {rebuild_hint(self.folder)}"
            ) from exc
