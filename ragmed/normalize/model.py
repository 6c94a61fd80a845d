"""Disease-name normalization: surface form → ranked Manbyo standard names (+ ICD-10).

Unseen clinical wording is mostly *qualifiers + a name* (左肘部管症候群 → 肘部管症候群), an abbreviation
or transliteration (ＣＭＶ網膜症, 高Ｃａ血症), several names run together (発熱咳嗽 → 咳，発熱, a composite
cell), or a near-synonym. Similarity search alone ranks the near-synonyms of the wording, not the name
the dictionary assigns, so ragmed generates candidates from many sources and a learned ranker orders
them:

1. char 1–3-gram TF-IDF neighbours among the ~72k surface forms, among the standard names, and among
   *label profiles* (all surfaces of one standard name summed: which n-grams a name is written with);
   and the names nearest by a character encoder learned from the dictionary's own pairs
   (:mod:`ragmed.normalize.charenc`: which pieces stand for which — ``Ｃｌ`` for クロール, 鼻ポリープ for 鼻茸);
2. dictionary surfaces and names found inside the query (with learned statistics of the affixes the
   dictionary drops around a name: 左…, …術後, …軽度);
3. learned rewrite rules (:mod:`ragmed.normalize.rules`, from aligning every surface with its name)
   applied once or twice to the query: ``cmv`` → ``サイトメガロウイルス``, ``疼痛`` → ``痛``, ``左`` → ∅; and
   Latin-letter eponyms read as the katakana of a name (:mod:`ragmed.normalize.katakana`:
   ``Ｍｅｎｉｅｒｅ病`` → メニエール病); and numbers of degree, type or stage in their other spellings
   (:mod:`ragmed.normalize.numerals`: ``Ⅲ度房室ブロック`` → 第３度房室ブロック); and katakana ward jargon
   read as the words of the names (:mod:`ragmed.normalize.jargon`: ``マーゲンクレブス`` → 胃癌); and Latin
   clinical abbreviations read as them (:mod:`ragmed.normalize.abbreviations`: ``ＧＰＡ`` →
   多発血管炎性肉芽腫症, ``左ＭＣＡ動脈瘤`` → 左中大脳動脈瘤); and names typed as their kana reading
   (:mod:`ragmed.normalize.readings`: ``はいえん`` → 肺炎, ``胃ガン`` → 胃癌);
4. composite cells (``咳，発熱``) whose parts were found in the query, kept as the unit the dictionary
   assigns, in the order it writes them; and composite cells the dictionary does *not* hold, assembled
   from two names found apart in the query (or surfaces of exactly one name: 咳嗽 → 咳), in both orders,
   with the order the dictionary's other composites suggest as a feature;
5. Latin-letter wording matched against the WHO ICD-10 English titles of the dictionary's codes
   (:mod:`ragmed.normalize.english`: ``ＣＯＰＤ`` → J44.9 "Chronic obstructive pulmonary disease" → the
   names filed under J44.9; ``Ｔｏｘｉｃ　ｓｈｏｃｋ　ｓｙｎｄｒｏｍｅ`` → A48.3), and read as English words translated
   into the names' words, where codes disagree (:mod:`ragmed.normalize.bridge`: ``ＦＭＦ`` → "familial
   fever" → 家族 + 熱 → 家族性地中海熱, filed under E85.0, not M04.1 where ICD-10-CM has the phrase);
6. the index terms of the standard disease-name master (:mod:`ragmed.normalize.index_terms`: synonyms,
   old and lay names, abbreviations → ICD-10 codes): the query is one (テニス肘 → M7712 → 上腕骨外側上顆炎),
   holds one, or becomes one once rewritten; the names filed under the term's code are candidates.

The ranker (three bagged LightGBM LambdaRank rankers, stored as one forest walked in numpy at query
time) is trained on the dictionary itself, leave-one-fold-out: a sampled variant row is queried against
the dictionary minus its fold — neighbours, rules, affix and label counts alike — which is the
situation of unseen wording, with no count that betrays the gold. In every other fold the query's
family of variants (右X for 左X, X術後 …) leaves with it, as it does for real unseen wording, which
comes without its siblings. Two character encoders are each trained on one half of the folds: a
training query is scored by the one that never saw it (nor, where its family is hidden, its siblings),
and real wording by the mean of those two and a third trained on every row. The nameless-wording
models (:mod:`ragmed.normalize.nonename`, P(-1) from the query's n-grams) are split the same way.

``-1`` (Manbyo's "no single standard name") is a label like any other, but a different kind of answer:
it is ranked first only when no real name is credible (its ranking score carries a fixed penalty,
chosen on the grouped held-out split of bench/normalize.py), and it takes no reserved slot in a top-k
list.
Golds that occur nowhere in the dictionary (~4 % of unseen wording) are mostly two known names joined
into a composite cell the dictionary lacks; only those can be returned (assembled, step 4) — any other
answer is a cell the dictionary holds.
"""

from __future__ import annotations

import functools
import math
import string
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp

import ragmed.normalize.abbreviations as abbreviations_mod
import ragmed.normalize.bridge as bridge_mod
import ragmed.normalize.charenc as charenc_mod
import ragmed.normalize.english as english_mod
import ragmed.normalize.index_terms as terms_mod
import ragmed.normalize.jargon as jargon_mod
import ragmed.normalize.mentions as M
import ragmed.normalize.numerals as numerals_mod
import ragmed.normalize.readings as readings_mod
import ragmed.normalize.rules as R
from ragmed.errors import IndexCorruptError, InputError, NotFoundError
from ragmed.manbyo import NO_CODE, ManbyoEntry
from ragmed.normalize.charenc import CharEncoder
from ragmed.normalize.forest import FIELDS as FOREST_FIELDS
from ragmed.normalize.forest import Forest
from ragmed.normalize.katakana import KatakanaRuns, runs_of
from ragmed.normalize.labelgraph import LabelGraph
from ragmed.normalize.lookup import Lookup
from ragmed.normalize.nonename import NoneModel
from ragmed.normalize.results import Mention, NormalizedName
from ragmed.normalize.store import Reader, Writer
from ragmed.normalize.text import (
    is_latin_letter,
    normalize_key,
    normalize_with_offsets,
    split_names,
    unit_like,
    word_cuts,
)
from ragmed.normalize.tfidf import CharTfidf

T = TypeVar("T")

