"""IgakuQA119 (docto-rin/IgakuQA119): the 119th medical licensing exam (2025), its gold and answer files.

Odd format, hence Python. Questions are OCR output, ``questions/119{A..F}_json.json`` =
``[{number, question, choices: ["a. …", …], has_image}]``; gold is ``results/correct_answers.csv``
(``問題番号,解答``, several letters concatenated, "ce"). Real-file corners handled here:

* a few items have ``choices: []`` and their options written inline in the question text
  (``… どれか。 a「…」 b「…」 … e「…」``, one OCR'd as ``Cフロセミド``) with a letter gold: the options are
  parsed out of the text;
* a few choice lists carry two options merged into one string (``c. 全身性強皮症d結節性多発動脈炎``) or
  lose a letter (``b. …通告0人工妊娠中絶の要件`` followed by ``d. …``): the letter written in the source is
  the truth. Letters are kept as written; a merged option is split at the embedded marker of the
  missing letter; a letter that cannot be recovered stays missing (never re-lettered by position).

Every repair is recorded in ``Question.repairs`` (``ragmed eval datasets --check`` lists them).

Model answer files, ``answers/<model>/119X_<model>.json`` =
``{experiment_id, results: [{question_number, question_text, choices, has_image, answers: [{model,
timestamp, answer, …}]}]}``, are read by :func:`read_answer_files`; :func:`leaderboard_figures` grades
them exactly as the repository's ``src/grading_logic.py`` + ``src/stats_utils.py`` do, which is how
``results/leaderboard.json`` was made.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragmed_eval.readers import n_select, parse_problem_id, read_csv_rows, read_json, section_of
from ragmed_eval.schema import Question

from ragmed.errors import DataFormatError, DatasetError, DatasetNotFound
from ragmed.schema import CHOICE_PREFIX, LETTERS

# A choice letter written inline: after whitespace (or at the start), either followed by a period-like
# mark, or directly by a non-ASCII character ("a「…」", "aアトロピン"); half- or full-width.
_INLINE_MARKER = re.compile(r"(?:^|(?<=\s))([a-hA-Hａ-ｈＡ-Ｈ])(?:\s*[.．:：)）]\s*|(?=[^\x00-\x7f\s]))")
#: pandas.read_csv's default NA strings: the repository reads the gold with pandas, so a cell holding one
#: of these becomes "nan" in its grading.
_PANDAS_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip


def points_of(pid: str) -> int:
    """Blocks B and E, questions 26-50, score 3; everything else 1 (500 points in all)."""
    _, _, block, num = parse_problem_id(pid)
    return 3 if block in ("B", "E") and num is not None and 26 <= num <= 50 else 1


def normalize_answer(value: Any) -> str:
    """IgakuQA119's comparison form: ``str()``, strip, lowercase, drop ``[ ] ,`` and spaces, sort."""
    t = str(value).strip().lower() if value is not None else ""
    return "".join(sorted(t.replace("[", "").replace("]", "").replace(",", "").replace(" ", "")))


def correct(problem_id: str, answer: Any, gold: Any) -> bool:
    """``grading_logic.grade_answers``: empty is wrong; 119E28 accepts a or c."""
    m = normalize_answer(answer)
    if not m:
        return False
    if problem_id == "119E28":
        return m in ("a", "c")
    return m == normalize_answer(gold)


# --------------------------------------------------------------------------- gold and questions


def gold_file(root: Path) -> Path:
    for cand in (root / "results" / "correct_answers.csv", root / "correct_answers.csv"):
        if cand.is_file():
            return cand
    raise DatasetNotFound(f"igakuqa119: gold file results/correct_answers.csv not found under {root}")


def read_gold(path: Path) -> dict[str, tuple[str, int]]:
    """``問題番号 -> (解答, line)``; a repeated number keeps its last row, as the repository's dict does."""
    rows = read_csv_rows(path)
    first = next(rows, None)
    if first is None or [h.strip() for h in first[1][:2]] != ["問題番号", "解答"]:
        raise DatasetError(path, 1, f"expected header 問題番号,解答, got {first[1] if first else None!r}")
    gold: dict[str, tuple[str, int]] = {}
    for line, row in rows:
        if len(row) < 2:
            raise DatasetError(path, line, "expected 2 columns 問題番号,解答")
        gold[row[0].strip()] = (row[1].strip(), line)
    return gold


