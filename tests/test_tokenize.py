"""The Japanese analyzer: fugashi never gets an input that crashes MeCab."""

from __future__ import annotations

import subprocess
import sys

import fugashi
import pytest

from ragmed.tokenize import MAX_CALL_CHARS, MAX_RUN_CHARS, bounded_pieces, morphemes, tokenize

# Each of these killed the process inside MeCab (exit 139) when handed to the tagger whole.
CRASHERS = ["'a' * 193750", "'ab' * 100000", "'A' * 250000", "' '.join(['a' * 1000] * 300)"]


@pytest.mark.parametrize("expr", CRASHERS)
def test_inputs_that_crashed_mecab_are_tokenized(expr: str) -> None:
    code = (
        "from ragmed.tokenize import tokenize, morphemes\n"
        f"text = {expr}\n"
        "toks = tokenize(text)\n"
        "assert toks and sum(map(len, toks)) == len(text.replace(' ', '')), len(toks)\n"
        "assert ''.join(morphemes(text)).replace(' ', '') == text.replace(' ', '')\n"
        "print(len(toks))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])


def test_the_unbounded_input_really_crashes_mecab() -> None:
    """The boundary the module guards: fugashi itself, handed the run whole, dies (so the test above
    tests something)."""
    code = "import fugashi; fugashi.Tagger()('a' * 193750)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode != 0


def test_pieces_are_bounded_and_give_the_text_back() -> None:
    at_limit = "x" * MAX_RUN_CHARS
    assert list(bounded_pieces(at_limit)) == [at_limit]  # a run at the limit stays whole
    over = "x" * (MAX_RUN_CHARS + 1)
    assert list(bounded_pieces(over)) == ["x" * MAX_RUN_CHARS, "x"]
    prose = "急性膵炎は膵臓の急性炎症であり、原因としてはアルコールと胆石が多い。" * 2000
    pieces = list(bounded_pieces(prose))
    assert "".join(pieces) == prose and max(map(len, pieces)) <= MAX_CALL_CHARS
    assert all(p.endswith(("。", "、")) for p in pieces[:-1]), "long text is cut at punctuation"


def test_ordinary_text_is_tokenized_as_mecab_does() -> None:
    text = "ＡＭＩの既往があり、２型DMとHTで加療中。胸痛を主訴に来院した。"
    tagger = fugashi.Tagger()
    assert morphemes(text) == [w.surface for w in tagger(text)]
    assert tokenize(text)[:3] == ["ami", "既往", "あり"]


def test_tokenize_reads_the_same_words_as_fugashis_nodes() -> None:
    """tokenize() reads MeCab's text output for speed: it must keep exactly the content words that
    fugashi's parsed nodes give (part of speech not a particle, auxiliary, symbol or space)."""
    from ragmed.tokenize import normalize_text

    from .conftest import SAMPLES

    tagger = fugashi.Tagger()
    drop = {"助詞", "助動詞", "補助記号", "空白"}
    texts = [p.read_text(encoding="utf-8") for p in sorted((SAMPLES / "corpus").iterdir()) if p.is_file()]
    texts += [
        "急性心筋梗塞（AMI）の疑い。ＨｂＡ１ｃ ７．５％、BNP 120 pg/mL、EOS と書いた行\n次の行\r\n",
        "qwertyuiop xyz 😀絵文字 ﾊﾝｶｸｶﾅ a\u3000b\tc",
        "",
        "。、",
    ]
    assert len(texts) > 5
    for text in texts:
        folded = normalize_text(text)
        expected = [w.surface for w in tagger(folded) if w.feature.pos1 not in drop and w.surface.strip()]
        assert tokenize(text) == expected, text[:40]
