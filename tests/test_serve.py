"""The web app and JSON API, driven through FastAPI's TestClient with a keyword predictor."""

import asyncio
import csv
import io
import json
import re
import sys
import threading
import time
import types
from html import unescape

import numpy as np
import pytest
from fastapi.testclient import TestClient

from slimtext.errors import SlimtextError
from slimtext.serve.app import (
    app_from_env,
    batching_from_env,
    create_app,
    create_app_from_run,
    serve,
)
from slimtext.serve.batching import BatchingConfig
from slimtext.serve.classifier import Classifier

TOXIC_WORDS = {"hate", "idiot", "stupid"}


class KeywordPredictor:
    """Stands in for slimtext.inference.predictor's Predictor: 'toxic' when a rude word appears."""

    labels = ["not toxic", "toxic"]

    def __init__(self):
        self.calls = 0

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rude = [any(w in t.lower() for w in TOXIC_WORDS) for t in texts]
        return np.array([[0.1, 0.9] if r else [0.8, 0.2] for r in rude])  # (N, 2)


class ThreeWay:
    labels = ["negative", "neutral", "positive"]

    def predict_proba(self, texts):
        return np.tile([0.2, 0.1, 0.7], (len(texts), 1))  # (N, 3)


MAX_CHARS, MAX_BATCH = 100, 8


@pytest.fixture
def predictor():
    return KeywordPredictor()


@pytest.fixture
def client(predictor):
    app = create_app(predictor, max_chars=MAX_CHARS, max_batch=MAX_BATCH, model_name="keywords")
    return TestClient(app)


def assert_still_serving(client):
    r = client.post("/api/classify", json={"text": "I hate you"})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "toxic"


# ---- happy paths ----------------------------------------------------------------------------


def test_classify_one(client):
    r = client.post("/api/classify", json={"text": "I hate you"})
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == "toxic"
    assert body["probabilities"] == pytest.approx({"not toxic": 0.1, "toxic": 0.9})
    assert body["latency_ms"] >= 0

    body = client.post("/api/classify", json={"text": "Have a lovely day"}).json()
    assert body["label"] == "not toxic"


def test_classify_batch_is_one_model_call(client, predictor):
    texts = ["I hate you", "nice", "you idiot", "thanks"]
    r = client.post("/api/classify/batch", json={"texts": texts})
    assert r.status_code == 200
    body = r.json()
    assert [res["label"] for res in body["results"]] == ["toxic", "not toxic", "toxic", "not toxic"]
    assert body["latency_ms"] >= 0
    assert predictor.calls == 1


def test_batch_at_the_limit(client):
    r = client.post("/api/classify/batch", json={"texts": ["x"] * MAX_BATCH})
    assert r.status_code == 200
    assert len(r.json()["results"]) == MAX_BATCH


def test_generic_labels():
    client = TestClient(create_app(ThreeWay()))
    body = client.post("/api/classify", json={"text": "fine"}).json()
    assert body["label"] == "positive"
    assert set(body["probabilities"]) == {"negative", "neutral", "positive"}
    page = client.post("/", data={"text": "fine"}).text
    assert ">positive</span>" in page and "70.0%" in page
    assert client.get("/healthz").json()["model"] == "ThreeWay"


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "model": "keywords",
        "backend": None,
        "labels": ["not toxic", "toxic"],
        "max_chars": MAX_CHARS,
        "max_batch": MAX_BATCH,
        "threshold": 0.5,  # no calibration.json: 0.5
        "review_band": 0.1,
        "batching": False,  # not an ONNX backend
    }


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/classify", "/api/classify/batch", "/healthz"} <= set(schema["paths"])
    classify = schema["paths"]["/api/classify"]["post"]
    assert {"200", "400", "413", "422"} <= set(classify["responses"])
    assert "ClassifyRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# ---- the page -------------------------------------------------------------------------------


def test_page_get(client):
    r = client.get("/")
    assert r.status_code == 200
    html = r.text
    assert '<form id="classify-form" method="post"' in html
    assert 'name="text"' in html and "keywords" in html
    assert 'id="result" class="result" aria-live="polite" hidden' in html
    assert "/static/style.css" in html and "/static/app.js" in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/app.js").status_code == 200