def _split_prefixes(raw: list[str]) -> tuple[list[str], list[str]]:
    """(letters, texts) of ``"a. …"`` strings; letters empty when the list is not uniformly prefixed."""
    letters, texts = [], []
    for c in raw:
        m = CHOICE_PREFIX.match(unicodedata.normalize("NFKC", c))
        if not m:
            return [], list(raw)
        letters.append(m.group(1).lower())
        # Cut the same prefix from the raw text (NFKC may fold full-width marks, not the lengths we cut).
        cut = next(i for i in range(len(c) + 1) if len(unicodedata.normalize("NFKC", c[:i])) >= m.end())
        texts.append(c[cut:].strip())
    return letters, texts


def _embedded(text: str, letter: str) -> list[re.Match[str]]:
    """Places in ``text`` where ``letter`` is written as an option marker inside Japanese text
    (``全身性強皮症d結節性…``, ``… d. …``), half- or full-width."""
    full = chr(ord(letter) - ord("a") + ord("ａ"))
    cls = f"[{letter}{letter.upper()}{full}{full.upper()}]"
    pat = rf"(?<=[^\x00-\x7f])\s*{cls}\s*[.．]?\s*(?=[^\x00-\x7f])|\s+{cls}\s*[.．]\s*"
    return list(re.finditer(pat, text))


