"""The leakage guard catches an exam item planted in a corpus (real llama-index TextNodes)."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import TextNode
from ragmed_eval.datasets import load_dataset
from ragmed_eval.leakage import check_leakage

FIX = Path(__file__).parent / "fixtures" / "exams"


def _corpus(planted_q: str, planted_answer: str | None) -> list[TextNode]:
    filler = [
        "急性気管支炎はウイルス感染によることが多く、咳嗽が数週間続くことがある。治療は対症療法が中心である。",
        "褐色細胞腫はカテコラミン過剰により発作性の高血圧、頭痛、動悸、発汗をきたす副腎髄質の腫瘍である。",
        "横紋筋融解症ではクレアチンキナーゼが著明に上昇し、ミオグロビン尿により急性腎障害をきたしうる。",
    ]
    nodes = [
        TextNode(id_=f"clean-{i}", text=t, metadata={"source": "textbook.txt"}) for i, t in enumerate(filler)
    ]
    # The exam item pasted, with line breaks and full-width digits, into a "question bank" page.
    text = "【過去問まとめ】\n" + planted_q.replace("。", "。\n").replace("3", "３")
    if planted_answer:
        text += f"\n正解：{planted_answer}"
    nodes.append(TextNode(id_="planted", text=text, metadata={"source": "qbank.html"}))
    return nodes


def test_guard_catches_planted_question_and_answer():
    qs = load_dataset("igakuqa", FIX / "igakuqa")
    target = next(q for q in qs if q.id == "112A1")
    rep = check_leakage(qs, _corpus(target.text, target.choices[1]), ngram=8)
    assert rep.contaminated_questions == ["112A1"]
    assert rep.node_ids == {"planted"}
    assert rep.answer_leaks == ["112A1"]
    hit = rep.hits[0]
    assert hit.containment > 0.9 and hit.source == "qbank.html" and hit.jaccard_minhash > 0
    assert rep.summary()["verdict"] == "CONTAMINATED"


def test_guard_question_only_and_clean_corpus():
    qs = load_dataset("igakuqa", FIX / "igakuqa")
    target = next(q for q in qs if q.id == "112B31")
    rep = check_leakage(qs, _corpus(target.text, None), ngram=8)
    assert rep.contaminated_questions == ["112B31"] and rep.answer_leaks == []
    clean = check_leakage(qs, _corpus("全く関係のない文章です。" * 3, None)[:3], ngram=8)
    assert clean.clean and clean.n_nodes == 3 and clean.summary()["verdict"] == "clean"
