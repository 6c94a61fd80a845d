"""The version issue 11 measured on real unseen wording (commit 90713a2), scored by bench/normalize.py's
random split: the constants that ``real_mix``'s anchored estimate stands on.

Issue 11 gives two real figures for that version — top-1 / top-5 0.635 / 0.864 on held-out real Manbyo
wording — and none for any later one. So the least biased estimate of a later version's real figure is
that one plus the later version's gain over it *on the same held-out rows*: the gain is measured paired
(same draw, same queries), where the absolute level of one draw moves by ±0.02 with which ~470 section-A
rows it holds. This script fits that version (checked out into a temporary git worktree, imported in a
process of its own) on each random draw and prints its ``real_mix`` per draw as JSON; bench/normalize.py
keeps the figures as ``ISSUE_VERSION_MIX``. Needs the repository's history (a shallow clone lacks the
commit) and ~1 min per draw.

Usage: python bench/issue_version.py [--seeds 1,2,3,4] [--csv PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISSUE_COMMIT = "90713a2"

# Run in the child, with the old tree first on sys.path: bench/normalize.py's split and scoring (this
# tree's file, loaded by path) over the old package's loader and normalizer, which have the names it uses.
CHILD = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
import ragmed
assert ragmed.__file__.startswith(sys.argv[1]), ragmed.__file__
spec = importlib.util.spec_from_file_location("bench_normalize", sys.argv[2])
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
from pathlib import Path
from ragmed.normalize import DiseaseNormalizer
entries = bench.load_manbyo(Path(sys.argv[3]))
out = {}
for seed in map(int, sys.argv[4].split(",")):
    train, test = bench.random_split(entries, seed)
    model = DiseaseNormalizer.fit(train)
    res = bench.evaluate(
        train, test, lambda qs: [[c.standard_name for c in r] for r in model.normalize_many(qs, k=5)],
        bench.SECTIONS,
    )
    out[seed] = {"by_section": res["by_section"], "real_mix": res["real_mix"]["ours"]}
    print(json.dumps({seed: out[seed]}), file=sys.stderr, flush=True)
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4")
    ap.add_argument("--csv", type=Path, default=REPO.parent / "shared" / "data" / "manbyo_dev.csv")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "issue_version"
        made = subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ISSUE_COMMIT],
            capture_output=True,
            text=True,
        )
        if made.returncode != 0:
            sys.exit(f"cannot check out {ISSUE_COMMIT} (a shallow clone lacks it): {made.stderr.strip()}")
        try:
            run = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(tree),
                    str(REPO / "bench" / "normalize.py"),
                    str(args.csv),
                    args.seeds,
                ],
                cwd=tmp,
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    print(json.dumps({"commit": ISSUE_COMMIT, "draws": json.loads(run.stdout)}, indent=1))


if __name__ == "__main__":
    main()