def repair_choices(
    pid: str, letters: list[str], texts: list[str], gold: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """Keep the source's letters; split a merged option at the embedded marker of a missing letter."""
    repairs: list[str] = []
    out_l, out_t = [letters[0]], [texts[0]]
    expected = [*letters[1:], None]
    for letter, text in zip(expected, [*texts[1:], None], strict=True):
        prev = out_l[-1]
        # Letters missing between the previous one and this one (or, at the end, those the gold needs).
        nxt = LETTERS.index(prev) + 1
        stop = (
            LETTERS.index(letter)
            if letter
            else max([LETTERS.index(g) + 1 for g in gold if g in LETTERS] or [0])
        )
        for missing in LETTERS[nxt:stop]:
            hits = _embedded(out_t[-1], missing)
            if len(hits) == 1:
                h = hits[0]
                head, tail = out_t[-1][: h.start()].strip(), out_t[-1][h.end() :].strip()
                repairs.append(f"{pid}: option {out_l[-1]} {out_t[-1]!r} split at the {missing} marker")
                out_t[-1] = head
                out_l.append(missing)
                out_t.append(tail)
            else:
                repairs.append(
                    f"{pid}: no option {missing} in the source (OCR merge without a marker?); "
                    f"letters kept as written: {','.join(letters)}"
                )
                break
        if letter is not None and text is not None:
            if LETTERS.index(letter) <= LETTERS.index(out_l[-1]):
                raise ValueError(f"{pid}: choice letters out of order ({','.join(letters)})")
            out_l.append(letter)
            out_t.append(text)
    return out_l, out_t, repairs


def parse_inline_options(text: str) -> tuple[str, list[str]] | None:
    """``(question, options)`` from a text ending in ``a「…」 b「…」 … e「…」``, or None."""
    marks = [
        (m.start(), m.end(), unicodedata.normalize("NFKC", m.group(1)).lower())
        for m in _INLINE_MARKER.finditer(text)
    ]
    best: list[tuple[int, int, str]] = []
    for i, (_, _, letter) in enumerate(marks):
        if letter != "a":
            continue
        chain = [marks[i]]
        for m in marks[i + 1 :]:
            if m[2] == LETTERS[len(chain)]:
                chain.append(m)
        if len(chain) >= 2 and len(chain) >= len(best):
            best = chain
    if not best:
        return None
    options = []
    for k, (_, end, _) in enumerate(best):
        stop = best[k + 1][0] if k + 1 < len(best) else len(text)
        options.append(text[end:stop].strip())
    if not all(options):
        return None
    return text[: best[0][0]].strip(), options


def load(root: Path, option: str | None = None) -> list[Question]:
    qdir = root / "questions" if (root / "questions").is_dir() else root
    gpath = gold_file(root)
    gold = read_gold(gpath)
    files = sorted(qdir.glob("119*_json.json"))
    if not files:
        raise DatasetNotFound(f"igakuqa119: no questions/119X_json.json files under {root}")
    out: list[Question] = []
    for f in files:
        if option and option.upper() not in f.stem:
            continue
        items = read_json(f)
        if not isinstance(items, list):
            raise DatasetError(f, None, "expected a JSON list of questions")
        for i, it in enumerate(items):
            where = f"item {i}"
            if not isinstance(it, dict) or "number" not in it or "question" not in it:
                raise DatasetError(f, None, f"{where}: needs 'number' and 'question'")
            pid = str(it["number"])
            if pid not in gold:
                raise DatasetError(gpath, None, f"no gold answer for {pid} ({f.name} {where})")
            out.append(_question(pid, it, f, where, gold[pid], gpath))
    return out


def _question(pid: str, it: dict[str, Any], f: Path, where: str, g: tuple[str, int], gpath: Path) -> Question:
    ans, gline = g
    text = str(it["question"])
    raw = it.get("choices") or []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise DatasetError(f, None, f"{where} ({pid}): 'choices' must be a list of strings")
    letters_gold = unicodedata.normalize("NFKC", ans).lower().replace(",", "").replace(" ", "")
    is_letters = re.fullmatch(r"[a-z]+", letters_gold) is not None
    repairs: list[str] = []
    letters: list[str] = []
    choices: list[str] = list(raw)
    if not raw and is_letters:
        parsed = parse_inline_options(text)
        if parsed is None:
            raise DatasetError(
                f, None, f"{where} ({pid}): no choices, letter gold {ans!r}, no inline options found"
            )
        text, choices = parsed
        repairs.append(
            f"{pid}: {len(choices)} options parsed from the question text (choices: [] in the source)"
        )
    elif raw:
        letters, choices = _split_prefixes(raw)
        if letters:
            try:
                letters, choices, rep = repair_choices(pid, letters, choices, sorted(set(letters_gold)))
            except ValueError as e:
                raise DatasetError(f, None, f"{where}: {e}") from None
            repairs += rep
            if letters == list(LETTERS[: len(letters)]):
                letters = []  # positional after all
    number, year, block, num = parse_problem_id(pid)
    stated = n_select(text)
    if choices:
        valid = letters or list(LETTERS[: len(choices)])
        if not is_letters or not letters_gold:
            raise DatasetError(
                gpath, gline, f"unknown answer encoding {ans!r} for {pid} (a question with choices)"
            )
        missing = [c for c in letters_gold if c not in valid]
        if missing:
            repairs.append(f"{pid}: gold {ans!r} names option(s) {','.join(missing)} absent from the source")
        gold = sorted(set(letters_gold))
        kind = "multi" if len(gold) > 1 or (stated or 1) > 1 else "single"
        n_answers: int | None = stated or len(gold)
    else:
        if not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", ans):
            raise DatasetError(gpath, gline, f"unknown numeric answer {ans!r} for {pid}")
        gold, kind, n_answers = [ans], "numeric", None
    return Question(
        id=pid,
        dataset="igakuqa119",
        text=text,
        choices=choices,
        choice_letters=letters,
        gold=gold,
        answer_raw=ans,
        alternatives=[["a"], ["c"]] if pid == "119E28" else [],
        points=points_of(pid),
        kind=kind,  # type: ignore[arg-type]
        n_answers=n_answers,
        has_image=bool(it.get("has_image", False)),
        section=section_of(block),
        year=year,
        block=block,
        exam="medical",
        exam_number=number,
        source=f"{f}:{where}",
        repairs=repairs,
    )


# --------------------------------------------------------------------------- model answer files


@dataclass
class AnswerRow:
    """One ``results[]`` entry the repository's grader keeps (it skips malformed ones)."""

    question_number: str
    answer: Any
    has_image: bool
    path: str


@dataclass
class AnswerFiles:
    rows: list[AnswerRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    model: str | None = None

    def predictions(self) -> dict[str, str]:
        """problem id -> the first answer as text (a later row for the same id wins)."""
        return {r.question_number: "" if r.answer is None else str(r.answer) for r in self.rows}


def is_answer_file(path: Path) -> bool:
    return path.suffix == ".json" and re.fullmatch(r"119[A-F]_.+", path.stem) is not None


def find_answer_files(path: Path, system: str | None) -> list[Path]:
    """A file, ``answers/<model>/`` or ``answers/`` with ``--system <model>``."""
    if path.is_file():
        return [path]
    pattern = f"119?_{system}.json" if system else "119?_*.json"
    files = sorted(f for f in path.rglob(pattern) if is_answer_file(f))
    if system is None:
        models = {f.stem.split("_", 1)[1] for f in files}
        if len(models) > 1:
            raise DataFormatError(
                f"{path} holds answer files of several models ({', '.join(sorted(models))}); pick one with --system"
            )
    return files


def read_answer_files(files: list[Path]) -> AnswerFiles:
    """The rows ``grading_logic.grade_answers`` would grade, with the same skipping rules."""
    out = AnswerFiles(files=[str(f) for f in files])
    for f in files:
        data = read_json(f)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise DataFormatError(f, None, "an IgakuQA119 answer file is {experiment_id, results: [...]}")
        for q in data["results"]:
            if not isinstance(q, dict):
                continue
            qn = q.get("question_number")
            qn = str(qn) if qn is not None else "N/A"
            if not all(k in q for k in ("question_number", "answers", "has_image")):
                if qn != "N/A":
                    out.skipped.append(qn)
                continue
            answers = q["answers"]
            if not isinstance(answers, list) or not answers or not isinstance(answers[0], dict):
                if qn != "N/A":
                    out.skipped.append(qn)
                continue
            first = answers[0]
            if "answer" not in first:
                if qn != "N/A":
                    out.skipped.append(qn)
                continue
            if out.model is None and first.get("model") not in (None, "UnknownModel"):
                out.model = str(first.get("model"))
            has_image = q.get("has_image", False)
            out.rows.append(
                AnswerRow(
                    qn, first.get("answer"), bool(has_image) if has_image is not None else False, str(f)
                )
            )
    out.skipped = sorted(set(out.skipped))
    return out


def leaderboard_figures(answers: AnswerFiles, gold: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The entry ``update_leaderboard_data`` writes to ``results/leaderboard.json``, recomputed.

    Graded rows are those whose number has a gold row (all of them counted, duplicates included);
    points: blocks B/E questions 26-50 score 3, other B/E and A/C/D/F questions 1, unknown blocks 0;
    ``no_image`` uses the answer file's own ``has_image``.
    """

    def stats(rows: list[AnswerRow]) -> dict[str, float | int]:
        correct_n = score = possible = 0
        for r in rows:
            ok = correct(r.question_number, r.answer, as_pandas_reads(gold[r.question_number][0]))
            block = (
                r.question_number[3].upper()
                if len(r.question_number) > 3 and r.question_number[3].isalpha()
                else ""
            )
            if block in ("B", "E"):
                digits = "".join(ch for ch in r.question_number[4:] if ch.isdigit())
                pts = 3 if digits and 26 <= int(digits) <= 50 else 1
            elif block in ("A", "C", "D", "F"):
                pts = 1
            else:
                pts = 0
            correct_n += ok
            possible += pts
            score += pts if ok else 0
        total = len(rows)
        return {
            "score": float(score),
            "possible_score": float(possible),
            "score_rate": score / possible if possible else 0.0,
            "correct": correct_n,
            "total": total,
            "accuracy": correct_n / total if total else 0.0,
        }

    graded = [r for r in answers.rows if r.question_number in gold]
    overall, no_image = stats(graded), stats([r for r in graded if not r.has_image])
    out: dict[str, Any] = {}
    for prefix, s in (("overall", overall), ("no_image", no_image)):
        for key in ("score", "possible_score", "score_rate", "correct", "total", "accuracy"):
            out[f"{prefix}_{key}"] = s[key]
    return out


def as_pandas_reads(value: str) -> str:
    """A gold cell as the repository's ``pd.read_csv(...).astype(str)`` sees it."""
    return "nan" if value in _PANDAS_NA else value


def leaderboard(root: Path, answers: AnswerFiles, system: str | None) -> dict[str, Any]:
    """Recomputed leaderboard figures, and the published entry of ``results/leaderboard.json`` with
    whether every figure agrees (when the repository has one for this model)."""
    figures = leaderboard_figures(answers, read_gold(gold_file(root)))
    out: dict[str, Any] = {"figures": figures, "model": answers.model, "skipped": answers.skipped}
    found = published_entry(root, answers.model, system)
    if found:
        name, entry = found
        keys = [k for k in figures if k in entry]
        out["published"] = {"entry": name, **{k: entry[k] for k in keys}}
        out["matches_published"] = all(abs(float(figures[k]) - float(entry[k])) < 1e-9 for k in keys)
    return out


def published_entry(root: Path, model: str | None, system: str | None) -> tuple[str, dict[str, Any]] | None:
    """The ``results/leaderboard.json`` entry for this model, matched loosely by name, if there is one."""
    path = root / "results" / "leaderboard.json"
    if not path.is_file():
        return None
    board = read_json(path)
    if not isinstance(board, dict):
        return None

    def key(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    wanted = {key(s) for s in (model or "", system or "") if s}
    for name, entry in board.items():
        if key(name) in wanted and isinstance(entry, dict):
            return name, entry
    return None
