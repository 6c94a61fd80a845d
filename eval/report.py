"""Run reports: one stable `report.json` (for the UI), rendered to markdown/HTML, with PNG plots.

WHY a fixed schema: the UI's evaluation tab reads `report.json` through `load_report(run_dir)`
without knowing how runs are made; `SCHEMA` names the version, and fields are only ever added.

Schema "ragmed-eval-report/1":
  schema, created, run_dir, dataset, subset, n_questions, scoring {name, official},
  config {...run config...}, baseline,
  modes {mode: {overall {correct, n, accuracy, score, total, accuracy_ci, score_ci},
                by_year|by_block|by_section|by_category {key: {correct, n, accuracy, score, total}},
                pass {year: {required, general_clinical, kinki, passed, partial}},
                answered, missing, methods {method: count}, timing_ms {llm_mean, ragmed_mean}}},
  comparisons [{baseline, mode, n_paired, acc_base, acc_mode, delta_accuracy, delta_accuracy_ci,
                delta_score, delta_score_ci, mcnemar {b_improved, c_regressed, n_discordant, p_value},
                by_category|by_section|by_year [{name, n, acc_base, acc_mode, delta, b_improved,
                c_regressed, p_value}], flips {improved|regressed [{id, category, section, text, gold,
                base_prediction, mode_prediction, sources [{n, node_id, source, title, score}]}]}}],
  leakage {verdict, contaminated_questions, question_answer_leaks, contaminated_node_ids, ...} | null,
  robustness {mode: {variants [{variant, template, permutation, correct, n, accuracy, score, total,
              missing}], by_template {name: mean accuracy}, by_permutation {k: mean accuracy},
              spread {n_variants, min, max, range, std, template_range, permutation_range},
              consistency {n_questions, same_answer_all_variants, correct_in_all, wrong_in_all, flipping,
              mean_agreement, unstable [{id, gold, answers}]}, shown_letter_share {letter: share}}}
              (only when the run has prompt/choice-order variants; added in place, schema unchanged),
  plots {accuracy_by_category: "plots/accuracy_by_category.png", delta: "plots/delta.png",
         robustness: "plots/robustness.png"}
"""

from __future__ import annotations

import html
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ragmed_eval.compare import compare_modes
from ragmed_eval.robustness import analyze
from ragmed_eval.runs import CONFIG, LEAKAGE, PRED_DIR, load_run, load_variants

from ragmed.errors import InputError, NotFoundError

SCHEMA = "ragmed-eval-report/1"
REPORT = "report.json"


