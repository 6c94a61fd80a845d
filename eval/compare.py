"""RAG vs no-RAG: scores with 95 % bootstrap intervals, paired deltas, exact McNemar, flips.

WHY paired statistics: both modes answer the same questions, so the question-level difference is
what matters. The McNemar test uses only discordant pairs (b = RAG fixed it, c = RAG broke it);
the exact version is a two-sided binomial test of b against b + c at p = 0.5 (scipy binomtest),
valid for the small counts a per-category table produces. Intervals come from a percentile
bootstrap over questions, resampling the same indices for both modes so the delta keeps the pairing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from ragmed_eval.schema import Question
from ragmed_eval.scoring import ScoreReport, score
from scipy.stats import binomtest


def bootstrap_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, stat: str = "mean") -> list[float]:
    """95 % percentile interval of mean (or sum) of `values` over resampled questions."""
    if len(values) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    samples = values[idx]
    stats = samples.mean(axis=1) if stat == "mean" else samples.sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, stat: str = "mean"
) -> list[float]:
    """95 % interval of stat(b) - stat(a) with the same resampled questions for both."""
    if len(a) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    d = b[idx] - a[idx]
    stats = d.mean(axis=1) if stat == "mean" else d.sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def mcnemar_exact(base_correct: np.ndarray, mode_correct: np.ndarray) -> dict[str, Any]:
    """Exact McNemar on paired booleans: b = mode right & base wrong, c = mode wrong & base right."""
    b = int(np.sum(mode_correct & ~base_correct))
    c = int(np.sum(~mode_correct & base_correct))
    p = float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {
        "b_improved": b,
        "c_regressed": c,
        "n_discordant": b + c,
        "p_value": p,
        "test": "exact McNemar (binomtest)",
    }


def _vectors(rep: ScoreReport) -> tuple[np.ndarray, np.ndarray]:
    correct = np.array([it.correct for it in rep.items], dtype=bool)
    points = np.array([it.points if it.correct else 0 for it in rep.items], dtype=float)
    return correct, points


def mode_summary(
    rep: ScoreReport, records: dict[str, dict[str, Any]], n_boot: int, seed: int
) -> dict[str, Any]:
    d = rep.to_dict()
    correct, pts = _vectors(rep)
    d["overall"]["accuracy_ci"] = bootstrap_ci(correct.astype(float), n_boot, seed)
    d["overall"]["score_ci"] = bootstrap_ci(pts, n_boot, seed, stat="sum")
    d["answered"] = len(rep.items) - len(rep.missing)
    d["methods"] = dict(Counter(str(r.get("method")) for r in records.values()))
    llm = [r.get("timings", {}).get("llm_ms", 0.0) for r in records.values()]
    own = [r.get("timings", {}).get("ragmed_ms", 0.0) for r in records.values()]
    d["timing_ms"] = {
        "llm_mean": float(np.mean(llm)) if llm else 0.0,
        "ragmed_mean": float(np.mean(own)) if own else 0.0,
    }
    d.pop("missing", None)
    d["missing"] = len(rep.missing)
    return d


def _group_table(
    questions: list[Question], base: dict[str, bool], mode: dict[str, bool], key: str, n_boot: int = 1000
) -> list[dict[str, Any]]:
    groups: dict[str, list[str]] = {}
    for q in questions:
        v = getattr(q, key)
        groups.setdefault("(none)" if v is None else str(v), []).append(q.id)
    rows = []
    for name in sorted(groups):
        ids = [i for i in groups[name] if i in base and i in mode]
        if not ids:
            continue
        a = np.array([base[i] for i in ids])
        b = np.array([mode[i] for i in ids])
        rows.append(
            {
                "name": name,
                "n": len(ids),
                "acc_base": float(a.mean()),
                "acc_mode": float(b.mean()),
                "delta": float(b.mean() - a.mean()),
                "delta_ci": paired_bootstrap(a.astype(float), b.astype(float), n_boot),
                **{
                    k: v
                    for k, v in mcnemar_exact(a, b).items()
                    if k in ("b_improved", "c_regressed", "p_value")
                },
            }
        )
    return rows


def _flip(q: Question, base_rec: dict[str, Any], mode_rec: dict[str, Any]) -> dict[str, Any]:
    cited = mode_rec.get("citations") or []
    sources = [
        {k: c.get(k) for k in ("n", "node_id", "source", "title", "score") if k in c} for c in cited
    ] or [
        {k: s.get(k) for k in ("node_id", "source", "title", "score")} for s in mode_rec.get("sources") or []
    ]
    return {
        "id": q.id,
        "category": q.category,
        "section": q.section,
        "text": q.text[:200],
        "gold": q.gold or [" or ".join(a[0] for a in q.alternatives)],
        "base_prediction": base_rec.get("prediction"),
        "mode_prediction": mode_rec.get("prediction"),
        "sources": sources,
    }


def compare_modes(
    questions: list[Question],
    preds: dict[str, dict[str, dict[str, Any]]],
    *,
    baseline: str = "norag",
    normalized: bool = False,
    thresholds: dict[str, float] | None = None,
    subset: str = "all",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores per mode and, for each other mode, the paired comparison with `baseline`."""
    reps = {
        m: score(
            questions,
            {i: r["prediction"] for i, r in recs.items()},
            normalized=normalized,
            subset=subset,
            thresholds=thresholds,
        )
        for m, recs in preds.items()
    }
    modes = {m: mode_summary(rep, preds[m], n_boot, seed) for m, rep in reps.items()}
    comparisons = []
    if baseline in reps:
        base_map = {it.id: it.correct for it in reps[baseline].items if not it.missing}
        by_id = {q.id: q for q in questions}
        for m, rep in reps.items():
            if m == baseline:
                continue
            mode_map = {it.id: it.correct for it in rep.items if not it.missing}
            paired = [q.id for q in questions if q.id in base_map and q.id in mode_map]
            a = np.array([base_map[i] for i in paired], dtype=bool)
            b = np.array([mode_map[i] for i in paired], dtype=bool)
            pts = np.array([by_id[i].points for i in paired], dtype=float)
            improved = [i for i in paired if mode_map[i] and not base_map[i]]
            regressed = [i for i in paired if base_map[i] and not mode_map[i]]
            comparisons.append(
                {
                    "baseline": baseline,
                    "mode": m,
                    "n_paired": len(paired),
                    "acc_base": float(a.mean()) if len(a) else 0.0,
                    "acc_mode": float(b.mean()) if len(b) else 0.0,
                    "delta_accuracy": float(b.mean() - a.mean()) if len(a) else 0.0,
                    "delta_accuracy_ci": paired_bootstrap(a.astype(float), b.astype(float), n_boot, seed),
                    "delta_score": float((b * pts).sum() - (a * pts).sum()),
                    "delta_score_ci": paired_bootstrap(a * pts, b * pts, n_boot, seed, stat="sum"),
                    "mcnemar": mcnemar_exact(a, b),
                    "by_category": _group_table(questions, base_map, mode_map, "category", n_boot),
                    "by_section": _group_table(questions, base_map, mode_map, "section", n_boot),
                    "by_year": _group_table(questions, base_map, mode_map, "year", n_boot),
                    "flips": {
                        "improved": [_flip(by_id[i], preds[baseline][i], preds[m][i]) for i in improved],
                        "regressed": [_flip(by_id[i], preds[baseline][i], preds[m][i]) for i in regressed],
                    },
                }
            )
    return {"modes": modes, "comparisons": comparisons, "baseline": baseline}
