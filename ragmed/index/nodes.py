"""The node store: every node's id, text and metadata in one SQLite file, by position.

Position ``i`` is row ``i`` of the dense vectors and document ``i`` of BM25. Opening the store reads
nothing but its header; a search fetches its k hits by primary key (memory-mapped pages), so loading
an index costs the same at 50 nodes and at 50 million. SQLite is in the standard library, reads a file
written once and never changed (``immutable=1``: no locks, no journal), and gives the lookups callers
need without loading anything: by node id (eval's leakage guard, the normalizer's supporting row), by
kind (dictionary-only search), by source (replacing a changed file), and a streaming scan.

Every row carries two CRC-32s: of its own id, text and metadata (``crc``), and of the vector stored
for its position (``vcrc``). A search checks the rows of the hits it returns, so a row edited, deleted
or moved, or a vector changed, is an error naming the file instead of a wrong passage with another
passage's score; ``ragmed index verify`` checks the whole file.

The store may be several files, *segments* (``nodes.sqlite``, ``nodes-1.sqlite``, …), each holding a
contiguous run of positions: ``index add`` writes its nodes to a new segment and hard-links the old
ones, so adding costs what the new nodes cost. Past ``segments.MAX_SEGMENTS`` the newest are merged.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragmed.errors import IndexCorruptError, InputError
from ragmed.index.segments import Segments

FILE = "nodes.sqlite"
SEGMENTS = Segments("nodes", ".sqlite")  # nodes.sqlite, nodes-1.sqlite, …
TABLE = """
CREATE TABLE {name} (
    pos INTEGER PRIMARY KEY,   -- row of the dense vectors / document of BM25
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,        -- manbyo | corpus
    origin TEXT NOT NULL,      -- the source it came from (SourceInfo.path), for replacing it
    text TEXT NOT NULL,
    meta TEXT NOT NULL,        -- JSON metadata
    crc INTEGER NOT NULL,      -- CRC-32 of id, text, meta
    vcrc INTEGER NOT NULL      -- CRC-32 of the stored vector at this position
)"""
SCHEMA = f"""
{TABLE.format(name="nodes")};
CREATE INDEX nodes_kind ON nodes (kind, pos);
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_MMAP_BYTES = 1 << 30


COLUMNS = "pos, id, text, meta, crc, vcrc"


def row_crc(node_id: str, text: str, meta: str) -> int:
    return zlib.crc32(f"{node_id}\x00{text}\x00{meta}".encode())


def vector_crc(row: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(row).tobytes())


def record(row: Sequence[Any]) -> dict[str, Any]:
    return {"id": row[0], "text": row[1], "metadata": json.loads(row[2])}


def node_kind(record: dict[str, Any]) -> str:
    """A record's kind ("manbyo" or "corpus", the default), as the store files it."""
    return str(record["metadata"].get("kind", "corpus"))