def build_report(
    run_dir: str | Path,
    *,
    normalized: bool = False,
    thresholds: dict[str, float] | None = None,
    baseline: str = "norag",
    n_boot: int = 2000,
    plots: bool = True,
) -> dict[str, Any]:
    """Score every mode of a run, compare with the baseline, write report.json (+ plots)."""
    d = Path(run_dir)
    cfg, questions, preds = load_run(d)
    if not preds:
        raise NotFoundError(f"{d / PRED_DIR} holds no predictions yet: run `ragmed eval run` first")
    if baseline not in preds:
        baseline = next(iter(preds))
    cmp = compare_modes(
        questions,
        preds,
        baseline=baseline,
        normalized=normalized,
        thresholds=thresholds,
        subset=cfg.subset,
        n_boot=n_boot,
    )
    first = next(iter(cmp["modes"].values()))
    leak_path = d / LEAKAGE
    leakage = None
    if leak_path.exists():
        full = json.loads(leak_path.read_text(encoding="utf-8"))
        leakage = {k: v for k, v in full.items() if k != "hits"}
        leakage["hits"] = full.get("hits", [])[:50]
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(d),
        "dataset": cfg.dataset,
        "subset": cfg.subset,
        "n_questions": len(questions),
        "scoring": {"name": first["scoring"], "official": first["official"]},
        "config": cfg.model_dump(),
        "baseline": cmp["baseline"],
        "modes": cmp["modes"],
        "comparisons": cmp["comparisons"],
        "leakage": leakage,
        "plots": {},
    }
    variants = load_variants(d, cfg, preds, {q.id for q in questions})
    if variants:
        report["robustness"] = {
            mode: analyze(questions, recs, normalized=normalized) for mode, recs in variants.items()
        }
    if plots:
        report["plots"] = make_plots(report, d / "plots")
    tmp = d / (REPORT + ".tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, d / REPORT)
    return report


def load_report(run_dir: str | Path, *, rebuild: bool = False) -> dict[str, Any]:
    """The report of a run for the UI: report.json, rebuilt when predictions are newer."""
    d = Path(run_dir)
    path = d / REPORT
    if not (d / CONFIG).exists() and not path.exists():
        raise NotFoundError(f"{d} is not a ragmed eval run directory")
    newest = max((p.stat().st_mtime for p in (d / PRED_DIR).glob("*.jsonl")), default=0.0)
    if rebuild or not path.exists() or path.stat().st_mtime < newest:
        return build_report(d)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        return build_report(d)
    return data


# ---------------------------------------------------------------- plots


def make_plots(report: dict[str, Any], out: Path) -> dict[str, str]:
    """Accuracy by category for every mode, and the RAG - baseline delta with 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib_fontja  # noqa: F401 - registers a Japanese font so category names render

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    modes = report["modes"]
    cats = sorted({c for m in modes.values() for c in m["by_category"]})
    if cats:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(cats) * max(1, len(modes)) ** 0.5 + 3), 4.5))
        width = 0.8 / max(1, len(modes))
        for i, (name, m) in enumerate(modes.items()):
            ys = [m["by_category"].get(c, {}).get("accuracy", 0.0) for c in cats]
            ax.bar([x + i * width for x in range(len(cats))], ys, width, label=name)
        ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(cats))])
        ax.set_xticklabels(cats, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("正答率 (accuracy)")
        ax.set_title(f"カテゴリ別正答率 — {report['dataset']}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        fig.savefig(out / "accuracy_by_category.png", dpi=110)
        plt.close(fig)
        paths["accuracy_by_category"] = "plots/accuracy_by_category.png"
    if report["comparisons"]:
        rows = []
        for c in report["comparisons"]:
            lo, hi = c["delta_accuracy_ci"]
            rows.append((f"{c['mode']} 全体", c["delta_accuracy"], lo, hi))
            for r in c["by_section"]:
                rows.append((f"{c['mode']} {r['name']}", r["delta"], *r.get("delta_ci", (None, None))))
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
        ys = list(range(len(rows)))[::-1]
        for y, (_label, dv, lo, hi) in zip(ys, rows, strict=True):
            color = "tab:green" if dv >= 0 else "tab:red"
            ax.barh(y, dv, color=color, alpha=0.7)
            if lo is not None:
                ax.errorbar(dv, y, xerr=[[dv - lo], [hi - dv]], fmt="o", color="black", capsize=4)
        ax.set_yticks(ys)
        ax.set_yticklabels([r[0] for r in rows])
        ax.axvline(0, color="gray", lw=1)
        ax.set_xlabel(f"正答率の差 (mode − {report['baseline']}), 95% bootstrap CI")
        ax.set_title("RAG の効果")
        fig.tight_layout()
        fig.savefig(out / "delta.png", dpi=110)
        plt.close(fig)
        paths["delta"] = "plots/delta.png"
    if report.get("robustness"):
        rob = report["robustness"]
        fig, axes = plt.subplots(1, len(rob), figsize=(max(6, 4.5 * len(rob)), 4.5), squeeze=False)
        for ax, (mode, r) in zip(axes[0], rob.items(), strict=True):
            templates = list(r["by_template"])
            for ti, tpl in enumerate(templates):
                pts = [v for v in r["variants"] if v["template"] == tpl]
                xs = [
                    ti + (v["permutation"] - 0.5 * max(1, len(pts) - 1)) * 0.8 / max(1, len(pts)) for v in pts
                ]
                ax.scatter(xs, [v["accuracy"] for v in pts], s=36, label=None)
                for x, v in zip(xs, pts, strict=True):
                    ax.annotate(
                        f"p{v['permutation']}",
                        (x, v["accuracy"]),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        fontsize=8,
                    )
                ax.hlines(r["by_template"][tpl], ti - 0.4, ti + 0.4, colors="black", linewidth=1.5)
            ax.set_xticks(range(len(templates)))
            ax.set_xticklabels(templates, rotation=20, ha="right")
            ax.set_ylim(0, 1)
            ax.set_ylabel("正答率 (accuracy)")
            c = r["consistency"]
            ax.set_title(
                f"{mode}: range {100 * r['spread']['range']:.1f} pt, 全variant同答 {100 * c['same_answer_all_variants']:.0f}%"
            )
        fig.suptitle("プロンプト・選択肢順による正答率の揺れ (点: 各順序, 線: テンプレート平均)")
        fig.tight_layout()
        fig.savefig(out / "robustness.png", dpi=110)
        plt.close(fig)
        paths["robustness"] = "plots/robustness.png"
    return paths


# ---------------------------------------------------------------- rendering


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _section(part: dict[str, Any]) -> str:
    if not part.get("total"):
        return "–"
    if part.get("line") is not None:
        return f"{part['score']}/{part['total']} (line {part['line']}/{part['line_total']})"
    if part.get("threshold") is not None:
        return f"{_pct(part['rate'])} (line {_pct(part['threshold'])})"
    return f"{_pct(part['rate'])} (no published line)"


def _robustness_md(rob: dict[str, Any]) -> list[str]:
    L = ["\n## Prompt robustness (templates × choice orders)\n"]
    for mode, r in rob.items():
        sp, c = r["spread"], r["consistency"]
        L.append(f"### {mode}\n")
        L.append(
            f"- {sp['n_variants']} variants: accuracy {_pct(sp['min'])}–{_pct(sp['max'])} (range "
            f"{100 * sp['range']:.1f} pt, sd {100 * sp['std']:.1f} pt); between templates {100 * sp['template_range']:.1f} pt, "
            f"between choice orders {100 * sp['permutation_range']:.1f} pt"
        )
        L.append(
            f"- per question: same answer in every variant {_pct(c['same_answer_all_variants'])}, right in all "
            f"{_pct(c['correct_in_all'])}, wrong in all {_pct(c['wrong_in_all'])}, flipping {_pct(c['flipping'])}; "
            f"mean agreement with the modal answer {_pct(c['mean_agreement'])}"
        )
        if r.get("shown_letter_share"):
            share = ", ".join(f"{k} {_pct(v)}" for k, v in r["shown_letter_share"].items())
            L.append(f"- shown position picked (single answers): {share}")
        L.append("\n| variant | template | order | correct/n | accuracy | score/total |")
        L.append("|---|---|---|---|---|---|")
        for v in r["variants"]:
            L.append(
                f"| {v['variant']} | {v['template']} | p{v['permutation']} | {v['correct']}/{v['n']} | "
                f"{_pct(v['accuracy'])} | {v['score']}/{v['total']} |"
            )
        L.append("\n| template | mean accuracy |\n|---|---|")
        L += [f"| {t} | {_pct(a)} |" for t, a in r["by_template"].items()]
        L.append("\n| choice order | mean accuracy |\n|---|---|")
        L += [f"| p{p} | {_pct(a)} |" for p, a in r["by_permutation"].items()]
        if c["unstable"]:
            L.append(
                f"\nQuestions answered differently across variants: {', '.join(u['id'] for u in c['unstable'][:30])}"
            )
        L.append("")
    return L


def render_markdown(r: dict[str, Any]) -> str:
    L: list[str] = []
    cfg = r["config"]
    L.append(f"# ragmed evaluation — {r['dataset']} ({r['subset']})\n")
    L.append(
        f"- questions: {r['n_questions']}; scoring: {r['scoring']['name']}"
        + ("" if r["scoring"]["official"] else " **(UNOFFICIAL)**")
    )
    L.append(
        f"- model: `{cfg.get('model')}`; engine: {cfg.get('engine')}; index: `{cfg.get('index')}` "
        f"(fingerprint `{cfg.get('index_fingerprint')}`); prompt `{cfg.get('prompt_template')}` "
        f"sha256 `{(cfg.get('prompt_hash') or '')[:12]}`; ragmed {cfg.get('ragmed_version')}"
    )
    if cfg.get("prompts") and len(cfg["prompts"]) > 1 or cfg.get("shuffle_choices") or cfg.get("shots"):
        L.append(
            f"- variants: templates {', '.join(cfg.get('prompt_hashes') or {})}; extra choice orders "
            f"{cfg.get('shuffle_choices', 0)} (seed {cfg.get('shuffle_seed', 0)}); few-shot {cfg.get('shots', 0)}"
            + (
                f" from {cfg.get('shots_from') or 'other years'} ({', '.join(cfg.get('shot_ids') or [])})"
                if cfg.get("shots")
                else ""
            )
        )
    L.append(
        f"- sampling: temperature {cfg.get('temperature')}, max_tokens {cfg.get('max_tokens')}, seed {cfg.get('seed')}\n"
    )
    L.append("## Scores\n")
    L.append("| mode | correct/n | accuracy (95% CI) | score/total (95% CI) | missing |")
    L.append("|---|---|---|---|---|")
    for name, m in r["modes"].items():
        o = m["overall"]
        lo, hi = o["accuracy_ci"]
        slo, shi = o["score_ci"]
        L.append(
            f"| {name} | {o['correct']}/{o['n']} | {_pct(o['accuracy'])} ({_pct(lo)}–{_pct(hi)}) | "
            f"{o['score']}/{o['total']} ({slo:.0f}–{shi:.0f}) | {m['missing']} |"
        )
    L.append("\n## Pass/fail (the year's published lines: 必修, 一般・臨床, 禁忌肢)\n")
    L.append("| mode | year | 必修 | 一般・臨床 | 禁忌肢 | verdict |")
    L.append("|---|---|---|---|---|---|")
    for name, m in r["modes"].items():
        for y, v in m["pass"].items():
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[v["passed"]] + (
                " (partial)" if v["partial"] else ""
            )
            if v.get("exam", "medical") != "medical":
                L.append(f"| {name} | {y} | – | – | – | {verdict}: {v.get('reason', '')} |")
                continue
            L.append(
                f"| {name} | {y} | {_section(v['required'])} | {_section(v['general_clinical'])} | "
                f"{v['kinki']['count']} (≤ {v['kinki']['limit']}) | {verdict} |"
            )
    for c in r["comparisons"]:
        mc = c["mcnemar"]
        lo, hi = c["delta_accuracy_ci"]
        L.append(f"\n## {c['mode']} − {c['baseline']}\n")
        L.append(
            f"- paired questions: {c['n_paired']}; accuracy {_pct(c['acc_base'])} → {_pct(c['acc_mode'])}; "
            f"Δ = {100 * c['delta_accuracy']:+.1f} pt (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}); "
            f"Δ score = {c['delta_score']:+.0f}"
        )
        L.append(
            f"- exact McNemar: improved {mc['b_improved']}, regressed {mc['c_regressed']}, p = {mc['p_value']:.4g}\n"
        )
        for key, title in (("by_section", "section"), ("by_year", "year"), ("by_category", "category")):
            L.append(f"| {title} | n | {c['baseline']} | {c['mode']} | Δ | +/− | p |")
            L.append("|---|---|---|---|---|---|---|")
            for row in c[key]:
                L.append(
                    f"| {row['name']} | {row['n']} | {_pct(row['acc_base'])} | {_pct(row['acc_mode'])} | "
                    f"{100 * row['delta']:+.1f} | {row['b_improved']}/{row['c_regressed']} | {row['p_value']:.3g} |"
                )
            L.append("")
        for kind, label in (("improved", "Fixed by retrieval"), ("regressed", "Broken by retrieval")):
            flips = c["flips"][kind]
            L.append(f"### {label} ({len(flips)})\n")
            for f in flips[:30]:
                src = (
                    "; ".join(
                        f"[{s.get('n')}] {s.get('source') or ''} {s.get('title') or ''}".strip()
                        for s in f["sources"][:5]
                    )
                    or "(no sources)"
                )
                L.append(
                    f"- **{f['id']}** ({f['category']}) gold {','.join(f['gold'])}: "
                    f"{f['base_prediction']!r} → {f['mode_prediction']!r} — sources: {src}"
                )
            L.append("")
    if r.get("robustness"):
        L += _robustness_md(r["robustness"])
    L.append("## Leakage guard\n")
    lk = r.get("leakage")
    if lk is None:
        L.append("Not run (no RAG mode, or the guard was switched off).")
    else:
        L.append(
            f"Verdict: **{lk['verdict']}** — {len(lk['contaminated_questions'])} exam items found in "
            f"{len(lk['contaminated_node_ids'])} index chunks ({len(lk['question_answer_leaks'])} with the answer); "
            f"n-gram {lk['ngram']}, containment ≥ {lk['threshold']}. "
            + ("Those chunks were excluded from retrieval for this run." if lk["excluded"] else "")
        )
        if lk["contaminated_questions"]:
            L.append(f"\nItems: {', '.join(lk['contaminated_questions'][:50])}")
    for name, p in r.get("plots", {}).items():
        L.append(f"\n![{name}]({p})")
    return "\n".join(L) + "\n"


def render_html(r: dict[str, Any]) -> str:
    """Self-contained-enough HTML: the markdown tables as <pre>-free HTML via a tiny converter."""
    body: list[str] = []
    in_table = False
    for line in render_markdown(r).splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}"
    )
    return (
        f'<!doctype html><html lang="ja"><meta charset="utf-8"><title>ragmed eval</title><style>{style}</style><body>'
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_report(run_dir: str | Path, fmt: str = "md", **kwargs: Any) -> Path:
    r = build_report(run_dir, **kwargs)
    d = Path(run_dir)
    if fmt == "json":
        return d / REPORT
    if fmt == "md":
        path = d / "report.md"
        path.write_text(render_markdown(r), encoding="utf-8")
        return path
    if fmt == "html":
        path = d / "report.html"
        path.write_text(render_html(r), encoding="utf-8")
        return path
    raise InputError(f"unknown format {fmt!r}: md, json or html")


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Run directories under `root` (for the UI's run picker), newest first."""
    out = []
    for cfg_path in sorted(Path(root).glob(f"*/{CONFIG}")):
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        d = cfg_path.parent
        out.append(
            {
                "run_dir": str(d),
                "name": d.name,
                "dataset": cfg.get("dataset"),
                "model": cfg.get("model"),
                "modes": cfg.get("modes"),
                "started": cfg.get("started"),
                "has_report": (d / REPORT).exists(),
            }
        )
    return sorted(out, key=lambda r: r.get("started") or "", reverse=True)
