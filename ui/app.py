"""Gradio chat UI for ragmed (``ragmed ui``): chat with sources, dictionary lookup, evaluation reports.

Presentation only: answers and dictionary lookups come from :class:`ragmed.service.RagService` (the exact
service the HTTP API serves), reports from ``ragmed_eval.report.load_report`` — only reports under the
configured runs folder (``RAGMED_UI_RUNS_DIR``), with plots inside their run. The sources panel fills as
soon as retrieval ends, before the first token, and marks cited sources when the answer ends.
Fonts are local (Noto CJK from the OS) so Japanese renders offline; nothing is fetched from the web.
"""

from __future__ import annotations

import html
import re
import sys
import threading
import unicodedata
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ragmed.errors import InputError, NotFoundError, RagmedError, ui_message
from ragmed.generate.base import ChatBackend
from ragmed.hosts import check_bind
from ragmed.index import RagmedIndex, list_indexes
from ragmed.schema import RETRIEVAL_MODES, Answer, LinkedDisease, Retrieved, Source
from ragmed.service import DictionaryRow, RagService
from ragmed.settings import Settings, get_settings
from ragmed.tokenize import tokenize

DISCLAIMER = (
    "⚠️ **研究用ツールです。医療上の助言・診断には使用できません。** "
    "This is a research tool, not medical advice: answers may be wrong; always check the cited sources."
)
DICT_COLUMNS = list(DictionaryRow.model_fields)  # the Dictionary tab shows every field of a row
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


def query_terms(
    question: str, linked: Sequence[LinkedDisease] = (), english: Sequence[str] = ()
) -> list[str]:
    """Words of the question (content words) plus linked disease mentions, their standard names and
    the English terms they added (highlighted in English passages)."""
    terms = [t for t in tokenize(question) if len(t) >= 2]
    for d in linked:
        terms += [d.mention, d.standard_name]
    terms += list(english)
    return [unicodedata.normalize("NFKC", t) for t in terms]


def _source_card(source: Source, terms: Sequence[str]) -> str:
    score = "–" if source.score is None else f"{source.score:.4f}"
    standard = source.standard_name or "–"
    icd = source.icd10 or "–"
    return (
        f'<div class="ragmed-source{" cited" if source.cited else ""}" data-rank="{source.n}">'
        f'<div class="meta"><b>[{source.n}]</b> · score {score} · '
        f"<b>{html.escape(source.title or source.source)}</b> · source: <code>{html.escape(source.source)}</code>"
        f" · 標準病名: <span class='standard'>{html.escape(standard)}</span>"
        f" · ICD-10: <span class='icd10'>{html.escape(icd)}</span>{' · <b>cited</b>' if source.cited else ''}</div>"
        f'<div class="chunk">{highlight(source.text, terms)}</div></div>'
    )


def _linked_html(linked: Sequence[LinkedDisease], english: Sequence[str] = ()) -> str:
    if not linked:
        return ""
    items = []
    for d in linked:
        flags = "".join(f" <i>({w})</i>" for w in d.status_words())
        items.append(
            f"{html.escape(d.mention)} → <b>{html.escape(d.standard_name)}</b> ({html.escape(d.icd10)}){flags}"
        )
    out = f"<div class='ragmed-linked'>Linked diseases: {', '.join(items)}</div>"
    if english:
        terms = ", ".join(html.escape(t) for t in english)
        out += f"<div class='ragmed-linked-en'>English search terms: {terms}</div>"
    return out


def sources_html(
    question: str,
    sources: Sequence[Source],
    linked: Sequence[LinkedDisease] = (),
    *,
    rag: bool = True,
    warnings: Sequence[str] = (),
    answering: bool = False,
    english: Sequence[str] = (),
) -> str:
    """The sources panel: linked diseases (and the English terms they added), then every chunk given to
    the model (cited ones highlighted)."""
    if not rag:
        return "<p class='ragmed-empty'>RAG is off: the answer uses no sources.</p>"
    terms = query_terms(question, linked, english)
    parts = [_linked_html(linked, english)]
    if answering:
        parts.append(
            "<p class='ragmed-status'>Answering… (cited sources are marked when the answer ends)</p>"
        )
    if not sources:
        parts.append("<p class='ragmed-empty'>No sources were retrieved.</p>")
    parts += [_source_card(s, terms) for s in sources]
    if warnings:
        notes = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(f"<details><summary>Warnings ({len(warnings)})</summary><ul>{notes}</ul></details>")
    return "<div class='ragmed-sources-list'>" + "".join(parts) + "</div>"