NEIGHBOURS = 40  # TF-IDF nearest surface forms whose labels become candidates
NAME_NEIGHBOURS = 15  # TF-IDF nearest standard names
PROFILE_NEIGHBOURS = 25  # TF-IDF nearest label profiles
ENCODER_NEIGHBOURS = 10  # nearest standard names by the learned character encoder
COMPOSITES_PER_PART = 4  # most frequent composite cells tried for a name found in the query
NEW_COMPOSITES = 4  # composite cells the dictionary does not hold, assembled from two names in the query
PAIR_SINGLES = 3  # the strongest single names by the fixed rule, paired into composites whether or not spelt
TRAIN_NEGATIVES = 30  # hardest wrong candidates kept per training query …
EASY_SAMPLE = 0.5  # … and this share of the others (bounds the ranker's fit time; 15 and 0.25 gave
# top-5 0.003 less over three splits × two ranker seeds, top-1 0.002 less, and ~10 s less fit)
MAX_SUBSTRING = 40  # longest query substring looked up in the dictionary
MIN_RULE_COUNT = 2  # a rewrite rule seen once is an accident of one row
RULES_PER_LHS = 3  # most frequent replacements tried for one piece of the query
SINGLE_REWRITES = 24  # rewrites of the query tried (one rule each) …
PAIR_REWRITES = 8  # … and pairs of the best this many
REPEAT_COUNT = 50  # evidence given to "a piece written twice is written once"
NUMERAL_COUNT = 50  # … and to "Ⅲ度 is 第３度" (a number in another spelling)
JARGON_COUNT = 50  # … and to "マーゲン is 胃" (ward jargon)
ABBREVIATION_COUNT = 50  # … and to "ＭＣＡ is 中大脳動脈" (a clinical abbreviation)
READING_COUNT = 50  # … and to "ハイエン is 肺炎" (a name's kana reading)
RUN_HOLDERS = 20  # most frequent names holding a katakana run read from a Latin word, as candidates
NAMES_PER_CODE = 6  # most frequent standard names filed under an index term's code, as candidates
TRAIN_QUERIES = 20000  # leave-one-fold-out training queries sampled from the dictionary
MIN_RANKER_QUERIES = 200  # fewer positives than this: a fixed scoring rule instead of a ranker
MIN_MENTION = 2  # shortest dictionary key that counts as a mention anywhere in free text
# (a one-character key — 咳, 痰, 熱, 癌 — counts only where MeCab reads it as a noun by itself: 熱 of
# 熱が出た, not of 解熱剤 or 平熱)
RANKER_PARAMS = {  # LightGBM LambdaRank: candidates are ordered within each query, which is the task
    "objective": "lambdarank",
    "n_estimators": 200,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "lambdarank_truncation_level": 10,  # top-1 and top-5 are what is read
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
# candidates of a query the whole ranker scores, per answer asked for (4 × k: 20 for a top 5), chosen
# by the head of its trees (forest.HEAD_TREES of each bagged ranker); the rest keep no score. Of the
# random split's held-out queries (four draws), 99.7–99.9 % get the same top 5 as with every tree on
# every candidate, `real_mix` the same to 0.0001; the trees' walk takes ~1/3 less time
FULL_SCORE_PER_ANSWER = 4
RANKERS = 3  # bagged: the mean of rankers that differ by their row and feature samples (+0.004–0.007 top-1)
QUERY_CHUNK = 256  # terms scored together in normalize_many (bounds the terms × entries block)
FAMILY_STEM = 0.5  # same name, this char n-gram cosine: a sibling variant, hidden with its query
FAMILY_DUPLICATE = 0.8  # any name, this cosine: a near-duplicate, hidden with its query
FAMILY_EVERY = 2  # … in every other fold: unseen wording comes with or without its siblings
# taken off the ranking score of "-1": on the grouped split 0.5 costs 0.006 of top-1 over all golds
# against none and gains 0.015 on named golds ("-1" first for 10.6 % of them instead of 14 %)
NONE_PENALTY = 0.5


FEATURES = [
    "is_none",
    "n_parts",
    "log_prior",
    "query_len",
    "q_latin",
    "nn_max",
    "nn_sum",
    "nn_votes",
    "nn_votes10",
    "nn_rank_inv",
    "nn_gap",
    "name_cos",
    "name_rank_inv",
    "name_gap",
    "exact_name",
    "prof_cos",
    "prof_rank_inv",
    "prof_gap",
    "sub_surface",
    "sub_surface_pre",
    "sub_surface_suf",
    "sub_name",
    "sub_name_pre",
    "sub_name_suf",
    "sub_name_pre_cover",
    "sub_name_suf_cover",
    "rw_exact_name",
    "rw_exact_surface",
    "rw_exact_count",
    "rw_sub",
    "rw_sub_count",
    "rw_steps",
    "swap_exact",
    "comp_matched",
    "comp_frac",
    "comp_cover",
    "comp_in_order",
    "comp_new",
    "comp_part_prior",
    "comp_position",
    "en_acronym",
    "en_phrase",
    "query_in_name",
    "char_recall",
    "char_precision",
    "bigram_dice",
    "common_prefix",
    "common_suffix",
    "edit_sim",
    "nn_edit",
    "nn_explained",
    "nn_len_ratio",
    "q_top_sim",
    "q_best_sub_name",
    "q_exact_name_any",
    "q_top_prof",
    "q_best_rw",
    "q_n_cands",
]
# Per-query relative versions (value minus the best among this query's candidates): a pointwise
# classifier cannot compare candidates of one query otherwise, and top-k is a within-query ranking.
RELATIVE = [
    "nn_max",
    "nn_sum",
    "nn_votes",
    "name_cos",
    "prof_cos",
    "sub_name",
    "sub_surface",
    "rw_exact_name",
    "rw_sub",
    "comp_cover",
    "char_recall",
    "bigram_dice",
    "common_prefix",
    "common_suffix",
    "edit_sim",
    "nn_edit",
    "nn_explained",
    "log_prior",
]
FEATURES += [f"rel_{name}" for name in RELATIVE]
# the character encoders' features come last: a normalizer saved before them (whose ranker reads only
# the columns above) still loads, and scores as it did
FEATURES += ["enc_cos", "enc_rank_inv", "enc_gap", "q_enc_top", "rel_enc_cos"]
RELATIVE += ["enc_cos"]
# … then the disease-name master's index terms (index_terms): the query is a term, a rewrite of it is,
# or it holds one; share: 1 / the names filed under the term's code
FEATURES += ["ix_exact", "ix_rw", "ix_sub", "ix_share", "q_ix_exact"]
# … then P(-1 | the query's n-grams) by the nameless-wording model (nonename), one value per query
FEATURES += ["q_none_lr"]
# … then a Latin run read as a medical abbreviation whose expansion names the label's title (english)
FEATURES += ["en_expansion"]
# … then a composite of two of the strongest single names (_paired_composites): 1 / (1 + the weaker
# name's place among them), and how far the fixed rule scores that name below the strongest
FEATURES += ["comp_pair", "comp_pair_gap"]
# … then the English bridge (bridge): share of the query's words the name translates, share of the
# name's words that translate one, and 1 / (1 + the name's place among the bridge's names)
FEATURES += ["br_cover", "br_prec", "br_rank_inv"]
# … then a clinical abbreviation read (abbreviations): 1 / steps where the rewrite that read one is the
# name, and the share of the query a name inside such a rewrite covers — apart from the learned rules'
# rewrites, since a table's reading is right or wrong in its own way (ＤＭ: 糖尿病 or 皮膚筋炎)
FEATURES += ["ab_exact", "ab_sub"]
# … then the names holding a katakana word a Latin word of the query reads as (katakana): the reading's
# similarity, and 1 / the names holding that word (Ｐａｓｔｅｕｒｅｌｌａ肺炎 → パスツレラ症)
FEATURES += ["ka_held", "ka_share"]
F = {name: i for i, name in enumerate(FEATURES)}
REL_SRC = np.asarray([F[name] for name in RELATIVE])
REL_DST = np.asarray([F[f"rel_{name}"] for name in RELATIVE])
ENTRY_COLUMNS = ("surface", "reading", "icd10", "level", "freq")


@dataclass
class _View:
    """The dictionary as one query sees it: everything, or (training) all but one fold (and the
    families of variants of that fold's queries, in every other fold).

    Leaving a whole random fold out — from neighbours, substring hits, rules, label, affix and profile
    counts alike — makes training queries look like unseen wording, with no count that betrays the
    gold (leaving out only the row itself made every count one lower for the gold).
    """

    label_counts: np.ndarray
    prefix: Counter[str]
    suffix: Counter[str]
    rule_counts: np.ndarray
    prof_XT: sp.csr_matrix  # n-grams × labels, l2-normalized label profiles
    hidden: np.ndarray | None = None  # bool per entry: hidden from this query
    drops: dict[str, int] = field(default_factory=dict)  # pieces the dictionary deletes, with counts
    encoders: tuple[int, ...] = ()  # the character encoders this query is scored by (their mean)
    none_models: tuple[int, ...] = ()  # the nameless-wording models it is scored by (their mean)


@dataclass
class _EncoderSims:
    """One query's cosine to labels' names by the character encoders of its view (their mean).

    A fit-time batch of queries takes one product with every label (``dense``); a query scored by all
    encoders finds its nearest names through the label graph and scores those and its candidates
    exactly (``vectors`` · each label's encodings), never reading all ~27,000 labels' encodings."""

    vectors: list[np.ndarray]  # per encoder of the view: the query's encoding
    encodings: list[np.ndarray]  # … every label's encoding (labels × OUT)
    dense: np.ndarray | None = None  # the mean cosine to every label, where a batch computed it
    graph: LabelGraph | None = None

    def at(self, labels: list[int] | np.ndarray) -> np.ndarray:
        """The mean cosine to each of ``labels``."""
        if self.dense is not None:
            return self.dense[labels]
        labels = np.asarray(labels, dtype=np.int64)
        return sum(enc[labels] @ vec for enc, vec in zip(self.encodings, self.vectors, strict=True)) / len(
            self.vectors
        )

    def top(self, k: int, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` labels of nearest names among those with entries in view, nearest first (ties by
        label), and their cosines."""
        if self.graph is not None:
            query = np.concatenate(self.vectors) / len(self.vectors)
            labels = self.graph.search(query, k)
        else:
            labels = np.arange(len(counts))
        labels = labels[counts[labels] > 0]
        return _top(labels, self.at(labels), k)


@dataclass
class _Query:
    key: str
    sims: np.ndarray  # TF-IDF cosine to every entry
    name_sims: np.ndarray  # … to every label's name
    prof_sims: np.ndarray  # … to every label's profile
    view: _View
    enc: _EncoderSims | None = None  # character-encoder cosine to labels' names
    none_p: float = 0.0  # P(-1) by the nameless-wording models (0 without them)
    cands: dict[int, np.ndarray] = field(default_factory=dict)
    nearest: dict[int, int] = field(default_factory=dict)  # label → its most similar visible entry
    # composite cells the dictionary does not hold (candidate ids from len(labels) on): id → part labels
    new: dict[int, tuple[int, int]] = field(default_factory=dict)


@dataclass
class _Rewrite:
    text: str
    spans: list[tuple[int, int]]  # for each char of text: its span in the query key
    count: int  # evidence: the least frequent rule applied
    steps: int
    read: bool = False  # a clinical abbreviation read is among its steps (abbreviations)


class DiseaseNormalizer:
    """Fit on Manbyo entries, then map surface forms or free text to ranked standard names."""

    def __init__(self) -> None:
        # entries, column-wise (the 72k-row dictionary loads without building 72k objects)
        self.cols: dict[str, list[str]] = {c: [] for c in ENTRY_COLUMNS}
        self.rows: list[int] = []
        self.source_of: list[int] = []
        self.sources: list[str] = []
        self.keys: list[str] = []
        self.entry_label = np.zeros(0, dtype=np.int32)
        # labels (distinct 標準病名 cells)
        self.labels: list[str] = []
        self.label_id: dict[str, int] = {}
        self.label_parts: list[list[str]] = []  # normalized keys of the cell's names
        # lookups
        self.surface_index = Lookup()  # surface key → entries
        self.name_index = Lookup()  # name (part or whole cell) key → labels
        self.name_pairs: list[tuple[str, int]] = []  # what name_index was built from (stored)
        self.part_composites: dict[str, list[int]] = defaultdict(list)  # part key → composite labels
        # learned statistics
        self.prefix_counts: Counter[str] = Counter()
        self.suffix_counts: Counter[str] = Counter()
        self.rule_lhs: list[str] = []
        self.rule_rhs: list[str] = []
        self.rule_id: dict[tuple[str, str], int] = {}
        self.rule_counts = np.zeros(0, dtype=np.int64)
        self.rules_by_lhs: dict[str, list[int]] = {}
        self.entry_rules: list[list[int]] = []  # fit time only: rules each entry contributed
        self.entry_affix: list[tuple[str, str] | None] = []  # fit time only
        # matrices
        self.tfidf: CharTfidf | None = None
        self.XT: sp.csr_matrix | None = None  # n-grams × entries
        self.name_XT: sp.csr_matrix | None = None  # n-grams × labels
        self.prof_XT: sp.csr_matrix | None = None  # n-grams × labels
        self.ranker: Forest | None = None
        # character encoders (charenc) trained on two halves of the dictionary, and per encoder every
        # label's name encoded (labels × OUT): a training query is scored by the half it is not in
        self.encoders: list[CharEncoder] = []
        self.label_enc: list[np.ndarray] = []
        # … and the same transposed, contiguous (OUT × labels), built on first use: a query's product
        # with it reads memory in order, 0.8 ms against 1.7 ms for the row-major one (~27,000 labels)
        self._label_enc_t: dict[int, np.ndarray] = {}
        # … and all encoders' side by side in an HNSW graph, for a query's nearest names (labelgraph):
        # built by fit, or read on first use from a save's bytes (memory-mapped until then)
        self._graph: LabelGraph | None = None
        self._graph_data: np.ndarray | None = None
        self._graph_lock = threading.Lock()
        # P(-1 | n-grams), one model per half of the folds like the encoders (nonename)
        self.none_models: list[NoneModel] = []
        self.english: english_mod.EnglishTitles | None = None
        self.bridge: bridge_mod.Bridge | None = None  # English words → the names' words; off in older saves
        self.katakana: KatakanaRuns | None = None
        self.numerals = False  # numbers of degree/type/stage respelt (Ⅲ度 → 第３度); off in older saves
        self.jargon = False  # katakana ward jargon read as Japanese (アッペ → 虫垂炎); off in older saves
        self.abbreviations = False  # Latin clinical abbreviations read (ＧＰＡ → 多発血管炎性肉芽腫症); ditto
        self.pairs = False  # the strongest names paired into composites; off in older saves
        self.index_terms: terms_mod.IndexTerms | None = None
        self.readings: readings_mod.Readings | None = None  # kana readings → names; off in older saves
        self._code_names: dict[str, list[int]] | None = None  # ICD-10 code → single-name labels
        self.none_penalty = NONE_PENALTY
        self._view: _View | None = None
        self._label_order: tuple[np.ndarray, np.ndarray] | None = None
        self._heads: dict[str, int] | None = None
        self._lone_keys: frozenset[str] | None = None
        self._abbr_keys: frozenset[str] | None = None
        self._name_head_len: dict[str, int] | None = None
        self._run_holders: dict[str, tuple[tuple[int, ...], int]] | None = None
        self._master_readings: list[tuple[str, str]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls, entries: list[ManbyoEntry], train_queries: int = TRAIN_QUERIES, seed: int = 0
    ) -> DiseaseNormalizer:
        """Index ``entries``, learn rewrite rules from them and train the ranker on them."""
        if not entries:
            raise InputError("DiseaseNormalizer.fit: no dictionary entries to learn from")
        self = cls()
        self._add_entries(entries)
        self.tfidf = CharTfidf.fit(self.keys + [normalize_key(n) for n in self.labels if n != NO_CODE])
        self._rebuild_matrices()
        self.english = self._english_titles()
        self.bridge = self._bridge()
        self.katakana = self._katakana_runs()
        self.numerals = True
        self.jargon = True
        self.abbreviations = True
        self.pairs = True
        terms = terms_mod.read_package()
        self.index_terms = terms_mod.IndexTerms(terms) if terms else None
        self.readings = readings_mod.Readings.build(
            self._reading_pairs(entries), self._written_keys(), self._single_names(range(len(self.labels)))
        )
        self._train_ranker(train_queries, seed)
        if self.encoders:
            self._label_graph()  # real wording's nearest names are found through it
        return self

    def _reading_pairs(self, entries: list[ManbyoEntry]) -> list[tuple[str, str]]:
        """(reading, written form): the names' readings from the disease-name master (read once per
        process), then the dictionary's own 出現形よみ where the release fills it."""
        if self._master_readings is None:
            self._master_readings = readings_mod.read_package() or []
        return self._master_readings + [(e.reading, e.surface) for e in entries if e.reading]

    def _single_names(self, labs: Iterable[int]) -> list[str]:
        """The keys of the names of labels ``labs`` (each name of a composite cell on its own), once each,
        in the labels' order: the readings' words keep the first name's spelling where two tie, so a set's
        order would make the same file fit differently in another process."""
        return list(dict.fromkeys(part for lab in labs for part in self.label_parts[lab] if part != NO_CODE))

    def _written_keys(self) -> set[str]:
        return set(self.keys) | {normalize_key(n) for n in self.labels if n != NO_CODE}

    def _katakana_runs(self) -> KatakanaRuns:
        return KatakanaRuns.build(normalize_key(n) for n in self.labels if n != NO_CODE)

    def _holders(self) -> dict[str, tuple[tuple[int, ...], int]]:
        """Katakana run → (the most frequent labels whose name holds it, how many hold it); built on
        first use. A Latin word read as a run names the organism or eponym, and the dictionary's name is
        often a longer one holding it: Ｐａｓｔｅｕｒｅｌｌａ肺炎 is filed under パスツレラ症, Ｗｉｌｌｉ症候群
        under プラダー・ウイリー症候群."""
        if self._run_holders is None:
            held: dict[str, list[int]] = defaultdict(list)
            for lab, name in enumerate(self.labels):
                if name != NO_CODE:
                    for run in set(runs_of(normalize_key(name))):
                        held[run].append(lab)
            counts = self._label_counts()
            self._run_holders = {
                run: (tuple(sorted(labs, key=lambda lab: -counts[lab])[:RUN_HOLDERS]), len(labs))
                for run, labs in held.items()
            }
        return self._run_holders

    def _english_titles(self) -> english_mod.EnglishTitles:
        """The WHO ICD-10 English titles of the codes each standard name is filed under, and the finer
        ICD-10-CM terms that fall under those codes (fit time only: both packages parse XML on import)."""
        from ragmed.index.glossary import abbreviation_expansions, cm_terms, english_titles, icd10_codes

        codes: dict[int, list[str]] = defaultdict(list)
        for lab, cell in zip(self.entry_label.tolist(), self.cols["icd10"], strict=True):
            if len(self.label_parts[lab]) == 1:  # a title names one disease (not "-1", not a composite)
                for code in icd10_codes(cell):
                    if code not in codes[lab]:
                        codes[lab].append(code)
        wanted = {c for cs in codes.values() for c in cs}
        titles = {code: [title] for code, title in english_titles(wanted).items()}
        for code, terms in cm_terms(wanted).items():
            have = titles.setdefault(code, [])
            have += [t for t in terms if t not in have]
        counts = self._label_counts()
        return english_mod.EnglishTitles.build(
            ((lab, cs, int(counts[lab])) for lab, cs in codes.items()), titles, abbreviation_expansions()
        )

    def _name_words(self, labels: range) -> list[list[str]]:
        """The Japanese words of each single-name label's name (none for ``-1`` and composite cells)."""
        return [
            bridge_mod.japanese_words(self.labels[lab])
            if len(self.label_parts[lab]) == 1 and self.labels[lab] != NO_CODE
            else []
            for lab in labels
        ]

    def _bridge(self) -> bridge_mod.Bridge:
        """English words → Japanese words, learned from ICD-10's Japanese and English titles and from each
        standard name against the English titles of its codes (fit time only, as the titles)."""
        from ragmed.index.glossary import abbreviation_expansions

        assert self.english is not None
        units = self._name_words(range(len(self.labels)))
        pairs = list(_icd_title_pairs())
        for words, labs in zip(self.english.titles, self.english.labels, strict=True):
            pairs += [(words, units[lab]) for lab in labs]
        return bridge_mod.Bridge.fit(pairs, units, abbreviation_expansions())

    def _label_of(self, cell: str) -> int:
        lab = self.label_id.get(cell)
        if lab is None:
            lab = len(self.labels)
            self.label_id[cell] = lab
            self.labels.append(cell)
            parts = [normalize_key(n) for n in split_names(cell)]
            self.label_parts.append(parts)
            self._index_names(lab, parts)
        return lab

    def _index_names(self, lab: int, parts: list[str]) -> None:
        """A label is found by each of its names and by the whole cell (its names joined by ",")."""
        if not parts:
            return
        # dicts, not sets, for their order: the same file fits to the same saved files in any process
        for name in dict.fromkeys([*parts, ",".join(parts)]):
            self.name_index.append(name, lab)
            self.name_pairs.append((name, lab))
        if len(parts) > 1:
            for part in dict.fromkeys(parts):
                self.part_composites[part].append(lab)

    def _add_entries(self, entries: list[ManbyoEntry]) -> None:
        labels = list(self.entry_label)
        tally = self.rule_counts.tolist()
        self.part_composites = defaultdict(list, self.part_composites)  # loaded: a plain dict
        if len(self.rule_id) != len(self.rule_lhs):  # a loaded normalizer: the rule lookup is rebuilt
            self.rule_id = {
                (lhs, rhs): i for i, (lhs, rhs) in enumerate(zip(self.rule_lhs, self.rule_rhs, strict=True))
            }
        source_id = {s: i for i, s in enumerate(self.sources)}
        for entry in entries:
            idx = len(self.keys)
            for col in ENTRY_COLUMNS:
                self.cols[col].append(getattr(entry, col))
            self.rows.append(entry.row)
            if entry.source not in source_id:
                source_id[entry.source] = len(self.sources)
                self.sources.append(entry.source)
            self.source_of.append(source_id[entry.source])
            key = normalize_key(entry.surface)
            self.keys.append(key)
            self.surface_index.append(key, idx)
            lab = self._label_of(entry.standard_name)
            labels.append(lab)
            self._learn_from(idx, lab, tally)
        self.entry_label = np.asarray(labels, dtype=np.int32)
        self.rule_counts = np.asarray(tally, dtype=np.int64)
        self.rules_by_lhs = {}  # rebuilt on demand
        self._label_order = None
        self._view = None
        self._heads = self._lone_keys = self._name_head_len = self._abbr_keys = None
        self._run_holders = None

    def _learn_from(self, idx: int, lab: int, tally: list[int]) -> None:
        """Affix and rewrite-rule counts of one entry (kept per entry so a fold can be taken out)."""
        parts = self.label_parts[lab]
        key = self.keys[idx]
        found = R.affix(key, parts)
        self.entry_affix.append(found)
        if found is not None:
            self.prefix_counts[found[0]] += 1
            self.suffix_counts[found[1]] += 1
        ids: list[int] = []
        if len(parts) == 1 and key not in parts:  # composite cells would teach "drop the other name"
            for lhs, rhs in R.edits(key, parts[0]):
                rid = self.rule_id.get((lhs, rhs))
                if rid is None:
                    rid = len(self.rule_lhs)
                    self.rule_id[(lhs, rhs)] = rid
                    self.rule_lhs.append(lhs)
                    self.rule_rhs.append(rhs)
                    tally.append(0)
                tally[rid] += 1
                ids.append(rid)
        self.entry_rules.append(ids)

    def _rule_table(self) -> dict[str, list[int]]:
        if not self.rules_by_lhs and len(self.rule_lhs):
            table: dict[str, list[int]] = defaultdict(list)
            order = np.argsort(-self.rule_counts, kind="stable")
            for rid in order[self.rule_counts[order] >= MIN_RULE_COUNT]:
                rid = int(rid)
                if len(table[self.rule_lhs[rid]]) < 2 * RULES_PER_LHS:  # spare ones for fold views
                    table[self.rule_lhs[rid]].append(rid)
            self.rules_by_lhs = dict(table)
        return self.rules_by_lhs

    def _label_matrix(self, visible: np.ndarray | None = None) -> sp.csr_matrix:
        n = len(self.keys)
        data = np.ones(n, dtype=np.float32) if visible is None else visible.astype(np.float32)
        return sp.csr_matrix((data, (self.entry_label, np.arange(n))), shape=(len(self.labels), n))

    def _profiles(self, X: sp.csr_matrix, name_X: sp.csr_matrix, visible: np.ndarray | None) -> sp.csr_matrix:
        """n-grams × labels: every visible surface of a label and its name, summed and l2-normalized."""
        P = (self._label_matrix(visible) @ X + name_X).tocsr()
        norms = np.sqrt(np.asarray(P.multiply(P).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sp.diags((1.0 / norms).astype(np.float32)) @ P).T.tocsr()

    def _rebuild_matrices(self) -> None:
        assert self.tfidf is not None
        X = self.tfidf.transform(self.keys)
        name_X = self.tfidf.transform(["" if n == NO_CODE else normalize_key(n) for n in self.labels])
        self._X, self._name_X = X, name_X  # kept for fold views during fit
        self.XT = X.T.tocsr()
        self.name_XT = name_X.T.tocsr()
        self.prof_XT = self._profiles(X, name_X, None)

    def add(self, entries: list[ManbyoEntry]) -> None:
        """Add entries without retraining the ranker (the n-gram vocabulary stays as fitted)."""
        if not entries:
            return
        first = len(self.labels)  # the labels from here on are new
        self._add_entries(entries)
        self._rebuild_matrices()
        self._X = self._name_X = None  # only fold views (fit) need them
        if self.katakana is not None:  # new names' katakana can be read into, too
            self.katakana = self._katakana_runs()
        self._code_names = None  # … and found by the index terms' codes
        if self.readings is not None:  # … and typed as their reading
            self.readings.extend(
                self._reading_pairs(entries),
                self._written_keys(),
                self._single_names(range(first, len(self.labels))),
            )
        if self.bridge is not None:  # … and by the English bridge
            self.bridge.extend(self._name_words(range(len(self.bridge.units), len(self.labels))))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path) -> None:
        """Write ``directory/normalizer/``: JSON and .npy only (nothing that runs code when read)."""
        assert self.tfidf is not None and self.XT is not None
        assert self.name_XT is not None and self.prof_XT is not None
        out = Writer(Path(directory) / "normalizer")
        out.json(
            "entries",
            {
                "sources": self.sources,
                "labels": self.labels,
                "label_parts": self.label_parts,
                "keys": self.keys,
                "rows": self.rows,
                "source_of": self.source_of,
                **self.cols,
            },
        )
        out.array("entry_label", self.entry_label)
        out.json(
            "learned",
            {
                "rule_lhs": self.rule_lhs,
                "rule_rhs": self.rule_rhs,
                "prefix": dict(self.prefix_counts),
                "suffix": dict(self.suffix_counts),
            },
        )
        out.array("rule_counts", self.rule_counts)
        out.array("vocabulary", self.tfidf.vocabulary)
        # the lookups as lists and small objects: loading them is dict(zip(...)) and JSON parsing in C,
        # where rebuilding them key by key in Python took most of the load time
        out.json(
            "lookups",
            {
                "surface_many": self.surface_index.many,
                "name_keys": [name for name, _ in self.name_pairs],
                "name_labels": [lab for _, lab in self.name_pairs],
                "name_many": self.name_index.many,
                "part_composites": self.part_composites,
            },
        )
        out.array("idf", self.tfidf.idf)
        out.csr("XT", self.XT)
        out.csr("name_XT", self.name_XT)
        out.csr("prof_XT", self.prof_XT)
        if self.ranker is not None:
            for name, arr in self.ranker.arrays().items():
                out.array(f"ranker.{name}", arr)
        for i, encoder in enumerate(self.encoders):
            encoder.save(out, f"encoder{i}")
            out.array(f"encoder{i}.labels", self._label_encodings(i))
        graph = self._label_graph() if self.encoders else None
        if graph is not None:
            out.array("encoders.graph", graph.to_array())
        for i, none_model in enumerate(self.none_models):
            none_model.save(out, f"none{i}")
        if self.english is not None:
            out.json(
                "english",
                {
                    "titles": self.english.titles,
                    "labels": self.english.labels,
                    "expansions": {
                        abbr: [list(p) for p in hits] for abbr, hits in self.english.expansions.items()
                    },
                },
            )
        if self.bridge is not None:
            out.json(
                "bridge",
                {
                    "translations": self.bridge.translations,
                    "units": self.bridge.units,
                    "expansions": self.bridge.expansions,
                },
            )
        if self.katakana is not None:
            out.json("katakana", {"runs": self.katakana.runs})
        if self.index_terms is not None:
            out.json("index_terms", {"terms": self.index_terms.terms})
        if self.readings is not None:
            out.json("readings", self.readings.to_json())
        out.manifest(
            {
                "entries": len(self.keys),
                "labels": len(self.labels),
                "features": FEATURES,
                "ranker": self.ranker is not None,
                "ranker_head": self.ranker.head if self.ranker is not None else 0,
                "encoders": len(self.encoders),
                "label_graph": len(graph) if graph is not None else 0,
                "none_models": len(self.none_models),
                "english": self.english is not None,
                "bridge": self.bridge is not None,
                "katakana": self.katakana is not None,
                "numerals": self.numerals,
                "jargon": self.jargon,
                "abbreviations": self.abbreviations,
                "pairs": self.pairs,
                "index_terms": self.index_terms is not None,
                "readings": self.readings is not None,
                "none_penalty": self.none_penalty,
            }
        )

    @classmethod
    def load(cls, directory: Path) -> DiseaseNormalizer:
        """Read ``directory/normalizer/`` (arrays memory-mapped; no pickle is ever read)."""
        src = Path(directory) / "normalizer"
        if not src.is_dir():
            raise NotFoundError(f"{src}: no saved disease normalizer here (build the index with --manbyo)")
        store = Reader(src)
        manifest = store.manifest
        saved = manifest.get("features")
        if not isinstance(saved, list) or saved != FEATURES[: len(saved)]:
            # features were only ever appended since the encoders: a ranker saved before them reads the
            # same columns; one saved before that (features inserted among the others) would not
            raise IndexCorruptError(
                f"{src / 'manifest.json'}: saved by a ragmed with other ranker features; "
                "rebuild the index (ragmed index build …)"
            )
        self = cls()
        data = store.json("entries")
        try:
            self.sources, self.labels, self.keys = data["sources"], data["labels"], data["keys"]
            label_parts = data["label_parts"]
            self.rows, self.source_of = data["rows"], data["source_of"]
            self.cols = {c: data[c] for c in ENTRY_COLUMNS}
        except KeyError as exc:
            raise IndexCorruptError(f"{src / 'entries.json'}: no field {exc}; rebuild the index") from exc
        self.entry_label = np.asarray(store.array("entry_label", mmap=False))
        n = len(self.keys)
        if not (
            len(self.entry_label) == n == manifest.get("entries")
            and all(len(v) == n for v in self.cols.values())
        ):
            raise IndexCorruptError(
                f"{src / 'entries.json'}: entry counts disagree with the manifest; rebuild the index"
            )
        learned = store.json("learned")
        self.rule_lhs, self.rule_rhs = learned["rule_lhs"], learned["rule_rhs"]
        self.rule_counts = np.asarray(store.array("rule_counts", mmap=False))
        self.prefix_counts, self.suffix_counts = Counter(learned["prefix"]), Counter(learned["suffix"])
        try:
            self.tfidf = CharTfidf(store.array("vocabulary"), store.array("idf", mmap=False))
        except ValueError as exc:
            raise IndexCorruptError(f"{src / 'vocabulary.npy'}: {exc}; rebuild the index") from exc
        self.XT, self.name_XT, self.prof_XT = store.csr("XT"), store.csr("name_XT"), store.csr("prof_XT")
        if self.XT.shape != (self.tfidf.size, n) or self.prof_XT.shape[1] != len(self.labels):
            raise IndexCorruptError(f"{src}: matrix shapes disagree with the entries; rebuild the index")
        if manifest.get("ranker"):
            self.ranker = Forest(
                **{name: store.array(f"ranker.{name}", mmap=False) for name in FOREST_FIELDS},
                head=int(manifest.get("ranker_head", 0)),  # saves before the head walk every tree
            )
            if self.ranker.feature[~self.ranker.is_leaf].max(initial=0) >= len(saved):
                raise IndexCorruptError(
                    f"{src / 'ranker.feature.npy'}: the ranker reads features its manifest does not "
                    "list; rebuild the index (ragmed index build …)"
                )
        for i in range(int(manifest.get("encoders", 0))):
            self.encoders.append(CharEncoder.load(store, f"encoder{i}"))
            self.label_enc.append(store.array(f"encoder{i}.labels"))
            if self.label_enc[-1].shape != (len(self.labels), len(self.encoders[-1].out_b)):
                raise IndexCorruptError(
                    f"{src / f'encoder{i}.labels.npy'}: not one encoding per label; rebuild the index"
                )
        if self.encoders and manifest.get("label_graph"):  # older saves answer by the exact product
            if manifest["label_graph"] != len(self.labels):
                raise IndexCorruptError(
                    f"{src / 'encoders.graph.npy'}: not one graph node per label; rebuild the index"
                )
            self._graph_data = store.array("encoders.graph")
        for i in range(int(manifest.get("none_models", 0))):
            self.none_models.append(NoneModel.load(store, f"none{i}", self.tfidf.size))

        def part(name: str, make: Callable[[Any], T]) -> T | None:
            """The object ``make`` builds from the saved ``name.json`` (None where the manifest says the
            save has none); anything malformed in it is a corrupt index."""
            if not manifest.get(name):
                return None
            data = store.json(name)
            try:
                return make(data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise IndexCorruptError(f"{src / f'{name}.json'}: {exc!r}; rebuild the index") from exc

        def english(data: Any) -> english_mod.EnglishTitles:
            expansions = {  # absent from normalizers saved before the abbreviation list
                str(abbr): [(int(lab), float(v)) for lab, v in hits]
                for abbr, hits in data.get("expansions", {}).items()
            }
            return english_mod.EnglishTitles(data["titles"], data["labels"], expansions)

        self.english = part("english", english)
        self.bridge = part("bridge", lambda data: bridge_mod.Bridge.from_json(data, len(self.labels)))
        if manifest.get("katakana"):
            data = store.json("katakana")
            runs = data.get("runs") if isinstance(data, dict) else None
            if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
                raise IndexCorruptError(f"{src / 'katakana.json'}: no list of runs; rebuild the index")
            self.katakana = KatakanaRuns(runs)
        self.numerals = bool(manifest.get("numerals", False))
        self.jargon = bool(manifest.get("jargon", False))
        self.abbreviations = bool(manifest.get("abbreviations", False))
        self.pairs = bool(manifest.get("pairs", False))
        self.index_terms = part("index_terms", lambda data: terms_mod.IndexTerms(data["terms"]))
        self.readings = part("readings", readings_mod.Readings.from_json)
        self.none_penalty = float(manifest.get("none_penalty", NONE_PENALTY))
        if len(label_parts) != len(self.labels):
            raise IndexCorruptError(f"{src / 'entries.json'}: label counts disagree; rebuild the index")
        self.label_parts = label_parts
        self.label_id = {cell: lab for lab, cell in enumerate(self.labels)}
        lookups = store.json("lookups")
        try:
            self.surface_index = Lookup.from_pairs(self.keys, range(n), lookups["surface_many"])
            self.name_pairs = list(zip(lookups["name_keys"], lookups["name_labels"], strict=True))
            self.name_index = Lookup.from_pairs(
                lookups["name_keys"], lookups["name_labels"], lookups["name_many"]
            )
            self.part_composites = lookups["part_composites"]
        except (KeyError, ValueError) as exc:
            raise IndexCorruptError(f"{src / 'lookups.json'}: {exc!r}; rebuild the index") from exc
        return self

    # ------------------------------------------------------------------ views
    def _label_counts(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Entries per label (every label, zeros included), over all entries or the ``rows`` mask."""
        labels = self.entry_label if rows is None else self.entry_label[rows]
        return np.bincount(labels, minlength=len(self.labels))

    def _full_view(self) -> _View:
        if self._view is None or len(self._view.label_counts) != len(self.labels):
            assert self.prof_XT is not None
            counts = self._label_counts()
            self._view = _View(counts, self.prefix_counts, self.suffix_counts, self.rule_counts, self.prof_XT)
            self._view.drops = self._drops(self.rule_counts)
            self._view.encoders = tuple(range(len(self.encoders)))
            self._view.none_models = tuple(range(len(self.none_models)))
        return self._view

    def _drops(self, rule_counts: np.ndarray) -> dict[str, int]:
        return {
            self.rule_lhs[rid]: int(rule_counts[rid])
            for rid in np.flatnonzero(rule_counts >= MIN_RULE_COUNT)
            if not self.rule_rhs[rid]
        }

    def _fold_view(self, hidden: np.ndarray) -> _View:
        counts = self._label_counts(~hidden)
        prefix, suffix = Counter(self.prefix_counts), Counter(self.suffix_counts)
        rule_counts = self.rule_counts.copy()
        for e in np.flatnonzero(hidden):
            found = self.entry_affix[e]
            if found is not None:
                prefix[found[0]] -= 1
                suffix[found[1]] -= 1
            for rid in self.entry_rules[e]:
                rule_counts[rid] -= 1
        prof = self._profiles(self._X, self._name_X, ~hidden)
        return _View(counts, +prefix, +suffix, rule_counts, prof, hidden, self._drops(rule_counts))

    def _queries(self, keys: list[str], view: _View) -> list[_Query]:
        """One query per key, with the TF-IDF cosine to every entry surface, label name, label profile
        and the character encoders' cosine to every label's name."""
        assert self.tfidf is not None and self.XT is not None and self.name_XT is not None
        Q = self.tfidf.transform(keys)
        vectors = [self.encoders[i].encode(keys) for i in view.encoders]
        encodings = [self._label_encodings(i) for i in view.encoders]
        graph, dense = None, None
        if view.encoders and view.hidden is None and len(view.encoders) == len(self.encoders):
            graph = self._label_graph(build=False)  # real wording: all encoders, through the graph
        if view.encoders and graph is None:
            dense = sum(v @ self._label_encodings_t(i) for i, v in zip(view.encoders, vectors, strict=True))
            dense /= len(view.encoders)
        none_p = np.zeros(len(keys))
        if view.none_models:
            none_p = sum(self.none_models[i].proba(Q) for i in view.none_models) / len(view.none_models)
        sims, name_sims = (Q @ self.XT).toarray(), (Q @ self.name_XT).toarray()
        prof_sims = (Q @ view.prof_XT).toarray()
        out = []
        for j, key in enumerate(keys):
            q = _Query(key, sims[j], name_sims[j], prof_sims[j], view)
            if view.encoders:
                q.enc = _EncoderSims(
                    [v[j] for v in vectors], encodings, None if dense is None else dense[j], graph
                )
            q.none_p = float(none_p[j])
            out.append(q)
        return out

    def _label_text(self, lab: int) -> str:
        return ",".join(self.label_parts[lab])  # "-1" has no names: it encodes to zeros

    def _label_encodings(self, i: int) -> np.ndarray:
        """Encoder ``i``'s encoding of every label's name (labels added since it was computed are
        encoded now: ``add`` brings new names)."""
        done = len(self.label_enc[i])
        if done < len(self.labels):
            new = self.encoders[i].encode([self._label_text(lab) for lab in range(done, len(self.labels))])
            self.label_enc[i] = np.vstack([self.label_enc[i], new])
        return self.label_enc[i]

    def _label_encodings_t(self, i: int) -> np.ndarray:
        """:meth:`_label_encodings` transposed into a contiguous (OUT × labels) array, kept until labels
        are added."""
        have = self._label_enc_t.get(i)
        if have is None or have.shape[1] != len(self.labels):
            have = self._label_enc_t[i] = np.ascontiguousarray(self._label_encodings(i).T)
        return have

    def _label_graph(self, build: bool = True) -> LabelGraph | None:
        """The graph over every label's encodings by all encoders, linked up to the labels added since.

        ``build=False`` (queries): ``None`` where no graph was built or saved — a normalizer saved before
        the graph answers by the exact product rather than pay ~5 s a process to build one; saving it
        again (``index add``) writes one."""
        with self._graph_lock:  # the API's threads may ask first at once: one reads (or links) the graph
            if self._graph is None and self._graph_data is not None:
                self._graph, self._graph_data = LabelGraph.from_array(self._graph_data), None
            if self._graph is None and not build:
                return None
            if self._graph is not None and len(self._graph) == len(self.labels):
                return self._graph
            encodings = [self._label_encodings(i) for i in range(len(self.encoders))]
            if self._graph is None:
                self._graph = LabelGraph.build(encodings)
            else:
                self._graph.add([enc[len(self._graph) :] for enc in encodings])
            return self._graph

    def _label_entries(self, lab: int) -> np.ndarray:
        if self._label_order is None:
            order = np.argsort(self.entry_label, kind="stable")
            bounds = np.searchsorted(self.entry_label[order], np.arange(len(self.labels) + 1))
            self._label_order = (order, bounds)
        order, bounds = self._label_order
        return order[bounds[lab] : bounds[lab + 1]]

    # ------------------------------------------------------------------ candidates & features
    def _rewrites(self, key: str, view: _View) -> list[_Rewrite]:
        """The query rewritten: by the learned rules (the best single rewrites), by the fixed readings
        (eponyms, numbers, ward jargon, clinical abbreviations), then by pairs of the best rules and the
        abbreviations read."""
        table = self._rule_table()
        found = []
        cut = word_cuts(key, is_latin_letter)
        for a in range(len(key)):
            for b in range(a + 1, min(len(key), a + R.MAX_LHS) + 1):
                rids = table.get(key[a:b])
                if not rids or cut[a] or cut[b]:
                    continue
                used = 0
                for rid in rids:
                    count = int(view.rule_counts[rid])
                    if count >= MIN_RULE_COUNT:
                        found.append((count, a, b, self.rule_rhs[rid], False))
                        used += 1
                        if used == RULES_PER_LHS:
                            break
        found.sort(key=lambda x: -x[0])
        found = found[:SINGLE_REWRITES]
        out = []
        for a, b in _repeats(key):  # a name written twice (胃癌胃癌, 肺炎・肺炎) is that name once
            spans = [(i, i + 1) for i in range(a)] + [(i, i + 1) for i in range(b, len(key))]
            out.append(_Rewrite(key[:a] + key[b:], spans, REPEAT_COUNT, 1))
        for count, a, b, rhs, _ in found:
            out.append(_replaced(key, a, b, rhs, count))
        if self.katakana is not None:  # Latin words read as the katakana of a name (Ｍｅｎｉｅｒｅ病)
            for a, b, run, score in self.katakana.rewrites(key):
                out.append(_replaced(key, a, b, run, int(score)))
        if self.numerals:  # a number of degree/type/stage in its other spellings (Ⅲ度 → 第３度)
            for a, b, rhs in numerals_mod.rewrites(key):
                out.append(_replaced(key, a, b, rhs, NUMERAL_COUNT))
        if self.jargon:  # ward jargon in katakana read as the names' words (マーゲンクレブス → 胃癌)
            for a, b, rhs in jargon_mod.rewrites(key):
                out.append(_replaced(key, a, b, rhs, JARGON_COUNT))
        best = found[:PAIR_REWRITES]
        if self.abbreviations:  # Latin clinical abbreviations as the names' words (ＭＣＡ → 中大脳動脈),
            read = [(ABBREVIATION_COUNT, a, b, rhs, True) for a, b, rhs in abbreviations_mod.rewrites(key)]
            for _, a, b, rhs, _ in read:
                out.append(_replaced(key, a, b, rhs, ABBREVIATION_COUNT, read=True))
            best = best + read  # … and paired with the learned rules (左 → ∅) like one of them
        if self.readings is not None:  # a name typed as its kana reading (はいえん → 肺炎), read like a table
            for a, b, rhs in self.readings.rewrites(key):
                out.append(_replaced(key, a, b, rhs, READING_COUNT, read=True))
            for words in self.readings.word_rewrites(key):  # … or a word of one among kanji (すい臓がん)
                out.append(_replaced_all(key, words, READING_COUNT, read=True))
        for i, (c1, a1, b1, rhs1, r1) in enumerate(best):
            for c2, a2, b2, rhs2, r2 in best[i + 1 :]:
                if b1 <= a2 or b2 <= a1:
                    pieces = sorted([(a1, b1, rhs1), (a2, b2, rhs2)])
                    out.append(_replaced_all(key, pieces, min(c1, c2), 2, r1 or r2))
        return [r for r in out if r.text and r.text != key]

    def _candidates(self, q: _Query) -> None:
        """Fill ``q.cands`` (label → feature vector) from every candidate source."""
        key, view = q.key, q.view
        sims = q.sims.copy()
        hidden = view.hidden
        if hidden is not None:
            sims[hidden] = -1.0
        nq = max(len(key), 1)
        counts = view.label_counts

        def feat(lab: int) -> np.ndarray | None:
            v = q.cands.get(lab)
            if v is None:
                if counts[lab] <= 0:
                    return None
                v = np.zeros(len(FEATURES), dtype=np.float32)
                q.cands[lab] = v
            return v

        def visible(e: int) -> bool:
            return hidden is None or not hidden[e]

        # 1. TF-IDF neighbours among surface forms, names and label profiles
        top = _top_positive(sims, NEIGHBOURS)
        top_sim = float(sims[top[0]]) if len(top) else 0.0
        for rank, e in enumerate(top):
            s = float(sims[e])
            v = feat(int(self.entry_label[e]))
            if v is None:
                continue
            if v[F["nn_max"]] == 0:
                v[F["nn_max"]] = s
                v[F["nn_rank_inv"]] = 1.0 / (1 + rank)
                q.nearest[int(self.entry_label[e])] = int(e)
            v[F["nn_sum"]] += s
            v[F["nn_votes"]] += 1
            if rank < 10:
                v[F["nn_votes10"]] += 1
        tops = {}
        for name, arr, n_top, feature in (
            ("name", q.name_sims, NAME_NEIGHBOURS, "name_rank_inv"),
            ("prof", q.prof_sims, PROFILE_NEIGHBOURS, "prof_rank_inv"),
        ):
            best = _top_positive(arr, n_top)
            tops[name] = float(arr[best[0]]) if len(best) else 0.0
            for rank, lab in enumerate(best):
                v = feat(int(lab))
                if v is not None:
                    v[F[feature]] = 1.0 / (1 + rank)
        # 1b. the names the character encoders put nearest (the pieces it learned: Ｃｌ → クロール)
        tops["enc"] = 0.0
        if q.enc is not None:
            best, best_sims = q.enc.top(ENCODER_NEIGHBOURS, counts)
            tops["enc"] = float(best_sims[0]) if len(best) else -1.0
            for rank, lab in enumerate(best):
                v = feat(int(lab))
                if v is not None:
                    v[F["enc_rank_inv"]] = 1.0 / (1 + rank)
        # index terms matched: evidence for the names under their codes that other sources propose
        later: list[tuple[list[int], str, float, float]] = []
        # 2. dictionary keys (surface forms, names) that are substrings of the query
        matched_parts: dict[str, list[tuple[int, int]]] = defaultdict(list)
        subs = set()
        cut = word_cuts(key, is_latin_letter)
        for a in range(len(key)):
            for b in range(a + 1, min(len(key), a + MAX_SUBSTRING) + 1):
                if cut[a] or cut[b]:  # Ｐ (歯周炎) is no mention inside ＡＰＳ
                    continue
                sub = key[a:b]
                subs.add(sub)
                pre, suf = key[:a], key[b:]
                ratio = (b - a) / nq
                if self.index_terms is not None and b - a >= MIN_MENTION:  # 2c. index terms
                    codes = self.index_terms.get(sub)
                    if codes and a == 0 and b == len(key):
                        self._term_evidence(codes, feat, "ix_exact", 1.0, NAMES_PER_CODE, later)
                    elif codes:
                        self._term_evidence(codes, feat, "ix_sub", ratio, NAMES_PER_CODE // 2, None)
                surface_labs = set()
                for e in self.surface_index.get(sub, ()):
                    if (a == 0 and b == len(key)) or not visible(e):
                        continue
                    surface_labs.add(int(self.entry_label[e]))
                    v = feat(int(self.entry_label[e]))
                    if v is not None and ratio > v[F["sub_surface"]]:
                        v[F["sub_surface"]] = ratio
                        v[F["sub_surface_pre"]] = math.log1p(view.prefix.get(pre, 0))
                        v[F["sub_surface_suf"]] = math.log1p(view.suffix.get(suf, 0))
                labs = self.name_index.get(sub)
                if not labs and len(surface_labs) == 1 and b - a >= MIN_MENTION:
                    # a surface of exactly one single-name label stands for that name in composites
                    # (発熱咳嗽: 咳嗽 is written for 咳 → 咳，発熱)
                    parts = self.label_parts[surface_labs.pop()]
                    if len(parts) == 1:
                        matched_parts[parts[0]].append((a, b))
                if not labs:
                    continue
                matched_parts[sub].append((a, b))
                for lab in labs:
                    v = feat(lab)
                    if v is None:
                        continue
                    if a == 0 and b == len(key):
                        v[F["exact_name"]] = 1.0
                    if ratio > v[F["sub_name"]]:
                        v[F["sub_name"]] = ratio
                        v[F["sub_name_pre"]] = math.log1p(view.prefix.get(pre, 0))
                        v[F["sub_name_suf"]] = math.log1p(view.suffix.get(suf, 0))
                        v[F["sub_name_pre_cover"]] = R.affix_cover(pre, view.prefix)
                        v[F["sub_name_suf_cover"]] = R.affix_cover(suf, view.suffix)
        # 2b. Latin letters: acronyms and English phrases of the ICD-10 titles (ＣＯＰＤ → J44.9 → names)
        latin = any(is_latin_letter(ch) for ch in key)
        if self.english is not None and latin:
            for lab, (acronym, phrase, expansion) in self.english.match(key).items():
                v = feat(lab)
                if v is not None:
                    v[F["en_acronym"]] = acronym
                    v[F["en_phrase"]] = phrase
                    v[F["en_expansion"]] = expansion
        # 2d. … and read as English words translated into the names' words (ＦＭＦ → 家族性地中海熱)
        if self.bridge is not None and latin:
            for rank, (lab, (cover, precision)) in enumerate(self.bridge.match(key).items()):
                v = feat(lab)
                if v is not None:
                    v[F["br_cover"]] = cover
                    v[F["br_prec"]] = precision
                    v[F["br_rank_inv"]] = 1.0 / (1 + rank)
        # 2e. … and read as the katakana word of a name: the names holding that word
        if self.katakana is not None and latin:
            holders = self._holders()
            for _, _, run, similarity in self.katakana.rewrites(key):
                labs, n_held = holders.get(run, ((), 0))
                for lab in labs:
                    v = feat(lab)
                    if v is not None and similarity / 100 > v[F["ka_held"]]:
                        v[F["ka_held"]] = similarity / 100
                        v[F["ka_share"]] = 1.0 / n_held
        # 3. the query rewritten by learned rules: names and surfaces it then is, or contains
        heads = self._name_heads()
        for rw in self._rewrites(key, view):
            text, weight = rw.text, math.log1p(rw.count)
            if self.index_terms is not None and (codes := self.index_terms.get(text)):
                self._term_evidence(codes, feat, "ix_rw", 1.0 / rw.steps, NAMES_PER_CODE, later)
            for lab in self.name_index.get(text, ()):
                v = feat(lab)
                if v is not None and rw.read:
                    v[F["ab_exact"]] = max(v[F["ab_exact"]], 1.0 / rw.steps)
                if v is not None and (1.0 / rw.steps, weight) > (
                    v[F["rw_exact_name"]],
                    v[F["rw_exact_count"]],
                ):
                    v[F["rw_exact_name"]] = 1.0 / rw.steps
                    v[F["rw_exact_count"]] = weight
                    v[F["rw_steps"]] = rw.steps
            for e in self.surface_index.get(text, ()):
                if visible(e):
                    v = feat(int(self.entry_label[e]))
                    if v is not None:
                        v[F["rw_exact_surface"]] = max(v[F["rw_exact_surface"]], 1.0 / rw.steps)
                        v[F["rw_exact_count"]] = max(v[F["rw_exact_count"]], weight)
            n = len(text)
            cut = word_cuts(text, is_latin_letter)
            for a in range(n):
                longest = heads.get(text[a : a + 2], 0)  # no name starts here: no span from a is one
                for b in range(a + 2, min(n, a + MAX_SUBSTRING, a + longest) + 1):
                    sub = text[a:b]
                    if sub in subs or (a == 0 and b == n) or cut[a] or cut[b]:
                        continue
                    labs = self.name_index.get(sub)
                    if not labs:
                        continue
                    span = (rw.spans[a][0], rw.spans[b - 1][1])
                    matched_parts[sub].append(span)
                    ratio = (span[1] - span[0]) / nq
                    for lab in labs:
                        v = feat(lab)
                        if v is not None and rw.read and ratio > v[F["ab_sub"]]:
                            v[F["ab_sub"]] = ratio
                        if v is not None and ratio > v[F["rw_sub"]]:
                            v[F["rw_sub"]] = ratio
                            v[F["rw_sub_count"]] = weight
        # 3b. word order: the query's two halves swapped (膵炎急性 → 急性膵炎, 骨折大腿骨頚部)
        for cut in range(MIN_MENTION, len(key) - MIN_MENTION + 1):
            for lab in self.name_index.get(key[cut:] + key[:cut], ()):
                v = feat(lab)
                if v is not None:
                    v[F["swap_exact"]] = 1.0
        # 4. composite cells whose names were found in the query
        comp_hits: dict[int, set[str]] = defaultdict(set)
        frequent: set[int] = set()
        for part in matched_parts:
            labs = self.part_composites.get(part, ())
            for lab in labs:
                comp_hits[lab].add(part)
            if labs:
                visible_labs = [lab for lab in labs if counts[lab] > 0]
                visible_labs.sort(key=lambda lab: -counts[lab])
                frequent.update(visible_labs[:COMPOSITES_PER_PART])
        for lab, hit in comp_hits.items():
            parts = self.label_parts[lab]
            if len(hit) < 2 and lab not in q.cands and lab not in frequent:
                continue
            v = feat(lab)
            if v is None:
                continue
            covered = set()
            first = []
            for part in parts:
                spans = matched_parts.get(part)
                if spans:
                    for a, b in spans:
                        covered.update(range(a, b))
                    first.append(min(a for a, _ in spans))
            v[F["comp_matched"]] = len(hit)
            v[F["comp_frac"]] = len(hit) / len(set(parts))
            v[F["comp_cover"]] = len(covered) / nq
            v[F["comp_in_order"]] = float(len(first) > 1 and first == sorted(first))
        # 4b. composite cells the dictionary does not hold: two of its names found apart in the query
        self._new_composites(q, matched_parts)
        # 5. "no standard name" is always a candidate
        none_lab = self.label_id.get(NO_CODE)
        if none_lab is not None:
            feat(none_lab)
        # 6. an index term's evidence for the names under its code beyond the most frequent, where
        # another source proposed them (Ｃｏｗｄｅｎ病 is a term of Q85.8, whose ten names include カウデン病)
        for names, feature, value, share in later:
            for lab in names:
                v = q.cands.get(lab)
                if v is not None:
                    v[F[feature]] = max(v[F[feature]], value)
                    v[F["ix_share"]] = max(v[F["ix_share"]], share)
        self._candidate_features(q, top_sim, tops)

    def _names_of_codes(self, codes: list[str]) -> list[int]:
        """The single-name labels filed under ``codes``, most frequent first (built once, after ``add``
        again: an index term names a code, the dictionary files names under it)."""
        if self._code_names is None:
            filed: dict[str, Counter[int]] = defaultdict(Counter)
            for lab, cell in zip(self.entry_label.tolist(), self.cols["icd10"], strict=True):
                if len(self.label_parts[lab]) == 1:
                    for code in cell.split(","):
                        if code.strip():
                            filed[terms_mod.code_key(code)][lab] += 1
            self._code_names = {c: [lab for lab, _ in n.most_common()] for c, n in filed.items()}
        if len(codes) == 1:
            return self._code_names.get(codes[0], [])
        return list(dict.fromkeys(lab for c in codes for lab in self._code_names.get(c, ())))

    def _term_evidence(
        self,
        codes: list[str],
        feat: Callable[[int], np.ndarray | None],
        feature: str,
        value: float,
        limit: int,
        later: list[tuple[list[int], str, float, float]] | None,
    ) -> None:
        """An index term matched: the names filed under its codes get ``feature`` (the first ``limit``
        of them become candidates if they are not already; the rest get it in ``later`` if another
        source makes them candidates)."""
        names = self._names_of_codes(codes)
        if not names:
            return
        share = 1.0 / len(names)
        if later is not None and len(names) > limit:
            later.append((names[limit:], feature, value, share))
        for lab in names[:limit]:
            v = feat(lab)
            if v is not None:
                v[F[feature]] = max(v[F[feature]], value)
                v[F["ix_share"]] = max(v[F["ix_share"]], share)

    def _single_label(self, name: str, counts: np.ndarray) -> int | None:
        """The visible label whose cell is exactly the one name ``name`` (the most frequent such)."""
        labs = [
            lab
            for lab in self.name_index.get(name, ())
            if self.label_parts[lab] == [name] and counts[lab] > 0
        ]
        return max(labs, key=lambda lab: counts[lab]) if labs else None

    def _position(self, lab: int, counts: np.ndarray) -> float | None:
        """Where the name of single-name label ``lab`` stands in the composite cells that hold it (0 = first,
        1 = last; weighted by their visible rows): the dictionary writes a composite's names in an order of
        its own, which is not the order of the wording (膵尾部癌腹膜播種 → 腹膜播種，膵尾部癌)."""
        name = self.label_parts[lab][0]
        total = weight = 0.0
        for comp in self.part_composites.get(name, ()):
            n = float(counts[comp])
            parts = self.label_parts[comp]
            if n > 0 and len(parts) > 1:
                total += n * parts.index(name) / (len(parts) - 1)
                weight += n
        return total / weight if weight else None

    def _new_composites(self, q: _Query, matched_parts: dict[str, list[tuple[int, int]]]) -> None:
        """Composite cells the dictionary does not hold (~4 % of unseen wording has such a gold): two names
        of single-name labels found apart in the query, the pairs that cover most of it (胆管炎発熱 →
        胆管炎，発熱). The dictionary writes a composite's names in an order of its own (膵尾部癌腹膜播種 →
        腹膜播種，膵尾部癌), so both orders are candidates, with the order its other composites suggest."""
        counts = q.view.label_counts
        found = []
        for part, spans in matched_parts.items():
            lab = self._single_label(part, counts)
            if lab is not None:
                # a one-character name counts where a rewrite produced it (咳嗽 → 咳), not inside a word
                found += [
                    (a, b, lab) for a, b in set(spans) if b - a >= MIN_MENTION or len(part) >= MIN_MENTION
                ]
        pairs = sorted(
            (
                (b1 - a1 + b2 - a2, -a1, l1, l2)
                for a1, b1, l1 in found
                for a2, b2, l2 in found
                if b1 <= a2 and l1 != l2
            ),
            reverse=True,
        )
        seen: set[frozenset[int]] = set()
        nq = max(len(q.key), 1)
        for cover, _, l1, l2 in pairs:
            if len(q.new) >= NEW_COMPOSITES:
                break
            if frozenset((l1, l2)) in seen:
                continue
            seen.add(frozenset((l1, l2)))
            if self._held(l1, l2, counts):
                continue  # the dictionary holds this composite: step 4 ranks it
            for v in self._assemble(q, l1, l2).values():
                v[F["comp_matched"]] = 2
                v[F["comp_frac"]] = 1.0
                v[F["comp_cover"]] = cover / nq

    def _assemble(self, q: _Query, l1: int, l2: int) -> dict[int, np.ndarray]:
        """The composite of single-name labels ``l1`` and ``l2`` (``l1`` written first in the query) as two
        new candidates, one per order, with the order the dictionary's other composites suggest."""
        counts = q.view.label_counts
        p1, p2 = self._position(l1, counts), self._position(l2, counts)
        agree = 0.0 if p1 is None or p2 is None else p2 - p1  # > 0: its composites write l1 first
        made = {}
        for first, second, sign in ((l1, l2, 1.0), (l2, l1, -1.0)):
            cid = len(self.labels) + len(q.new)
            q.new[cid] = (first, second)
            v = np.zeros(len(FEATURES), dtype=np.float32)
            q.cands[cid] = made[cid] = v
            v[F["comp_new"]] = 1.0
            v[F["comp_in_order"]] = float(sign > 0)
            v[F["comp_position"]] = sign * agree
            v[F["comp_part_prior"]] = math.log1p(min(counts[l1], counts[l2]))
        return made

    def _held(self, l1: int, l2: int, counts: np.ndarray) -> list[int]:
        """The visible composite cells of single-name labels ``l1`` and ``l2``, in either order."""
        cells = (f"{self.labels[l1]}，{self.labels[l2]}", f"{self.labels[l2]}，{self.labels[l1]}")
        return [lab for lab in map(self.label_id.get, cells) if lab is not None and counts[lab] > 0]

    def _paired_composites(self, q: _Query) -> list[int]:
        """Composites of two of the strongest single names by the fixed rule, whether or not the query
        spells either (大球性高色素性貧血 → 大球性貧血，高色素性貧血; 癌性胸腹水 → 癌性胸水，癌性腹水; 肺血栓 →
        肺塞栓症，肺梗塞): ~1 % of unseen wording has such a gold, out of reach of :meth:`_new_composites`.
        A composite the dictionary holds joins the candidates as itself; a query that is a name gets none.
        Returns the candidates added."""
        if q.key in self.name_index:
            return []
        counts = q.view.label_counts
        singles = [lab for lab in q.cands if lab < len(self.labels) and len(self.label_parts[lab]) == 1]
        if len(singles) < 2:
            return []
        fb = self._fallback_scores(np.vstack([q.cands[lab] for lab in singles]))
        top = np.argsort(-fb)[:PAIR_SINGLES]
        added: list[int] = []
        for x in range(len(top)):
            for y in range(x + 1, len(top)):
                l1, l2 = singles[top[x]], singles[top[y]]
                if self._place(q.key, l2) < self._place(q.key, l1):
                    l1, l2 = l2, l1
                labs = self._held(l1, l2, counts)
                if labs:
                    added += [lab for lab in labs if lab not in q.cands]
                    vs = [q.cands.setdefault(lab, np.zeros(len(FEATURES), dtype=np.float32)) for lab in labs]
                elif assembled := [cid for cid, parts in q.new.items() if set(parts) == {l1, l2}]:
                    vs = [q.cands[cid] for cid in assembled]
                else:
                    made = self._assemble(q, l1, l2)
                    added += list(made)
                    vs = list(made.values())
                for v in vs:  # each composite belongs to one pair: set once
                    v[F["comp_pair"]] = 1.0 / (1 + y)
                    v[F["comp_pair_gap"]] = float(fb[top[0]] - fb[top[y]])
        return added

    def _place(self, key: str, lab: int) -> float:
        """Where single-name label ``lab``'s name sits in ``key``: the mean place of the key's characters
        that the name holds (the end if none)."""
        name = set(self.label_parts[lab][0])
        places = [i for i, ch in enumerate(key) if ch in name]
        return sum(places) / len(places) if places else float(len(key))

    def cell(self, lab: int, q: _Query | None = None) -> str:
        """The 標準病名 cell of candidate ``lab`` (a label, or a composite the query assembled)."""
        if lab < len(self.labels):
            return self.labels[lab]
        assert q is not None
        return "，".join(self.labels[part] for part in q.new[lab])

    def _candidate_features(self, q: _Query, top_sim: float, tops: dict[str, float]) -> None:
        key, view = q.key, q.view
        qchars = set(key)
        qbigrams = {key[i : i + 2] for i in range(len(key) - 1)}
        latin = float(any(is_latin_letter(ch) for ch in key))
        enc_of: dict[int, float] = {}
        if q.enc is not None:  # every candidate's (and assembled composite's parts') cosine at once
            labs = {lab for lab in q.cands if lab < len(self.labels)} | {p for n in q.new.values() for p in n}
            enc_of = dict(zip(labs, q.enc.at(list(labs)).tolist(), strict=True))

        def enc_cos(lab: int) -> float:
            if lab not in enc_of:  # a part of a composite paired after the first fill
                assert q.enc is not None
                enc_of[lab] = float(q.enc.at([lab])[0])
            return enc_of[lab]

        def fill(lab: int, v: np.ndarray) -> None:
            new = q.new.get(lab)
            parts = self.label_parts[lab] if new is None else [self.label_parts[part][0] for part in new]
            v[F["is_none"]] = float(not parts)
            v[F["n_parts"]] = len(parts)
            v[F["log_prior"]] = math.log1p(view.label_counts[lab]) if new is None else 0.0
            v[F["query_len"]] = len(key)
            v[F["q_latin"]] = latin
            v[F["nn_gap"]] = top_sim - v[F["nn_max"]] if v[F["nn_max"]] > 0 else 1.0
            v[F["name_cos"]] = float(q.name_sims[lab]) if new is None else 0.0
            v[F["name_gap"]] = tops["name"] - v[F["name_cos"]]
            v[F["prof_cos"]] = float(q.prof_sims[lab]) if new is None else 0.0
            v[F["prof_gap"]] = tops["prof"] - v[F["prof_cos"]]
            if q.enc is not None:
                # an assembled composite: its two names' mean
                enc = enc_cos(lab) if new is None else float(np.mean([enc_cos(part) for part in new]))
                v[F["enc_cos"]] = enc
                v[F["enc_gap"]] = tops["enc"] - enc
            near = q.nearest.get(lab)
            if near is not None:
                other = self.keys[near]
                v[F["nn_edit"]] = 1.0 - R.levenshtein(key, other) / max(len(key), len(other), 1)
                v[F["nn_explained"]] = R.explained(key, other, view.drops, view.prefix, view.suffix)
                v[F["nn_len_ratio"]] = len(other) / max(len(key), 1)
            if not parts:
                return
            v[F["query_in_name"]] = max((len(key) / len(p) for p in parts if key and key in p), default=0.0)
            nchars = set("".join(parts))
            inter = len(qchars & nchars)
            v[F["char_recall"]] = inter / len(nchars) if nchars else 0.0
            v[F["char_precision"]] = inter / len(qchars) if qchars else 0.0
            dice = prefix = suffix = edit = 0.0
            for p in parts:
                pb = {p[i : i + 2] for i in range(len(p) - 1)}
                if pb or qbigrams:
                    dice = max(dice, 2 * len(pb & qbigrams) / (len(pb) + len(qbigrams)))
                prefix = max(prefix, _common_prefix(key, p) / len(p))
                suffix = max(suffix, _common_prefix(key[::-1], p[::-1]) / len(p))
                if len(p) <= 40 and len(key) <= 40:
                    edit = max(edit, 1.0 - R.levenshtein(key, p) / max(len(key), len(p)))
            v[F["bigram_dice"]] = dice
            v[F["common_prefix"]] = prefix
            v[F["common_suffix"]] = suffix
            v[F["edit_sim"]] = edit

        for lab, v in q.cands.items():
            fill(lab, v)
        if self.pairs:  # after the fill: the fixed rule that picks the names reads what it wrote
            for lab in self._paired_composites(q):
                fill(lab, q.cands[lab])
        if not q.cands:
            return
        block = np.vstack(list(q.cands.values()))
        q_level = {
            "q_top_sim": top_sim,
            "q_best_sub_name": float(block[:, F["sub_name"]].max()),
            "q_exact_name_any": float(block[:, F["exact_name"]].max()),
            "q_top_prof": tops["prof"],
            "q_best_rw": float(max(block[:, F["rw_exact_name"]].max(), block[:, F["rw_sub"]].max())),
            "q_n_cands": float(len(q.cands)),
            "q_enc_top": tops["enc"],
            "q_ix_exact": float(block[:, F["ix_exact"]].max()),
            "q_none_lr": q.none_p,
        }
        best = block[:, REL_SRC].max(axis=0)
        for v in q.cands.values():
            for name, value in q_level.items():
                v[F[name]] = value
            v[REL_DST] = v[REL_SRC] - best

    # ------------------------------------------------------------------ training
    def _train_ranker(self, n_queries: int, seed: int, n_folds: int = 10) -> None:
        """Leave-one-fold-out: queries from fold f see the dictionary without fold f — and, in every
        other fold, without the families of variants of those queries (:meth:`_families`).

        Real unseen wording sits between the two: the grouped held-out split of bench/normalize.py has
        its queries' nearest "-1" rows at mean cosine 0.45; training queries have 0.52 with their fold
        hidden alone, 0.35 with families hidden in every fold (too far: the ranker then learns that a
        close "-1" row is wrong), 0.44 with families hidden in every other fold."""
        rng = np.random.default_rng(seed)
        n = len(self.keys)
        fold = rng.integers(0, n_folds, size=n)
        anchor = self._anchors()
        pool = rng.permutation(np.flatnonzero(~anchor))  # the wording to normalize is variants
        if len(pool) < MIN_RANKER_QUERIES:
            pool = rng.permutation(n)
        chosen = pool[: min(n_queries, len(pool))]
        family = self._families(chosen[fold[chosen] % FAMILY_EVERY == 0], anchor)
        with charenc_mod.trainer(n, encoders=3) as train:
            full = self._train_encoders(fold, family[:, 1], anchor, seed, train)
            self._train_none_models(fold, family[:, 1], anchor)
            rows, ys = self._ranker_rows(chosen, fold, family, n_folds, rng)
            if full is not None:  # trained meanwhile, in a worker where the fit is big
                self._add_encoder(full.result())
        self._X = self._name_X = None  # fit-time only
        if sum(ys) < MIN_RANKER_QUERIES:
            self.ranker = None  # too few entries to learn from: a fixed scoring rule instead
            return
        import lightgbm  # fit time only: slow to import

        X, y, group = np.vstack(rows), np.asarray(ys), [len(r) for r in rows]
        forests = []
        for i in range(RANKERS):
            ranker = lightgbm.LGBMRanker(**RANKER_PARAMS, random_state=seed + i)
            forests.append(Forest.from_lightgbm(ranker.fit(X, y, group=group).booster_))
        self.ranker = Forest.mean(forests)

    def _ranker_rows(
        self, chosen: np.ndarray, fold: np.ndarray, family: np.ndarray, n_folds: int, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[int]]:
        """The ranker's training rows: each chosen query's candidates (feature block, gold or not) as its
        fold's view gives them — the gold, "-1", the assembled ones and the hard negatives, and a sample
        of the easy ones."""
        rows: list[np.ndarray] = []
        ys: list[int] = []
        none_lab = self.label_id.get(NO_CODE)
        for f in range(n_folds):
            mine = chosen[fold[chosen] == f]
            if not len(mine):
                continue
            hidden = fold == f
            if f % FAMILY_EVERY == 0:
                hidden[family[np.isin(family[:, 0], mine), 1]] = True
            view = self._fold_view(hidden)
            view.encoders = self._fold_encoders(f)
            view.none_models = (f % 2,) if self.none_models else ()
            gold_of = self.entry_label[mine]
            two_names = np.asarray([len(self.label_parts[lab]) == 2 for lab in gold_of], dtype=bool)
            mine = mine[(view.label_counts[gold_of] > 0) | two_names]  # gold reachable (or assembled)
            for start in range(0, len(mine), QUERY_CHUNK):
                batch = mine[start : start + QUERY_CHUNK]
                for i, q in zip(batch, self._queries([self.keys[i] for i in batch], view), strict=True):
                    self._candidates(q)
                    gold = int(self.entry_label[i])
                    if view.label_counts[gold] <= 0:  # a hidden composite: reachable only if assembled
                        gold = next((c for c in q.new if self.cell(c, q) == self.labels[gold]), -1)
                    if gold not in q.cands:
                        continue
                    labs = list(q.cands)
                    block = np.vstack([q.cands[lab] for lab in labs])
                    # every hard negative, "-1" and the gold; a sample of the easy negatives
                    order = np.argsort(-self._fallback_scores(block))
                    keep = np.zeros(len(labs), dtype=bool)
                    keep[order[:TRAIN_NEGATIVES]] = True
                    rest = order[TRAIN_NEGATIVES:]
                    keep[rest[rng.random(len(rest)) < EASY_SAMPLE]] = True
                    keep[labs.index(gold)] = True
                    if none_lab in q.cands:
                        keep[labs.index(none_lab)] = True
                    for c in q.new:  # few per query, all kept: the ranker must learn when they win
                        keep[labs.index(c)] = True
                    keep = np.flatnonzero(keep)
                    rows.append(block[keep])
                    ys.extend(int(labs[j] == gold) for j in keep)
        return rows, ys

    def _named_entries(self) -> np.ndarray:
        """Per entry: its label has a standard name (it is not "-1")."""
        return np.asarray([bool(self.label_parts[lab]) for lab in self.entry_label], dtype=bool)

    @staticmethod
    def _halves(fold: np.ndarray, family: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per entry: in the rows the model of half 0 learns from (the odd folds, without the families
        hidden with even-fold queries: it scores the even folds), and in half 1's (the even folds)."""
        assert FAMILY_EVERY == 2, "the halves are the folds' parity: families hide in even folds"
        without_family = np.ones(len(fold), dtype=bool)
        without_family[family] = False
        return (fold % 2 == 1) & without_family, fold % 2 == 0

    def _train_encoders(
        self, fold: np.ndarray, family: np.ndarray, anchor: np.ndarray, seed: int, train: charenc_mod.Trainer
    ) -> Future[CharEncoder] | None:
        """Two character encoders, one per half of the folds (:meth:`_halves`): the queries of even folds
        are scored by the encoder of the odd folds, trained without their families of variants as well
        (as their fold views hide them), and the other way round — so no training query's encoder saw
        it or, where its family is hidden, its siblings. A third learns from every row: real wording,
        unseen by all three, is scored by their mean (on the grouped and random held-out splits the
        three gave +0.003 and +0.006 top-1 over the two halves' mean; the full one alone, −0.001 and
        +0.005). The halves' encoders are in place on return (the training queries need them); the
        third is returned still training (``train`` may run it in a worker), for :meth:`_add_encoder`."""
        named = self._named_entries()
        jobs: list[tuple[np.ndarray, int]] = []
        for half, keep in enumerate(self._halves(fold, family)):
            rows = np.flatnonzero(named & (keep | anchor))
            if len(np.unique(self.entry_label[rows])) < 2:  # nothing to contrast: no encoders
                jobs = []
                break
            jobs.append((rows, seed + half))
        if jobs:
            jobs.append((np.flatnonzero(named), seed + len(jobs)))
        training = [train.submit(*self._encoder_pairs(rows), seed=s) for rows, s in jobs]
        self.encoders, self.label_enc, self._label_enc_t = [], [], {}
        for job in training[:-1]:
            self._add_encoder(job.result())
        return training[-1] if training else None

    def _add_encoder(self, encoder: CharEncoder) -> None:
        self.encoders.append(encoder)
        # the labels' encodings are computed on first use (_label_encodings)
        self.label_enc.append(np.zeros((0, len(encoder.out_b)), dtype=np.float32))
        self._graph = self._graph_data = None
        self._view = None  # the full view scores by all encoders

    def _encoder_pairs(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """(surfaces, their names' texts) of entries ``rows``: what an encoder learns from."""
        return [self.keys[e] for e in rows], [self._label_text(int(self.entry_label[e])) for e in rows]

    def _train_none_models(self, fold: np.ndarray, family: np.ndarray, anchor: np.ndarray) -> None:
        """Two nameless-wording models (P(-1 | n-grams)), one per half of the folds like the encoders, so
        no training query is scored by a model that saw it; real wording by their mean. They learn from
        variant rows only: the wording to normalize (a name's own row is never "-1")."""
        assert self._X is not None, "fit time only"
        is_none = ~self._named_entries()
        models: list[NoneModel] = []
        for keep in self._halves(fold, family):
            rows = np.flatnonzero(keep & ~anchor)
            model = NoneModel.train(self._X[rows], is_none[rows])
            if model is None:  # one half without "-1" (or without names): nothing learned
                models = []
                break
            models.append(model)
        self.none_models = models
        self._view = None

    def _fold_encoders(self, f: int) -> tuple[int, ...]:
        """The encoder that scores fold f's training queries: the other half's (encoder 0 learned from
        the odd folds, encoder 1 from the even ones)."""
        return (f % 2,) if self.encoders else ()

    def _anchors(self) -> np.ndarray:
        """Per entry: its surface is its standard name (the dictionary's anchors, never hidden)."""
        labels = np.asarray(self.labels, dtype=object)[self.entry_label]
        return np.asarray(self.cols["surface"], dtype=object) == labels

    def _families(self, chosen: np.ndarray, anchor: np.ndarray) -> np.ndarray:
        """(query, entry) pairs: the variants that leave the dictionary with each training query.

        Unseen wording comes without its siblings (右X when 左X is unseen, X術後 …): every variant of
        the same name sharing the query's stem, and every near-duplicate surface of any name, is hidden
        with it, so the ranker also learns the situation of real unseen wording, not only that of a
        random row whose siblings stay in the dictionary. ``anchor``: per entry, its surface is its name
        (never hidden: the dictionary always holds its names)."""
        X = self._X
        assert X is not None
        out = []
        for start in range(0, len(chosen), 1000):
            block = chosen[start : start + 1000]
            sims = (X[block] @ X.T).tocoo()
            row, col, val = block[sims.row], sims.col, sims.data
            keep = ((val >= FAMILY_STEM) & (self.entry_label[row] == self.entry_label[col])) | (
                val >= FAMILY_DUPLICATE
            )
            keep &= ~anchor[col]
            out.append(np.stack([row[keep], col[keep]], axis=1))
        return np.vstack(out) if out else np.zeros((0, 2), dtype=np.int64)

    @staticmethod
    def _fallback_scores(X: np.ndarray) -> np.ndarray:
        """A fixed rule (log-odds-like): neighbours, then names inside the query, then the prior."""
        return (
            4 * X[:, F["nn_max"]]
            + 2 * X[:, F["sub_name"]]
            + 2 * X[:, F["rw_exact_name"]]
            + 1.2 * X[:, F["exact_name"]]
            # the query is (or holds, or is rewritten to) a synonym of few names
            + (3 * X[:, F["ix_exact"]] + 2 * X[:, F["ix_rw"]]) * X[:, F["ix_share"]]
            + 0.8 * X[:, F["name_cos"]]
            + 1.0 * X[:, F["prof_cos"]]
            + 0.04 * X[:, F["log_prior"]]
            - 2.0
        )

    def _raw_scores(self, X: np.ndarray, sizes: list[int] | None = None, keep: int = 0) -> np.ndarray:
        """Ranking scores of the candidate rows ``X`` (queries' blocks of ``sizes`` rows, in order).

        With ``keep``, only each query's ``keep`` candidates that the head of the ranker's trees scores
        highest get the whole ranker's score, and the others -inf: most candidates are plainly wrong, and
        walking every tree for them was a third of a query's time."""
        penalty = self.none_penalty * X[:, F["is_none"]]
        if self.ranker is None:
            return self._fallback_scores(X) - penalty
        stages = self.ranker.stages() if keep and sizes is not None else None
        if stages is None:
            return self.ranker.raw(X) - penalty
        head, rest = stages
        score = head.raw(X) - penalty
        chosen = []
        for start, size in zip(np.cumsum([0, *sizes[:-1]]), sizes, strict=True):
            block = score[start : start + size]
            top = np.argpartition(-block, keep - 1)[:keep] if size > keep else np.arange(size)
            chosen.append(start + np.sort(top))
        rows = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
        out = np.full(len(X), -np.inf)
        out[rows] = score[rows] + rest.raw(X[rows])
        return out

    # ------------------------------------------------------------------ querying
    def normalize(self, term: str, k: int = 5) -> list[NormalizedName]:
        """Ranked distinct standard names for one surface form."""
        return self.normalize_many([term], k=k)[0]

    def normalize_many(self, terms: list[str], k: int = 5) -> list[list[NormalizedName]]:
        """Batched :meth:`normalize`: one sparse product and one ranker call per chunk of terms."""
        if not self.keys:
            raise IndexCorruptError("the disease normalizer holds no dictionary entries; rebuild the index")
        if len(terms) > QUERY_CHUNK:
            return [
                r
                for i in range(0, len(terms), QUERY_CHUNK)
                for r in self.normalize_many(terms[i : i + QUERY_CHUNK], k)
            ]
        keys = [normalize_key(t) for t in terms]
        view = self._full_view()
        live = iter(self._queries([key for key in keys if key], view))
        queries: list[_Query | None] = []
        for key in keys:
            q = next(live) if key else None
            if q is not None:
                self._candidates(q)
            queries.append(q)
        blocks = [np.vstack(list(q.cands.values())) for q in queries if q is not None and q.cands]
        sizes = [len(b) for b in blocks]
        keep = FULL_SCORE_PER_ANSWER * k
        scores = self._raw_scores(np.vstack(blocks), sizes, keep) if blocks else np.zeros(0)
        results, pos = [], 0
        for q in queries:
            if q is None or not q.cands:
                results.append([])
                continue
            labs = list(q.cands)
            s = scores[pos : pos + len(labs)]
            pos += len(labs)
            # an exact dictionary hit is what the dictionary says: it goes first, with score 1.0; so,
            # where there is none, does a name the whole query is the kana reading of (はいえん → 肺炎)
            exact = self._exact(q.key)
            scored = [i for i in range(len(labs)) if s[i] > -np.inf or labs[i] in exact]
            order = sorted(scored, key=lambda i: (labs[i] not in exact, -s[i]))
            ranked = [(lab, 1.0) for lab in exact if lab not in q.cands]
            ranked += [(labs[i], 1.0 if labs[i] in exact else _sigmoid(s[i])) for i in order]
            results.append(
                [
                    self._result(lab, score, q, rank, exact.get(lab))
                    for rank, (lab, score) in enumerate(ranked[:k], 1)
                ]
            )
        return results

    def _exact(self, key: str) -> dict[int, int]:
        """Label → its entry, for the dictionary rows whose surface is ``key`` — or, where there are
        none, whose surface is what the whole ``key`` is the kana reading of."""
        if key in self.surface_index:
            written = [key]
        else:  # a reading is looked up only where no surface of the file is the query itself
            written = self.readings.exact(key) if self.readings is not None else []
        out: dict[int, int] = {}
        for k in written:
            for e in self.surface_index.get(k, ()):
                out.setdefault(int(self.entry_label[e]), int(e))
        return out

    def _support(self, lab: int, q: _Query) -> int:
        """The entry of label ``lab`` that best supports it for this query (its row, ICD-10, node)."""
        idx = self._label_entries(lab)
        best = int(idx[int(np.argmax(q.sims[idx]))])
        names = set(self.label_parts[lab]) | {",".join(self.label_parts[lab])}
        if q.sims[best] <= 0 or q.key in names:
            same = [e for e in idx if self.keys[e] in names]  # the row whose surface is the name
            best = int(same[0]) if same else best
        return best

    def _result(self, lab: int, score: float, q: _Query, rank: int, entry: int | None) -> NormalizedName:
        # a composite the query assembled is supported by one entry per name: their ICD-10 codes joined
        # with "," (as the dictionary writes a composite's codes), their surfaces with "，"; the node is
        # the first name's
        # (``entry``: the row an exact hit found, when it found one)
        support = [self._support(part, q) for part in q.new[lab]] if lab in q.new else []
        best = support[0] if support else entry if entry is not None else self._support(lab, q)
        cell = self.cell(lab, q)
        return NormalizedName(
            rank=rank,
            standard_name=cell,
            standard_names=split_names(cell),
            icd10=",".join(self.cols["icd10"][e] for e in support) if support else self.cols["icd10"][best],
            level=self.cols["level"][best],
            surface="，".join(self.cols["surface"][e] for e in support)
            if support
            else self.cols["surface"][best],
            score=round(float(score), 6),
            node_id=self.node_id(best),
        )

    # ------------------------------------------------------------------ free text
    def _disease_key(self, key: str) -> bool:
        """A standard name, or a surface the dictionary links to one (出現, a surface whose only label
        is "-1", is an ordinary word, not a disease mention)."""
        if key in self.name_index:
            return True
        none_lab = self.label_id.get(NO_CODE)
        return any(int(self.entry_label[e]) != none_lab for e in self.surface_index.get(key, ()))

    def _normal_thing(self, key: str) -> bool:
        """A surface filed only under itself with an abnormality word after it (血圧 → 血圧異常, 眼瞼結膜 →
        眼瞼結膜炎): in running text it names the normal thing (:func:`mentions.names_normal_thing`)."""
        if key in self.name_index:
            return False
        none_lab = self.label_id.get(NO_CODE)
        labs = {int(self.entry_label[e]) for e in self.surface_index.get(key, ())} - {none_lab}
        return M.names_normal_thing(key, [part for lab in labs for part in self.label_parts[lab]])

    def _abbreviation_keys(self) -> frozenset[str]:
        """Clinical abbreviations that stand for a name (ＮＳＴＥＭＩ, ＰＤＡＣ): mentions in running text
        where the dictionary does not hold them as surfaces (built on first use)."""
        if self._abbr_keys is None:
            self._abbr_keys = (
                abbreviations_mod.disease_abbreviations(self.name_index.__contains__)
                if self.abbreviations
                else frozenset()
            )
        return self._abbr_keys

    def _name_heads(self) -> dict[str, int]:
        """First two characters of every name key → the longest name key that starts with them (built on
        first use): the spans of a rewritten query that can be a name, without trying the rest."""
        if self._name_head_len is None:
            self._name_head_len = _longest_by_head(self.name_index, 2)
        return self._name_head_len

    def _mention_heads(self) -> dict[str, int]:
        """First characters of every key → the longest key that starts with them (built on first use)."""
        if self._heads is None:
            none_lab = self.label_id.get(NO_CODE)
            surfaces = (
                key
                for key, idx in self.surface_index.one.items()
                if int(self.entry_label[idx]) != none_lab
                or key in self.surface_index.many
                or key in self.name_index
            )
            keys = [*surfaces, *self.name_index, *self._abbreviation_keys()]
            self._heads = _longest_by_head(keys, MIN_MENTION)
            self._lone_keys = frozenset(k for k in keys if len(k) == 1 and self._disease_key(k))
        return self._heads

    def _status_head(self, head: str, lone_keys: frozenset[str]) -> int:
        """The length of the longest start of ``head`` that is a disease key (0: none) — the finding of a
        dictionary surface that ends in a status word: 喘息 of 喘息疑い, 痛み of 痛みがない, 呂律 of
        呂律が回らない, インフルエンザ of インフルエンザ迅速陰性."""
        for j in range(len(head), 0, -1):
            if (j >= MIN_MENTION or head[:j] in lone_keys) and self._disease_key(head[:j]):
                return j
        return 0

    def _lone_mention_keys(self) -> frozenset[str]:
        """The one-character disease keys (咳, 痰 → 喀痰, 熱 → 発熱, 癌, 聾): mentions only as a word of
        their own (:func:`_lone_nouns`)."""
        self._mention_heads()
        assert self._lone_keys is not None
        return self._lone_keys

    def find_mentions(self, text: str, k: int = 3) -> list[Mention]:
        """Disease mentions in free text: longest dictionary matches (surface forms and standard names)
        with their ranked names and their negation/suspicion (:mod:`ragmed.normalize.mentions`)."""
        norm, spans = normalize_with_offsets(text)
        cuts_kana = None  # where kana are: does a match start or end inside a word (よう of 胃かいよう)?
        morphs = None  # MeCab's morphemes of norm, where it has kana (or a one-character key: below)
        if readings_mod.has_kana(norm):
            morphs = readings_mod.morphemes(norm)
            if morphs:  # read first: 頭が痛い → 頭痛, すい臓がん → 膵臓癌, はいえん → 肺炎
                picks = readings_mod.pain_picks(morphs, self._disease_key)
                picks += [
                    p
                    for p in readings_mod.symptom_picks(morphs, self._disease_key)
                    if not any(p[0] < b and a < p[1] for a, b, _ in picks)
                ]
                if self.readings is not None:
                    picks += [
                        p
                        for p in self.readings.text_picks(morphs)
                        if not any(p[0] < b and a < p[1] for a, b, _ in picks)
                    ]
                if picks:
                    norm, spans = _read_words(norm, spans, sorted(picks))
                    morphs = readings_mod.morphemes(norm)
            if morphs:
                cuts_kana = readings_mod.word_cutter(norm, morphs)
        found: list[tuple[int, int]] = []
        trailing: dict[int, M.Cue] = {}
        heads = self._mention_heads()
        lone_keys = self._lone_mention_keys()
        lone: frozenset[int] | None = None  # where a one-character noun stands (MeCab, on first need)
        abbreviated = self._abbreviation_keys()
        i, n = 0, len(norm)
        cut = word_cuts(norm)
        while i < n:
            match = None
            longest = heads.get(norm[i : i + MIN_MENTION], 0)  # no key starts here: skip at once
            for j in range(min(n, i + longest), i + MIN_MENTION - 1, -1):
                sub = norm[i:j]
                a, b = spans[i][0], spans[j - 1][1]
                if not self._disease_key(sub) and not (
                    sub in abbreviated and abbreviations_mod.written_as_abbreviation(text[a:b])
                ):
                    continue
                if cut[i] or cut[j] or (cuts_kana is not None and cuts_kana(i, j)):
                    continue  # "HT" inside "HTML" is no mention, nor よう inside かいよう
                if unit_like(text[a:b], text[max(0, a - 3) : a]):  # the mL of pg/mL is no ML (リンパ腫)
                    continue
                match = j
                break
            if match is None and norm[i] in lone_keys:
                if lone is None:
                    lone = _lone_nouns(morphs if morphs is not None else readings_mod.morphemes(norm))
                if i in lone:  # 咳と痰, 熱が出た; not 平熱, 解熱剤, 熱心
                    match = i + 1
            if match is None:
                i += 1
                continue
            key = norm[i:match]
            if self._normal_thing(key) and not M.said_abnormal(norm, match):
                i = match  # 血圧 142/88, 眼瞼結膜に貧血: a normal part or measure, not 血圧異常 or 眼瞼結膜炎
                continue
            if key not in self.name_index:
                cue = M.trailing_cue(key)  # the surface 喘息疑い: the mention is 喘息, 疑い its status
                if cue is not None:
                    head = self._status_head(key[: cue.start], lone_keys)
                    if head:  # 喘息疑い, 痛みがない, 呂律が回らない: the finding, and the words after it read as text
                        match = i + head
                    elif cue.kind == M.SUSP:
                        trailing[len(found)] = M.Cue(i + cue.start, match, cue.kind, cue.text)
                    # else the surface names an absence (食欲なし → 食欲不振, 一過性意識消失 → 意識消失,
                    # 月経なし → 無月経症): it is the finding, and its own なし or 消失 no status
            found.append((i, match))
            i = match
        if not found:
            return []
        status = M.statuses(norm, found, trailing)
        family = M.family_flags(norm, found)
        history = M.history_flags(norm, found)
        supposed = M.hypothetical_flags(norm, found)
        cands = self._mention_candidates(text, norm, spans, found, k)
        none_lab = self.label_id.get(NO_CODE)
        mentions = []
        for (a, b), cand, st, fam, past, hyp in zip(
            found, cands, status, family, history, supposed, strict=True
        ):
            start, end = spans[a][0], spans[b - 1][1]
            hits = [e for e in self.surface_index.get(norm[a:b], ()) if int(self.entry_label[e]) != none_lab]
            surface = self.cols["surface"][hits[0]] if hits else (cand[0].surface if cand else norm[a:b])
            mentions.append(
                Mention(
                    start=start,
                    end=end,
                    text=text[start:end],
                    surface=surface,
                    candidates=cand,
                    negated=st == M.NEG,
                    suspected=st == M.SUSP,
                    family=fam,
                    historical=past,
                    hypothetical=hyp,
                )
            )
        return mentions

    def _mention_candidates(
        self, text: str, norm: str, spans: list[tuple[int, int]], found: list[tuple[int, int]], k: int
    ) -> list[list[NormalizedName]]:
        """Ranked names per mention. A mention is a dictionary key, so with ``k=1`` (query linking) and a
        surface of a single label, that label is the answer normalize() gives: no ranking needed."""
        out: list[list[NormalizedName] | None] = [None] * len(found)
        slow, queries = [], []
        for i, (a, b) in enumerate(found):
            entries = self.surface_index.get(norm[a:b])
            labs = {int(self.entry_label[e]) for e in entries}
            query = text[spans[a][0] : spans[b - 1][1]]
            if normalize_key(query) != norm[a:b]:
                query = norm[a:b]  # a word typed in kana, read: ranked as the key it was read into
            if k == 1 and len(labs) == 1 and normalize_key(query) == norm[a:b]:
                q = _Query(norm[a:b], np.zeros(0), np.zeros(0), np.zeros(0), self._full_view())
                out[i] = [self._result(labs.pop(), 1.0, q, 1, int(entries[0]))]
            else:
                slow.append(i)
                queries.append(query)
        ranked = self.normalize_many(queries, k=k)
        for i, names in zip(slow, ranked, strict=True):
            out[i] = names
        return [names or [] for names in out]

    def node_id(self, idx: int) -> str:
        """The index node of entry ``idx`` (as :attr:`ManbyoEntry.node_id`)."""
        return f"manbyo:{Path(self.sources[self.source_of[idx]]).name}:{self.rows[idx]}"


@functools.cache
def _icd_title_pairs() -> tuple[tuple[list[str], list[str]], ...]:
    """(English title words, Japanese title words) of each ICD-10 code both packages know (the same for
    every fit, so read once a process)."""
    from ragmed.index.glossary import english_titles

    japanese = terms_mod.category_titles()
    who = {code: code.rstrip(string.ascii_lowercase) for code in japanese}  # A08.5a → A08.5
    english = english_titles(set(who.values()))
    return tuple(
        (english_mod.title_words(english[w]), bridge_mod.japanese_words(japanese[code]))
        for code, w in who.items()
        if w in english
    )


def _replaced(key: str, a: int, b: int, rhs: str, count: int, read: bool = False) -> _Rewrite:
    """``key`` with ``key[a:b]`` replaced by ``rhs`` (one step), each new char spanning the piece it replaced."""
    return _replaced_all(key, [(a, b, rhs)], count, read=read)


def _replaced_all(
    key: str, pieces: list[tuple[int, int, str]], count: int, steps: int = 1, read: bool = False
) -> _Rewrite:
    """``key`` with each ``key[a:b]`` of ``pieces`` (in order, apart) replaced by its ``rhs``, each new
    char spanning the piece it replaced."""
    text, spans, last = "", [], 0
    for a, b, rhs in pieces:
        text += key[last:a] + rhs
        spans += [(i, i + 1) for i in range(last, a)] + [(a, b)] * len(rhs)
        last = b
    spans += [(i, i + 1) for i in range(last, len(key))]
    return _Rewrite(text + key[last:], spans, count, steps, read)


def _read_words(
    norm: str, spans: list[tuple[int, int]], picks: list[tuple[int, int, list[str]]]
) -> tuple[str, list[tuple[int, int]]]:
    """Running text ``norm`` with each word typed in kana replaced by its first reading, each new char
    spanning, in the original text, the whole word it replaced (so a mention of it covers what was typed)."""
    text, out, last = "", [], 0
    for a, b, words in picks:
        text += norm[last:a] + words[0]
        out += spans[last:a] + [(spans[a][0], spans[b - 1][1])] * len(words[0])
        last = b
    return text + norm[last:], out + spans[last:]


def _repeats(key: str) -> list[tuple[int, int]]:
    """Spans to delete so that a piece written twice in a row (optionally with a separator) stays once."""
    out = []
    n = len(key)
    for length in range(2, n // 2 + 1):
        for i in range(0, n - 2 * length + 1):
            piece = key[i : i + length]
            for gap in ("", "・", ",", "、", "/"):
                j = i + length + len(gap)
                if key[i + length : j] == gap and key[j : j + length] == piece:
                    out.append((i + length, j + length))
    return out[:4]


def _top(idx: np.ndarray, val: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of ``val`` and their ``idx``, largest first, ties by ``idx``: an explicit tie
    order makes a rank the same at fit and at query time."""
    if len(idx) > k:
        kth = np.partition(val, len(val) - k)[len(val) - k]
        keep = val >= kth  # every value tied with the k-th stays in for the tie-break
        idx, val = idx[keep], val[keep]
    order = np.lexsort((idx, -val))[:k]
    return idx[order], val[order]


def _top_positive(arr: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest positive values of ``arr``, largest first, ties by index.

    A TF-IDF row is mostly zeros: selecting among its few positives is ~10x cheaper than partitioning
    the whole row."""
    idx = np.flatnonzero(arr > 0)
    return _top(idx, arr[idx], k)[0]


def _lone_nouns(morphs: list[readings_mod.Morph] | None) -> frozenset[int]:
    """Where a text has a noun of one character by itself (its MeCab ``morphs``): the 熱 of 熱が出た and
    37度の熱, not of 平熱 or 解熱剤 (one word each), the 咳 of 乾いた咳. A one-character key is a mention
    only there; nowhere where MeCab cannot read the text (``None``)."""
    return frozenset(m.start for m in morphs or () if m.end == m.start + 1 and m.pos == "名詞")


def _longest_by_head(keys: Iterable[str], size: int) -> dict[str, int]:
    """The first ``size`` characters of each key at least that long → the longest key starting with them:
    how far a span starting there can reach and still be a key."""
    heads: dict[str, int] = {}
    for key in keys:
        if len(key) >= size:
            heads[key[:size]] = max(heads.get(key[:size], 0), len(key))
    return heads


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x > -30 else 0.0


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