def test_example_link_fills_box_without_js(client):
    html = client.get("/", params={"text": "I hate you"}).text
    assert ">I hate you</textarea>" in html
    assert 'href="/?text=I%20hate%20you"' in html


def test_form_post_renders_result(client):
    r = client.post("/", data={"text": "I hate you"})
    assert r.status_code == 200
    html = r.text
    assert 'data-label="toxic">toxic</span>' in html
    assert '<span id="result-prob" class="prob">90.0%</span>' in html
    assert "width: 10.0%" in html and "width: 90.0%" in html  # one bar per label
    assert ">I hate you</textarea>" in html  # the text stays in the box
    assert "hidden" not in re.search(r'<section id="result"[^>]*>', html).group()  # not hidden


@pytest.mark.parametrize(
    "text, status, message",
    [("", 422, "text is empty"), ("   ", 422, "text is empty"), ("a" * 101, 413, "limit is 100")],
)
def test_form_post_bad_text_shows_error(client, text, status, message):
    r = client.post("/", data={"text": text})
    assert r.status_code == status
    assert message in r.text and 'role="alert" >' in r.text
    assert_still_serving(client)


def test_form_post_escapes_html(client):
    html = client.post("/", data={"text": "<script>alert(1)</script>"}).text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


# ---- bad input: each a 4xx with {"error": ...} naming the problem, then still serving --------

JSON = {"Content-Type": "application/json"}


def chunked_body():  # no Content-Length: counted while it is read
    yield b'{"text": "'
    for _ in range(200):
        yield b"a" * 5000
    yield b'"}'


BAD_SINGLE = {
    "empty text": (dict(json={"text": ""}), 422, "text is empty"),
    "whitespace only": (dict(json={"text": " \n\t "}), 422, "text is empty"),
    "missing field": (dict(json={}), 422, "text: field required"),
    "misspelt field": (dict(json={"txt": "hi"}), 422, "txt: unknown field"),
    "wrong type": (dict(json={"text": 5}), 422, "text: Input should be a valid string"),
    "null text": (dict(json={"text": None}), 422, "text: Input should be a valid string"),
    "body not an object": (dict(json=["hi"]), 422, "request body must be a JSON object"),
    "no body": (dict(headers=JSON), 422, "request body is missing"),
    "no content type": (dict(content=b'{"text": "hi"}'), 422, "Content-Type: application/json"),
    "text too long": (
        dict(json={"text": "a" * 101}),
        413,
        "text has 101 characters; the limit is 100",
    ),
    "malformed JSON": (dict(content=b'{"text": "hi"', headers=JSON), 400, "malformed JSON"),
    "non-UTF-8 body": (dict(content=b'{"text": "caf\xe9"}', headers=JSON), 400, "not valid UTF-8"),
    "huge body": (
        dict(content=b'{"text": "' + b"a" * 1_000_000 + b'"}', headers=JSON),
        413,
        "request body is too large",
    ),
    "huge chunked body": (
        dict(content=chunked_body, headers=JSON),
        413,
        "request body is too large",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SINGLE), ids=list(BAD_SINGLE))