def retrieved_html(question: str, event: Retrieved) -> str:
    return sources_html(
        question, event.sources, event.linked, rag=event.rag, answering=True, english=event.expansion_en
    )


def answer_html(answer: Answer) -> str:
    return sources_html(
        answer.question,
        answer.sources,
        answer.linked,
        rag=answer.rag,
        warnings=answer.warnings,
        english=answer.trace.get("expansion_en") or [],
    )


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

    def __init__(
        self,
        settings: Settings,
        preloaded: RagmedIndex | None = None,
        warm: bool = False,
        llm: ChatBackend | None = None,
    ) -> None:
        self.settings = settings
        self.warm = warm  # a served UI warms each index's searcher (query encoder, normalizer) on load
        self.llm = llm  # None: the configured server (RAGMED_LLM_BASE_URL)
        self._services: dict[str, RagService] = {}
        self._lock = threading.Lock()
        if preloaded is not None:
            self._services[preloaded.name] = self._ready(RagService(preloaded, settings, llm))

    def _ready(self, service: RagService) -> RagService:
        if self.warm:
            service.warm()
        return service

    def names(self) -> list[str]:
        found = list_indexes(Path(self.settings.index_dir)) if Path(self.settings.index_dir).is_dir() else []
        return sorted(set(found) | set(self._services))

    def get(self, name: str) -> RagService:
        with self._lock:
            if name not in self._services:
                self._services[name] = self._ready(RagService.load(name, self.settings, self.llm))
            return self._services[name]


def dictionary_rows(service: RagService, text: str, k: int = 3) -> pd.DataFrame:
    """Disease mentions in ``text`` linked to Manbyo (with negation/suspicion), else the closest entries."""
    rows = [r.model_dump() for r in service.dictionary(text, k=k)]
    return pd.DataFrame(rows, columns=DICT_COLUMNS)


def resolve_run(runs_dir: Path, run_dir: str) -> Path:
    """``run_dir`` as a folder inside ``runs_dir`` (a name or a path); anything outside is refused."""
    root = runs_dir.resolve()
    given = Path(run_dir.strip())
    candidate = (given if given.is_absolute() else root / given).resolve()
    if candidate != root and root not in candidate.parents:
        raise InputError(f"{run_dir!r} is not inside the runs folder {root} (RAGMED_UI_RUNS_DIR)")
    if not candidate.is_dir():
        raise NotFoundError(f"no eval run {run_dir!r} in {root}")
    return candidate


def eval_tables(runs_dir: Path, run_dir: str) -> tuple[pd.DataFrame, str, list[tuple[str, str]]]:
    """Accuracy table, a markdown summary and the plots of an eval run under ``runs_dir``."""
    from ragmed_eval.report import load_report

    base = resolve_run(runs_dir, run_dir)
    report = load_report(base)
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
    plots = []
    for name, rel in (report.get("plots") or {}).items():
        path = (base / str(rel)).resolve()
        if (
            base in path.parents and path.suffix.lower() == ".png" and path.is_file()
        ):  # a plot of this run only
            plots.append((str(path), name))
    return pd.DataFrame(rows, columns=EVAL_COLUMNS), "\n\n".join(lines), plots


