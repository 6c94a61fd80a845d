"""The Gradio UI in a real browser (Debian's chromium via Playwright) against the real vLLM server.

Gradio keeps a connection open, so the tests wait for elements, never for network idle. Screenshots go
to a temporary directory and their paths are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragmed.index import RagmedIndex
from ragmed.settings import Settings

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian chromium not installed (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def ui_url(settings: Settings, demo_index: RagmedIndex, vllm_server, runs_dir: Path) -> Iterator[str]:
    from ragmed_ui.app import launch

    cfg = settings.with_overrides(
        llm__base_url=vllm_server.base_url,
        llm__max_retries=1,
        generation__max_tokens=12,
        retrieval__top_k=3,
        ui__runs_dir=runs_dir,
    )
    port = free_port()
    demo = launch(cfg, preloaded=demo_index, host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(ui_url: str):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1500, "height": 1100}, locale="ja-JP")
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(ui_url, wait_until="domcontentloaded")
        page.locator("#ragmed-question textarea").wait_for()
        yield page
        context.close()
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


def test_chat_streams_answer_and_shows_sources(page, shots: Path) -> None:
    assert "研究用ツール" in page.locator("#ragmed-disclaimer").inner_text()
    assert "not medical advice" in page.locator("#ragmed-disclaimer").inner_text()
    page.locator("#ragmed-question textarea").fill("急性心筋梗塞の初期治療は？")
    page.locator("#ragmed-question textarea").press("Enter")
    cards = page.locator("#ragmed-sources .ragmed-source")
    cards.first.wait_for(timeout=300_000)  # the final Answer arrived (sources come with it)
    assert cards.count() == 3
    panel = page.locator("#ragmed-sources").inner_text()
    # sources are named relative to their corpus folder: never the server's paths
    assert "score" in panel and "ICD-10" in panel and "manbyo_sample.csv" in panel
    assert "ragmed/samples" not in panel
    assert "I21" in panel  # the acute MI dictionary entry (ICD-10 I21.x) is among the sources
    assert page.locator("#ragmed-sources mark").count() > 0  # matched question terms highlighted
    page.wait_for_function(  # the answer has ended: the panel no longer says it is coming
        "!document.querySelector('#ragmed-sources').innerText.includes('Answering')",
        timeout=300_000,
        polling=500,
    )
    bot = page.locator("#ragmed-chat .message.bot, #ragmed-chat [data-testid='bot']")
    assert bot.last.inner_text().strip()
    assert "急性心筋梗塞の初期治療は？" in page.locator("#ragmed-chat").inner_text()
    path = shots / "chat.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nUI screenshot: {path}")
    assert path.stat().st_size > 10_000


def test_dictionary_tab_links_terms(page, shots: Path) -> None:
    page.get_by_role("tab", name="Dictionary").click()
    page.locator("#ragmed-term textarea").fill("心筋梗塞")
    page.locator("#ragmed-lookup").click()
    page.wait_for_function(
        "document.querySelector('#ragmed-dict').innerText.includes('I21')", timeout=120_000, polling=500
    )
    text = page.locator("#ragmed-dict").inner_text()
    assert (
        "急性心筋梗塞" in text
        and "standard_name" in text
        and "family" in text
        and "historical" in text
        and "hypothetical" in text
    )
    path = shots / "dictionary.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nUI screenshot: {path}")


def test_evaluation_tab_shows_report(page, shots: Path, runs_dir: Path) -> None:
    report_mod = pytest.importorskip("ragmed_eval.report")
    run = runs_dir / "run"
    run.mkdir()
    report = {  # an invented two-mode run in the report.json schema
        "schema": report_mod.SCHEMA,
        "created": "2026-01-01T00:00:00+00:00",
        "run_dir": str(run),
        "dataset": "generic-demo",
        "subset": None,
        "n_questions": 4,
        "scoring": {"name": "accuracy", "official": False},
        "config": {},
        "baseline": "norag",
        "modes": {
            "norag": {"overall": {"correct": 1, "n": 4, "accuracy": 0.25, "score": 1, "total": 4,
                                  "accuracy_ci": [0.0, 0.75]}, "by_category": {"循環器": {"accuracy": 0.5}}},
            "rag": {"overall": {"correct": 3, "n": 4, "accuracy": 0.75, "score": 3, "total": 4,
                                "accuracy_ci": [0.25, 1.0]}, "by_category": {"循環器": {"accuracy": 1.0}}},
        },
        "comparisons": [],
        "leakage": None,
    }  # fmt: skip
    report["plots"] = report_mod.make_plots(report, run / "plots")
    (run / report_mod.REPORT).write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
    page.get_by_role("tab", name="Evaluation").click()
    page.locator("#ragmed-run-dir textarea, #ragmed-run-dir input").first.fill("run")
    page.locator("#ragmed-open-report").click()
    page.wait_for_function(
        "document.querySelector('#ragmed-eval-table').innerText.includes('0.75')",
        timeout=120_000,
        polling=500,
    )
    table = page.locator("#ragmed-eval-table")
    assert "norag" in table.inner_text() and "rag" in table.inner_text()
    page.locator("#ragmed-eval-plot-accuracy img").first.wait_for(timeout=60_000)
    assert "generic-demo" in page.locator("#ragmed-eval-summary").inner_text()
    path = shots / "evaluation.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nUI screenshot: {path}")


def test_evaluation_tab_refuses_runs_outside_the_runs_folder(page, runs_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    page.get_by_role("tab", name="Evaluation").click()
    box = page.locator("#ragmed-run-dir textarea, #ragmed-run-dir input").first
    for attempt in (str(outside), "../" * 12 + "etc"):
        box.fill(attempt)
        page.locator("#ragmed-open-report").click()
        page.wait_for_function(
            "document.querySelector('#ragmed-eval-summary').innerText.includes('runs folder')",
            timeout=60_000,
            polling=500,
        )
        assert "not inside the runs folder" in page.locator("#ragmed-eval-summary").inner_text()


def test_report_plot_paths_cannot_leave_their_run(runs_dir: Path) -> None:
    """A crafted report.json whose plot paths point at other files (a key file, pyproject.toml): none is
    handed to the browser; a real plot inside the run still is."""
    from ragmed_ui.app import eval_tables

    report_mod = pytest.importorskip("ragmed_eval.report")
    run = runs_dir / "crafted"
    (run / "plots").mkdir(parents=True)
    secret = runs_dir.parent / "api.key"
    secret.write_text("sk-secret")
    (run / "plots" / "ok.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    report = {
        "schema": report_mod.SCHEMA,
        "run_dir": "/",
        "dataset": "x",
        "n_questions": 0,
        "modes": {},
        "comparisons": [],
        "plots": {"accuracy_by_category": "../../api.key", "delta": str(Path(__file__).parents[1] / "pyproject.toml"),
                  "ok": "plots/ok.png"},
    }  # fmt: skip
    (run / report_mod.REPORT).write_text(json.dumps(report), encoding="utf-8")
    _, _, plots = eval_tables(runs_dir, "crafted")
    assert [name for _, name in plots] == ["ok"]
