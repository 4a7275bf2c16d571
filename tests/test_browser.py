"""The page in a real browser: uvicorn on a free 127.0.0.1 port, headless Debian Chromium via
Playwright. Skipped when chromium or playwright is missing, unless CI is set (then it fails)."""

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class KeywordPredictor:
    labels = ["not toxic", "toxic"]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        rude = ["hate" in t.lower() or "idiot" in t.lower() for t in texts]
        return np.array([[0.1, 0.9] if r else [0.8, 0.2] for r in rude])  # (N, 2)


def _need_browser():
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(reason + "; CI is set, so this is an error")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    _need_browser()
    import uvicorn

    from slimtext.serve.app import create_app

    app = create_app(KeywordPredictor(), model_name="keywords")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(server_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if artifacts := os.environ.get("SLIMTEXT_ARTIFACTS"):
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


PERCENT = re.compile(r"^\d{1,3}\.\d%$")


def test_classify_with_javascript(browser, server_url, tmp_path):
    context = browser.new_context(viewport={"width": 900, "height": 800})
    page = context.new_page()
    page.goto(server_url + "/")
    assert page.locator("#result").is_hidden()
    page.evaluate("window.__sameDocument = true")  # survives only if the page is not reloaded

    page.fill("#text", "I hate you")
    page.click("#classify-button")
    page.wait_for_selector("#result:not([hidden])", timeout=10_000)

    assert page.inner_text("#result-label") == "toxic"
    assert PERCENT.match(page.inner_text("#result-prob"))
    assert page.inner_text("#result-prob") == "90.0%"
    assert float(page.inner_text("#result-latency")) >= 0
    assert page.evaluate("window.__sameDocument") is True  # updated in place by fetch()
    shot = _save_screenshot(page, tmp_path, "classify-js.png")
    assert shot.stat().st_size > 1000

    page.click("a.example >> nth=1")  # an example fills the box without navigating
    assert page.input_value("#text") == "Thanks so much for helping me move last weekend!"
    page.click("#classify-button")
    page.wait_for_function("document.getElementById('result-label').textContent === 'not toxic'")
    context.close()


def test_classify_without_javascript(browser, server_url, tmp_path):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 900, "height": 800})
    page = context.new_page()
    page.goto(server_url + "/")

    page.click("a.example >> nth=0")  # a plain link: /?text=... pre-fills the box
    page.wait_for_url(re.compile(r"\?text="))
    assert page.input_value("#text") == "I hate you"

    with page.expect_navigation():  # the form POSTs and the server renders the result
        page.click("#classify-button")
    assert page.locator("#result").is_visible()
    assert page.inner_text("#result-label") == "toxic"
    assert PERCENT.match(page.inner_text("#result-prob"))
    _save_screenshot(page, tmp_path, "classify-nojs.png")
    context.close()
