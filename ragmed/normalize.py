"""Disease-name normalization: surface form → ranked Manbyo standard names (+ ICD-10).

Similarity search alone tops out near 0.55 top-1 on unseen clinical wording, because most Manbyo
surface forms are *modifiers + a standard name* (左肘部管症候群 → 肘部管症候群) or abbreviations.
So candidates come from several sources — exact dictionary hits, char 1–3-gram TF-IDF neighbours
among ~72k surface forms, TF-IDF over the standard names themselves, and known names/surfaces that
are substrings of the query — and a gradient-boosted ranker orders them. The ranker is trained on the
dictionary itself, leave-one-fold-out: a sampled row is queried against the dictionary minus its
random tenth (neighbours, counts and affix statistics alike), which is the situation of an unseen
surface form without any count that betrays the gold label; training rows are drawn from variant
wording only (surface ≠ standard name), the distribution normalize() actually faces. Learned
statistics of which prefixes/suffixes the dictionary drops (左, 急性期, …軽度) feed the ranker, and
key features also enter relative to the best candidate of the same query. In a top-5 list the last
slot is kept for "-1" when the ranker did not place it higher (a different kind of answer).

The label space is the 標準病名 cell as written in the file, including "-1" (no standard name), which
the dictionary uses for ~20% of its wording and is ranked like any other label.
"""

from __future__ import annotations

import json
import math
import unicodedata
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import TfidfVectorizer

from ragmed.embeddings import Embedder
from ragmed.manbyo import NO_CODE, ManbyoEntry, nfkc

FORMAT_VERSION = 1
NEIGHBOURS = 30  # TF-IDF nearest surface forms whose labels become candidates
NAME_NEIGHBOURS = 15  # TF-IDF nearest standard names
MAX_SUBSTRING = 40  # longest query substring looked up in the dictionary
MAX_AFFIX = 8  # longest prefix/suffix kept in the learned drop statistics
TRAIN_QUERIES = 14000  # leave-one-fold-out training queries sampled from the dictionary
MIN_RANKER_QUERIES = 200  # fewer positives than this: a fixed scoring rule instead of a ranker
QUERY_CHUNK = 256  # terms scored together in normalize_many (256 × 72k float32 = 74 MB)
MIN_MENTION = 2  # shortest dictionary key that counts as a mention in free text


class NormalizedName(BaseModel):
    """One ranked standard name for a query."""

    rank: int
    standard_name: str  # the 標準病名 cell as in the file ("嘔気，嘔吐症" stays one unit; "-1" = none)
    standard_names: list[str]  # the cell split on "，" ([] for "-1")
    icd10: str  # ICD-10 cell of the supporting entry, "-1" when none
    level: str
    surface: str  # the dictionary surface form that best supports this name
    score: float
    node_id: str  # ManbyoEntry.node_id of that supporting entry


class Mention(BaseModel):
    """A disease mention found in free text; offsets index the ORIGINAL text."""

    start: int
    end: int
    text: str
    surface: str
    candidates: list[NormalizedName]


# Standard names are written with the JIS-level spellings of the MEDIS disease-name master, while
# clinical wording uses the full kanji (胆嚢 vs 胆のう: ~900 surfaces vs ~1,000 names in Manbyo).
ORTHOGRAPHY = {"嚢": "のう", "頸": "頚", "膣": "腟", "蔓": "つる"}


def normalize_key(text: str) -> str:
    """Matching key: NFKC (full-width ＤＭ → DM), lower case, no whitespace, name-master spellings."""
    return "".join(ORTHOGRAPHY.get(ch, ch) for ch in "".join(nfkc(text).lower().split()))


def split_names(cell: str) -> list[str]:
    return [] if cell == NO_CODE else [n for n in cell.split("，") if n]


