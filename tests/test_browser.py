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
    """p(toxic) 0.9 with 'hate' or 'idiot', 0.55 with 'meh' (a borderline text), else 0.2."""

    labels = ["not toxic", "toxic"]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        def p(t: str) -> float:
            t = t.lower()
            return 0.9 if "hate" in t or "idiot" in t else 0.55 if "meh" in t else 0.2

        return np.array([[1 - p(t), p(t)] for t in texts])  # (N, 2)


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
def feedback_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "feedback.jsonl"


@pytest.fixture(scope="module")
def server_url(feedback_file):
    _need_browser()
    import uvicorn

    from slimtext.serve.app import create_app
    from slimtext.serve.workbench import WorkbenchConfig

    info = {"dataset": "davidson", "test_split": "test", "test": {"accuracy": 0.93, "macro_f1": 0.88}}
    app = create_app(KeywordPredictor(), model_name="keywords", info=info,
                     workbench=WorkbenchConfig(feedback_path=feedback_file))
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
    page.wait_for_selector("#result-label:text-is('not toxic')")  # no string eval: the page's CSP forbids it
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
    assert page.inner_text("#highlighted .w.up") == "hate"  # the server drew the highlights
    _save_screenshot(page, tmp_path, "classify-nojs.png")
    context.close()


# ---- the moderator's workbench ------------------------------------------------------------------


def _classify(page, server_url, text):
    page.goto(server_url + "/")
    page.fill("#text", text)
    page.click("#classify-button")
    page.wait_for_selector("#result:not([hidden])", timeout=10_000)


def test_highlight_spans_appear_for_a_toxic_text(browser, server_url, tmp_path):
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    page = context.new_page()
    _classify(page, server_url, "You are an idiot, honestly.")
    page.wait_for_selector("#explanation:not([hidden]) #highlighted .w")
    words = page.locator("#highlighted .w")
    assert words.all_inner_texts() == ["You", "are", "an", "idiot", ",", "honestly", "."]
    assert page.locator("#highlighted .w.up").all_inner_texts() == ["idiot"]
    assert page.inner_text("#highlighted") == "You are an idiot, honestly."
    idiot = page.locator("#highlighted .w.up")
    assert idiot.get_attribute("aria-label") == "idiot: +0.700 towards toxic"
    page.focus("#highlighted .w >> nth=0")  # keyboard: Tab walks the words, each says its score
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "idiot"
    assert page.inner_text("#word-detail") == "idiot: +0.700 towards toxic"
    assert page.inner_text("#info-dataset") == "davidson"
    _save_screenshot(page, tmp_path, "web-workbench.png")
    context.close()


def test_slider_changes_the_verdict_of_a_borderline_text(browser, server_url, tmp_path):
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    page = context.new_page()
    _classify(page, server_url, "meh, fine by me")  # p(toxic) = 0.55
    assert page.inner_text("#result-label") == "toxic"
    assert page.locator("#review-flag").is_visible()  # 0.55 is within 0.1 of 0.5
    page.focus("#threshold")
    for _ in range(10):  # keyboard only: 0.50 -> 0.60
        page.keyboard.press("ArrowRight")
    assert page.input_value("#threshold") == "0.6"
    assert page.inner_text("#threshold-value") == "0.60"
    assert page.inner_text("#result-label") == "not toxic"
    assert page.inner_text("#result-prob") == "45.0%"
    assert page.get_attribute("#gauge-mark", "style") == "left: 60%;"
    page.fill("#threshold", "0.3")
    assert page.inner_text("#result-label") == "toxic"
    assert page.locator("#review-flag").is_hidden()  # 0.55 is 0.25 away from 0.3
    context.close()


def test_csv_upload_round_trips_row_by_row(browser, server_url, tmp_path):
    import csv

    src = 'id,text\n1,I hate you\n2,""\n3,"two\nlines"\n4,meh\n'
    context = browser.new_context(viewport={"width": 900, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server_url + "/")
    page.set_input_files("#file", files=[{"name": "comments.csv", "mimeType": "text/csv", "buffer": src.encode()}])
    with page.expect_download() as info:
        page.click("#score-button")
    download = info.value
    assert download.suggested_filename == "comments.scored.csv"
    rows = list(csv.DictReader(open(download.path(), newline="", encoding="utf-8")))
    assert [(r["id"], r["text"], r["label"], r["needs_review"], r["error"]) for r in rows] == [
        ("1", "I hate you", "toxic", "false", ""), ("2", "", "", "", "empty text"),
        ("3", "two\nlines", "not toxic", "false", ""), ("4", "meh", "toxic", "true", "")]
    context.close()


def test_phone_viewport_shows_the_verdict_without_horizontal_scrolling(browser, server_url, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    _classify(page, server_url, "I hate how long this supercalifragilisticexpialidocious sentence is")
    page.wait_for_selector("#highlighted .w")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#result-label").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    _save_screenshot(page, tmp_path, "web-phone.png")
    context.close()


def test_wrong_button_writes_one_feedback_line(browser, server_url, feedback_file):
    import json

    before = feedback_file.read_text().splitlines() if feedback_file.exists() else []
    context = browser.new_context(viewport={"width": 900, "height": 1000})
    page = context.new_page()
    _classify(page, server_url, "I hate <b>mondays</b>")
    page.click("#wrong-button")
    page.wait_for_selector("#notice:not([hidden])")
    assert page.inner_text("#notice") == "Thanks: saved as “not toxic” for review."
    lines = feedback_file.read_text().splitlines()
    assert len(lines) == len(before) + 1
    record = json.loads(lines[-1])
    assert (record["text"], record["model_label"], record["corrected_label"]) == (
        "I hate <b>mondays</b>", "toxic", "not toxic")
    context.close()
