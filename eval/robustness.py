"""Prompt robustness: the same questions under several prompt templates and choice orders.

WHY: japanese-lm-med-harness shows that scores move with prompt wording, language and answer order; a
single accuracy hides that. A robustness run answers every question once per (template, permutation)
variant; this module makes the permutations (seeded per question, gold and 禁忌肢 remapped), maps the
model's letters back to the source's, and summarizes: accuracy per template / permutation, the spread,
how often a question gets the same answer in every variant, and which shown positions the model picks.

Everything here is pure (no I/O), so remapping is tested item by item.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ragmed_eval.schema import Question
from ragmed_eval.scoring import score

from ragmed.schema import LETTERS

#: The variant every run has: the first template, choices in the source's order.
IDENTITY = 0


def permutation(q: Question, k: int, seed: int) -> list[int]:
    """Order of the source choices shown in variant ``k`` (0 = the source order).

    Seeded by (seed, question id, k), so a resumed or repeated run shows the same order. A non-zero
    ``k`` never returns the source order when another exists.
    """
    n = len(q.choices)
    ident = list(range(n))
    if k == IDENTITY or n < 2 or q.kind == "numeric":
        return ident
    rng = random.Random(f"{seed}:{q.id}:{k}")
    perm = ident[:]
    while perm == ident:
        rng.shuffle(perm)
    return perm


def _remap(letters: Sequence[str], q: Question, perm: Sequence[int]) -> list[str]:
    src = q.letters()
    out = []
    for letter in letters:
        if letter in src:
            out.append(LETTERS[perm.index(src.index(letter))])
    return sorted(out)


def shown_question(q: Question, perm: Sequence[int]) -> Question:
    """The question as shown in a permuted variant: choices reordered and lettered a, b, c…, gold,
    alternatives and 禁忌肢 remapped to the shown letters."""
    if list(perm) == list(range(len(q.choices))) and not q.choice_letters:
        return q
    return q.model_copy(
        update={
            "choices": [q.choices[i] for i in perm],
            "choice_letters": [],
            "gold": q.gold if q.kind == "numeric" else _remap(q.gold, q, perm),
            "alternatives": [_remap(a, q, perm) for a in q.alternatives],
            "kinki": _remap(q.kinki, q, perm),
        }
    )


def to_source(prediction: str, q: Question, perm: Sequence[int]) -> str:
    """A prediction in shown letters ("a,c") written in the source's letters, sorted and joined.

    Numeric answers and anything that is not a shown letter pass through unchanged (and score wrong)."""
    if q.kind == "numeric" or not prediction:
        return prediction
    src = q.letters()
    parts = prediction.split(",")
    if not all(p in LETTERS[: len(perm)] for p in parts):
        return prediction
    return ",".join(sorted(src[perm[LETTERS.index(p)]] for p in parts))


# --------------------------------------------------------------------------- analysis


def variant_name(template: str, perm: int) -> str:
    return f"{template} / p{perm}"


def analyze(
    questions: Sequence[Question],
    variants: Mapping[tuple[str, int], Mapping[str, Mapping[str, Any]]],
    *,
    normalized: bool = False,
) -> dict[str, Any]:
    """Accuracy per variant, spread, per-question consistency and shown-position picks.

    ``variants`` maps (template, permutation) to {problem_id: prediction record}; records carry the
    source-letter ``prediction`` and, for permuted variants, ``shown_prediction``.
    """
    rows = []
    correct_by_variant: dict[tuple[str, int], dict[str, bool]] = {}
    for (tpl, perm), recs in variants.items():
        rep = score(questions, {i: r["prediction"] for i, r in recs.items()}, normalized=normalized)
        o = rep.overall()
        correct_by_variant[(tpl, perm)] = {it.id: it.correct for it in rep.items}
        rows.append(
            {
                "variant": variant_name(tpl, perm),
                "template": tpl,
                "permutation": perm,
                **o,
                "missing": len(rep.missing),
            }
        )
    accs = [r["accuracy"] for r in rows]
    templates = sorted({t for t, _ in variants})
    perms = sorted({p for _, p in variants})

    def mean_over(pred: Any) -> float:
        vals = [r["accuracy"] for r in rows if pred(r)]
        return sum(vals) / len(vals) if vals else 0.0

    by_template = {t: mean_over(lambda r, t=t: r["template"] == t) for t in templates}
    by_permutation = {str(p): mean_over(lambda r, p=p: r["permutation"] == p) for p in perms}
    spread = {
        "n_variants": len(rows),
        "min": min(accs) if accs else 0.0,
        "max": max(accs) if accs else 0.0,
        "range": (max(accs) - min(accs)) if accs else 0.0,
        "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "template_range": (max(by_template.values()) - min(by_template.values())) if by_template else 0.0,
        "permutation_range": (max(by_permutation.values()) - min(by_permutation.values()))
        if by_permutation
        else 0.0,
    }
    # Per question: do all variants give the same (source-letter) answer, and are they all right?
    keys = list(variants)
    same = all_right = all_wrong = 0
    agreement: list[float] = []
    unstable: list[dict[str, Any]] = []
    for q in questions:
        answers = [variants[k].get(q.id, {}).get("prediction") for k in keys]
        corr = [correct_by_variant[k].get(q.id, False) for k in keys]
        counts = Counter(a for a in answers)
        modal = counts.most_common(1)[0][1] if counts else 0
        agreement.append(modal / len(keys) if keys else 0.0)
        if len(counts) == 1 and None not in counts:
            same += 1
        if all(corr):
            all_right += 1
        elif not any(corr):
            all_wrong += 1
        if len(counts) > 1 and len(unstable) < 50:
            unstable.append(
                {
                    "id": q.id,
                    "gold": q.gold,
                    "answers": {variant_name(*k): a for k, a in zip(keys, answers, strict=True)},
                }
            )
    n = len(questions)
    consistency = {
        "n_questions": n,
        "same_answer_all_variants": same / n if n else 0.0,
        "correct_in_all": all_right / n if n else 0.0,
        "wrong_in_all": all_wrong / n if n else 0.0,
        "flipping": (n - all_right - all_wrong) / n if n else 0.0,
        "mean_agreement": sum(agreement) / n if n else 0.0,
        "unstable": unstable,
    }
    # Which shown positions the model picks (position bias), over the permuted single-answer variants.
    picks: Counter[str] = Counter()
    for (_, perm), recs in variants.items():
        for r in recs.values():
            shown = r.get("shown_prediction") if perm != IDENTITY else r.get("prediction")
            if shown and "," not in shown and len(shown) == 1 and shown in LETTERS:
                picks[shown] += 1
    total_picks = sum(picks.values())
    return {
        "variants": rows,
        "by_template": by_template,
        "by_permutation": by_permutation,
        "spread": spread,
        "consistency": consistency,
        "shown_letter_share": {k: v / total_picks for k, v in sorted(picks.items())} if total_picks else {},
    }