def build_ui(
    settings: Settings | None = None,
    index: str | None = None,
    *,
    preloaded: RagmedIndex | None = None,
    warm: bool = False,
    llm: ChatBackend | None = None,
) -> gr.Blocks:
    """The Blocks app: Chat, Dictionary and Evaluation tabs over ``index`` (or an index already loaded);
    ``llm`` replaces the configured upstream (e.g. the echo backend)."""
    settings = settings or get_settings()
    services = Services(settings, preloaded, warm=warm, llm=llm)
    names = services.names()
    default = preloaded.name if preloaded is not None else (index or (names[0] if names else None))
    if default is None:
        raise NotFoundError(
            f"No index in {Path(settings.index_dir).resolve()}: build one with `ragmed index build`, pass "
            "--index, or set RAGMED_INDEX_DIR."
        )
    if default not in names:
        services.get(str(default))  # fail early with the index loader's message
        names = services.names()
    runs_dir = Path(settings.ui.runs_dir)

    async def respond(
        message: str,
        history: list[dict[str, Any]],
        rag: bool,
        k: float,
        mode: str,
        max_tokens: float,
        index_name: str,
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
            params = service.sampling(max_tokens=int(max_tokens))
            async for item in service.astream(conversation, k=int(k), mode=mode, rag=rag, params=params):
                if isinstance(item, Retrieved):  # before the first token: show what the model is given
                    yield shown, "", retrieved_html(message, item)
                elif isinstance(item, str):
                    shown[-1]["content"] += item
                    yield shown, "", gr.skip()
                else:
                    shown[-1]["content"] = item.text
                    yield shown, "", answer_html(item)
        except RagmedError as exc:
            shown[-1]["content"] = f"⚠️ {ui_message(exc)}"
            yield shown, "", f"<p class='ragmed-error'>{html.escape(ui_message(exc))}</p>"

    def lookup(text: str, index_name: str) -> pd.DataFrame:
        if not text or not text.strip():
            return pd.DataFrame(columns=DICT_COLUMNS)
        return dictionary_rows(services.get(index_name), text)

    def open_report(run_dir: str) -> tuple[pd.DataFrame, str, str | None, str | None]:
        try:
            table, summary, plots = eval_tables(runs_dir, run_dir)
        except RagmedError as exc:
            return pd.DataFrame(columns=EVAL_COLUMNS), f"⚠️ {ui_message(exc)}", None, None
        by_name = {name: path for path, name in plots}
        return table, summary, by_name.get("accuracy_by_category"), by_name.get("delta")

    with gr.Blocks(title="ragmed", analytics_enabled=False) as demo:
        gr.Markdown("# ragmed — 日本語臨床 RAG")
        gr.Markdown(DISCLAIMER, elem_id="ragmed-disclaimer")
        with gr.Row():
            index_box = gr.Dropdown(names, value=default, label="Index", elem_id="ragmed-index", scale=2)
            rag_box = gr.Checkbox(value=True, label="RAG (retrieve sources)", elem_id="ragmed-rag", scale=1)
            k_box = gr.Slider(
                1,
                20,
                value=settings.retrieval.top_k,
                step=1,
                label="k (sources)",
                elem_id="ragmed-k",
                scale=2,
            )
            mode_box = gr.Radio(
                list(RETRIEVAL_MODES),
                value=settings.retrieval.mode,
                label="Retrieval mode",
                elem_id="ragmed-mode",
                scale=2,
            )
            max_tokens_box = gr.Slider(
                1,
                4096,
                value=settings.generation.max_tokens,
                step=16,
                label="max tokens (answer length)",
                elem_id="ragmed-max-tokens",
                scale=2,
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
                inputs = [question, chatbot, rag_box, k_box, mode_box, max_tokens_box, index_box]
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
                run_dir = gr.Textbox(
                    label=f"Eval run (a folder under {runs_dir}, holding report.json)",
                    elem_id="ragmed-run-dir",
                )
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
        raise InputError("UI auth must look like 'user:password' (--auth or RAGMED_UI_AUTH)")
    return user, password


def launch(
    settings: Settings | None = None,
    index: str | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    *,
    preloaded: RagmedIndex | None = None,
    llm: ChatBackend | None = None,
) -> gr.Blocks:
    """``ragmed ui``: serve the UI; ``block=False`` returns at once (call ``.close()`` when done).

    With ``ui.auth`` the UI asks for that user and password first. Like the API, it refuses to listen
    beyond this machine without one: anyone on the network could otherwise spend the LLM.
    """
    settings = settings or get_settings()
    auth = parse_auth(settings.ui.auth)
    check_bind(
        host, settings.ui.auth, what="the UI", need="a login", fix="--auth user:password / RAGMED_UI_AUTH"
    )
    demo = build_ui(settings, index, preloaded=preloaded, warm=True, llm=llm)
    demo.queue(default_concurrency_limit=16)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        prevent_thread_lock=True,
        quiet=True,
        show_error=True,
        theme=theme(),
        css=CSS,
        ssr_mode=False,
    )
    if block:
        serve_until_interrupted(demo, host, port)
    return demo


def serve_until_interrupted(demo: gr.Blocks, host: str, port: int) -> None:
    """Print where the UI is, then wait until Ctrl-C or SIGTERM and close the server cleanly."""
    import signal
    import threading

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{shown}:{port}/"
    print(url, flush=True)  # stdout: scripts can capture the URL
    print(f"ragmed UI at {url} — Ctrl-C stops.", file=sys.stderr, flush=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopping the UI…", file=sys.stderr, flush=True)
        demo.close()
