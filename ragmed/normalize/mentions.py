"""Negation, suspicion, whose, when and hypotheticals: disease mentions in Japanese clinical text.

Whose finding it is (the patient's or a relative's: 家族歴：父 胃癌, 母に糖尿病, 糖尿病の家族歴) is read
by :func:`family_flags`, below, and when (the past history: 既往歴：胃潰瘍, 胃潰瘍の既往, 10年前に胃癌) by
:func:`history_flags`, and whether the text only supposes it (発熱時は再診, 肺炎予防) by
:func:`hypothetical_flags`; a disease word that only names a vaccine, test, antibody or organism (麻疹ワクチン,
腫瘍マーカー, 肺炎球菌) is supposed too, with no status (:func:`names_other_thing`). The rest of this note is about status.

Japanese puts the status of a finding *after* it: 肺炎なし (absent), 肺炎疑い (suspected), 肺炎あり
(present). A mention's status is read from the chain of status words that follows it in its clause:

* **negated**: なし/無し/なく/無かった, 認めず/認めない/認められない/認めませんでした, みられない,
  否定(的/された), 陰性, 除外(済み), ルールアウト, r/o済み, 消失/消退, (-) or a bare - right after the finding
  (咳嗽 -, ending the item), 無 / (無) the same way (DM: 無, HT: 有; the dictionary's surfaces 浮腫無, 出血無), neg, ではない, 考えにくい/考えがたい, ありません, 疑わない/疑わず,
  (所見に)乏しい, なさそう, 指摘できず/指摘されず/検出されず, 発症せず/合併せず, a diagnosis not reached (診断には至らず,
  診断基準を満たさず), negative, no …; and 低い/少ない right after a suspicion (可能性は低い,
  可能性が極めて低い, 可能性として低い, 疑いは少ない — but 肺炎疑いで食事量が少ない keeps the suspicion).
* **suspected**: 疑い/疑う/疑われる, の可能性, 示唆, 考えられる/思われる, 鑑別 (but the one finding before
  の鑑別 is the work-up's subject: 胸痛の鑑別診断), 懸念, ? (right after the
  finding: 肺炎?; the ? that ends a question 「HTの降圧目標は?」 is no suspicion), r/o, s/o; a question
  or a guess, though it holds ない: ではないか/ではないだろうか (isn't it …?), かもしれない, らしい,
  疑わしい, かどうか/か否か (whether); a work-up to rule the finding out: 否定するため, 除外のため/除外目的 (肺炎を否定するためCT:
  suspected until it is ruled out; 肺炎を否定する alone negates); a diagnosis considered, right after
  the finding through を/と/も (肺炎を考え抗菌薬開始, 肺炎も考慮, 肺炎を念頭に; not 肺炎の治療方針を考える, nor
  the topic 肺炎の考え方), presence to be
  checked (肺炎の有無), equivocal (±), hard to rule out (否定しにくい, 除外困難, 否定しきれず), a
  resemblance (肺炎のようだ, のような, っぽい, みたい), a worry (危惧される), alternatives (肺炎 vs 心不全,
  肺炎か心不全か, 肺炎または心不全: none is settled, unless a status word decides) and a differential's
  list (鑑別診断：肺炎、心不全; DD: …; 鑑別として肺炎); and the
  double negatives 否定できない/否定しきれない/否定し得ない/否定されない/否定しがたい, 除外できない,
  除外が必要 (除外する必要がある, 否定すべき: not ruled out yet), ルールアウトできない, なしとは言えない, and とは言えない after any negation
  (認めないとは言えない) — *cannot be ruled out* is suspicion, not negation. A cue is matched
  longest-first, so 否定できない never reads as 否定. Each word is also read in its past and polite
  forms (``inflections``: 否定できなかった, 除外できませんでした, 考えにくかった, 考えられました,
  認められませんでした), and the questions ではなかったか / ではないでしょうか are suspicions. A status word
  the question owns (考えにくいのはどれか, 考えられる原因は?) is no status of the finding, and a negation or a
  finding asked about (肺炎はないですか, 否定できますか, 肺炎ですか) is suspected.
* **present** (closes the phrase, no flag): あり/有り/ある, 認める/認めた, 陽性, (+) or a bare +, positive,
  出現, 合併, 発症, 判断; and the course of a finding negated — 改善しない/改善なし, 軽快せず, 変化なし,
  増悪なし, 増大なし, 進行はみられない, 治らない, 下がらない, 反応しない, 消失を認めない, 消失せず: a finding not
  improving (or not worsening) is still there; so, as a history, is one whose recurrence is negated
  (心不全の再発は認めない, 肺炎の再燃なし). 消失/消退 alone negate; 発症していない, an onset negated,
  is an absence; 肺炎疑いで治療するも改善なし stays suspected. The ない of 少ない/足りない/危ない is no
  negation, nor is the ある of the copula (肺炎は否定的である stays negated).

The last status word of the chain decides, except that あり after 疑い keeps the suspicion
(肺炎疑いあり is still a suspicion), a judgement keeps what it judges (可能性は低いと考えられる and
肺炎はないと判断 stay negated; 肺炎と判断 alone is present) and 疑いなし / 疑いは否定的 negate (the
suspicion was dropped).

**Lists.** A status word applies to every mention of the coordinated list it closes: in 「DM、HTなし」
*both* DM and HT are negated. Japanese clinical notes list findings and close the list with one status
word (既往歴：DM、HT、脂質異常症なし reads "none of them"), and reading it as negating only HT would put
diseases the patient does not have into the query. Mentions are one list when only separators stand
between them (、 ， , ・ / と や および 及び または か 並びに); anything else between them (を認め、 …で)
ends the list, and a status word right after a mention closes that mention's phrase, so
「DMあり、HTなし」 negates only HT. Status words apply within one clause (。 . ! ? newline ; が、 しかし
and a heading's mark 【 ■ ● end it) and only up to a short gap of other words after the last mention
(肺炎の既往なし, 肺炎像は認めず); words after a comma in that gap take the status word themselves
(胃癌術後、再発なし: the recurrence is absent, not the cancer), and so do words after a space once a status
word has closed the phrase (下腿浮腫なし トロポニン陽性: the 陽性 is the troponin's).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from ragmed.normalize.readings import morphemes

NEG, SUSP, AFFIRM, WORD, LOW = "negated", "suspected", "present", "word", "low"
COURSE, GONE = "course", "gone"  # how a finding goes: 改善/増悪 (it is still there), 消失 (it is not)
EXCEPT = "except"  # 腹痛以外の症状はない: the finding is the one there, the status words are the others'

# Written as they look after NFKC + lower case (full-width brackets/letters are already ASCII here).
CUES: dict[str, str] = {}
for _words, _kind in (
    (
        "なし 無し ない 無い なく 無く なくて なかった 認めず 認めない 認めなかった 認められない 認められず 認められなかった "
        "みられない 見られない みられず 見られず みとめず 否定 否定的 否定された 否定される 否定できる "
        "陰性 除外 除外された ではない でない ではなく でなく ありません 考えにくい 考えがたい 考え難い 考えづらい "
        "可能性は低い 可能性低い ルールアウト ルールアウトされた ルールアウトした "
        "(-) (ー) - 無 (無) neg r/o済み r/o済 r/oされた r/oした ルールアウト済み 除外済み 無かった 認めません 認めませんでした ありませんでした みられません 見られません "
        "疑わない 疑わず 疑われない 疑われず 乏しい 乏しく negative 可能性少ない なさそう "
        # a finding not found, or an onset that did not happen, in the ず form (the ない forms end in ない)
        "指摘できず 指摘出来ず 指摘されず 検出されず 検出せず 同定されず 発症せず 合併せず 併発せず 出現せず 来さず "
        # a diagnosis not reached (肺炎の診断には至らず, 診断基準を満たさず)
        "至らず 至らない 満たさず 満たさない",
        NEG,
    ),
    (
        "疑い 疑う 疑われる 疑われた 疑った 疑 可能性 示唆 示唆される 考えられる 思われる 懸念 おそれ 恐れ ? 鑑別 "
        "r/o s/o 疑診 否定できない 否定できず 否定出来ない 否定しきれない 否定し得ない 否定しえない "
        "否定はできない 否定は出来ない 除外できない 除外できず 除外出来ない "
        "なしとは言えない なしとはいえない ないとは言えない ないとはいえない とは言い切れない とはいいきれない "
        "とは言えない とはいえない とは言えず とはいえず とは限らない とはかぎらない "
        "否定されない 否定されず 否定しがたい 否定し難い 否定困難 除外が必要 除外必要 除外を要する 要除外 "
        # still to be ruled out (急性虫垂炎を除外する必要がある): not yet ruled out
        "除外する必要 除外の必要 除外すべき 否定する必要 否定の必要 否定すべき ルールアウトする必要 "
        "ルールアウトできない ルールアウトできず ルールアウト出来ない ルールアウトが必要 ルールアウト必要 "
        # a question or a guess: 肺炎ではないか (isn't it …?), 肺炎かもしれない, 肺炎らしい
        "ではないか ではないだろうか ではなかろうか じゃないか ではないかもしれない かもしれない かも知れない "
        "かもしれず かも知れず らしい 疑わしい かどうか か否か "
        # a work-up to rule a finding out: it is suspected until it is (肺炎を否定するためCT)
        "否定するため 否定のため 否定目的 否定する目的 除外するため 除外のため 除外目的 除外する目的 "
        "ルールアウトのため ルールアウト目的 "
        # hard to rule out; a diagnosis considered (肺炎を考え抗菌薬開始, 肺炎を念頭に); presence to be checked
        "否定しにくい 否定しづらい 除外しにくい 除外困難 ルールアウト困難 考える 考えた 考え 考慮 念頭 有無 (±) ± "
        # cannot be ruled out, in the ず form; a resemblance (肺炎のようだ, 肺炎っぽい); a worry
        "否定しきれず 否定し得ず 否定しえず 除外しきれず ようだ ようです ようである ような っぽい みたい "
        "危惧 危惧される",
        SUSP,
    ),
    (
        "あり 有り 有 (有) ある 認める 認めた 認め 認められる 認められた 陽性 (+) + 出現 合併 発症 を呈 伴う positive "
        "判断 判断した 判断された 判断される",
        AFFIRM,
    ),
    # how likely, right after a suspicion: 可能性が低い / 可能性は極めて低い / 疑いは少ない negate
    (
        " ".join(
            particle + adverb + word
            for particle in ("は", "が", "も", "として", "としては")
            for adverb in ("", "極めて", "きわめて", "非常に", "かなり")
            for word in ("低い", "低く", "少ない", "少なく")
        ),
        LOW,
    ),
    # the course of a finding: negated, 改善しない / 軽快せず / 変化なし / 消失を認めない say it is still there
    # (再発/再燃 too: 心不全の再発は認めない leaves the heart failure the patient had unflagged)
    ("改善 軽快 治癒 回復 縮小 寛解 解熱 変化 進行 増悪 悪化 増加 増大 減少 拡大 再発 再燃", COURSE),
    ("消失 消退", GONE),
    ("以外 ほかに 他に 除いて 除き 除けば", EXCEPT),
    (
        "治らない 治らず 下がらない 下がらず 止まらない 止まらず 変わらない 変わらず 消えない 消えず 消失せず 消退せず "
        "引かない 取れない 取れず 反応しない 反応せず 反応不良",
        AFFIRM,
    ),
    # words that hold a status word and are none, read whole and ignored: ある/ない inside the
    # separators あるいは/ないし, なく inside 間もなく (肺炎は間もなく軽快: soon, not "without")
    (
        "あるいは ないし 間もなく まもなく 程なく ほどなく 余儀なく やむなく 難なく 問題なく 滞りなく 間もない まもない "
        "少ない 少なく 危ない 足りない めずらしい すばらしい あたらしい 考え方 "
        # a condition, not a resemblance: 嘔吐が続くようなら受診 (the ような of ようなら)
        "ようなら ようならば ようであれば ようでしたら "
        # the copula holds ある (肺炎は否定的である, 否定的であり: still negated)
        "である であり であります でありました であれば であって であろう ではある",
        WORD,
    ),
):
    for _word in _words.split():
        CUES[_word] = _kind

# The i and e rows of kana: a verb whose ない form stems in one of them is ichidan (でき, 認められ, 言え),
# so its polite forms share the stem (否定できません); a godan stem (治ら) does not (治りません).
_ICHIDAN = set("いきぎしじちにひびぴみりえけげせぜてでねへべぺめれ得")


def inflections(word: str) -> list[str]:
    """The past and polite forms of a status word, which mean what it means: 否定できない →
    否定できなかった / 否定できません / 否定できませんでした, 考えにくい → 考えにくかった, 考えられる →
    考えられた / 考えられます / 考えられました. Notes are written in either register and either tense; a
    past form read as its pieces (否定 + なかった) would turn a double negative into a negation."""
    if word.endswith("ない"):
        stem = word[:-2]
        forms = [stem + "なかった"]
        if len(stem) > 1 and stem[-1] in _ICHIDAN:  # not で of でない
            forms += [stem + "ません", stem + "ませんでした"]
        return forms
    if word.endswith("い") and not word.endswith("疑い") and len(word) > 1:  # an adjective: 乏しい, 低い
        return [word[:-1] + "かった"]
    if word.endswith("る") and len(word) > 1 and word[-2] in _ICHIDAN:  # 疑われる, 考えられる
        return [word[:-1] + suffix for suffix in ("た", "ます", "ました")]
    return []


def with_inflections(*words: str) -> list[str]:
    """The words and their past and polite forms."""
    return [form for word in words for form in (word, *inflections(word))]


for _word, _kind in list(CUES.items()):
    for _form in inflections(_word):
        CUES.setdefault(_form, _kind)  # a form written out above keeps its own kind
# a question in the past or polite register (肺炎ではなかったか, 肺炎ではないでしょうか); the polite
# copula negated (肺炎ではありません) negates, and like ではない turns a negation into a doubt
for _word in "ではなかったか でなかったか ではないでしょうか ではありませんか ではなかったでしょうか".split():
    CUES[_word] = SUSP
# the finding asked about, right after it: 肺炎ですか?, 肺炎でしょうか (not 肺炎の治療は何ですか)
for _word in ("ですか", "でしょうか"):
    CUES[_word] = SUSP
NOT_COPULA = frozenset(
    {"ではない", "でない", "ではなかった", "でなかった", "ではありません", "ではありませんでした"}
)
for _word in NOT_COPULA:
    CUES.setdefault(_word, NEG)
MAX_CUE = max(map(len, CUES))
#: cues written before the finding (lower case: the text is folded), the English ones as charts and
#: English questions write them: r/o 肺炎, no DM, rule out PE, no history of CHF, negative for HCV
PREFIX_CUES = {
    "r/o": SUSP,
    "s/o": SUSP,
    "疑)": SUSP,
    "rule out": SUSP,
    "ruled out": NEG,
    "suspected": SUSP,
    "suspect": SUSP,
    "possible": SUSP,
    "probable": SUSP,
    "no": NEG,
    "denies": NEG,
    "without": NEG,
    "negative for": NEG,
    "no history of": NEG,
    "no evidence of": NEG,
    "no signs of": NEG,
    "no sign of": NEG,
}
_PREFIX_REACH = max(map(len, PREFIX_CUES)) + 2
LIST_SEPARATORS = (
    "、",
    "も",  # 発疹もかゆみもない: both
    ",",
    "・",
    "/",
    "と",
    "や",
    "および",
    "及び",
    "または",
    "又は",
    "か",
    "並びに",
    "&",
    "and",
    "あるいは",
    "ないし",
    "もしくは",
    "or",
    "vs",
    "vs.",
    "v.s.",
)
#: separators that join alternatives: the diagnosis is one of them, none is settled (肺炎 vs 心不全,
#: 肺炎か心不全か, 肺炎または心不全による呼吸不全); a status word still decides (肺炎または心不全の既往なし)
ALTERNATIVES = frozenset(
    {"か", "または", "又は", "あるいは", "ないし", "もしくは", "or", "vs", "vs.", "v.s."}
)
#: a differential-diagnosis heading: its list is suspected (鑑別診断：肺炎、心不全; DD: …; 鑑別として肺炎)
DIFFERENTIAL_HEADINGS = (
    "鑑別診断",
    "鑑別疾患",
    "鑑別",
    "ddx",
    "dd",
    "differential diagnosis",
    "differential",
)
#: where a clause ends; a heading's mark too (下腿浮腫なし【検査】トロポニン陽性: the 陽性 is the test's)
BOUNDARIES = ("。", ".", "!", "\n", ";", "が、", "しかし", "ただし", "一方", "【", "■", "●", "◆", "□")
MAX_GAP = 10  # other characters allowed between a finding (or a status word) and its next status word
SIGNS = {"-", "+", "±", "無", "有"}  # 咳嗽 -, 発熱 +: a bare sign after a finding, then the end of the item …
SIGN_ENDS = " 、,。.;/)\n・"  # … (not DM+HT, not IL-6)
# a diagnosis considered is a suspicion only right after the finding, through a particle that makes it the
# thing considered (肺炎を考える, 肺炎と考え, 肺炎も考慮): in 肺炎の治療方針を考える the pneumonia is the one
# being treated, and 市中肺炎の考え方 / 心不全の考慮すべき点 are topics; 有無 takes の (肺炎の有無)
NEAR_ONLY = {
    word: frozenset({"", "を", "と", "も", "として", "とも", "をも"})
    for word in with_inflections("考える", "考えた", "考え", "考慮", "念頭")
} | {"有無": frozenset({"", "の", "も"})}
#: an exception right after the finding (腹痛以外, 頭痛のほかに, 腹痛を除いて); 発熱、他に症状なし is no exception
NEAR_ONLY |= {word: frozenset({"", "の", "を"}) for word, kind in CUES.items() if kind == EXCEPT}
#: right after the finding only: 肺炎? and 肺炎ですか are suspicions; in 「HTの降圧目標は?」 the ? ends a question
ADJACENT_ONLY = {"?", "ですか", "でしょうか", *SIGNS}
#: English words just before a mention: the ? after it ends an English question, not a suspicion
_ENGLISH_BEFORE = re.compile(r"[a-z]{2,}[ ,]+$")
#: a status word asked about (肺炎はないですか?, 肺炎は否定できますか, 肺炎はありますか): the finding is in
#: question, not ruled out or found
_QUESTION_AFTER = re.compile(r"[ぁ-ゖ]{0,6}?か(?:[?。.!、,\s]|$)")


@dataclass
class Cue:
    start: int
    end: int
    kind: str
    text: str


def scan_cues(text: str, blocked: list[tuple[int, int]]) -> list[Cue]:
    """Status words in ``text`` (normalized), longest match first, outside the ``blocked`` spans."""
    inside = _span_mask(len(text), blocked)
    cues = []
    i = 0
    while i < len(text):
        if inside[i]:
            i += 1
            continue
        for j in range(min(len(text), i + MAX_CUE), i, -1):
            word = text[i:j]
            kind = CUES.get(word)
            if kind is None or any(inside[i:j]):
                continue
            if word in SIGNS and j < len(text) and text[j] not in SIGN_ENDS:
                continue
            if word.isascii() and word.isalpha() and not _word_edges(text, i, j):
                continue  # "no" inside "nodule", "r/o" is fine (not alpha)
            cues.append(Cue(i, j, kind, word))
            i = j - 1
            break
        i += 1
    return cues


def _span_mask(length: int, spans: list[tuple[int, int]]) -> bytearray:
    """One byte per character of the text, 1 inside a mention span: cues and relative words are
    looked for outside mentions only."""
    mask = bytearray(length)
    for a, b in spans:
        mask[a:b] = b"\x01" * (b - a)
    return mask


def _word_edges(text: str, i: int, j: int) -> bool:
    before = text[i - 1] if i > 0 else " "
    after = text[j] if j < len(text) else " "
    return not (before.isascii() and before.isalpha()) and not (after.isascii() and after.isalpha())


def _is_separator(gap: str) -> bool:
    gap = gap.strip()
    return gap == "" or gap in LIST_SEPARATORS


def _boundary_in(gap: str) -> bool:
    return any(b in gap for b in BOUNDARIES)


def _next_item(gap: str) -> bool:
    """Words after a space, once a status word has closed the mention's phrase: a form's next item
    (下腿浮腫なし トロポニン陽性: the 陽性 is the troponin's)."""
    return bool(re.search(r"\s\S", gap))


def _other_phrase(gap: str) -> bool:
    """Words after a comma between a finding and a status word: the status word closes *their* phrase
    (胃癌術後、再発なし: the recurrence is absent, not the cancer; 発熱なし、咳嗽あり where 咳嗽 is
    no mention: the あり is the cough's)."""
    for comma in ("、", ","):
        if comma in gap and gap.rsplit(comma, 1)[1].strip():
            return True
    return False


def statuses(text: str, spans: list[tuple[int, int]], trailing: dict[int, Cue]) -> list[str | None]:
    """The status (NEG, SUSP, AFFIRM or None) of each mention span (sorted, in normalized ``text``).

    ``trailing`` maps a mention's index to a status word that ends the mention itself (the dictionary
    surface 喘息疑い carries its own 疑い). A mention that names a vaccine's or test's kind
    (:func:`names_other_thing`) has no status and starts a list of its own: the status words after
    腫瘍マーカー上昇なし are the marker's, and do not reach the DM of DM、腫瘍マーカー上昇なし.
    """
    alone = frozenset(i for i, (a, b) in enumerate(spans) if names_other_thing(text, a, b))
    cues = scan_cues(text, spans)
    events: list[tuple[int, int, str, object]] = [(a, b, "m", i) for i, (a, b) in enumerate(spans)]
    events += [(c.start, c.end, "c", c) for c in cues if c.kind != WORD]
    events.sort(key=lambda e: (e[0], e[2] == "c"))
    result: list[str | None] = [None] * len(spans)
    group: list[int] = []  # the coordinated mentions awaiting (or taking) status words
    status: str | None = None  # the status the chain of words has given the group so far
    closed = False  # a status word has been read for the group: a new mention starts a new group
    course = False  # the last status word was a course word (改善, 消失): a negation after it is the course's
    alternative = False  # the group's mentions are alternatives: suspected unless a status word decides
    last_end = 0

    def settle() -> None:
        for i in group:
            settled = NEG if status == GONE else AFFIRM if status == COURSE else status
            result[i] = SUSP if settled is None and alternative else settled

    for start, end, what, item in events:
        gap = text[last_end:start]
        if what == "m":
            i = int(item)  # type: ignore[arg-type]
            if group and (closed or not _is_separator(gap) or i in alone):
                settle()
                group, status, closed, course, alternative = [], None, False, False, False
            elif group and gap.strip() in ALTERNATIVES:
                alternative = True
            if not group:
                status = _prefix_status(text, start)
            group.append(i)
            last_end = end
            if i in trailing:
                status, closed = _combine(status, trailing[i]), True
            continue
        cue = item
        assert isinstance(cue, Cue)
        # 肺炎疑いで食事量が少ない: a 少ない away from the suspicion is not about it
        adjacent = cue.text in ADJACENT_ONLY or cue.kind == LOW
        if cue.text in SIGNS:
            gap = gap.replace(":", "")  # a form's item: 咳嗽: -, 肺炎: 無
        if cue.text in NEAR_ONLY:
            too_far = gap.strip() not in NEAR_ONLY[cue.text]
        else:
            too_far = len(gap.strip()) > (0 if adjacent else MAX_GAP)
        if (
            cue.text == "?"
            and group
            and _ENGLISH_BEFORE.search(text, max(0, spans[group[0]][0] - 20), spans[group[0]][0])
        ):
            too_far = True  # "… in a patient with DM?": an English sentence's ? ends the question
        if not group or _boundary_in(gap) or too_far or _other_phrase(gap) or closed and _next_item(gap):
            if group:
                settle()
            group, status, closed, course, alternative = [], None, False, False, False
            last_end = end
            continue
        if cue.kind == EXCEPT:
            # 腹痛以外の症状はない, 頭痛のほかに異常はない: the finding is there, what is negated is the rest
            status = AFFIRM
            settle()
            group, status, closed, course, alternative = [], None, False, False, False
            last_end = end
            continue
        if asks_for_options(text, end):
            # 貧血の原因として考えにくいのはどれか, 腎不全で考えられる検査所見はどれか: the status word says what
            # the answer must be, not what the finding is (the anaemia is the case's)
            closed, last_end = True, end
            continue
        if cue.text == "鑑別" and gap.strip() == "の" and len(group) == 1 and status is None:
            # 胸痛の鑑別(診断): the chest pain is what is worked up, not a candidate; 肺炎との鑑別 and
            # 心不全と肺炎の鑑別 (two findings to tell apart) are
            closed, last_end = True, end
            continue
        if cue.text in BARE_NEGATIONS and gap.strip():
            whose = _verb_negation(text, cue, last_end)
            if whose == WORD:
                continue  # 腹痛で眠れない: the sleep is missing, not the pain
            if whose is not None:
                cue = Cue(cue.start, cue.end, whose, cue.text)
        if cue.kind in (NEG, AFFIRM) and _QUESTION_AFTER.match(text, end):
            cue = Cue(cue.start, cue.end, SUSP, cue.text)
        status, closed = _combine(status, cue, course), True
        course = cue.kind in (COURSE, GONE)
        last_end = end
    settle()
    differential = _under_headings(
        text, spans, _span_mask(len(text), spans), DIFFERENTIAL_HEADINGS, _SECTION_END
    )
    return [
        None if i in alone else SUSP if r is None and d else r
        for i, (r, d) in enumerate(zip(result, differential, strict=True))
    ]


JUDGEMENT = frozenset(
    with_inflections(
        "考えられる",
        "思われる",
        "考える",
        "考えた",
        "考え",
        "考慮",
        "判断",
        "判断した",
        "判断された",
        "判断される",
    )
)


#: a bare negation: whose it is depends on the verb before it (咳が出ない, 腹痛で眠れない)
BARE_NEGATIONS = frozenset({"ない", "なく", "なくて", "なかった"})
#: verbs (MeCab's lemmas) whose negation is the finding's absence: 咳が出ない, 発作は起きていない
_PRESENCE_VERBS = frozenset(
    "出る 起きる 起こる 起こす 生じる 現れる 表れる 伴う 有る 見る 見える 認める 来す 来たす 為る 成る 残る 出来る "
    "目立つ 見当たる 見付かる 見つかる".split()
)
#: verbs whose negation says the finding goes on: 痛みが治まらない, 熱が下がらなかった
_PERSIST_VERBS = frozenset("収まる 治まる 納まる 治る 止まる 下がる 引く 取れる 消える 退く".split())
_AUXILIARIES = frozenset("居る て で れる られる せる させる 来る 得る 居られる".split())


def _verb_negation(text: str, cue: Cue, lo: int) -> str | None:
    """Whose a bare negation (ない, なかった) is, by the word it negates (MeCab over ``text[lo:cue.end]``):
    None where it is the finding's (肺炎はない, 咳が出ない, 発作は起きていない, 肺炎像なく), AFFIRM where the
    verb says the finding goes on (痛みが治まらない), WORD where it is another verb's or an adjective's
    and says nothing of the finding (腹痛で眠れない, 腹痛で食べられなかった, 頭痛はひどくない)."""
    morphs = morphemes(text[lo : cue.end]) or []
    n = next((k for k, m in enumerate(morphs) if m.start == cue.start - lo), None)
    if n is None or n == 0:
        return None
    if morphs[n].pos == "形容詞":  # ない the adjective: after another adjective (ひどくない) it is that one's
        return WORD if morphs[n - 1].pos == "形容詞" else None
    if morphs[n].pos != "助動詞":
        return None
    k = n - 1
    while k > 0 and morphs[k].lemma in _AUXILIARIES:  # 出ていない, 食べられない: back to the main verb
        k -= 1
    if morphs[k].pos != "動詞":
        return None
    lemma = morphs[k].lemma
    return None if lemma in _PRESENCE_VERBS else AFFIRM if lemma in _PERSIST_VERBS else WORD


#: what a question asks for, a few words after a status word: an exam's 考えられるのはどれか, 考えにくいもの
#: を2つ選べ, 認められない所見はどれか; a question's 考えられる原因は?
_ASKED = re.compile(
    r"[^。.!\n、,]{0,10}?(?:どれか|選べ)|[^。.!\n、,?]{1,10}?(?:何か|なにか|は\?|は何|はなに)"
)


def asks_for_options(text: str, end: int) -> bool:
    """Does the status word ending at ``end`` belong to the question (…考えにくいのはどれか)?"""
    return _ASKED.match(text, end) is not None


def _combine(status: str | None, cue: Cue, after_course: bool = False) -> str | None:
    if cue.kind == LOW:  # 肺炎の可能性が低い: a weak suspicion is a negation; after anything else, nothing
        return NEG if status == SUSP else status
    if cue.kind == NEG and after_course:  # 肺炎が改善しない, 陰影の消失を認めない: the finding is still there
        return SUSP if status == SUSP else AFFIRM  # 肺炎疑いで治療するも改善なし: still suspected
    if cue.kind in (COURSE, GONE) and status == SUSP:
        return SUSP if cue.kind == COURSE else NEG  # 肺炎疑いの陰影は消失: the suspicion is gone too
    if cue.text in JUDGEMENT and status in (NEG, SUSP):
        return status  # 可能性は低いと考えられる, 肺炎はないと判断: the judgement keeps what it judges
    if cue.kind == AFFIRM and status == SUSP:
        return SUSP  # 肺炎疑いあり: still a suspicion
    if cue.kind == NEG and status == NEG and cue.text in NOT_COPULA:
        return SUSP  # 陰性ではない / 否定的ではない: no longer ruled out
    return cue.kind


def _prefix_status(text: str, start: int) -> str | None:
    """A status written before the finding: "r/o 肺炎", "s/o DVT", "no DM", "rule out PE"."""
    before = text[max(0, start - _PREFIX_REACH) : start].rstrip(" :：")
    for word, kind in PREFIX_CUES.items():
        if before.endswith(word):
            pos = len(before) - len(word)
            if word[0].isalpha() and pos > 0 and before[pos - 1].isascii() and before[pos - 1].isalpha():
                continue  # the "no" of "piano", the "possible" of "impossible"
            return kind
    return None


#: what a disease word before it only names the kind of: a vaccine or its shot (麻疹ワクチン, インフルエンザの
#: 予防接種), a test (腫瘍マーカー), an antibody (風疹抗体陰性: no immunity, not no rubella) or an organism
#: (肺炎球菌, 肺炎桿菌), or a screening for it (胃癌検診). Such a disease is only supposed (prevented, looked
#: for, a cause): the mention is hypothetical, and the status words after it are the vaccine's or the
#: test's (腫瘍マーカー上昇なし does not negate the tumour, 胃癌検診で異常なし says nothing of a cancer);
#: 肺炎球菌性肺炎 still holds a second 肺炎 of its own.
#: the dictionary's own names of a screening or check-up (胃癌検診, 癌検診, 健康診断, 乳幼児健診: Z00, Z12)
SCREENINGS = ("検診", "スクリーニング", "健診", "健康診断", "健康診査", "ドック")
NOT_FINDING_HEADS = ("ワクチン", "予防接種", "トキソイド", "マーカー", "抗体", "球菌", "桿菌", *SCREENINGS)


def names_other_thing(text: str, start: int, end: int) -> bool:
    """Does the disease word ``text[start:end]`` only name a vaccine, test, antibody or organism after it,
    or is it the name of a screening for the disease (the dictionary's 胃癌検診, 大腸癌検診: encounters, not
    findings)? (:func:`statuses` then gives it no status, and :func:`hypothetical_flags` flags it.)"""
    if text.endswith(SCREENINGS, start, end):
        return True
    if text.startswith("の", end):
        end += 1
    return text.startswith(NOT_FINDING_HEADS, end)


#: what a name adds to a normal part, measure or function to make it a disease. The dictionary files a
#: chart's bare 血圧 under 血圧異常, 血液型 under 血液型不適合, 眼瞼結膜 under 眼瞼結膜炎 and 言語発達 under
#: 言語発達遅滞; in running text (血圧 142/88 mmHg, 眼瞼結膜に貧血を認めない, 言語発達は正常) the word names
#: the normal thing. (障害 is not among them: 不安 → 不安障害 and チック → チック障害 name findings.)
ABNORMALITY_TAILS = ("異常", "不適合", "遅滞", "炎")
#: … unless the text says right after it that it is abnormal: 血圧が高い, 血圧上昇, 言語発達の遅れ
_ABNORMAL_AFTER = re.compile(
    r"(?:が|は|の|も)?(?:上昇|低下|高値|低値|高い|低い|高く|低く|高め|低め|異常|増加|減少|亢進|不良|遅れ|遅延)"
)


def names_normal_thing(key: str, names: list[str]) -> bool:
    """Is every name the surface ``key`` is filed under the key with an abnormality word after it (血圧 →
    血圧異常; 血液型 → 血液型不適合，胎児血液型不適合)? Then the word names the normal thing."""
    tails = tuple(key + tail for tail in ABNORMALITY_TAILS)
    return bool(names) and all(name.endswith(tails) for name in names)


def said_abnormal(text: str, end: int) -> bool:
    """Does the text say that the normal thing ending at ``end`` is abnormal (血圧が高い, 血圧上昇)? Only
    then is it a mention (of the name the dictionary files it under)."""
    return _ABNORMAL_AFTER.match(text, end) is not None


def trailing_cue(key: str) -> Cue | None:
    """A status word at the end of a matched dictionary surface (喘息疑い → 疑い)."""
    for j in range(min(len(key), MAX_CUE), 0, -1):
        kind = CUES.get(key[-j:])
        if kind in (NEG, SUSP, GONE) and j < len(key):
            return Cue(len(key) - j, len(key), kind, key[-j:])
    return None


# ---------------------------------------------------------------------------------------------------
# Whose finding it is: the patient's, or a relative's (家族歴). Negation and suspicion say whether the
# disease is there; this says in whom. A relative's cancer is family history, not the patient's disease.

RELATIVES = tuple(
    sorted(
        (
            "父 母 父母 父親 母親 実父 実母 祖父 祖母 祖父母 曾祖父 曾祖母 曽祖父 曽祖母 父方 母方 兄 姉 弟 妹 兄弟 姉妹 同胞 兄姉 弟妹 叔父 叔母 伯父 伯母 "
            "おじ おば 息子 娘 長男 長女 次男 次女 三男 三女 子供 子ども こども 孫 いとこ 従兄弟 従姉妹 家族 親族 "
            "血縁者 血縁 家系 近親者 両親 家族内 家系内 夫 妻 配偶者 family"
        ).split(),
        key=len,
        reverse=True,
    )
)
_RELATIVE_FIRST = frozenset(w[0] for w in RELATIVES)
#: the patient named as the subject again: 父が胃癌、本人は糖尿病
PATIENT = ("本人", "患者", "自身", "当人", "本症例", "本例")
_PATIENT_FIRST = frozenset(w[0] for w in PATIENT)
#: a family-history heading, whose list runs to the end of its line: 家族歴：父 胃癌、母 糖尿病
#: 家族(の)既往歴 too: a relative's past history is a family history, not the patient's past (see _FAMILY_PAST)
FAMILY_HEADINGS = (
    "家族歴",
    "家族背景",
    "家族既往歴",
    "家族の既往歴",
    "家族既往",
    "家族の既往",
    "fhx",
    "fh",
    "family history",
)
#: after a mention: 糖尿病の家族歴あり, 大腸癌家族歴なし, 胃癌の家族既往あり
FAMILY_AFTER = ("の家族歴", "家族歴", "の家族既往", "家族既往", "の遺伝歴", "の家系")
#: the 既往 of a family heading or word, which is no past-history heading: 家族既往歴：糖尿病
_FAMILY_PAST = re.compile(r"家族の?既往")
#: a heading's list ends at the end of its line or sentence, or at the next heading: a mark, a word ending
#: in 歴 and a colon (手術歴: …), or a heading's word (家族歴に…); a 手術歴あり inside the list does not end it
HEADING_WORDS = (
    "家族歴",
    "家族既往",
    "家族の既往",
    "既往歴",
    "現病歴",
    "生活歴",
    "内服歴",
    "服薬歴",
    "喫煙歴",
    "飲酒歴",
    "職業歴",
    "アレルギー歴",
    "社会歴",
    "生育歴",
    "嗜好",
    "内服薬",
    "主訴",
)
_SECTION_END = ("\n", "。", "【", "■", "●", "#", "歴:", "歴】", "歴 ", *HEADING_WORDS)
#: … and a family history's list where the patient is named (家族歴：父 胃癌。本人は…)
_HEADING_END = (*_SECTION_END, *PATIENT)
_HEADING_PARTICLES = ("に", "では", "は", "として")  # 家族歴に糖尿病, 既往としてDM: the heading is the topic
#: what may follow a relative word for it to be one (父が, 母は, 兄に, 父：, 父 胃癌), not 母体, 母乳, 父性
_AFTER_RELATIVE = set("がはにのもと:) 、,/】")  # (the text is NFKC: ： and ） are : and ) here)
RELATIVE_GAP = 8  # characters allowed between a relative word and the first mention it owns …
#: … all of them particles, punctuation, ages and times (父が60歳で胃癌, 父は以前から胃癌): in 父の介護中に腰痛
#: or 娘の結婚式の後から頭痛 the words between say the finding is the patient's
_RELATIVE_GAP_CHARS = set("がはにものでとからまでして:;、,/・()[] 0123456789歳代頃年時前以来既往歴")


def _relative_at(text: str, i: int, blocked: bytearray, after_relative: bool = False) -> int:
    """The end of a relative word starting at ``i`` (0 when none): a whole word, outside a mention."""
    if text[i] not in _RELATIVE_FIRST:
        return 0
    for word in RELATIVES:
        j = i + len(word)
        if text.startswith(word, i) and not any(blocked[i:j]):
            if word.isascii() and not _word_edges(text, i, j):
                continue
            if (
                not after_relative
                and i > 0
                and not blocked[i - 1]
                and _is_kanji(text[i - 1])
                and _is_kanji(word[0])
            ):
                continue  # the 母 of 酵母 or 保母, the 父 of 神父
            if j < len(text) and text[j] not in _AFTER_RELATIVE and not blocked[j]:
                more = _relative_at(text, j, blocked, after_relative=True)
                if more:
                    return more  # 母方祖母, 父方叔父
                continue  # 母体, 母乳, 父性: another word
            return j
    return 0


#: what joins a relative's finding to what it caused, which is the relative's too: 父が心筋梗塞で死亡,
#: 母が高血圧による脳出血 (for the past history they do not: in 5年前に脳梗塞で片麻痺 the palsy is now)
CAUSE_LINKS = ("で", "にて", "により", "による", "のため", "に伴う", "から")


def _is_kanji(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def family_flags(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """For each mention span (sorted, in normalized ``text``): is the finding a relative's?

    A mention is a relative's when it follows a family-history heading in the same sentence (家族歴：父 胃癌、
    母 糖尿病), when a relative word stands just before it or before the list it starts, in the same clause
    with only particles, ages and times between (父が胃癌, 母に糖尿病、高血圧あり, 父が60歳で胃癌), or when
    家族歴 follows it or its list (糖尿病の家族歴あり).
    The patient named again (本人, 患者) ends a relative's reach: 父が胃癌、本人は糖尿病.
    """
    blocked = _span_mask(len(text), spans)
    flags = _under_headings(text, spans, blocked, FAMILY_HEADINGS, _HEADING_END)
    # relative words before a mention, in the same clause; the list that mention starts goes with it
    owners: list[tuple[int, int, str]] = []
    i = 0
    while i < len(text):
        if blocked[i]:
            i += 1
            continue
        j = _relative_at(text, i, blocked)
        if j:
            owners.append((i, j, "r"))
        elif text[i] in _PATIENT_FIRST:
            j = next((i + len(w) for w in PATIENT if text.startswith(w, i)), 0)
            if j:
                owners.append((i, j, "p"))
        i = max(j, i + 1)
    owned = _owned(text, spans, owners, _RELATIVE_GAP_CHARS, RELATIVE_GAP, CAUSE_LINKS)
    after = _before_words(text, spans, lambda b: text.startswith(FAMILY_AFTER, b))
    return [any(f) for f in zip(flags, owned, after, strict=True)]


def _under_headings(
    text: str,
    spans: list[tuple[int, int]],
    blocked: bytearray,
    headings: tuple[str, ...],
    ends: tuple[str, ...],
) -> list[bool]:
    """Mentions in the list a heading starts (家族歴：…, 既往歴：…), up to the first of ``ends`` after it.

    A heading is one when a colon, bracket or space follows it, or a particle that makes it the topic
    and a mention right after that (家族歴に糖尿病, 既往としてDM, 既往歴では父が…); 家族歴なし, 既往歴なし and
    鑑別に苦慮したが…肺炎 start no list."""
    flags = [False] * len(spans)
    starts = [a for a, _ in spans]
    for heading in headings:
        start = 0
        while (pos := text.find(heading, start)) >= 0:
            start = pos + len(heading)
            if any(blocked[pos:start]):
                continue
            if heading.isascii() and not _word_edges(text, pos, start):
                continue
            nxt = text[start : start + 1]
            if not nxt or nxt not in ":】) ":
                particle = next((w for w in _HEADING_PARTICLES if text.startswith(w, start)), None)
                first = bisect_left(starts, start)
                if particle is None or first == len(starts) or starts[first] - start - len(particle) > 2:
                    continue  # 鑑別に苦慮したが最終的に肺炎と診断: a topic, then other words, no list
            end = len(text)
            for mark in ends:
                cut = text.find(mark, start + 1)
                if cut >= 0:
                    end = min(end, cut)
            for i in range(bisect_left(starts, start), bisect_left(starts, end)):
                flags[i] = True
    return flags


def _owned(
    text: str,
    spans: list[tuple[int, int]],
    owners: list[tuple[int, int, str]],
    gap_chars: set[str],
    max_gap: int,
    links: tuple[str, ...] = (),
) -> list[bool]:
    """Mentions owned by a word before them (kind "r": 父が, 10年前に) in the same clause, with at most
    ``max_gap`` characters, all of ``gap_chars``, between; the list such a mention starts is owned too,
    and a mention that follows an owned one through one of ``links`` (父が心筋梗塞で死亡: で).
    A word of kind "p" (本人, 今回) ends every reach."""
    flags = [False] * len(spans)
    events = sorted([*((a, 0, b, k) for a, b, k in owners), *((a, 1, b, "m") for a, b in spans)])
    owner = False  # an owning word is in reach
    chained = False  # the mention before is owned: its list is too
    last = 0
    n = 0
    for a, _, b, what in events:
        gap = text[last:a]
        if _boundary_in(gap):
            owner = chained = False
        if what != "m":
            owner, chained, last = what == "r", False, max(last, b)
            continue
        near = len(gap.strip()) <= max_gap and set(gap) <= gap_chars
        if (chained and (_is_separator(gap) or gap in links)) or (owner and not chained and near):
            flags[n] = chained = True
        else:
            owner = chained = False
        last = b
        n += 1
    return flags


def _before_words(text: str, spans: list[tuple[int, int]], followed: Callable[[int], bool]) -> list[bool]:
    """Mentions a word follows (``followed(end)``: 糖尿病の家族歴, 胃潰瘍の既往), and the list each ends
    (糖尿病、高血圧の家族歴あり)."""
    flags = [False] * len(spans)
    for n in range(len(spans) - 1, -1, -1):
        b = spans[n][1]
        if followed(b) or (n + 1 < len(spans) and flags[n + 1] and _is_separator(text[b : spans[n + 1][0]])):
            flags[n] = True
    return flags


# ---------------------------------------------------------------------------------------------------
# When it was: the patient's past history (既往) or the illness now. A finding of the past history may
# still go on (既往歴：高血圧 内服中); the flag says the note files it as history, not as what brings the
# patient now.

#: a past-history heading, whose list runs to the end of its line: 既往歴：胃潰瘍、虫垂炎(20歳)
HISTORY_HEADINGS = ("既往歴", "既往症", "既往", "pmh", "phx", "past medical history", "past history")
#: … and ends where a family-history list ends (the next heading, 家族歴 and 現病歴 included), or where the
#: note turns to now: 既往に喘息、今回肺炎で入院
NOW = ("今回", "本日", "今朝", "昨日", "昨夜", "今日", "入院時", "来院時", "受診時", "主訴")
_HISTORY_END = (*_SECTION_END, *NOW)
#: right after a mention, or after the list it ends (の, で or にて between): 胃潰瘍の既往, 結核既往あり,
#: DM、HTの既往歴, 肺炎で入院歴あり, 胃癌術後, 虫垂炎の手術後
SEQUELA = "後遺症"  # 脳梗塞の後遺症で右片麻痺: the infarct was, the palsy is
HISTORY_AFTER = (
    "既往",
    "病歴",
    "罹患歴",
    "治療歴",
    "加療歴",
    "手術歴",
    "入院歴",
    "通院歴",
    "感染歴",
    "術後",
    "手術後",
    "切除後",
    "治療後",
    "加療後",
    "治癒後",
    "罹患後",
    SEQUELA,
    "s/p",  # 胃癌 s/p ope: status post
)
_HISTORY_LINKS = ("", " ", "の", "で", "にて", "による", "に対する", "に対して", "に対し")
#: a time in the past before a mention, with only に, は, で or a comma between: 10年前に胃癌, 以前に肺炎,
#: 30歳時に虫垂炎, 2015年に胃癌で手術; 既往の (既往の胃潰瘍); h/o, s/p (h/o 脳梗塞, s/p AMI). Not 3日前に / 1週間前に (the illness now),
#: and not 以前から / 3年前より (since then: it goes on).
PAST_TIME = re.compile(
    r"(?:\d+|数|十数|何|半)(?:年半?|か月|ヶ月|ヵ月|カ月|ケ月)(?:ほど|程|くらい|ぐらい)?前"
    r"|(?:19|20)\d\d年|(?:昭和|平成|令和|[shr])\d+年"
    r"|\d+歳(?:時|頃|ごろ|の時|のとき)"
    r"|以前|過去|昔|幼少期|幼少時|幼児期|小児期|学童期|思春期|若年時|若い頃|若いころ|学生時代|若年期"
    r"|既往の"  # 既往の胃潰瘍が再発
    r"|(?<![a-z])(?:h/o|s/p|hx of|history of)(?:\s*:)?"  # the ward's English: h/o 脳梗塞, s/p AMI, H/O: DM
)
_PAST_GAP_CHARS = set("にはで、, ")
PAST_GAP = 2


def history_flags(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """For each mention span (sorted, in normalized ``text``): does the note file it as past history?

    A mention is history when it follows a past-history heading in the same sentence (既往歴：胃潰瘍、
    虫垂炎; 既往に喘息), until the next heading or the note turns to now (今回, 本日, 入院時); when 既往, a
    history word (治療歴, 入院歴) or 術後 follows it or its list (胃潰瘍の既往, DM、HTの既往あり, 胃癌術後);
    when the mention itself ends so (the dictionary's 胃潰瘍既往, 結核罹患歴); or when a time in the past
    stands just before it or its list (10年前に胃癌, 以前に肺炎、心不全). A mention that begins with a
    word of now (the dictionary's 今回肺炎) is the illness now.
    """
    blocked = _span_mask(len(text), spans)
    not_heading = bytearray(blocked)  # 家族既往歴：糖尿病 is a relative's: its 既往歴 is no heading here
    for m in _FAMILY_PAST.finditer(text):
        not_heading[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
    flags = _under_headings(text, spans, not_heading, HISTORY_HEADINGS, _HISTORY_END)
    owners: list[tuple[int, int, str]] = [
        (m.start(), m.end(), "r") for m in PAST_TIME.finditer(text) if not any(blocked[m.start() : m.end()])
    ]
    for word in NOW:  # inside a mention too: 今回肺炎 ends a reach
        start = 0
        while (pos := text.find(word, start)) >= 0:
            owners.append((pos, pos + len(word), "p"))
            start = pos + 1
    owned = _owned(text, spans, owners, _PAST_GAP_CHARS, PAST_GAP)
    after = _before_words(text, spans, lambda b: _history_word_at(text, b))
    out = []
    for (a, b), *on in zip(spans, flags, owned, after, strict=True):
        key = text[a:b]
        if key.startswith(NOW):
            out.append(False)
        else:
            # a name of the sequela itself (脳梗塞後遺症) is what the patient has now
            out.append(any(on) or (key.endswith(HISTORY_AFTER) and not key.endswith(SEQUELA)))
    return out


def _history_word_at(text: str, i: int) -> bool:
    return any(
        text.startswith(link, i) and text.startswith(HISTORY_AFTER, i + len(link)) for link in _HISTORY_LINKS
    )


# ---------------------------------------------------------------------------------------------------
# A finding the text only supposes: if it comes (発熱時は再診, 胸痛があれば救急要請, 肺炎になったら受診), to be
# prevented or watched for (肺炎予防, 誤嚥に注意), a risk (脳梗塞のリスク). Not there now, and not suspected
# either: ConText's "hypothetical".

#: right after a mention (or the list it ends): 頭痛時, 肺炎予防, 肺炎の予防, 脳梗塞のリスク, 誤嚥に注意
HYPOTHETICAL_AFTER = (
    "の場合",  # 嘔吐の場合は制吐剤
    "予防",
    "の予防",
    "の発症予防",
    "発症予防",
    "を予防",  # 冠動脈瘤を予防するには
    "の発症を予防",
    "を防",  # 誤嚥を防ぐ, 再出血を防止
    "の発症を防",
    "リスク",
    "のリスク",
    "の危険",
    "に注意",
    "に留意",
    "に警戒",
    "の出現に注意",
    "の発症に注意",
    "の合併に注意",
)
_NOT_WHEN = "点間期代刻々"  # after 時: 時点, 時間, 時期, 時代, 時刻, 時々 are no condition
#: a mention, a particle, a verb of coming about and a condition: 胸痛があれば, 肺炎になったら, 発熱が出現
#: した際, 心不全を発症した場合. Not a verb of course: in 心不全が増悪した場合 the heart failure is there.
_CONDITION = re.compile(
    r"(?:(?:の?症状)?(?:が|を|に|と|の|は)?"  # 感冒症状出現時
    r"(?P<verb>出現|発症|発生|再発|再燃|出|起こ|起き|生じ|見られ|みられ|認め|あ|な)"
    r"|(?P<suru>し|す))"  # the finding as a verb: 嘔吐した場合, 発熱する際
    # the verb's ending, in kana: 出現した, 出ている, あった. No kanji: in 発熱があり受診した際 and
    # 胸痛がありER受診時 the 際 and 時 are the visit's; no の: 胸痛がありその時 is a time the note reports
    r"(?P<ending>(?:(?!の)[ぁ-ゖ]){0,7}?)"  # 出現するようであ|れば
    rf"(?P<when>たら|だら|れば|なら|場合|際|時(?![{_NOT_WHEN}])|とき(?!どき))"
)
_SEEN = frozenset({"認め", "見られ", "みられ"})  # 肺炎を認めた際 is also a report: only 場合/たら/れば
_RULE_AFTER = ("は", "には", "も", ":", " ", "の対処", "の対応", "の対策", "?")
_RULE_END = re.compile(r"[。.!?]*$")  # a past 時 that ends the text: a question's 下痢になった時


def hypothetical_flags(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """For each mention span (sorted, in normalized ``text``): does the text only suppose the finding?

    Hypothetical: a condition (頭痛時, 発熱時は再診, 胸痛があれば, 肺炎になったら, 咳嗽が出現した際, 心不全を発症
    した場合), prevention (肺炎予防, 肺炎の予防), a risk (脳梗塞のリスク) or a caution (誤嚥に注意), after the
    mention or the list it ends (発熱や咳嗽が出現した際は連絡: both); and a disease word that names a vaccine,
    test, antibody or organism (:func:`names_other_thing`), alone. 時 right after the finding is a
    condition (an order's 頭痛時 カロナール); after another word it is a condition only after a verb of coming
    about (発熱出現時), not in 胃癌診断時 or 肺炎を認めた時点."""

    def followed(b: int) -> bool:
        if text.startswith(HYPOTHETICAL_AFTER, b):
            return True
        if text.startswith("時", b) and not (text[b + 1 : b + 2] and text[b + 1] in _NOT_WHEN):
            return True
        m = _CONDITION.match(text, b)
        if not m or m["when"] in ("たら", "だら", "れば", "なら", "場合"):
            return bool(m)
        if m["verb"] in _SEEN:  # 肺炎を認めた際 is also a report: only 場合/たら/れば
            return False
        # a past 時 / 際 is a rule when it is the topic (出現した際は連絡, 発熱した時には), an order's (発熱した時:),
        # what to do then (下痢になった時の対処), asked (発熱した時?) or the end of a query (肺炎になった時), and
        # the note's story otherwise (胸痛が出現した時に冷汗を伴った)
        return (
            not m["ending"].endswith(("た", "だ"))
            or text.startswith(_RULE_AFTER, m.end())
            or bool(_RULE_END.fullmatch(text, m.end()))
        )

    out = _before_words(text, spans, followed)
    for n, (a, b) in enumerate(spans):
        key = text[a:b]
        if key.endswith("時") and len(key) > 2:  # the dictionary's 頭痛時, 発熱時
            out[n] = True
        elif key.endswith(("再発", "再燃")):  # 脳梗塞再発予防: the infarct happened
            out[n] = out[n] and not text.startswith(("予防", "の予防"), b)
        if names_other_thing(text, a, b):  # 麻疹ワクチン, 腫瘍マーカー, 胃癌検診: prevented or looked for
            out[n] = True
    return out
