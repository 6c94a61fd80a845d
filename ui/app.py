"""Gradio chat UI for ragmed (``ragmed ui``): chat with sources, dictionary lookup, evaluation reports.

Presentation only: answers come from :class:`ragmed.api.RagService` (the exact pipeline the HTTP API
serves), disease linking from the index's searcher, reports from ``ragmed_eval.report.load_report``.
Fonts are local (Noto CJK from the OS) so Japanese renders offline; nothing is fetched from the web.
"""

from __future__ import annotations

import html
import re
import threading
import unicodedata
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ragmed.api import RagService
from ragmed.index import RagmedIndex, list_indexes
from ragmed.llm import LLMError
from ragmed.rag import Answer, RetrievedChunk
from ragmed.retrieve import MODES
from ragmed.settings import Settings, get_settings
from ragmed.tokenize import tokenize

DISCLAIMER = (
    "⚠️ **研究用ツールです。医療上の助言・診断には使用できません。** "
    "This is a research tool, not medical advice: answers may be wrong; always check the cited sources."
)
DICT_COLUMNS = ["mention", "standard_name", "icd10", "level", "score", "how"]
EVAL_COLUMNS = ["mode", "correct", "n", "accuracy", "95% CI", "score", "total"]

CSS = """
#ragmed-disclaimer { border: 1px solid #d97706; background: #fffbeb; border-radius: 6px; padding: 4px 10px; }
#ragmed-sources { max-height: 640px; overflow-y: auto; }
.ragmed-source { border: 1px solid #d1d5db; border-radius: 6px; padding: 6px 8px; margin-bottom: 8px; }
.ragmed-source.cited { border-color: #2563eb; background: #eff6ff; }
.ragmed-source .meta { font-size: 0.85em; color: #374151; margin-bottom: 4px; }
.ragmed-source .chunk { font-size: 0.9em; white-space: pre-wrap; }
.ragmed-source mark { background: #fde047; padding: 0 1px; }
.ragmed-linked { font-size: 0.9em; margin-bottom: 6px; }
"""
FONTS = ["Noto Sans CJK JP", "Noto Sans JP", "sans-serif"]


# --------------------------------------------------------------------------- presentation


def highlight(text: str, terms: Sequence[str]) -> str:
    """HTML of ``text`` with every occurrence of ``terms`` (case-insensitive, longest first) marked."""
    wanted = sorted({t for t in terms if len(t) >= 2}, key=len, reverse=True)
    if not wanted:
        return html.escape(text)
    pattern = re.compile("|".join(re.escape(t) for t in wanted), re.IGNORECASE)
    out, last = [], 0
    for m in pattern.finditer(text):
        out += [html.escape(text[last : m.start()]), f"<mark>{html.escape(m.group(0))}</mark>"]
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def query_terms(question: str, answer: Answer | None = None) -> list[str]:
    """Words of the question (content words) plus linked disease mentions and their standard names."""
    terms = [t for t in tokenize(question) if len(t) >= 2]
    if answer is not None:
        for d in answer.linked:
            terms += [d.mention, d.standard_name]
    return [unicodedata.normalize("NFKC", t) for t in terms]


def _source_card(rank: int, chunk: RetrievedChunk, cited: bool, terms: Sequence[str]) -> str:
    score = "–" if chunk.score is None else f"{chunk.score:.4f}"
    n = f"[{chunk.n}]" if chunk.n is not None else "(not in prompt)"
    standard = chunk.standard_name or "–"
    icd = chunk.icd10 or "–"
    return (
        f'<div class="ragmed-source{" cited" if cited else ""}" data-rank="{rank}">'
        f'<div class="meta"><b>#{rank}</b> {html.escape(n)} · score {score} · '
        f"<b>{html.escape(chunk.title or chunk.source)}</b> · source: <code>{html.escape(chunk.source)}</code>"
        f" · 標準病名: <span class='standard'>{html.escape(standard)}</span>"
        f" · ICD-10: <span class='icd10'>{html.escape(icd)}</span>{' · <b>cited</b>' if cited else ''}</div>"
        f'<div class="chunk">{highlight(chunk.text, terms)}</div></div>'
    )


