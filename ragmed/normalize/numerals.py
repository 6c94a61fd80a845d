"""Numbers of degree, type, stage and order, in the other ways clinical text writes them.

The number in a disease name is part of the disease: 第３度房室ブロック is not 第２度房室ブロック, and
１型糖尿病 is not ２型. Clinical text writes that number in Roman numerals (Ⅲ度房室ブロック, ＩＩ型糖尿病), in
kanji (二度熱傷, 第二期梅毒) or in digits, with or without 第 (３度房室ブロック), while each standard name
writes it one way (第３度房室ブロック, ２型糖尿病, 二次性糖尿病, ムコ多糖症ＩＩＩ型). Character similarity sees
ⅱ, 二 and ２ as unrelated, so the nearest names keep the words and lose the number, or take another
one. Here every such number of the query is rewritten in the other spellings (digits, 第 + digits,
kanji, Roman numerals); the rewrites are scored by the ranker like the learned rules' rewrites, so the
name that writes the same number another way is found whole.

A number counts only where it is one: before 度, 型, 期, 次, 相 or 群, or after 第 — so 十二指腸,
一過性 and 三叉神経 keep their kanji, and a Roman numeral must stand apart from other Latin letters
(the ``iv`` in ``hiv`` is no four).
"""

from __future__ import annotations

import re

COUNTERS = "度型期次相群"  # what a number of degree, type, stage or order is written before
MAX_VALUE = 20
_KANJI = "一二三四五六七八九"
_ROMAN = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x"]
_ROMAN += ["x" + r for r in _ROMAN[:-1]] + ["xx"]
# in key space (normalize_key: NFKC, lower case): Ⅲ and ＩＩＩ are both "iii", ３ is "3"
# whole numbers only: the 8 of 38度 (a temperature) or the 十一 of 二十一 is no number of its own
_NUMBER = r"(?<![0-9])[0-9]{1,2}|(?<![一二三四五六七八九十])[一二三四五六七八九十]{1,3}|(?<![a-z])[ivx]{1,5}(?![a-z])"
_FOUND = re.compile(rf"(第)?({_NUMBER})(?=[{COUNTERS}])|(第)({_NUMBER})")


def value(text: str) -> int | None:
    """The value of one written number (``"3"``, ``"三"``, ``"十二"``, ``"iii"``), if it is one."""
    if text.isdigit():
        return int(text)
    if text in _ROMAN:
        return _ROMAN.index(text) + 1
    if "十" in text:
        tens, _, ones = text.partition("十")
        if "十" in ones or len(tens) > 1 or len(ones) > 1:
            return None
        return (_KANJI.index(tens) + 1 if tens else 1) * 10 + (_KANJI.index(ones) + 1 if ones else 0)
    return _KANJI.index(text) + 1 if len(text) == 1 and text in _KANJI else None


def spellings(n: int) -> list[str]:
    """``n`` in digits and kanji (as keys write them) and in Roman numerals."""
    kanji = ("" if n < 20 else _KANJI[n // 10 - 1]) + ("十" if n >= 10 else "")
    kanji += _KANJI[n % 10 - 1] if n % 10 else ""
    return [str(n), kanji, _ROMAN[n - 1]]


def rewrites(key: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) for each number of a normalized key, one per other spelling: the
    number in digits or kanji, with or without 第 in front, or in Roman numerals (``iii度`` → ``3``,
    ``第3``, ``三``, ``第三``, each replacing ``iii``)."""
    out: list[tuple[int, int, str]] = []
    for m in _FOUND.finditer(key):
        n = value(m.group(2) or m.group(4))
        if n is None or not 1 <= n <= MAX_VALUE:
            continue
        start, end = m.span()
        written = key[start:end]
        digits, kanji, roman = spellings(n)
        for rhs in (digits, "第" + digits, kanji, "第" + kanji, roman):
            if rhs != written:
                out.append((start, end, rhs))
    return out
