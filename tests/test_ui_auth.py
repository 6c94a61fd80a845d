"""The Gradio UI behind a login (``ragmed ui --auth user:password``): refused open binds, real logins."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragmed.index import RagmedIndex
from ragmed.settings import Settings

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "doctor", "秘密:with-colon"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ui_url(settings: Settings, demo_index: RagmedIndex) -> Iterator[str]:
    from ragmed_ui.app import launch

    port = free_port()
    demo = launch(
        settings.with_overrides(ui__auth=f"{USER}:{PASSWORD}"), preloaded=demo_index, port=port, block=False
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def test_open_bind_without_login_is_refused(settings: Settings, demo_index: RagmedIndex) -> None:
    from ragmed_ui.app import launch

    with pytest.raises(ValueError, match="without a login"):
        launch(settings, preloaded=demo_index, host="0.0.0.0", port=free_port(), block=False)


@pytest.mark.parametrize("bad", ["nocolon", ":pw", "user:"])
def test_malformed_auth_is_named(settings: Settings, demo_index: RagmedIndex, bad: str) -> None:
    from ragmed_ui.app import launch

    with pytest.raises(ValueError, match="user:password"):
        launch(settings.with_overrides(ui__auth=bad), preloaded=demo_index, port=free_port(), block=False)


def test_login_required_and_checked(ui_url: str) -> None:
    with httpx.Client(base_url=ui_url, timeout=30) as client:
        assert client.get("/config").status_code == 401
        assert client.post("/login", data={"username": USER, "password": "wrong"}).status_code == 400
        assert client.get("/config").status_code == 401
        ok = client.post("/login", data={"username": USER, "password": PASSWORD})
        assert ok.status_code == 200 and ok.json() == {"success": True}
        assert client.get("/config").status_code == 200


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed")
def test_browser_logs_in_and_reaches_the_chat(ui_url: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.goto(ui_url + "/", wait_until="domcontentloaded")
        page.locator("input[type=password]").wait_for()
        assert page.locator("#ragmed-question").count() == 0
        page.locator("input[type=text]").first.fill(USER)
        page.locator("input[type=password]").fill(PASSWORD)
        page.locator("button", has_text="Login").click()
        page.locator("#ragmed-question textarea").wait_for()
        browser.close()
