"""Where an index lives on disk: its manifest, the names it may have, and how a new version replaces
the old one.

An index is a folder ``<index_dir>/<name>/`` holding ``manifest.json`` and its components' files. The
manifest lists every component with its files' sizes and sha256 checksums: loading compares sizes (a
``stat`` per file) and each component checks its counts and shapes; ``ragmed index verify`` recomputes
the checksums. Every write happens in a sibling folder that replaces the index with two renames once it
is complete, so a killed build leaves the previous index as it was.

A build may replace only a folder that holds a ragmed manifest and nothing else but its components, or
create a new one: a name is one path component of letters, digits, ``.``, ``_``, ``-`` (not starting
with a dot); anything else must be given as an explicit path.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ragmed import __version__
from ragmed.errors import IndexCorruptError, IndexNotFoundError, InputError
from ragmed.settings import Settings, get_settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: The on-disk layout written by this version (1: nodes.jsonl + vectors.npy + bm25/, ragmed ≤ 0.x).
FORMAT = 2
NAME_RULE = re.compile(r"^[^\W_][\w.\-]{0,99}$")
FORMAT1_FILES = {"manifest.json", "nodes.jsonl", "vectors.npy", "dense.faiss", "bm25", "normalizer"}


class FileEntry(BaseModel):
    """One file of a component: its path inside the index folder, size and sha256."""

    path: str
    bytes: int
    sha256: str


class Component(BaseModel):
    """One part of an index (node store, dense, lexical, normalizer) and the files it owns."""

    kind: str
    files: list[FileEntry] = Field(default_factory=list)
    count: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class SourceInfo(BaseModel):
    """One input of the index. ``path`` is where the operator's file was (shown by ``index info`` only);
    nodes carry ``name``, its path relative to the corpus folder."""

    path: str
    kind: Literal["manbyo", "corpus"]
    sha256: str
    nodes: int
    added: str
    name: str = ""


class Manifest(BaseModel):
    format: int = 1
    name: str
    ragmed_version: str = __version__
    created: str
    updated: str
    embedding: dict[str, Any]
    dimension: int
    faiss: dict[str, Any]
    bm25: dict[str, Any] = Field(default_factory=lambda: {"tokenizer": "fugashi+unidic-lite, NFKC, lower"})
    chunking: dict[str, Any] = Field(default_factory=dict)
    levels: list[str] | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    sources: list[SourceInfo] = Field(default_factory=list)
    components: dict[str, Component] = Field(default_factory=dict)

    def fingerprint(self) -> str:
        """Stable hash of what determines retrieval results (recorded by eval runs)."""
        payload = self.model_dump(include={"embedding", "faiss", "counts", "sources", "levels", "chunking"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, rel: str) -> FileEntry:
    path = root / rel
    return FileEntry(path=rel, bytes=path.stat().st_size, sha256=sha256_file(path))


def files_under(root: Path, rel: str) -> list[FileEntry]:
    """Entries for a file, or for every file under a folder (sorted)."""
    path = root / rel
    if path.is_dir():
        return [
            file_entry(root, p.relative_to(root).as_posix()) for p in sorted(path.rglob("*")) if p.is_file()
        ]
    return [file_entry(root, rel)]


# --------------------------------------------------------------------------- names and paths


def validate_name(name: str) -> str:
    """An index name is one path component (see the module docstring); the error says how to give a path."""
    if not NAME_RULE.match(name or "") or name in (".", ".."):
        raise InputError(
            f"invalid index name {name!r}: use letters, digits, '.', '_' and '-' (1-100 characters, not "
            "starting with '.' or '_'); to write somewhere else, give an explicit path with --path",
            param="name",
        )
    return name


def index_dir(settings: Settings | None = None) -> Path:
    return Path((settings or get_settings()).index_dir)


def resolve_index_path(name_or_path: str | Path, settings: Settings | None = None) -> Path:
    """A ``Path`` is a path; a string is a name under ``settings.index_dir`` unless it holds a slash
    (reading only: builds take names, or paths given as ``Path``)."""
    if isinstance(name_or_path, Path):
        return name_or_path
    raw = str(name_or_path)
    if "/" in raw or raw in (".", ".."):
        return Path(raw)
    return index_dir(settings) / validate_name(raw)


def not_found(name_or_path: str | Path, path: Path) -> IndexNotFoundError:
    parent = path.parent.resolve()
    available = list_indexes(parent)
    hint = ", ".join(available) if available else "none — build one with `ragmed index build`"
    return IndexNotFoundError(
        f"no index {str(name_or_path)!r} at {path.resolve()}. Available in {parent}: {hint}. Indexes are "
        "looked up under --index-dir (env RAGMED_INDEX_DIR, default ./indexes relative to the current folder)."
    )


def list_indexes(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


def read_manifest(path: Path) -> Manifest:
    """The manifest of the index at ``path``; a damaged one is an error naming the file and the fix."""
    mpath = path / MANIFEST
    try:
        raw = mpath.read_bytes()
        return Manifest.model_validate_json(raw)
    except (ValidationError, UnicodeDecodeError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        what = f"{'.'.join(map(str, first['loc'])) or 'the document'}: {first['msg']}" if first else str(exc)
        raise IndexCorruptError(
            f"{mpath}: not a valid ragmed manifest ({what}). The index cannot be opened: rebuild it with "
            f"`ragmed index build --name {path.name} ...`."
        ) from None


def is_replaceable(path: Path) -> tuple[bool, str]:
    """Whether a build may replace what is at ``path`` (nothing, or a ragmed index and only that)."""
    if not path.exists() and not path.is_symlink():
        return True, ""
    if path.is_symlink() or not path.is_dir():
        return False, f"{path} exists and is not a folder"
    if not (path / MANIFEST).is_file():
        return False, f"{path} exists and is not a ragmed index (no {MANIFEST})"
    try:
        manifest = Manifest.model_validate_json((path / MANIFEST).read_bytes())
    except (ValidationError, UnicodeDecodeError, ValueError):
        return False, f"{path}/{MANIFEST} is not a ragmed manifest"
    known = {MANIFEST}
    if manifest.format == 1:
        known |= FORMAT1_FILES
    for comp in manifest.components.values():
        known |= {f.path.split("/")[0] for f in comp.files}
    strangers = sorted(p.name for p in path.iterdir() if p.name not in known)
    if strangers:
        return False, f"{path} holds files that are not part of the index ({', '.join(strangers[:5])})"
    return True, ""


def check_target(path: Path, settings: Settings | None = None) -> None:
    """Refuse to write an index over anything that is not one (or over the index folder itself)."""
    home = index_dir(settings).resolve()
    resolved = path.resolve()
    if resolved == home or resolved in home.parents or resolved == Path(resolved.anchor):
        raise InputError(f"refusing to write an index at {resolved}: it is the index folder or one above it")
    ok, why = is_replaceable(path)
    if not ok:
        raise InputError(
            f"refusing to replace {resolved}: {why}. Choose another name (or --path), or move it away yourself."
        )


# --------------------------------------------------------------------------- writing


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(path: Path) -> None:
    """If a swap was interrupted between its two renames, put the old index back."""
    if path.exists():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and (olds[-1] / MANIFEST).is_file():
        olds[-1].rename(path)


def remove_tree(root: Path, attempts: int = 5) -> bool:
    """Delete a build's working folder after it failed; True when it is gone.

    A thread of a library may still be closing files in it (tantivy's reader watcher, sqlite), so a
    folder that is not empty after one pass is tried again, briefly. What is still left is not an
    error of its own: the failure being reported matters more, and the next build clears the folder.
    """
    for attempt in range(attempts):
        shutil.rmtree(root, ignore_errors=True)
        if not root.exists():
            return True
        time.sleep(0.05 * (attempt + 1))
    log.warning("could not delete %s; the next build of this index will", root)
    return False


def clean_stale(path: Path) -> list[Path]:
    """Remove temp and old folders of ``path`` left by processes that died (their pid is gone)."""
    removed = []
    for stale in list(path.parent.glob(f".{path.name}.tmp-*")) + list(
        path.parent.glob(f".{path.name}.old-*")
    ):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """One writer per index at a time (a second build of the same name is refused, not interleaved)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    with lock.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another process is writing the index at {path}; wait for it to finish"
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_in(built: Path, path: Path) -> None:
    """Make the complete folder ``built`` the index at ``path`` (two renames; the old one is deleted)."""
    fsync_tree(built)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        path.rename(old)
    built.rename(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old.exists():
        shutil.rmtree(old)


# --------------------------------------------------------------------------- checking


def check_sizes(path: Path, manifest: Manifest) -> None:
    """Every file the manifest lists is there with its recorded size (one ``stat`` each)."""
    for comp_name, comp in manifest.components.items():
        for f in comp.files:
            fpath = path / f.path
            try:
                size = fpath.stat().st_size
            except FileNotFoundError:
                raise IndexCorruptError(
                    f"{fpath}: missing (the {comp_name} component of index {manifest.name!r} lists it). "
                    "Rebuild the index."
                ) from None
            if size != f.bytes:
                raise IndexCorruptError(
                    f"{fpath}: {size} bytes, the manifest records {f.bytes}: the file was changed or truncated. "
                    f"Run `ragmed index verify {path.resolve()}` to check every file, and rebuild the index."
                )


def verify_checksums(path: Path, manifest: Manifest) -> list[str]:
    """Problems found by recomputing every listed file's sha256 (empty when all match)."""
    problems = []
    for comp_name, comp in manifest.components.items():
        for f in comp.files:
            fpath = path / f.path
            if not fpath.is_file():
                problems.append(f"{fpath}: missing ({comp_name})")
            elif fpath.stat().st_size != f.bytes:
                problems.append(
                    f"{fpath}: {fpath.stat().st_size} bytes, the manifest records {f.bytes} ({comp_name})"
                )
            elif sha256_file(fpath) != f.sha256:
                problems.append(f"{fpath}: content differs from its recorded sha256 ({comp_name})")
    return problems