def sources_html(answer: Answer) -> str:
    """The sources panel: linked diseases, then every retrieved chunk (cited ones highlighted)."""
    if not answer.rag:
        return "<p class='ragmed-empty'>RAG is off: the answer used no sources.</p>"
    terms = query_terms(answer.question, answer)
    cited = {c.node_id for c in answer.citations}
    parts = []
    if answer.linked:
        items = ", ".join(
            f"{html.escape(d.mention)} → <b>{html.escape(d.standard_name)}</b> ({html.escape(d.icd10)})"
            for d in answer.linked
        )
        parts.append(f"<div class='ragmed-linked'>Linked diseases: {items}</div>")
    if not answer.chunks:
        parts.append("<p class='ragmed-empty'>No sources were retrieved.</p>")
    for rank, chunk in enumerate(answer.chunks, start=1):
        parts.append(_source_card(rank, chunk, chunk.node_id in cited, terms))
    if answer.warnings:
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in answer.warnings)
        parts.append(
            f"<details><summary>Warnings ({len(answer.warnings)})</summary><ul>{notes}</ul></details>"
        )
    return "<div class='ragmed-sources-list'>" + "".join(parts) + "</div>"


def _text(content: Any) -> str:
    """Message text from Gradio's message content (a string, or a list of parts in newer versions)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    return ""


# --------------------------------------------------------------------------- the app


class Services:
    """One :class:`RagService` per index name, loaded on first use and shared by all sessions."""

    def __init__(self, settings: Settings, preloaded: RagmedIndex | None = None, warm: bool = False) -> None:
        self.settings = settings
        self.warm = warm  # a served UI warms each index's searcher (query encoder, normalizer) on load
        self._services: dict[str, RagService] = {}
        self._lock = threading.Lock()
        if preloaded is not None:
            self._services[preloaded.name] = self._ready(RagService(preloaded, settings))

    def _ready(self, service: RagService) -> RagService:
        if self.warm:
            service.searcher.warm()
        return service

    def names(self) -> list[str]:
        found = list_indexes(Path(self.settings.index_dir)) if Path(self.settings.index_dir).is_dir() else []
        return sorted(set(found) | set(self._services))

    def get(self, name: str) -> RagService:
        with self._lock:
            if name not in self._services:
                self._services[name] = self._ready(RagService.load(name, self.settings))
            return self._services[name]


def dictionary_rows(service: RagService, text: str, k: int = 3) -> pd.DataFrame:
    """Disease mentions in ``text`` linked to Manbyo (normalizer), else the closest dictionary entries."""
    rows: list[dict[str, Any]] = []
    levels = {
        r["metadata"].get("standard_name"): r["metadata"].get("level")
        for r in service.index.records
        if r["metadata"].get("kind") == "manbyo"
    }
    normalizer = service.index.normalizer
    if normalizer is not None:
        for m in normalizer.find_mentions(text, k=k):
            for c in m.candidates:
                if c.standard_name == "-1":
                    continue
                level = getattr(c, "level", None) or levels.get(c.standard_name)
                rows.append(
                    {
                        "mention": m.text,
                        "standard_name": c.standard_name,
                        "icd10": c.icd10,
                        "level": level or "",
                        "score": round(float(c.score), 4) if c.score is not None else None,
                        "how": "linked",
                    }
                )
    if normalizer is not None and not rows and len(text.strip()) <= 40:  # a bare term: normalize it whole
        for c in normalizer.normalize(text.strip(), k=k):
            if c.standard_name != "-1":
                rows.append(
                    {
                        "mention": text.strip(),
                        "standard_name": c.standard_name,
                        "icd10": c.icd10,
                        "level": getattr(c, "level", None) or levels.get(c.standard_name) or "",
                        "score": round(float(c.score), 4),
                        "how": "normalized",
                    }
                )
    if not rows:  # no normalizer, or nothing linked: dictionary entries by hybrid search
        for hit in service.searcher.search(text, k=k * 3, kinds={"manbyo"}):
            meta = hit.metadata
            rows.append(
                {
                    "mention": meta.get("surface", ""),
                    "standard_name": meta.get("standard_name", ""),
                    "icd10": meta.get("icd10", ""),
                    "level": meta.get("level") or "",
                    "score": round(hit.score, 4),
                    "how": "search",
                }
            )
    return pd.DataFrame(rows, columns=DICT_COLUMNS)


def eval_tables(run_dir: str) -> tuple[pd.DataFrame, str, list[tuple[str, str]]]:
    """Accuracy table, a markdown summary and the plots of an eval run directory."""
    from ragmed_eval.report import load_report

    report = load_report(run_dir)
    rows = []
    for mode, m in report.get("modes", {}).items():
        o = m.get("overall", {})
        ci = o.get("accuracy_ci")
        rows.append(
            {
                "mode": mode,
                "correct": o.get("correct"),
                "n": o.get("n"),
                "accuracy": round(float(o.get("accuracy", 0.0)), 4),
                "95% CI": f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "",
                "score": o.get("score"),
                "total": o.get("total"),
            }
        )
    lines = [f"**Dataset**: {report.get('dataset')} · questions: {report.get('n_questions')}"]
    scoring = report.get("scoring") or {}
    if scoring:
        lines.append(f"**Scoring**: {scoring.get('name')} (official: {scoring.get('official')})")
    for c in report.get("comparisons", []):
        lo, hi = c.get("delta_accuracy_ci", (None, None))
        p = (c.get("mcnemar") or {}).get("p_value")
        lines.append(
            f"**{c.get('mode')} vs {c.get('baseline')}**: Δaccuracy {c.get('delta_accuracy', 0):+.3f}"
            + (f" (95% CI {lo:+.3f}…{hi:+.3f})" if lo is not None else "")
            + (f", McNemar p = {p:.3g}" if p is not None else "")
        )
    base = Path(report.get("run_dir") or run_dir)
    plots = [
        (str(base / rel), name) for name, rel in (report.get("plots") or {}).items() if (base / rel).exists()
    ]
    return pd.DataFrame(rows, columns=EVAL_COLUMNS), "\n\n".join(lines), plots


def build_ui(
    settings: Settings | None = None, index: str | RagmedIndex | None = None, warm: bool = False
) -> gr.Blocks:
    """The Blocks app: Chat, Dictionary and Evaluation tabs over the given (default) index."""
    settings = settings or get_settings()
    preloaded = index if isinstance(index, RagmedIndex) else None
    services = Services(settings, preloaded, warm=warm)
    names = services.names()
    default = preloaded.name if preloaded else (index or (names[0] if names else None))
    if default is None:
        raise ValueError(
            f"No index in {settings.index_dir}: build one with `ragmed index build` or pass --index."
        )
    if default not in names:
        services.get(str(default))  # fail early with the index loader's message
        names = services.names()

    async def respond(
        message: str, history: list[dict[str, Any]], rag: bool, k: float, mode: str, index_name: str
    ) -> AsyncIterator[tuple[Any, Any, Any]]:
        if not message or not message.strip():
            yield history, "", gr.skip()
            return
        past = [
            {"role": m["role"], "content": _text(m["content"])}
            for m in history
            if m.get("role") in ("user", "assistant")
        ]
        conversation = [*past, {"role": "user", "content": message}]
        shown = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield shown, "", "<p class='ragmed-empty'>Searching…</p>"
        try:
            service = services.get(index_name)
            async for item in service.astream(conversation, k=int(k), mode=mode, rag=rag):
                if isinstance(item, str):
                    shown[-1]["content"] += item
                    yield shown, "", gr.skip()
                else:
                    shown[-1]["content"] = item.text
                    yield shown, "", sources_html(item)
        except (LLMError, ValueError, FileNotFoundError) as exc:
            shown[-1]["content"] = f"⚠️ {exc}"
            yield shown, "", f"<p class='ragmed-error'>{html.escape(str(exc))}</p>"

    def lookup(text: str, index_name: str) -> pd.DataFrame:
        if not text or not text.strip():
            return pd.DataFrame(columns=DICT_COLUMNS)
        return dictionary_rows(services.get(index_name), text)

    def open_report(run_dir: str) -> tuple[pd.DataFrame, str, str | None, str | None]:
        try:
            table, summary, plots = eval_tables(run_dir.strip())
        except (FileNotFoundError, ValueError, KeyError) as exc:
            return pd.DataFrame(columns=EVAL_COLUMNS), f"⚠️ {exc}", None, None
        by_name = {name: path for path, name in plots}
        return table, summary, by_name.get("accuracy_by_category"), by_name.get("delta")

    with gr.Blocks(title="ragmed", analytics_enabled=False) as demo:
        gr.Markdown("# ragmed — 日本語臨床 RAG")
        gr.Markdown(DISCLAIMER, elem_id="ragmed-disclaimer")
        with gr.Row():
            index_box = gr.Dropdown(names, value=default, label="Index", elem_id="ragmed-index", scale=2)
            rag_box = gr.Checkbox(value=True, label="RAG (retrieve sources)", elem_id="ragmed-rag", scale=1)
            k_box = gr.Slider(
                1, 20, value=settings.top_k, step=1, label="k (sources)", elem_id="ragmed-k", scale=2
            )
            mode_box = gr.Radio(
                list(MODES), value=settings.mode, label="Retrieval mode", elem_id="ragmed-mode", scale=2
            )
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    with gr.Column(scale=3):
                        chatbot = gr.Chatbot(label="Chat", elem_id="ragmed-chat", height=560)
                        question = gr.Textbox(
                            label="Question",
                            placeholder="例: 急性心筋梗塞の初期治療は？",
                            elem_id="ragmed-question",
                            lines=1,
                        )
                        with gr.Row():
                            send = gr.Button("Send", variant="primary", elem_id="ragmed-send")
                            clear = gr.Button("Clear", elem_id="ragmed-clear")
                    with gr.Column(scale=2):
                        gr.Markdown("### Sources")
                        sources = gr.HTML(
                            "<p class='ragmed-empty'>Ask a question to see its sources.</p>",
                            elem_id="ragmed-sources",
                        )
                inputs = [question, chatbot, rag_box, k_box, mode_box, index_box]
                outputs = [chatbot, question, sources]
                question.submit(respond, inputs, outputs)
                send.click(respond, inputs, outputs)
                clear.click(lambda: ([], "", ""), None, [chatbot, question, sources])
            with gr.Tab("Dictionary", id="dictionary"):
                term = gr.Textbox(
                    label="Term or clinical text",
                    placeholder="例: 心筋梗塞 / 発熱と意識障害があり敗血症が疑われる",
                    lines=3,
                    elem_id="ragmed-term",
                )
                look = gr.Button("Look up", variant="primary", elem_id="ragmed-lookup")
                table = gr.Dataframe(
                    headers=DICT_COLUMNS, label="Linked diseases", elem_id="ragmed-dict", interactive=False
                )
                look.click(lookup, [term, index_box], table)
                term.submit(lookup, [term, index_box], table)
            with gr.Tab("Evaluation", id="evaluation"):
                run_dir = gr.Textbox(label="Eval run directory (holds report.json)", elem_id="ragmed-run-dir")
                load = gr.Button("Open report", variant="primary", elem_id="ragmed-open-report")
                summary = gr.Markdown(elem_id="ragmed-eval-summary")
                acc = gr.Dataframe(
                    headers=EVAL_COLUMNS, label="Accuracy", elem_id="ragmed-eval-table", interactive=False
                )
                with gr.Row():
                    plot_acc = gr.Image(
                        label="Accuracy by category", elem_id="ragmed-eval-plot-accuracy", height=420
                    )
                    plot_delta = gr.Image(
                        label="RAG effect (Δ accuracy)", elem_id="ragmed-eval-plot-delta", height=420
                    )
                load.click(open_report, run_dir, [acc, summary, plot_acc, plot_delta])
    demo.ragmed_services = services  # for tests and embedding
    return demo


def theme() -> gr.themes.Base:
    return gr.themes.Default(font=FONTS, font_mono=["Noto Sans Mono CJK JP", "monospace"])


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    """``"user:password"`` → (user, password); the password may itself contain ':'."""
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("UI auth must look like 'user:password' (--auth or RAGMED_UI_AUTH)")
    return user, password


def launch(
    settings: Settings | None = None,
    index: str | RagmedIndex | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
) -> gr.Blocks:
    """``ragmed ui``: serve the UI; ``block=False`` returns at once (call ``.close()`` when done).

    With ``settings.ui_auth`` the UI asks for that user and password first. Like the API, it refuses
    to listen beyond this machine without one: anyone on the network could otherwise spend the LLM.
    """
    from ragmed.api import is_loopback

    settings = settings or get_settings()
    auth = parse_auth(settings.ui_auth)
    if auth is None and not is_loopback(host):
        raise ValueError(
            f"Refusing to serve the UI on {host!r} without a login: anyone on the network could use it. "
            "Set --auth user:password / RAGMED_UI_AUTH, or bind to 127.0.0.1."
        )
    demo = build_ui(settings, index, warm=True)
    demo.queue(default_concurrency_limit=16)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=True,
        theme=theme(),
        css=CSS,
        ssr_mode=False,
    )
    return demo