FEATURES = [
    "is_none",
    "exact_name",
    "nn_max",
    "nn_sum",
    "nn_votes10",
    "nn_rank_inv",
    "nn_gap",
    "name_cos",
    "sub_surface",
    "sub_surface_pre",
    "sub_surface_suf",
    "sub_name",
    "sub_name_pre",
    "sub_name_suf",
    "sub_name_pre_cover",
    "sub_name_suf_cover",
    "query_in_name",
    "log_prior",
    "n_parts",
    "query_len",
    "char_recall",
    "char_precision",
    "common_prefix",
    "common_suffix",
    "q_best_sub_name",
    "q_top_sim",
    "q_exact_name_any",
    "dense_max",
    "nn_votes",
    "name_rank_inv",
    "name_gap",
]
# Per-query relative versions (value minus the best among this query's candidates): a pointwise
# classifier cannot compare candidates of one query otherwise, and top-5 is a within-query ranking.
RELATIVE = [
    "nn_max",
    "nn_sum",
    "nn_votes",
    "sub_name",
    "sub_surface",
    "name_cos",
    "char_recall",
    "common_prefix",
    "common_suffix",
    "log_prior",
]
FEATURES += [f"rel_{name}" for name in RELATIVE]
F = {name: i for i, name in enumerate(FEATURES)}
REL_SRC = np.asarray([F[name] for name in RELATIVE])
REL_DST = np.asarray([F[f"rel_{name}"] for name in RELATIVE])
TRAIN_VARIANTS = True  # training queries only from rows whose surface differs from the standard name


@dataclass
class _View:
    """The dictionary as one query may see it: everything, or (training) all but one fold.

    Leaving a whole random fold out — from neighbours, substring hits, label counts and affix counts
    alike — makes training queries look exactly like unseen wording, with no count that betrays
    the gold label (leaving out only the row itself made every count one lower for the gold).
    """

    label_counts: np.ndarray
    prefix: Counter[str]
    suffix: Counter[str]
    hidden: np.ndarray | None = None  # bool per entry: hidden from this query


