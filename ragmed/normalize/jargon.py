"""Ward jargon in katakana, read as the words the standard names use.

Japanese clinical notes keep many German (and some English) words as short katakana jargon: アッペ for
Appendizitis (虫垂炎), マーゲン for Magen (胃), クレブス for Krebs (癌), デクビ for Dekubitus (褥瘡), ハイポ for
hypoglycaemia (低血糖). The dictionary's names never write them, and its surfaces hardly ever do
(manbyo_dev.csv has ＯＰＥ and オペ, little else), so neither the learned rewrite rules nor the
character encoder can learn them: each is a fact, not a spelling pattern.

So each katakana run of the query that is made up entirely of jargon words (アッペ, マーゲンクレブス) is
rewritten with their Japanese words (虫垂炎, 胃癌); the rewrite is then scored by the ranker like the learned
rules' rewrites. A run with anything else in it is left alone: ヘモ is jargon for 痔核 but not inside
ヘモグロビン, nor is メタ (Metastase, 転移) inside メタボリック. Words that are also eponyms are left out
(レーベル is Leber the liver, but also Leber of レーベル遺伝性視神経症; カイザー for Kaiserschnitt is also
Kayser of カイザー・フライシャー輪). The original wording is always scored too, so a stray reading only
adds candidates.
"""

from __future__ import annotations

import re

from ragmed.normalize.text import normalize_key

# jargon (as a key writes it) → the Japanese word the standard names use; German unless marked
JARGON = {
    "アッペ": "虫垂炎",  # Appendizitis
    "ヘモ": "痔核",  # Hämorrhoiden
    "マーゲン": "胃",  # Magen
    "クレブス": "癌",  # Krebs
    "カルチ": "癌",  # Karzinom
    "ザルコーマ": "肉腫",  # Sarkom
    "メタ": "転移",  # Metastase
    "デクビ": "褥瘡",  # Dekubitus
    "ガングレン": "壊疽",  # Gangrän
    "イクテルス": "黄疸",  # Ikterus
    "ウルクス": "潰瘍",  # Ulcus
    "ツモール": "腫瘍",  # Tumor
    "ステノーゼ": "狭窄",  # Stenose
    "インファルクト": "梗塞",  # Infarkt
    "エンボリー": "塞栓",  # Embolie
    "トロンボーゼ": "血栓症",  # Thrombose
    "ヘマトーム": "血腫",  # Hämatom
    "ヘマトーマ": "血腫",  # hematoma (English)
    "ヘルツ": "心",  # Herz
    "ルンゲ": "肺",  # Lunge
    "ニーレ": "腎",  # Niere
    "アポプレキシー": "脳卒中",  # Apoplexie
    "ハイポ": "低血糖",  # hypoglycaemia (English)
    "ブラディ": "徐脈",  # bradycardia (English)
    "タキ": "頻脈",  # tachycardia (English)
    "アレスト": "心停止",  # cardiac arrest (English)
    "ニューモ": "気胸",  # Pneumothorax
    "ゼクチオ": "帝王切開",  # Sectio caesarea
    "オペ": "手術",  # Operation
    "インフル": "インフルエンザ",  # clipped
}
_KEYS = {normalize_key(k): v for k, v in JARGON.items()}
_LONGEST = max(len(k) for k in _KEYS)
_RUN = re.compile(r"[ァ-ヺー]+")  # a katakana run of a key


def _split(run: str) -> list[str] | None:
    """The run as a sequence of jargon words (longest first at each point), or None if it is not one."""
    words: list[str] = []
    i = 0
    while i < len(run):
        for j in range(min(len(run), i + _LONGEST), i, -1):
            if run[i:j] in _KEYS:
                words.append(run[i:j])
                i = j
                break
        else:
            return None
    return words


def rewrites(key: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) for each katakana run of a normalized key made up of jargon words:
    ``マーゲンクレブス術後`` → (0, 8, ``胃癌``)."""
    out: list[tuple[int, int, str]] = []
    for m in _RUN.finditer(key):
        words = _split(m.group())
        if words:
            out.append((m.start(), m.end(), "".join(_KEYS[w] for w in words)))
    return out
