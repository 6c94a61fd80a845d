"""The UI's timing as a person sees it, in Debian chromium: sources before the answer ends; `ragmed ui` as a
process (prints its URL, stops on Ctrl-C). The upstream is the in-process echo backend slowed down, so
"while the answer is still streaming" is a window of seconds, not milliseconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragmed.generate.echo import EchoBackend
from ragmed.index import RagmedIndex
from ragmed.settings import Settings

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def slow_ui(settings: Settings, demo_index: RagmedIndex) -> Iterator[tuple[str, EchoBackend]]:
    from ragmed_ui.app import launch

    echo = EchoBackend(delay_s=1.5)  # ~4 words: the answer takes ~6 s to stream
    port = free_port()
    demo = launch(
        settings.with_overrides(retrieval__top_k=3), preloaded=demo_index, port=port, block=False, llm=echo
    )
    try:
        yield f"http://127.0.0.1:{port}/", echo
    finally:
        demo.close()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_sources_fill_while_the_answer_streams_then_cited_is_marked(slow_ui) -> None:
    url, echo = slow_ui
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#ragmed-question textarea").fill("急性膵炎の重症度判定は？")
        page.locator("#ragmed-question textarea").press("Enter")
        cards = page.locator("#ragmed-sources .ragmed-source")
        cards.first.wait_for(timeout=60_000)
        # The panel is filled and the answer has not finished: no card is marked cited yet, the status
        # line says the answer is still coming, and the chat does not hold the whole answer.
        assert cards.count() == 3
        assert "Answering" in page.locator("#ragmed-sources").inner_text()
        assert page.locator("#ragmed-sources .ragmed-source.cited").count() == 0
        assert "[1]" not in page.locator("#ragmed-chat").inner_text()
        assert echo.completed == 0
        # When the answer ends, the source it cites is marked.
        page.locator("#ragmed-sources .ragmed-source.cited").first.wait_for(timeout=60_000)
        assert page.locator("#ragmed-sources .ragmed-source.cited").get_attribute("data-rank") == "1"
        assert "[1]" in page.locator("#ragmed-chat").inner_text()
        assert "Answering" not in page.locator("#ragmed-sources").inner_text()
        browser.close()


def test_ragmed_ui_prints_its_url_and_stops_on_ctrl_c(settings: Settings, demo_index: RagmedIndex) -> None:
    port = free_port()
    env = {**os.environ, "RAGMED_INDEX_DIR": str(settings.index_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragmed.cli", "ui", "--index", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert line == f"http://127.0.0.1:{port}/", proc.stderr.read() if proc.poll() is not None else line  # type: ignore[union-attr]
        assert httpx.get(line, timeout=30).status_code == 200
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        assert code == 0 and time.monotonic() - started < 10
        assert "stopping the UI" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