@dataclass
class _Forest:
    """The trained boosted trees as flat arrays, evaluated for all trees at once with numpy.

    sklearn's per-tree predict costs ~1 ms per tree call on a busy 2-core box (OpenMP start-up);
    a single query scores ~20 candidates, so walking all trees together is ~20× faster, and the
    arrays save to a plain .npz.
    """

    feature: np.ndarray  # (trees, nodes) int
    threshold: np.ndarray  # (trees, nodes) float64; go left when x <= threshold
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64
    baseline: np.ndarray  # (1,) raw-score offset

    @classmethod
    def from_sklearn(cls, gbm: HistGradientBoostingClassifier) -> _Forest:
        trees = [pred[0].nodes for pred in gbm._predictors]
        width = max(len(t) for t in trees)

        def stack(fieldname: str, dtype: type) -> np.ndarray:
            out = np.zeros((len(trees), width), dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = t[fieldname]
            return out

        return cls(
            feature=stack("feature_idx", np.int64),
            threshold=stack("num_threshold", np.float64),
            left=stack("left", np.int64),
            right=stack("right", np.int64),
            is_leaf=stack("is_leaf", bool)
            | (np.arange(width)[None, :] >= np.asarray([len(t) for t in trees])[:, None]),
            value=stack("value", np.float64),
            baseline=np.asarray(gbm._baseline_prediction, dtype=np.float64).ravel()[:1],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            k: getattr(self, k)
            for k in ("feature", "threshold", "left", "right", "is_leaf", "value", "baseline")
        }

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        n_trees = self.feature.shape[0]
        tree = np.arange(n_trees)[:, None]
        rows = np.arange(len(X))[None, :]
        node = np.zeros((n_trees, len(X)), dtype=np.int64)
        while True:
            leaf = self.is_leaf[tree, node]
            if leaf.all():
                break
            go_left = X[rows, self.feature[tree, node]] <= self.threshold[tree, node]
            node = np.where(leaf, node, np.where(go_left, self.left[tree, node], self.right[tree, node]))
        raw = self.baseline[0] + self.value[tree, node].sum(axis=0)
        return 1.0 / (1.0 + np.exp(-raw))


@dataclass
class _Query:
    key: str
    sims: np.ndarray  # TF-IDF cosine to every entry
    name_sims: np.ndarray  # TF-IDF cosine to every label's name
    view: _View
    dense: np.ndarray | None = None
    cands: dict[int, np.ndarray] = field(default_factory=dict)


class DiseaseNormalizer:
    """Fit on Manbyo entries, then map surface forms or free text to ranked standard names."""

    def __init__(self) -> None:
        self.entries: list[ManbyoEntry] = []
        self.keys: list[str] = []
        self.labels: list[str] = []  # distinct 標準病名 cells
        self.label_id: dict[str, int] = {}
        self.entry_label = np.zeros(0, dtype=np.int32)
        self.label_entries: list[list[int]] = []
        self.surface_index: dict[str, list[int]] = defaultdict(list)
        self.name_index: dict[str, list[int]] = defaultdict(list)  # name (part or cell) key → labels
        self.prefix_counts: Counter[str] = Counter()
        self.suffix_counts: Counter[str] = Counter()
        self.vectorizer: TfidfVectorizer | None = None
        self.X: sp.csr_matrix | None = None  # entries × n-grams
        self.XT: sp.csr_matrix | None = None  # transposed, so that q @ XT is an inverted-index walk
        self.name_XT: sp.csr_matrix | None = None  # n-grams × labels
        self.ranker: _Forest | None = None
        self._view: _View | None = None
        self.entry_vectors: np.ndarray | None = None
        self.embedder: Embedder | None = None
        self.dense_trained = False  # the ranker saw the dense feature: queries need the embedder
        self.max_key_len = 0

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls,
        entries: list[ManbyoEntry],
        entry_vectors: np.ndarray | None = None,
        embedder: Embedder | None = None,
        train_queries: int = TRAIN_QUERIES,
        seed: int = 0,
    ) -> DiseaseNormalizer:
        """Index ``entries`` and train the ranker on them with leave-one-fold-out queries (~30 s CPU on 72k).

        ``entry_vectors`` (optional, aligned with ``entries``) are L2-normalized passage embeddings
        of each surface form; with an ``embedder`` for queries they add a dense-similarity feature.
        """
        if not entries:
            raise ValueError("DiseaseNormalizer.fit: no entries")
        self = cls()
        self.embedder = embedder
        self._check_vectors(entries, entry_vectors)
        self.entry_vectors = None if entry_vectors is None else np.asarray(entry_vectors, dtype=np.float32)
        self._add_entries(entries)
        keys = self.keys
        self.vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=(1, 3), lowercase=False, sublinear_tf=True, dtype=np.float32
        )
        self.vectorizer.fit(keys + [normalize_key(n) for n in self.labels if n != NO_CODE])
        self._rebuild_matrices()
        self._train_ranker(train_queries, seed)
        return self

    def _check_vectors(self, entries: list[ManbyoEntry], vectors: np.ndarray | None) -> None:
        if vectors is not None and len(vectors) != len(entries):
            raise ValueError(f"entry_vectors has {len(vectors)} rows for {len(entries)} entries")

    def _add_entries(self, entries: list[ManbyoEntry]) -> None:
        labels = list(self.entry_label)
        for entry in entries:
            idx = len(self.entries)
            self.entries.append(entry)
            key = normalize_key(entry.surface)
            self.keys.append(key)
            self.surface_index[key].append(idx)
            lab = self.label_id.get(entry.standard_name)
            if lab is None:
                lab = len(self.labels)
                self.label_id[entry.standard_name] = lab
                self.labels.append(entry.standard_name)
                self.label_entries.append([])
                if entry.standard_name != NO_CODE:
                    names = {normalize_key(entry.standard_name)}
                    names.update(normalize_key(n) for n in split_names(entry.standard_name))
                    for name in names:
                        self.name_index[name].append(lab)
            self.label_entries[lab].append(idx)
            labels.append(lab)
            pre, suf = self._affix_of(idx, lab)
            if pre is not None:
                self.prefix_counts[pre] += 1
                self.suffix_counts[suf] += 1
        self.entry_label = np.asarray(labels, dtype=np.int32)
        self.max_key_len = max(
            [self.max_key_len, *(len(k) for k in self.name_index)] + [len(k) for k in self.keys]
        )

    def _affix_of(self, idx: int, lab: int) -> tuple[str | None, str]:
        """What the dictionary dropped to get from this surface to (a part of) its standard name."""
        key = self.keys[idx]
        best: tuple[str | None, str] = (None, "")
        best_len = 0
        for name in split_names(self.labels[lab]):
            nk = normalize_key(name)
            pos = key.find(nk) if nk else -1
            if pos >= 0 and len(nk) > best_len and nk != key:
                pre, suf = key[:pos], key[pos + len(nk) :]
                if len(pre) <= MAX_AFFIX and len(suf) <= MAX_AFFIX:
                    best, best_len = (pre, suf), len(nk)
        return best

    def _rebuild_matrices(self) -> None:
        assert self.vectorizer is not None
        self.X = self.vectorizer.transform(self.keys).tocsr()
        self.XT = self.X.T.tocsr()
        self.name_XT = self.vectorizer.transform(
            ["" if n == NO_CODE else normalize_key(n) for n in self.labels]
        ).T.tocsr()

    def add(self, entries: list[ManbyoEntry], entry_vectors: np.ndarray | None = None) -> None:
        """Add entries without retraining the ranker (n-gram vocabulary stays as fitted)."""
        if not entries:
            return
        self._check_vectors(entries, entry_vectors)
        if (self.entry_vectors is None) != (entry_vectors is None):
            raise ValueError("add(): pass entry_vectors exactly when the normalizer was fitted with them")
        if entry_vectors is not None:
            self.entry_vectors = np.vstack([self.entry_vectors, np.asarray(entry_vectors, dtype=np.float32)])
        self._add_entries(entries)
        self._rebuild_matrices()
        self._view = None

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write ``directory/normalizer/`` (JSON + npz + joblib'd sklearn estimators)."""
        out = Path(directory) / "normalizer"
        out.mkdir(parents=True, exist_ok=True)
        with (out / "entries.jsonl").open("w", encoding="utf-8") as fh:
            for entry in self.entries:
                fh.write(entry.model_dump_json() + "\n")
        joblib.dump({"vectorizer": self.vectorizer}, out / "vectorizer.joblib")
        if self.ranker is not None:
            np.savez(out / "ranker.npz", **self.ranker.arrays())
        if self.entry_vectors is not None:
            np.save(out / "entry_vectors.npy", self.entry_vectors)
        manifest = {
            "format": FORMAT_VERSION,
            "entries": len(self.entries),
            "features": FEATURES,
            "dense": self.entry_vectors is not None,
            "dense_trained": self.dense_trained,
        }
        (out / "manifest.json").write_text(
            json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"
        )

    @classmethod
    def load(cls, directory: Path, embedder: Embedder | None = None) -> DiseaseNormalizer:
        src = Path(directory) / "normalizer"
        manifest_path = src / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"{manifest_path}: no saved normalizer here")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT_VERSION or manifest.get("features") != FEATURES:
            raise ValueError(f"{manifest_path}: saved by an incompatible ragmed version; rebuild the index")
        self = cls()
        self.embedder = embedder
        entries = []
        with (src / "entries.jsonl").open(encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                try:
                    entries.append(ManbyoEntry.model_validate_json(line))
                except ValueError as exc:
                    raise ValueError(f"{src / 'entries.jsonl'}: line {line_no}: {exc}") from exc
        self.vectorizer = joblib.load(src / "vectorizer.joblib")["vectorizer"]
        if (src / "ranker.npz").exists():
            with np.load(src / "ranker.npz") as arrays:
                self.ranker = _Forest(**{k: arrays[k] for k in arrays.files})
        self.dense_trained = bool(manifest.get("dense_trained"))
        if self.dense_trained and embedder is None:
            warnings.warn(
                f"{src}: the ranker was trained with dense similarity; without an embedder quality drops",
                stacklevel=2,
            )
        if manifest.get("dense"):
            self.entry_vectors = np.load(src / "entry_vectors.npy")
        self._add_entries(entries)
        self._rebuild_matrices()
        return self

    # ------------------------------------------------------------------ candidates & features
    def _sims(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """TF-IDF cosine of each key to every entry surface and to every label name."""
        assert self.vectorizer is not None and self.XT is not None and self.name_XT is not None
        Q = self.vectorizer.transform(keys)
        return (Q @ self.XT).toarray(), (Q @ self.name_XT).toarray()

    def _affix_cover(self, text: str, table: Counter[str]) -> float:
        """Share of ``text`` that splits into affixes the dictionary is known to drop (DP)."""
        if not text:
            return 1.0
        n = len(text)
        best = [0] * (n + 1)
        for i in range(1, n + 1):
            best[i] = best[i - 1]
            for j in range(max(0, i - MAX_AFFIX), i):
                if table.get(text[j:i], 0) >= 2:
                    best[i] = max(best[i], best[j] + i - j)
        return best[n] / n

    def _full_view(self) -> _View:
        if self._view is None or len(self._view.label_counts) != len(self.labels):
            counts = np.bincount(self.entry_label, minlength=len(self.labels))
            self._view = _View(counts, self.prefix_counts, self.suffix_counts)
        return self._view

    def _fold_view(self, hidden: np.ndarray) -> _View:
        counts = np.bincount(self.entry_label[~hidden], minlength=len(self.labels))
        prefix, suffix = Counter(self.prefix_counts), Counter(self.suffix_counts)
        for e in np.flatnonzero(hidden):
            pre, suf = self._affix_of(int(e), int(self.entry_label[e]))
            if pre is not None:
                prefix[pre] -= 1
                suffix[suf] -= 1
        return _View(counts, +prefix, +suffix, hidden)

    def _candidates(self, q: _Query) -> None:
        """Fill ``q.cands`` (label → feature vector) from every candidate source."""
        key, sims = q.key, q.sims.copy()
        view = q.view
        hidden = view.hidden
        if hidden is not None:
            sims[hidden] = -1.0
        nq = max(len(key), 1)

        def pcount(table: Counter[str], s: str) -> float:
            return math.log1p(table.get(s, 0))

        def feat(lab: int) -> np.ndarray | None:
            v = q.cands.get(lab)
            if v is None:
                if view.label_counts[lab] <= 0:
                    return None
                v = np.zeros(len(FEATURES), dtype=np.float32)
                q.cands[lab] = v
            return v

        # 1. TF-IDF neighbours among surface forms
        k = min(NEIGHBOURS, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        top_sim = float(sims[top[0]]) if k else 0.0
        for rank, e in enumerate(top):
            s = float(sims[e])
            if s <= 0:
                break
            v = feat(int(self.entry_label[e]))
            if v is None:
                continue
            if v[F["nn_max"]] == 0:
                v[F["nn_max"]] = s
                v[F["nn_rank_inv"]] = 1.0 / (1 + rank)
            v[F["nn_sum"]] += s
            v[F["nn_votes"]] += 1
            if rank < 10:
                v[F["nn_votes10"]] += 1
        # 2. TF-IDF neighbours among standard names
        name_sims = q.name_sims
        kn = min(NAME_NEIGHBOURS, len(name_sims))
        top_names = np.argpartition(-name_sims, kn - 1)[:kn]
        top_names = top_names[np.argsort(-name_sims[top_names])]
        top_name_sim = float(name_sims[top_names[0]]) if kn else 0.0
        for rank, lab in enumerate(top_names):
            if name_sims[lab] > 0:
                v = feat(int(lab))
                if v is not None:
                    v[F["name_rank_inv"]] = 1.0 / (1 + rank)
        # 3. dictionary keys (surface forms, names) that are substrings of the query
        for a in range(len(key)):
            for b in range(a + 1, min(len(key), a + MAX_SUBSTRING) + 1):
                sub = key[a:b]
                pre, suf = key[:a], key[b:]
                ratio = (b - a) / nq
                for e in self.surface_index.get(sub, ()):
                    if (a == 0 and b == len(key)) or (hidden is not None and hidden[e]):
                        continue
                    v = feat(int(self.entry_label[e]))
                    if v is not None and ratio > v[F["sub_surface"]]:
                        v[F["sub_surface"]] = ratio
                        v[F["sub_surface_pre"]] = pcount(view.prefix, pre)
                        v[F["sub_surface_suf"]] = pcount(view.suffix, suf)
                for lab in self.name_index.get(sub, ()):
                    v = feat(lab)
                    if v is None:
                        continue
                    if a == 0 and b == len(key):
                        v[F["exact_name"]] = 1.0
                    if ratio > v[F["sub_name"]]:
                        v[F["sub_name"]] = ratio
                        v[F["sub_name_pre"]] = pcount(view.prefix, pre)
                        v[F["sub_name_suf"]] = pcount(view.suffix, suf)
                        v[F["sub_name_pre_cover"]] = self._affix_cover(pre, view.prefix)
                        v[F["sub_name_suf_cover"]] = self._affix_cover(suf, view.suffix)
        # 4. "no standard name" is always a candidate
        none_lab = self.label_id.get(NO_CODE)
        if none_lab is not None:
            feat(none_lab)
        # per-candidate features that need the whole candidate set
        best_sub_name = max((v[F["sub_name"]] for v in q.cands.values()), default=0.0)
        any_exact = max((v[F["exact_name"]] for v in q.cands.values()), default=0.0)
        qchars = set(key)
        for lab, v in q.cands.items():
            cell = self.labels[lab]
            name = "" if cell == NO_CODE else normalize_key(cell)
            v[F["is_none"]] = float(cell == NO_CODE)
            if v[F["nn_max"]] > 0:
                v[F["nn_gap"]] = top_sim - v[F["nn_max"]]
            else:
                v[F["nn_gap"]] = 1.0
            v[F["name_cos"]] = float(name_sims[lab])
            v[F["name_gap"]] = top_name_sim - v[F["name_cos"]]
            parts = [normalize_key(p) for p in split_names(cell)]
            v[F["query_in_name"]] = max((len(key) / len(p) for p in parts if key and key in p), default=0.0)
            v[F["log_prior"]] = math.log1p(view.label_counts[lab])
            v[F["n_parts"]] = len(parts)
            v[F["query_len"]] = len(key)
            nchars = set(name.replace("，", ""))
            inter = len(qchars & nchars)
            v[F["char_recall"]] = inter / len(nchars) if nchars else 0.0
            v[F["char_precision"]] = inter / len(qchars) if qchars else 0.0
            v[F["common_prefix"]] = max((_common_prefix(key, p) / len(p) for p in parts), default=0.0)
            v[F["common_suffix"]] = max(
                (_common_prefix(key[::-1], p[::-1]) / len(p) for p in parts), default=0.0
            )
            v[F["q_best_sub_name"]] = best_sub_name
            v[F["q_top_sim"]] = top_sim
            v[F["q_exact_name_any"]] = any_exact
        if q.cands:
            block = np.vstack(list(q.cands.values()))
            best = block[:, REL_SRC].max(axis=0)
            for v in q.cands.values():
                v[REL_DST] = v[REL_SRC] - best
        if q.dense is not None and self.entry_vectors is not None:
            dsims = self.entry_vectors @ q.dense
            if hidden is not None:
                dsims[hidden] = -1.0
            for lab, v in q.cands.items():
                v[F["dense_max"]] = float(np.max(dsims[self.label_entries[lab]]))

    # ------------------------------------------------------------------ training
    def _train_ranker(self, n_queries: int, seed: int, n_folds: int = 10) -> None:
        """Leave-one-fold-out: queries from fold f see the dictionary without fold f."""
        rng = np.random.default_rng(seed)
        fold = rng.integers(0, n_folds, size=len(self.entries))
        pool = rng.permutation(len(self.entries))
        if TRAIN_VARIANTS:  # the unseen wording to be normalized is variant wording, not the names
            variant = np.asarray([e.surface != e.standard_name for e in self.entries])
            if variant[pool].sum() >= MIN_RANKER_QUERIES:
                pool = pool[variant[pool]]
        chosen = pool[: min(n_queries, len(pool))]
        rows, ys = [], []
        self.dense_trained = self.entry_vectors is not None and self.embedder is not None
        dense = self.entry_vectors if self.dense_trained else None
        for f in range(n_folds):
            mine = chosen[fold[chosen] == f]
            if not len(mine):
                continue
            view = self._fold_view(fold == f)
            mine = mine[view.label_counts[self.entry_label[mine]] > 0]  # gold still reachable
            for start in range(0, len(mine), 512):
                batch = mine[start : start + 512]
                sims, name_sims = self._sims([self.keys[i] for i in batch])
                for j, i in enumerate(batch):
                    q = _Query(
                        self.keys[i], sims[j], name_sims[j], view, dense=None if dense is None else dense[i]
                    )
                    self._candidates(q)
                    gold = int(self.entry_label[i])
                    if gold not in q.cands:
                        continue
                    for lab, v in q.cands.items():
                        rows.append(v)
                        ys.append(int(lab == gold))
        if sum(ys) < MIN_RANKER_QUERIES:
            self.ranker = None  # too few entries to learn from: fall back to a fixed scoring rule
            return
        X = np.vstack(rows)
        y = np.asarray(ys)
        gbm = HistGradientBoostingClassifier(
            max_iter=300,
            learning_rate=0.1,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=15,
            random_state=seed,
        )
        gbm.fit(X, y)
        self.ranker = _Forest.from_sklearn(gbm)

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self.ranker is not None:
            return self.ranker.predict_proba(X)
        # Fallback for tiny dictionaries: neighbours, then substring names, then the prior.
        return (
            X[:, F["nn_max"]]
            + 0.5 * X[:, F["sub_name"]]
            + 0.3 * X[:, F["exact_name"]]
            + 0.2 * X[:, F["name_cos"]]
            + 0.01 * X[:, F["log_prior"]]
            - 0.2 * X[:, F["is_none"]]
        )

    # ------------------------------------------------------------------ querying
    def normalize(self, term: str, k: int = 5) -> list[NormalizedName]:
        """Ranked distinct standard names for one surface form."""
        return self.normalize_many([term], k=k)[0]

    def normalize_many(self, terms: list[str], k: int = 5) -> list[list[NormalizedName]]:
        """Batched :meth:`normalize`: one sparse product and one ranker call for all terms."""
        if not self.entries:
            raise RuntimeError("the normalizer holds no entries")
        if len(terms) > QUERY_CHUNK:  # bound the dense (terms × entries) similarity block
            return [
                r
                for i in range(0, len(terms), QUERY_CHUNK)
                for r in self.normalize_many(terms[i : i + QUERY_CHUNK], k)
            ]
        keys = [normalize_key(t) for t in terms]
        sims, name_sims = self._sims(keys) if keys else (np.zeros((0, 0)), np.zeros((0, 0)))
        dense = None
        if self.dense_trained and self.embedder is not None and keys:
            dense = self.embedder.embed_queries(terms)
        queries = []
        view = self._full_view()
        for j, key in enumerate(keys):
            q = _Query(key, sims[j], name_sims[j], view, dense=None if dense is None else dense[j])
            if key:
                self._candidates(q)
            queries.append(q)
        blocks = [np.vstack(list(q.cands.values())) for q in queries if q.cands]
        scores = self._score(np.vstack(blocks)) if blocks else np.zeros(0)
        results, pos = [], 0
        for q in queries:
            labs = list(q.cands)
            s = scores[pos : pos + len(labs)]
            pos += len(labs)
            exact = {int(self.entry_label[e]) for e in self.surface_index.get(q.key, ())}
            # an exact dictionary hit is what the dictionary says: it goes first, with score 1.0
            order = sorted(range(len(labs)), key=lambda i: (labs[i] not in exact, -s[i]))
            extra = [lab for lab in exact if lab not in q.cands]
            ranked = [(lab, 1.0) for lab in extra] + [
                (labs[i], 1.0 if labs[i] in exact else float(s[i])) for i in order
            ]
            none_lab = self.label_id.get(NO_CODE)
            if k >= 5 and none_lab in q.cands and none_lab not in [lab for lab, _ in ranked[:k]]:
                # "-1" (the dictionary knows the wording but gives no standard name) is a different
                # kind of answer from the near-synonym names above it: the last slot goes to it.
                ranked = ranked[: k - 1] + [(none_lab, float(s[labs.index(none_lab)]))]
            out = []
            for lab, score in ranked[:k]:
                out.append(self._result(lab, score, q, len(out) + 1, lab in exact))
            results.append(out)
        return results

    def _result(self, lab: int, score: float, q: _Query, rank: int, exact: bool) -> NormalizedName:
        idx = np.asarray(self.label_entries[lab])
        if exact:
            cands = [e for e in self.surface_index[q.key] if self.entry_label[e] == lab]
            best = cands[0]
        else:
            best = int(idx[int(np.argmax(q.sims[idx]))])
            name_keys = {normalize_key(n) for n in split_names(self.labels[lab])}
            if q.sims[best] <= 0 or (q.key in name_keys):
                # no n-gram overlap: prefer the entry whose surface is the name itself
                same = [e for e in idx if self.keys[e] in name_keys]
                best = int(same[0]) if same else best
        entry = self.entries[best]
        return NormalizedName(
            rank=rank,
            standard_name=self.labels[lab],
            standard_names=split_names(self.labels[lab]),
            icd10=entry.icd10,
            level=entry.level,
            surface=entry.surface,
            score=round(float(score), 6),
            node_id=entry.node_id,
        )

    # ------------------------------------------------------------------ free text
    def find_mentions(self, text: str, k: int = 3) -> list[Mention]:
        """Longest dictionary matches (surface forms and standard names) in NFKC-normalized text."""
        norm, spans = _normalize_with_offsets(text)
        found: list[tuple[int, int, str]] = []
        i = 0
        n = len(norm)
        while i < n:
            match = None
            for j in range(min(n, i + self.max_key_len), i + MIN_MENTION - 1, -1):
                sub = norm[i:j]
                if sub in self.surface_index or sub in self.name_index:
                    if _ascii_alnum(sub[0]) and i > 0 and _ascii_alnum(norm[i - 1]):
                        continue
                    if _ascii_alnum(sub[-1]) and j < n and _ascii_alnum(norm[j]):
                        continue
                    match = j
                    break
            if match is None:
                i += 1
                continue
            found.append((i, match, norm[i:match]))
            i = match
        if not found:
            return []
        cands = self.normalize_many([text[spans[a][0] : spans[b - 1][1]] for a, b, _ in found], k=k)
        mentions = []
        for (a, b, key), cand in zip(found, cands, strict=True):
            start, end = spans[a][0], spans[b - 1][1]
            hits = self.surface_index.get(key)
            surface = self.entries[hits[0]].surface if hits else (cand[0].surface if cand else key)
            mentions.append(
                Mention(start=start, end=end, text=text[start:end], surface=surface, candidates=cand)
            )
        return mentions


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _normalize_with_offsets(text: str) -> tuple[str, list[tuple[int, int]]]:
    """NFKC + lower-case (+ :data:`ORTHOGRAPHY`) ``text``, remembering for each output char its span in the original.

    A base char and the combining marks after it (incl. half-width ﾞ/ﾟ) are normalized together so
    that ｶﾞ → ガ maps back to both original chars. Whitespace becomes a space (a mention never spans it).
    """
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and (unicodedata.combining(text[j]) or text[j] in "\uff9e\uff9f"):
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j]).lower()
        if piece.isspace():
            piece = " "
        for ch in "".join(ORTHOGRAPHY.get(c, c) for c in piece):
            out.append(ch)
            spans.append((i, j))
        i = j
    return "".join(out), spans