class NodeWriter:
    """Appends nodes to a store (segment) being built; positions are given in order, from the current
    count. A segment after the first starts at ``start`` (the nodes before it); ``before`` is the store
    of those nodes, whose ids new nodes must not repeat."""

    def __init__(self, path: Path, start: int = 0, before: NodeStore | None = None) -> None:
        self.path = path
        self.start = start
        self.before = before
        fresh = not path.exists()
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if fresh:
            self.conn.executescript(SCHEMA)
            self.set_info("start", start)
        self.conn.execute("BEGIN")
        self.count = start + int(self.conn.execute("SELECT count(*) FROM nodes").fetchone()[0])

    def append(self, records: Sequence[dict[str, Any]], origins: Sequence[str], vectors: np.ndarray) -> int:
        """Add records, each from its source, with the vectors stored for them (as stored: same dtype);
        not yet committed. Returns how many."""
        rows = []
        for r, origin, vec in zip(records, origins, vectors, strict=True):
            meta = r["metadata"]
            meta_json = json.dumps(meta, ensure_ascii=False)
            rows.append(
                (
                    self.count + len(rows),
                    r["id"],
                    node_kind(r),
                    origin,
                    r["text"],
                    meta_json,
                    row_crc(r["id"], r["text"], meta_json),
                    vector_crc(vec),
                )
            )
        ids = [row[1] for row in rows]
        earlier = self.before.positions(ids) if self.before is not None and ids else {}
        if earlier:
            raise _duplicate(next(iter(earlier)))
        try:
            self.conn.executemany("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError:
            dup = next((i for i in ids if ids.count(i) > 1), None)
            if dup is None:
                placeholders = ",".join("?" * len(ids))
                found = self.conn.execute(
                    f"SELECT id, origin FROM nodes WHERE id IN ({placeholders}) LIMIT 1", ids
                ).fetchone()
                dup = found[0] if found else ids[0]
            raise _duplicate(dup) from None
        self.count += len(rows)
        return len(rows)

    def stats(self) -> dict[str, dict[str, int]]:
        """Nodes per kind and per language in this segment (kept in its info table by :meth:`finish`, so
        an index made of segments sums them without a scan)."""
        return {
            "kinds": dict(self.conn.execute("SELECT kind, count(*) FROM nodes GROUP BY kind").fetchall()),
            "languages": dict(
                self.conn.execute(
                    "SELECT coalesce(json_extract(meta, '$.language'), 'ja'), count(*) FROM nodes GROUP BY 1"
                ).fetchall()
            ),
        }

    def set_info(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (key, json.dumps(value)))

    def get_info(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def commit(self) -> None:
        """Make everything appended so far durable (the build's checkpoint rides in the same transaction)."""
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.execute("BEGIN")
        self.count = self.start + int(self.conn.execute("SELECT count(*) FROM nodes").fetchone()[0])

    def iter_batches(
        self, start: int, stop: int, size: int = 8192
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """The records at positions ``start..stop-1``, ``size`` at a time, each batch with its first
        position (what a resumed or rebuilt lexical index reads back)."""
        for first in range(start, stop, size):
            rows = self.conn.execute(
                "SELECT id, text, meta FROM nodes WHERE pos >= ? AND pos < ? ORDER BY pos",
                (first, min(stop, first + size)),
            ).fetchall()
            yield first, [record(row) for row in rows]

    def drop_origins(self, origins: set[str]) -> np.ndarray:
        """Delete the nodes of ``origins`` and renumber the rest 0..n-1 in order; returns the old
        positions kept (to keep the same rows of the vectors)."""
        if not origins:
            return np.arange(self.count, dtype=np.int64)
        marks = ",".join("?" * len(origins))
        kept = np.array(
            [
                r[0]
                for r in self.conn.execute(
                    f"SELECT pos FROM nodes WHERE origin NOT IN ({marks}) ORDER BY pos", sorted(origins)
                )
            ],
            dtype=np.int64,
        )
        self.conn.execute(TABLE.format(name="renumbered"))
        self.conn.execute(
            "INSERT INTO renumbered SELECT row_number() OVER (ORDER BY pos) - 1, id, kind, origin, text, meta, "
            "crc, vcrc "
            f"FROM nodes WHERE origin NOT IN ({marks}) ORDER BY pos",
            sorted(origins),
        )
        self.conn.execute("DROP TABLE nodes")
        self.conn.execute("ALTER TABLE renumbered RENAME TO nodes")
        self.conn.execute("CREATE INDEX nodes_kind ON nodes (kind, pos)")
        self.count = len(kept)
        return kept

    def finish(self) -> dict[str, dict[str, int]]:
        """Commit, compact and close; returns the segment's :meth:`stats`."""
        stats = self.stats()
        self.set_info("count", self.count - self.start)
        self.set_info("start", self.start)
        self.set_info("stats", stats)
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA optimize")
        self.conn.close()
        if self.before is not None:
            self.before.close()
        return stats

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass
        self.conn.close()
        if self.before is not None:
            self.before.close()


def sum_stats(*parts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per-kind and per-language node counts (:meth:`NodeWriter.stats`) added up."""
    out: dict[str, dict[str, int]] = {"kinds": {}, "languages": {}}
    for part in parts:
        for key, counts in part.items():
            for name, n in counts.items():
                out[key][name] = out[key].get(name, 0) + int(n)
    return out


def _duplicate(node_id: str) -> InputError:
    return InputError(
        f"two nodes share the id {node_id!r}: the same file given twice, or two files "
        "with the same name in different folders — pass their common folder instead"
    )


def merge(sources: Sequence[Path], out: Path, start: int = 0) -> None:
    """Write the segments ``sources`` (consecutive, in order) as one segment ``out`` starting at ``start``."""
    writer = NodeWriter(out, start)
    try:
        writer.conn.execute("COMMIT")  # ATTACH is refused inside a transaction
        for src in sources:
            writer.conn.execute("ATTACH DATABASE ? AS src", (str(src),))
            writer.conn.execute("INSERT INTO nodes SELECT * FROM src.nodes ORDER BY pos")
            writer.conn.execute("DETACH DATABASE src")
        writer.conn.execute("BEGIN")
        writer.count = start + int(writer.conn.execute("SELECT count(*) FROM nodes").fetchone()[0])
        writer.finish()
    except BaseException:
        writer.close()
        out.unlink(missing_ok=True)
        raise


def merge_segments(root: Path, names: list[str]) -> list[str]:
    """Keep at most ``segments.MAX_SEGMENTS`` segments: the newest are merged into one (the first,
    largest, is never rewritten). Returns the segments now in use."""

    def join(kept: list[Path], tail: list[Path], out: Path) -> None:
        store = NodeStore(kept)
        start = store.count
        store.close()
        merge(tail, out, start)

    return SEGMENTS.cap(root, names, join)


class _Segment:
    """One file of a node store, read-only; one SQLite connection per thread (cheap to open)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self.start = int(self.info("start") or 0)
        self.count = int(self.info("count") or 0)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False
                )
                conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
                conn.execute("SELECT 1 FROM nodes LIMIT 1").fetchall()
            except sqlite3.DatabaseError as exc:
                raise self.corrupt(f"not a readable node store ({exc})") from None
            self._local.conn = conn
        return conn

    def corrupt(self, what: str) -> IndexCorruptError:
        return IndexCorruptError(
            f"{self.path}: {what}. Run `ragmed index verify {self.path.parent.resolve()}` and rebuild the index."
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self.corrupt(f"not a readable node store ({exc})") from None

    def info(self, key: str) -> Any:
        rows = self.query("SELECT value FROM info WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class NodeStore:
    """A read-only node store over one or more segments (see the module docstring)."""

    def __init__(self, paths: Path | Sequence[Path], count: int | None = None) -> None:
        """``count``: the nodes the manifest records (None: as many as the segments hold)."""
        paths = [paths] if isinstance(paths, Path) else list(paths)
        if not paths:
            raise IndexCorruptError(f"no node store file for {count} nodes: rebuild the index")
        self.segments = [_Segment(p) for p in paths]
        self.path = paths[0]
        self._starts = [seg.start for seg in self.segments]
        self._kinds: dict[frozenset[str], np.ndarray] = {}
        self._lock = threading.Lock()
        expected = 0
        for seg in self.segments:
            if seg.start != expected:
                raise IndexCorruptError(
                    f"{seg.path}: starts at position {seg.start}, the segments before it end at {expected}. "
                    "The files do not belong together: rebuild the index."
                )
            expected += seg.count
        self.count = expected if count is None else count
        if expected != self.count:
            where = self.path if len(paths) == 1 else f"{self.path.parent} ({len(paths)} node-store segments)"
            raise IndexCorruptError(
                f"{where}: holds {expected} nodes, the manifest records {count}. The file does not belong to this "
                "manifest: rebuild the index."
            )

    def _segment_of(self, position: int) -> _Segment:
        return self.segments[max(0, bisect.bisect_right(self._starts, position) - 1)]

    def corrupt(self, what: str) -> IndexCorruptError:
        return self.segments[0].corrupt(what)

    def info(self, key: str) -> Any:
        """A value of the first segment's info table."""
        return self.segments[0].info(key)

    def stats(self) -> dict[str, dict[str, int]]:
        """Nodes per kind and per language, summed over the segments (a segment written before they
        were recorded is counted)."""
        total: dict[str, dict[str, int]] = {"kinds": {}, "languages": {}}
        for seg in self.segments:
            got = seg.info("stats") or {
                "kinds": dict(seg.query("SELECT kind, count(*) FROM nodes GROUP BY kind")),
                "languages": dict(
                    seg.query(
                        "SELECT coalesce(json_extract(meta, '$.language'), 'ja'), count(*) FROM nodes GROUP BY 1"
                    )
                ),
            }
            total = sum_stats(total, got)
        return total

    def __len__(self) -> int:
        return self.count

    def rows(self, positions: Sequence[int]) -> list[tuple[Any, ...]]:
        """Raw rows (pos, id, text, meta, crc, vcrc) at ``positions``, in that order, each checked against
        its own CRC; a missing or altered row is corruption."""
        if not positions:
            return []
        wanted = [int(p) for p in positions]
        by_segment: dict[int, list[int]] = {}
        for p in wanted:
            by_segment.setdefault(id(self._segment_of(p)), []).append(p)
        found: dict[int, tuple[Any, ...]] = {}
        for seg in self.segments:
            mine = by_segment.get(id(seg), [])
            for start in range(0, len(mine), 500):
                part = mine[start : start + 500]
                marks = ",".join("?" * len(part))
                for row in seg.query(f"SELECT {COLUMNS} FROM nodes WHERE pos IN ({marks})", part):
                    found[row[0]] = row
        missing = [p for p in wanted if p not in found]
        if missing:
            raise self._segment_of(missing[0]).corrupt(
                f"no node at position {missing[0]} (the manifest records {self.count} nodes)"
            )
        out = [found[p] for p in wanted]
        for row in out:
            if row_crc(row[1], row[2], row[3]) != row[4]:
                raise self._segment_of(row[0]).corrupt(
                    f"the node at position {row[0]} ({row[1]!r}) does not match its checksum"
                )
        return out

    def get(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """Records at ``positions``, in that order (see :meth:`rows`)."""
        return [record(row[1:4]) for row in self.rows(positions)]

    def positions(self, ids: Iterable[str]) -> dict[str, int]:
        """Positions of the given node ids (unknown ids are left out)."""
        ids = list(dict.fromkeys(ids))
        out: dict[str, int] = {}
        for seg in self.segments:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                out.update(seg.query(f"SELECT id, pos FROM nodes WHERE id IN ({marks})", part))
        return out

    def kind_mask(self, kinds: Iterable[str]) -> np.ndarray:
        """Boolean mask over positions: True where the node's kind is one of ``kinds`` (cached)."""
        key = frozenset(kinds)
        mask = self._kinds.get(key)
        if mask is None:
            mask = np.zeros(self.count, dtype=bool)
            marks = ",".join("?" * len(key))
            for seg in self.segments:
                pos = seg.query(f"SELECT pos FROM nodes WHERE kind IN ({marks})", sorted(key)) if key else []
                if pos:
                    mask[np.fromiter((p[0] for p in pos), dtype=np.int64, count=len(pos))] = True
            with self._lock:
                self._kinds[key] = mask
        return mask

    def iter_records(self, kind: str | None = None, batch: int = 2000) -> Iterator[dict[str, Any]]:
        """Every record in position order, ``batch`` rows at a time (memory stays flat)."""
        for seg in self.segments:
            last = -1
            while True:
                if kind is None:
                    rows = seg.query(
                        "SELECT pos, id, text, meta FROM nodes WHERE pos > ? ORDER BY pos LIMIT ?",
                        (last, batch),
                    )
                else:
                    rows = seg.query(
                        "SELECT pos, id, text, meta FROM nodes WHERE kind = ? AND pos > ? ORDER BY pos LIMIT ?",
                        (kind, last, batch),
                    )
                if not rows:
                    break
                for row in rows:
                    yield record(row[1:])
                last = rows[-1][0]

    def origins(self) -> dict[str, int]:
        """Nodes per source (its SourceInfo.path)."""
        out: dict[str, int] = {}
        for seg in self.segments:
            for origin, n in seg.query("SELECT origin, count(*) FROM nodes GROUP BY origin"):
                out[origin] = out.get(origin, 0) + n
        return out

    def deep_check(self) -> list[str]:
        """Full-scan checks for ``ragmed index verify``: SQLite's own integrity check, the positions, and
        every row's checksum, segment by segment."""
        problems = []
        for seg in self.segments:
            result = seg.query("PRAGMA integrity_check")
            if result and result[0][0] != "ok":
                problems.append(f"{seg.path}: SQLite integrity check: {result[0][0]}")
            n, lo, hi = seg.query("SELECT count(*), min(pos), max(pos) FROM nodes")[0]
            if n != seg.count or (n and (lo != seg.start or hi != seg.start + n - 1)):
                problems.append(
                    f"{seg.path}: positions {lo}..{hi} over {n} rows, the store records {seg.count} from "
                    f"{seg.start}"
                )
            last = -1
            while True:
                rows = seg.query(
                    f"SELECT {COLUMNS} FROM nodes WHERE pos > ? ORDER BY pos LIMIT 5000", (last,)
                )
                if not rows:
                    break
                bad = next((r for r in rows if row_crc(r[1], r[2], r[3]) != r[4]), None)
                if bad is not None:
                    problems.append(f"{seg.path}: the node at position {bad[0]} does not match its checksum")
                    break
                last = rows[-1][0]
        return problems

    def vector_crcs(self, start: int, stop: int) -> np.ndarray:
        """The vector checksums recorded for positions ``start..stop-1``."""
        out: list[int] = []
        for seg in self.segments:
            lo, hi = max(start, seg.start), min(stop, seg.start + seg.count)
            if lo < hi:
                rows = seg.query("SELECT vcrc FROM nodes WHERE pos >= ? AND pos < ? ORDER BY pos", (lo, hi))
                out += [r[0] for r in rows]
        return np.array(out, dtype=np.int64)

    def close(self) -> None:
        for seg in self.segments:
            seg.close()


class PositionMap(Mapping[str, int]):
    """``node id → position`` answered by the store (the old in-memory ``index.position`` dict)."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def __getitem__(self, key: str) -> int:
        found = self.store.positions([key])
        if key not in found:
            raise KeyError(key)
        return found[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.store.positions([key]))

    def __iter__(self) -> Iterator[str]:
        return (r["id"] for r in self.store.iter_records())

    def __len__(self) -> int:
        return len(self.store)


class RecordView(Sequence[dict[str, Any]]):
    """``index.records`` as a read-only sequence over the store: indexing fetches one row, iterating
    streams (nothing is held in memory)."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return self.store.get(list(range(len(self)))[i])
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.store.get([i])[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.store.iter_records()
