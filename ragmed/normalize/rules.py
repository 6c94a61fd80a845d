"""What the dictionary does to wording: rewrite rules and dropped affixes, learned from its own pairs.

Each (surface → standard name) row of Manbyo is aligned character by character (difflib); the edits
that turn the surface into its name become counted rules: ``左`` → ∅ (laterality dropped), ``ca`` →
``カルシウム`` (高Ｃａ血症 → 高カルシウム血症), ``cmv`` → ``サイトメガロウイルス``, ``窩織`` → ``巣``
(蜂窩織炎 → 蜂巣炎), ``疼痛`` → ``痛``. Applied to unseen wording, they turn it into names the dictionary
knows. Prefix/suffix statistics record which affixes the dictionary drops around a name (左…, …軽度).
"""

from __future__ import annotations

import difflib

from rapidfuzz.distance import Levenshtein

MAX_LHS = 10  # longest rewritten piece of a surface
MAX_RHS = 16  # longest replacement
MAX_AFFIX = 8  # longest prefix/suffix kept in the drop statistics


def edits(surface: str, name: str) -> list[tuple[str, str]]:
    """The local replacements/deletions (surface piece → name piece) that turn ``surface`` into ``name``.

    Insertions are left out: a rule must be triggered by something present in the query.
    """
    if surface == name or not surface or not name:
        return []
    out = []
    matcher = difflib.SequenceMatcher(None, surface, name, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete") and i2 - i1 <= MAX_LHS and j2 - j1 <= MAX_RHS:
            out.append((surface[i1:i2], name[j1:j2]))
    return out


def closest_part(surface: str, parts: list[str]) -> str | None:
    """The part of a standard-name cell a surface is written after (most characters in common)."""
    best, best_score = None, 0.0
    for part in parts:
        score = difflib.SequenceMatcher(None, surface, part, autojunk=False).ratio()
        if score > best_score:
            best, best_score = part, score
    return best


def affix(surface: str, parts: list[str]) -> tuple[str, str] | None:
    """(prefix, suffix) the dictionary dropped to get from ``surface`` to the longest part inside it."""
    best: tuple[str, str] | None = None
    best_len = 0
    for part in parts:
        pos = surface.find(part) if part else -1
        if pos >= 0 and len(part) > best_len and part != surface:
            pre, suf = surface[:pos], surface[pos + len(part) :]
            if len(pre) <= MAX_AFFIX and len(suf) <= MAX_AFFIX:
                best, best_len = (pre, suf), len(part)
    return best


def affix_cover(text: str, table: dict[str, int]) -> float:
    """Share of ``text`` that splits into affixes the dictionary is known to drop (seen ≥ 2 times)."""
    if not text:
        return 1.0
    n = len(text)
    best = [0] * (n + 1)
    for i in range(1, n + 1):
        best[i] = best[i - 1]
        for j in range(max(0, i - MAX_AFFIX), i):
            if table.get(text[j:i], 0) >= 2:
                best[i] = max(best[i], best[j] + i - j)
    return best[n] / n


def explained(
    query: str, surface: str, drops: dict[str, int], prefix: dict[str, int], suffix: dict[str, int]
) -> float:
    """Share of the characters in which ``query`` and a dictionary ``surface`` differ that are pieces
    the dictionary is known to drop (右 vs 左, …術後, 軽度…): 1.0 when the difference is only qualifiers."""
    if query == surface:
        return 1.0
    total = known = 0
    matcher = difflib.SequenceMatcher(None, query, surface, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for piece, at_start, at_end in (
            (query[i1:i2], i1 == 0, i2 == len(query)),
            (surface[j1:j2], j1 == 0, j2 == len(surface)),
        ):
            if not piece:
                continue
            total += len(piece)
            if (
                drops.get(piece, 0) >= 2
                or (at_start and prefix.get(piece, 0) >= 2)
                or (at_end and suffix.get(piece, 0) >= 2)
            ):
                known += len(piece)
    return known / total if total else 1.0


def levenshtein(a: str, b: str) -> int:
    """Edit distance (rapidfuzz's, in C: ~0.2 µs a pair where the bit-parallel loop in Python took ~2.5;
    a query computes ~100, and the ranker's training ~2 million)."""
    return int(Levenshtein.distance(a, b))