def test_bad_single_input(client, case):
    kwargs, status, message = BAD_SINGLE[case]
    if callable(kwargs.get("content")):  # a fresh generator per run
        kwargs = {**kwargs, "content": kwargs["content"]()}
    r = client.post("/api/classify", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    assert_still_serving(client)


BAD_BATCH = {
    "empty batch": ({"texts": []}, 422, "texts is empty"),
    "batch over limit": (
        {"texts": ["x"] * (MAX_BATCH + 1)},
        413,
        "texts has 9 items; the limit is 8",
    ),
    "missing texts": ({"text": "hi"}, 422, "texts: field required"),
    "texts not a list": ({"texts": "hi"}, 422, "texts: Input should be a valid list"),
    "item wrong type": ({"texts": ["ok", 3]}, 422, "texts[1]: Input should be a valid string"),
    "item empty": ({"texts": ["ok", "  "]}, 422, "texts[1] is empty"),
    "item too long": ({"texts": ["ok", "b" * 101]}, 413, "texts[1] has 101 characters"),
}


@pytest.mark.parametrize("case", list(BAD_BATCH), ids=list(BAD_BATCH))
def test_bad_batch_input(client, predictor, case):
    body, status, message = BAD_BATCH[case]
    r = client.post("/api/classify/batch", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert predictor.calls == 0  # rejected before the model runs
    assert_still_serving(client)


def test_unknown_path_and_method(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json() == {"error": "not found: /nope"}
    r = client.get("/api/classify")
    assert r.status_code == 405 and "method GET not allowed" in r.json()["error"]
    assert_still_serving(client)


def test_broken_predictor_is_a_json_500():
    class Broken:
        labels = ["a", "b"]

        def predict_proba(self, texts):
            return np.zeros((len(texts), 3))  # wrong number of labels

    client = TestClient(create_app(Broken()), raise_server_exceptions=False)
    r = client.post("/api/classify", json={"text": "hi"})
    assert r.status_code == 500
    assert "internal error" in r.json()["error"]
    assert client.get("/healthz").status_code == 200


# ---- concurrency ----------------------------------------------------------------------------


class SlowCounting:
    labels = ["a", "b"]

    def __init__(self, thread_safe: bool):
        self.thread_safe = thread_safe
        self.active = self.peak = 0
        self.guard = threading.Lock()

    def predict_proba(self, texts):
        with self.guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)
        with self.guard:
            self.active -= 1
        return np.full((len(texts), 2), 0.5)  # (N, 2)


@pytest.mark.parametrize("thread_safe, expect_overlap", [(False, False), (True, True)])
def test_lock_covers_one_call_unless_thread_safe(thread_safe, expect_overlap):
    predictor = SlowCounting(thread_safe)
    clf = Classifier(predictor, max_chars=10, max_batch=4)
    threads = [threading.Thread(target=clf.predict, args=(["x"],)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (predictor.peak > 1) == expect_overlap


# ---- dynamic batching (serve/batching.py) ----------------------------------------------------------


class OnnxLike(KeywordPredictor):
    """An ONNX-backend stand-in: thread safe, a fixed cost per call, fails a call holding 'boom'."""

    backend, thread_safe = "onnx-int8", True

    def __init__(self, cost_s: float = 0.01):
        super().__init__()
        self.cost_s, self.sizes, self.on_event_loop = cost_s, [], 0

    def predict_proba(self, texts):
        self.sizes.append(len(texts))
        try:  # a model call must never block the server's event loop
            asyncio.get_running_loop()
            self.on_event_loop += 1
        except RuntimeError:
            pass
        time.sleep(self.cost_s)
        if any("boom" in t for t in texts):
            raise ValueError("cannot tokenize boom")
        return super().predict_proba(texts)


def _concurrently(fn, args: list) -> list:
    """fn(arg) for every arg, all started together; each result or the exception it raised."""
    out: list = [None] * len(args)
    start = threading.Barrier(len(args))

    def one(i):
        start.wait()
        try:
            out[i] = fn(args[i])
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_batching_is_on_by_default_for_onnx_only():
    assert Classifier(OnnxLike(), 100, 8).batcher is not None
    assert Classifier(KeywordPredictor(), 100, 8).batcher is None  # torch / unknown backend: off
    assert Classifier(OnnxLike(), 100, 8, batching=BatchingConfig(mode="off")).batcher is None
    assert Classifier(KeywordPredictor(), 100, 8, batching=BatchingConfig(mode="on")).batcher is not None
    assert TestClient(create_app(OnnxLike())).get("/healthz").json()["batching"] is True


def test_concurrent_requests_share_calls_and_get_their_own_answers():
    predictor = OnnxLike()
    clf = Classifier(predictor, 100, 8)
    texts = [f"{'I hate' if i % 3 == 0 else 'lovely'} text {i}" for i in range(24)]
    results = _concurrently(lambda t: clf.predict([t])[0], texts)
    assert predictor.calls < len(texts) and max(predictor.sizes) > 1  # fewer, larger model calls
    for text, r in zip(texts, results):
        assert r.label == ("toxic" if "hate" in text else "not toxic"), text
    assert clf.batcher.requests == len(texts)


def test_one_bad_request_fails_alone():
    predictor = OnnxLike()
    clf = Classifier(predictor, 100, 8)
    texts = ["I hate you", "boom", "nice day", "you idiot", "ok then", "fine"]
    results = _concurrently(lambda t: clf.predict([t])[0], texts)
    assert isinstance(results[1], ValueError) and "boom" in str(results[1])
    for text, r in zip(texts, results):
        if text != "boom":
            assert r.label == ("toxic" if text in ("I hate you", "you idiot") else "not toxic")


def test_through_the_api_a_bad_request_is_its_own_500():
    predictor = OnnxLike()
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        bodies = [{"text": "I hate you"}, {"text": "boom"}, {"text": "nice"}, {"text": "you idiot"}]
        responses = _concurrently(lambda b: client.post("/api/classify", json=b), bodies)
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert [r.json().get("label") for r in responses] == ["toxic", None, "not toxic", "toxic"]
    assert "error" in responses[1].json()


def test_with_batching_the_classify_endpoints_await_gathered_calls_on_the_event_loop():
    predictor = OnnxLike(0.01)
    app = create_app(predictor)
    endpoints = {r.path: r.endpoint for r in app.routes if getattr(r, "path", "").startswith("/api/classify")}
    assert all(asyncio.iscoroutinefunction(fn) for fn in endpoints.values())  # no thread per waiting request
    texts = [f"{'you idiot' if i % 2 else 'nice'} {i}" for i in range(16)]
    with TestClient(app) as client:
        responses = _concurrently(lambda t: client.post("/api/classify", json={"text": t}), texts)
        batch = client.post("/api/classify/batch", json={"texts": ["you idiot", "nice"]}).json()
    assert [r.json()["label"] for r in responses] == ["toxic" if i % 2 else "not toxic" for i in range(16)]
    assert predictor.calls < len(texts) + 1 and max(predictor.sizes) > 1  # gathered
    assert [r["label"] for r in batch["results"]] == ["toxic", "not toxic"]
    alone = OnnxLike(0.01)  # batching off: one call per request, in the thread pool, not on the loop
    with TestClient(create_app(alone, batching=BatchingConfig(mode="off"))) as client:
        responses = _concurrently(lambda t: client.post("/api/classify", json={"text": t}), texts[:6])
    assert [r.json()["label"] for r in responses] == ["toxic" if i % 2 else "not toxic" for i in range(6)]
    assert alone.sizes == [1] * 6
    assert predictor.on_event_loop == alone.on_event_loop == 0


def test_a_lone_request_is_not_held_back_by_the_gather_window():
    wait_ms = 20.0
    on = Classifier(OnnxLike(0.002), 100, 8, batching=BatchingConfig(mode="on", max_wait_ms=wait_ms))
    off = Classifier(OnnxLike(0.002), 100, 8, batching=BatchingConfig(mode="off"))

    def median_ms(clf) -> float:
        times = []
        for i in range(25):
            t0 = time.perf_counter()
            clf.predict([f"text {i}"])
            times.append((time.perf_counter() - t0) * 1000)
        return sorted(times)[len(times) // 2]

    _concurrently(lambda t: on.predict([t]), [f"load {i}" for i in range(8)])  # a loaded moment first
    assert median_ms(on) <= median_ms(off) + wait_ms
    assert median_ms(on) < wait_ms  # sequential requests: the window stays closed


def test_batching_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("SLIMTEXT_BATCHING", "off")
    monkeypatch.setenv("SLIMTEXT_BATCH_WAIT_MS", "5")
    monkeypatch.setenv("SLIMTEXT_BATCH_SIZE", "32")
    monkeypatch.setenv("SLIMTEXT_BATCH_WORKERS", "3")
    assert batching_from_env() == BatchingConfig(mode="off", max_wait_ms=5.0, max_size=32, workers=3)
    monkeypatch.setenv("SLIMTEXT_BATCHING", "sometimes")
    with pytest.raises(SlimtextError, match="SLIMTEXT_BATCHING"):
        batching_from_env()


# ---- loading from a run directory (slimtext.inference.predictor replaced by a stand-in) ------------------


@pytest.fixture
def fake_predict_module(monkeypatch):
    loaded = []

    def load_predictor(run_dir, backend="torch"):
        loaded.append(run_dir)
        return KeywordPredictor()

    module = types.ModuleType("slimtext.inference.predictor")
    module.load_predictor = load_predictor
    monkeypatch.setitem(sys.modules, "slimtext.inference.predictor", module)
    return loaded


def test_create_app_from_run(tmp_path, fake_predict_module):
    run = tmp_path / "davidson-tiny"
    run.mkdir()
    client = TestClient(create_app_from_run(run, max_chars=20))
    assert fake_predict_module == [run]  # loaded once, at start-up
    assert client.get("/healthz").json()["model"] == "davidson-tiny"
    assert client.post("/api/classify", json={"text": "a" * 21}).status_code == 413
    assert client.post("/api/classify", json={"text": "I hate you"}).json()["label"] == "toxic"


def test_app_from_env(tmp_path, monkeypatch, fake_predict_module):
    monkeypatch.setenv("SLIMTEXT_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("SLIMTEXT_MAX_BATCH", "2")
    monkeypatch.setenv("SLIMTEXT_MODEL_NAME", "from-env")
    client = TestClient(app_from_env())
    assert client.get("/healthz").json()["model"] == "from-env"
    r = client.post("/api/classify/batch", json={"texts": ["a", "b", "c"]})
    assert r.status_code == 413
    monkeypatch.setenv("SLIMTEXT_MAX_BATCH", "many")
    with pytest.raises(SlimtextError, match="SLIMTEXT_MAX_BATCH='many' is not an integer"):
        app_from_env()
    monkeypatch.delenv("SLIMTEXT_RUN_DIR")
    with pytest.raises(SlimtextError, match="set SLIMTEXT_RUN_DIR"):
        app_from_env()


def test_serve_rejects_missing_run_dir(tmp_path):
    with pytest.raises(SlimtextError, match="needs a run directory"):
        serve(None)
    with pytest.raises(SlimtextError, match="does not exist"):
        serve(tmp_path / "nope")


# ---- the moderator's workbench: threshold, explanations, file scoring, feedback ---------------


class Calibrated(KeywordPredictor):
    """The calibration contract: a saved threshold and positive label."""

    threshold, positive_label, temperature = 0.95, "toxic", 1.0


def test_threshold_from_the_run_and_from_the_request():
    client = TestClient(create_app(Calibrated()))
    body = client.post("/api/classify", json={"text": "I hate you"}).json()
    assert body["label"] == "not toxic" and body["threshold"] == 0.95  # 0.9 < 0.95
    assert body["needs_review"] is True and body["probability"] == pytest.approx(0.1)
    body = client.post("/api/classify", json={"text": "I hate you", "threshold": 0.5}).json()
    assert body["label"] == "toxic" and body["needs_review"] is False
    assert client.get("/healthz").json()["threshold"] == 0.95
    r = client.post("/api/classify", json={"text": "hi", "threshold": 1.5})
    assert r.status_code == 422 and "threshold" in r.json()["error"]
    html = client.get("/").text
    assert 'id="threshold" name="threshold" min="0" max="1" step="0.01"\n             value="0.95"' in html
    assert "saved threshold is 0.95" in html


def test_explain_api_scores_words(client):
    r = client.post("/api/explain", json={"text": "you are stupid, really"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "toxic" and body["method"] == "occlusion"
    words = {w["word"]: w["scores"]["toxic"] for w in body["words"]}
    assert list(words) == ["you", "are", "stupid", ",", "really"]
    assert words["stupid"] == pytest.approx(0.7) and words["you"] == 0
    assert body["words"][2]["start"] == 8 and body["words"][2]["end"] == 14


@pytest.mark.parametrize("payload, status, message", [
    ({"text": ""}, 422, "text is empty"),
    ({"text": "a" * 101}, 413, "limit is 100"),
    ({"text": "w " * 40}, 413, "limited to 30 words"),
    ({"text": "hi", "method": "lime"}, 422, "unknown explanation method"),
    ({"text": "hi", "method": "integrated-gradients"}, 422, "torch backend"),
])
def test_explain_limits_are_json_errors(predictor, payload, status, message):
    from slimtext.serve.workbench import WorkbenchConfig

    app = create_app(predictor, max_chars=MAX_CHARS, workbench=WorkbenchConfig(explain_max_words=30))
    r = TestClient(app).post("/api/explain", json=payload)
    assert r.status_code == status, r.text
    assert message in r.json()["error"].lower() or message in r.json()["error"]


def test_page_post_highlights_words_escaped_with_a_verdict_bar(predictor):
    from slimtext.serve.workbench import WorkbenchConfig

    client = TestClient(create_app(predictor, workbench=WorkbenchConfig(explain_max_words=30)))
    html = client.post("/", data={"text": "<b>stupid</b> idea", "threshold": "0.3"}).text
    assert "<b>" not in html and "&lt;b&gt;" in html
    assert re.search(r'<span class="w up" tabindex="0" style="--s: 1.0" data-score="0.7000"[^>]*>stupid</span>', html)
    assert 'aria-label="stupid: +0.700 towards toxic"' in html
    assert 'id="gauge-mark" style="left: 30.0%"' in html
    assert 'style="left: 20.0%; width: 20.0%"' in html  # the review band 0.3 ± 0.1
    assert 'value="0.30"' in html
    long = client.post("/", data={"text": "stupid " * 40}).text  # 40 words > 30: the verdict, no highlights
    assert 'data-label="toxic">toxic</span>' in long and 'class="w ' not in long.split('id="highlighted"')[1]
    html = client.post("/", data={"text": "meh", "threshold": "0.15"}).text  # p(toxic) 0.2 >= 0.15
    assert 'data-label="toxic">toxic</span>' in html and 'id="review-flag" class="review" >' in html
    assert client.post("/", data={"text": "hi", "threshold": "2"}).status_code == 422


def test_page_states_the_model_and_its_test_metrics(tmp_path, fake_predict_module):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({
        "dataset": "davidson", "test_split": "test", "model": "minilm-l6", "method": "head",
        "test": {"accuracy": 0.912, "macro_f1": 0.8341, "mcc": 0.7, "roc_auc": None}}))
    html = TestClient(create_app_from_run(run)).get("/").text
    assert '<dd id="info-dataset">davidson</dd>' in html
    assert "<dt>test macro-f1</dt><dd>0.834</dd>" in html and "roc-auc" not in html
    assert "model-warning" not in html  # a model that learned something: no warning


def test_page_and_start_warn_about_a_degenerate_model(tmp_path, fake_predict_module, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({
        "dataset": "davidson", "test_split": "test", "labels": ["not toxic", "toxic"],
        "test": {"accuracy": 0.8, "macro_f1": 0.44, "mcc": 0.0}, "confusion": {"test": [[0, 40], [0, 160]]}}))
    html = TestClient(create_app_from_run(run)).get("/").text
    assert 'class="error model-warning" role="alert"' in html
    assert "all 200 test predictions are &#39;toxic&#39;: the model is constant" in html
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)  # start up, do not listen
    serve(run)
    assert "warning:" in capsys.readouterr().err


def _upload(client, content: bytes, name="comments.csv", path="/api/score", **data):
    return client.post(path, files={"file": (name, content, "text/csv")}, data=data)


def test_csv_upload_round_trips_row_by_row(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = b'id,body\n1,I hate you\n2,""\n3,"multi\nline, ok"\n4,meh\n'
    r = _upload(client, src, name="../../etc/x y.csv", text_col="body")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="x_y.scored.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["id"], x["body"], x["label"], x["error"]) for x in rows] == [
        ("1", "I hate you", "toxic", ""), ("2", "", "", "empty text"),
        ("3", "multi\nline, ok", "not toxic", ""), ("4", "meh", "not toxic", "")]
    assert [x["needs_review"] for x in rows] == ["false", "", "false", "false"]
    assert list(tmp_path.iterdir()) == []  # nothing written beside the server
    r = _upload(client, b'{"text": "I hate it"}\n{"text": ""}\n', name="a.jsonl", threshold="0.95")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["label"] for x in lines] == ["not toxic", None] and lines[0]["needs_review"] is True


@pytest.mark.parametrize("content, name, data, status, message", [
    (b"text\n" + b"hello\n" * 30, "big.csv", {}, 413, "larger than 100 bytes"),
    (b"text\n" + b"a\n" * 6, "rows.csv", {}, 413, "more than 5 rows"),
    (b"text\nhi\n", "notes.txt", {}, 415, "cannot tell the format"),
    (b"text\ncaf\xe9\n", "latin1.csv", {}, 400, "not UTF-8"),
    (b"body\nhi\n", "cols.csv", {}, 422, "no column 'text'"),
    (b"text\nhi\n", "t.csv", {"threshold": "7"}, 422, "less than or equal to 1"),
])
def test_upload_limits_are_json_errors(predictor, content, name, data, status, message):
    from slimtext.serve.workbench import WorkbenchConfig

    wb = WorkbenchConfig(upload_max_bytes=100, upload_max_rows=5)
    client = TestClient(create_app(predictor, workbench=wb))
    r = _upload(client, content, name=name, **data)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    page = _upload(client, content, name=name, path="/score", **data)  # the form: the page with the error
    if status != 422 or "threshold" not in data:
        assert page.status_code == status and message in unescape(page.text) and "text/html" in page.headers["content-type"]
    r = client.post("/api/score", content=b"x" * 70_000, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "request body is too large" in r.json()["error"]


def test_feedback_appends_one_line_per_correction(predictor, tmp_path):
    from slimtext.serve.workbench import WorkbenchConfig

    path = tmp_path / "fb" / "feedback.jsonl"
    client = TestClient(create_app(predictor, workbench=WorkbenchConfig(feedback_path=path)))
    r = client.post("/api/feedback", json={"text": "I hate <b>mondays</b>", "model_label": "toxic",
                                           "corrected_label": "not toxic"})
    assert r.status_code == 200 and r.json() == {"saved": True}
    html = client.post("/feedback", data={"text": "fine", "model_label": "not toxic",
                                          "corrected_label": "toxic"}).text
    assert "Thanks: saved as “toxic” for review." in html
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [(x["text"], x["model_label"], x["corrected_label"]) for x in lines] == [
        ("I hate <b>mondays</b>", "toxic", "not toxic"), ("fine", "not toxic", "toxic")]
    assert all(x["time"].endswith("+00:00") for x in lines)
    r = client.post("/api/feedback", json={"text": "x", "model_label": "toxic", "corrected_label": "spam"})
    assert r.status_code == 422 and "'spam' is not a label" in r.json()["error"]
    off = TestClient(create_app(predictor))
    r = off.post("/api/feedback", json={"text": "x", "model_label": "toxic", "corrected_label": "not toxic"})
    assert r.status_code == 404 and "--feedback" in r.json()["error"]
    assert 'id="wrong-button"' not in off.get("/").text and 'id="wrong-button"' in client.get("/").text


def _append_many(path, worker, n):
    from slimtext.serve.workbench import append_feedback

    for i in range(n):
        append_feedback(path, {"text": f"{worker}-{i} " + "x" * 5000, "corrected_label": "toxic"})


def test_feedback_appends_from_several_processes_never_interleave(tmp_path):
    import multiprocessing

    path = tmp_path / "feedback.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    lines = path.read_text().splitlines()
    assert len(lines) == 160
    assert sorted(json.loads(x)["text"].split()[0] for x in lines) == sorted(
        f"{w}-{i}" for w in range(4) for i in range(40))


def test_feedback_goes_beside_the_run_and_env_configures_it(tmp_path, monkeypatch, fake_predict_module):
    run = tmp_path / "run"
    run.mkdir()
    client = TestClient(create_app_from_run(run))
    client.post("/api/feedback", json={"text": "x", "model_label": "toxic", "corrected_label": "not toxic"})
    assert len((run / "feedback.jsonl").read_text().splitlines()) == 1
    monkeypatch.setenv("SLIMTEXT_RUN_DIR", str(run))
    monkeypatch.setenv("SLIMTEXT_FEEDBACK", str(tmp_path / "elsewhere.jsonl"))
    monkeypatch.setenv("SLIMTEXT_REVIEW_BAND", "0.25")
    client = TestClient(app_from_env())
    assert client.get("/healthz").json()["review_band"] == 0.25
    client.post("/api/feedback", json={"text": "y", "model_label": "toxic", "corrected_label": "not toxic"})
    assert (tmp_path / "elsewhere.jsonl").exists()


@pytest.mark.slow
def test_the_feedback_file_trains_a_model(tmp_path):
    """The corrections file is a JSON Lines user file: --data FILE --label-col corrected_label."""
    from conftest import write_tiny_csv
    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train
    from slimtext.serve.workbench import append_feedback

    path = tmp_path / "feedback.jsonl"
    rows = write_tiny_csv(tmp_path / "tiny.csv", n=400).read_text().splitlines()[1:]
    for row in rows:
        text, label = row.rsplit(",", 1)
        append_feedback(path, {"text": text, "model_label": "x", "corrected_label": label, "time": "t"})
    cfg = RunConfig()
    cfg.data.data, cfg.data.text_col, cfg.data.label_col = str(path), "text", "corrected_label"
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 4, 16, 0.02, 1
    summary = train(cfg, out=tmp_path / "run", quiet=True)
    assert summary["labels"] == ["neg", "pos"] and summary["test"]["accuracy"] >= 0.85


def test_pages_send_security_headers_and_a_content_security_policy(client):
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-eval" not in csp
    api = client.post("/api/classify", json={"text": "hi"})
    assert api.headers["x-content-type-options"] == "nosniff" and "content-security-policy" not in api.headers


def test_blank_and_invisible_only_texts_are_rejected_and_the_schema_says_so(client):
    for text in ("   ", "\u200b\u200b", "\ufeff \u2060"):
        r = client.post("/api/classify", json={"text": text})
        assert r.status_code == 422 and "empty" in r.json()["error"], (text, r.text)
    assert client.post("/api/classify", json={"text": "\u200bhi"}).status_code == 200
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ClassifyRequest"]["properties"]["text"]["maxLength"] == MAX_CHARS
    assert schema["BatchRequest"]["properties"]["texts"]["maxItems"] == MAX_BATCH
    assert schema["ExplainRequest"]["properties"]["method"]["enum"] == ["auto", "occlusion"]  # no torch model



def test_several_batch_workers_answer_every_request_once():
    predictor = OnnxLike(0.005)
    clf = Classifier(predictor, 100, 8, batching=BatchingConfig(mode="on", workers=3))
    texts = [f"{'you idiot' if i % 2 else 'nice'} {i}" for i in range(30)]
    results = _concurrently(lambda t: clf.predict([t])[0], texts)
    assert [r.label for r in results] == ["toxic" if i % 2 else "not toxic" for i in range(30)]
    assert clf.batcher.requests == 30 and sum(predictor.sizes) == 30 and len(clf.batcher._threads) == 3
    assert Classifier(SlowCounting(False), 10, 4, batching=BatchingConfig(mode="on", workers=3)).batcher.workers == 1


def test_requests_the_http_parser_rejects_get_a_json_400(predictor):
    import socket

    import uvicorn

    from slimtext.serve.app import NoDelayHTTPProtocol

    app = create_app(predictor, max_chars=MAX_CHARS, max_batch=MAX_BATCH, model_name="keywords")
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=NoDelayHTTPProtocol,
                                           log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GARBAGE\r\n\r\n")
            raw = b""
            while chunk := conn.recv(65536):
                raw += chunk
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert status.startswith("HTTP/1.1 400 ")
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body)["error"].startswith("invalid HTTP request")


def test_the_server_entry_point_freezes_the_heap_it_starts_with(tmp_path, monkeypatch, fake_predict_module):
    """app_from_env (each uvicorn worker) moves what start-up left alive out of the collector's
    reach, so a full collection no longer walks the model and the libraries; create_app alone
    leaves the process's collector as it was."""
    import gc

    monkeypatch.setenv("SLIMTEXT_RUN_DIR", str(tmp_path))
    gc.unfreeze()
    try:
        create_app_from_run(tmp_path)
        assert gc.get_freeze_count() == 0
        app_from_env()
        assert gc.get_freeze_count() > 1000
        n = len(gc.get_objects())
        assert n < gc.get_freeze_count()  # the frozen objects are no longer tracked
    finally:
        gc.unfreeze()
