"""Serve a trained classifier: an HTML page that works without JavaScript, and a JSON API.

    GET  /                     page with a text box (``?text=...`` pre-fills it)
    POST /                     HTML form post: the page re-rendered with the result (no JavaScript)
    POST /api/classify         {"text": "..."}        -> {"label", "probability", "needs_review",
                                                           "probabilities", "threshold", "latency_ms"}
    POST /api/classify/batch   {"texts": ["...", ...]} -> {"results": [...], "latency_ms"}
    POST /api/explain, /api/score, /api/feedback, /score, /feedback   see serve/workbench.py
    GET  /healthz              {"status": "ok", "model": ..., "labels": [...], "threshold", ...}
    GET  /openapi.json, /docs  FastAPI's generated schema and its viewer

Every error is a 4xx/5xx with the JSON body ``{"error": "<what is wrong and where>"}`` (the page
shows the same message). The model is loaded once, before the first request; endpoints are sync
functions, so FastAPI runs inference in its threadpool, and the only lock (when the predictor does
not declare ``thread_safe = True``) is held for one ``predict_proba`` call. Verdicts use the run's
calibrated threshold (binary tasks) and flag "needs review" within a band around it. How a request travels
from the page to the model and back, and how to deploy: ``docs/web.md``.
"""

import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from slimtext import __version__
from slimtext.errors import SlimtextError
from slimtext.inference.explain import methods_for
from slimtext.inference.review import ReviewConfig, ReviewPolicy
from slimtext.serve.batching import MODES, BatchingConfig
from slimtext.serve.classifier import Classifier, Predictor
from slimtext.serve.errors import (
    ApiError,
    LimitBody,
    SecurityHeaders,
    _install_error_handlers,
    raw_error_response,
)
from slimtext.serve.schemas import (
    ERRORS,
    VISIBLE_TEXT,
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    Health,
    Prediction,
)
from slimtext.serve.workbench import (
    WorkbenchConfig,
    add_workbench_routes,
    explain_one,
    focus_label,
    form_threshold,
    highlight_segments,
    run_info,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
DEFAULT_EXAMPLES = (
    "I hate you",
    "Thanks so much for helping me move last weekend!",
    "You are an idiot and everyone knows it.",
    "The weather is lovely today, let's go for a walk.",
)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


# ---- the app --------------------------------------------------------------------------------


def create_app(
    predictor: Predictor,
    *,
    max_chars: int = 5000,
    max_batch: int = 256,
    model_name: str = "",
    examples: Sequence[str] = DEFAULT_EXAMPLES,
    workbench: WorkbenchConfig | None = None,
    info: dict | None = None,
    batching: BatchingConfig | None = None,
) -> FastAPI:
    """Build the app around an already loaded predictor (anything with ``labels`` and
    ``predict_proba``). ``max_chars`` limits each text, ``max_batch`` the texts per batch call;
    ``workbench`` sets the review band, explanation and upload limits and the feedback file;
    ``info`` is what the page states about the model (``workbench.run_info``); ``batching``
    gathers concurrent requests into one model call (``serve/batching.py``; default: on for
    the ONNX backends)."""
    wb = workbench or WorkbenchConfig()
    policy = ReviewPolicy.for_predictor(predictor, ReviewConfig(band=wb.review_band))
    clf = Classifier(predictor, max_chars, max_batch, policy, batching)
    model_name = model_name or type(predictor).__name__
    # Coarse guard on the raw body before JSON parsing; the per-text limits above give the
    # precise message. 12 bytes/char covers JSON escapes such as "\ud83d\ude00" (one character).
    max_body_bytes = max_batch * (12 * max_chars + 8) + 65536
    upload_body_bytes = wb.upload_max_bytes + 65536  # the file plus the multipart framing and fields
    body_limits = {"/api/score": upload_body_bytes, "/score": upload_body_bytes}

    app = FastAPI(
        title="slimtext classifier",
        version=__version__,
        description=f"Model **{model_name}**, labels: {', '.join(clf.labels)}.",
    )
    app.add_middleware(LimitBody, max_bytes=max_body_bytes, per_path=body_limits)
    app.add_middleware(SecurityHeaders)
    app.state.classifier = clf
    app.state.body_limit = LimitBody(app, max_body_bytes, body_limits).limit  # for the 413 message
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    def render(request: Request, text: str = "", status: int = 200, threshold: float | None = None,
               **extra: Any) -> HTMLResponse:
        context = {
            "root": request.scope.get("root_path", "").rstrip("/"),
            "version": __version__,
            "model_name": model_name,
            "labels": clf.labels,
            "max_chars": max_chars,
            "examples": list(examples),
            "text": text,
            "result": None,
            "error": None,
            "notice": None,
            "segments": None,
            "policy": policy,
            "threshold": threshold if threshold is not None else policy.threshold,
            "info": info or {},
            "wb": wb,
            **extra,
        }
        return templates.TemplateResponse(request, "index.html", context, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, text: str = "") -> HTMLResponse:
        return render(request, text[:max_chars])

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    def page_post(request: Request, text: Annotated[str, Form()] = "",
                  threshold: Annotated[str, Form()] = "") -> HTMLResponse:
        start = time.perf_counter()
        try:
            t = form_threshold(threshold)
            clf.check_text(text)
            try:
                result = explain_one(clf, wb, text, threshold=t)
                segments = highlight_segments(text, result["words"], focus_label(clf, result["label"]))
            except ApiError as e:
                if e.status != 413:
                    raise
                # too long to explain (characters or words): the verdict alone
                result, segments = clf.predict([text], t)[0].model_dump(), None
        except ApiError as e:
            return render(request, text, e.status, error=e.message)
        return render(request, text, threshold=t, result=result, segments=segments,
                      latency_ms=_ms_since(start))

    async def predictions(texts: list[str], threshold: float | None) -> list[Prediction]:
        """With batching on, the texts join a gathered call and the event loop awaits their rows
        (a waiting request holds no thread; docs/results.md, issue 20). Without it, one model call
        per request under the classifier's lock, in the thread pool (as FastAPI runs a plain
        endpoint)."""
        if clf.batcher is not None:
            return await clf.predict_gathered(texts, threshold)
        return await run_in_threadpool(clf.predict, texts, threshold)

    @app.post("/api/classify", response_model=ClassifyResponse, responses=ERRORS)
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        """Classify one text."""
        start = time.perf_counter()
        clf.check_text(body.text)
        prediction = (await predictions([body.text], body.threshold))[0]
        return ClassifyResponse(**prediction.model_dump(), latency_ms=_ms_since(start))

    @app.post("/api/classify/batch", response_model=BatchResponse, responses=ERRORS)
    async def classify_batch(body: BatchRequest) -> BatchResponse:
        """Classify up to max_batch texts in one model call."""
        start = time.perf_counter()
        clf.check_batch(body.texts)
        return BatchResponse(results=await predictions(body.texts, body.threshold), latency_ms=_ms_since(start))

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """Liveness and the model being served."""
        return Health(
            status="ok",
            model=model_name,
            backend=getattr(predictor, "backend", None),
            labels=clf.labels,
            max_chars=max_chars,
            max_batch=max_batch,
            threshold=policy.threshold if policy.binary else None,
            review_band=wb.review_band,
            batching=clf.batcher is not None,
        )

    add_workbench_routes(app, clf, wb, render)
    document_limits(app, max_chars, max_batch, wb.explain_max_chars, methods_for(predictor))
    # the API's hot paths first: Starlette tries routes in order, and every route before the one
    # that matches costs a match attempt (7 % of the event loop's samples in a py-spy profile of
    # ONNX int8 under 32 wrk clients, docs/results.md, issue 20)
    app.router.routes.sort(key=lambda r: getattr(r, "path", "") not in ("/api/classify", "/api/classify/batch"))
    return app


def document_limits(app: FastAPI, max_chars: int, max_batch: int, explain_max_chars: int,
                    methods: list[str]) -> None:
    """Put the limits this app enforces into its /openapi.json (maxLength, maxItems, the
    explanation methods its predictor supports), so that a client generated from the schema (or
    schemathesis) knows them."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            props = lambda name: schema["components"]["schemas"][name]["properties"]  # noqa: E731
            props("ClassifyRequest")["text"]["maxLength"] = max_chars
            props("BatchRequest")["texts"]["maxItems"] = max_batch
            props("BatchRequest")["texts"]["items"].update(maxLength=max_chars, **VISIBLE_TEXT)
            props("ExplainRequest")["text"]["maxLength"] = min(max_chars, explain_max_chars)
            props("ExplainRequest")["method"]["enum"] = methods
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def create_app_from_run(
    run_dir: str | os.PathLike,
    *,
    max_chars: int = 5000,
    max_batch: int = 256,
    model_name: str = "",
    workbench: WorkbenchConfig | None = None,
    batching: BatchingConfig | None = None,
) -> FastAPI:
    """Load the run's predictor once (``slimtext.inference.predictor.load_predictor``), warm it up,
    build the app. Feedback goes to ``RUN/feedback.jsonl`` unless ``workbench.feedback_path`` says
    otherwise; the page states the run's dataset and test metrics (summary.json)."""
    from slimtext.inference.predictor import (
        load_predictor,  # lazy: torch / onnxruntime load only to serve
    )

    run = Path(run_dir)
    if not run.is_dir():
        raise SlimtextError(
            f"run directory {run} does not exist; pass the folder a training run wrote"
        )
    start = time.perf_counter()
    predictor = load_predictor(run, backend=os.environ.get("SLIMTEXT_BACKEND", "torch"))
    predictor.predict_proba(["warm up"])  # first call pays for lazy init, not the first user
    log.info("loaded %s in %.1f s", run, time.perf_counter() - start)
    wb = workbench or WorkbenchConfig()
    if wb.feedback_path is None:
        wb.feedback_path = run / "feedback.jsonl"
    return create_app(
        predictor, max_chars=max_chars, max_batch=max_batch, model_name=model_name or run.name,
        workbench=wb, info=run_info(run), batching=batching,
    )


class NoDelayHTTPProtocol(AutoHTTPProtocol):
    """uvicorn's HTTP protocol with TCP_NODELAY set on every connection.

    With ``--workers N`` uvicorn binds the listening socket itself with ``proto=0``, so asyncio
    skips TCP_NODELAY on accepted connections and every keep-alive response after the first
    waits ~40 ms for the client's delayed ACK (uvicorn issue #3149). Pass
    ``--http slimtext.serve.app:NoDelayHTTPProtocol`` to ``uvicorn``; ``serve`` does."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser rejects (the app never sees them), in the app's
        error shape: JSON ``{"error": ...}`` with the security headers, then the connection closes."""
        defaults = getattr(self.server_state, "default_headers", [])  # date, server
        message = f"invalid HTTP request ({msg.rstrip('.')}): send a well-formed HTTP/1.1 request"
        self.transport.write(raw_error_response(400, "Bad Request", message, defaults))
        self.transport.close()


HTTP_PROTOCOL = "slimtext.serve.app:NoDelayHTTPProtocol"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SlimtextError(f"{name}={value!r} is not an integer") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise SlimtextError(f"{name}={value!r} is not a number") from None


def workbench_from_env() -> WorkbenchConfig:
    """``SLIMTEXT_FEEDBACK`` (feedback file), ``SLIMTEXT_REVIEW_BAND``, ``SLIMTEXT_UPLOAD_MAX_BYTES``,
    ``SLIMTEXT_UPLOAD_MAX_ROWS``, ``SLIMTEXT_EXPLAIN_MAX_CHARS``, ``SLIMTEXT_EXPLAIN_METHOD``."""
    d = WorkbenchConfig()
    feedback = os.environ.get("SLIMTEXT_FEEDBACK", "")
    return WorkbenchConfig(
        review_band=_env_float("SLIMTEXT_REVIEW_BAND", d.review_band),
        explain_max_chars=_env_int("SLIMTEXT_EXPLAIN_MAX_CHARS", d.explain_max_chars),
        explain_method=os.environ.get("SLIMTEXT_EXPLAIN_METHOD", d.explain_method),
        upload_max_bytes=_env_int("SLIMTEXT_UPLOAD_MAX_BYTES", d.upload_max_bytes),
        upload_max_rows=_env_int("SLIMTEXT_UPLOAD_MAX_ROWS", d.upload_max_rows),
        feedback_path=Path(feedback) if feedback else None,
    )


def batching_from_env() -> BatchingConfig:
    """``SLIMTEXT_BATCHING`` (auto, on, off), ``SLIMTEXT_BATCH_WAIT_MS``, ``SLIMTEXT_BATCH_SIZE``,
    ``SLIMTEXT_BATCH_WORKERS``."""
    d = BatchingConfig()
    mode = os.environ.get("SLIMTEXT_BATCHING", "") or d.mode
    if mode not in MODES:
        raise SlimtextError(f"SLIMTEXT_BATCHING={mode!r}: valid are {', '.join(MODES)}")
    return BatchingConfig(mode=mode, max_wait_ms=_env_float("SLIMTEXT_BATCH_WAIT_MS", d.max_wait_ms),
                          max_size=_env_int("SLIMTEXT_BATCH_SIZE", d.max_size),
                          workers=_env_int("SLIMTEXT_BATCH_WORKERS", d.workers))


def settle_heap() -> None:
    """Collect once, then move every object alive after start-up (the model, the imported
    libraries: about 270,000 objects the garbage collector tracks) out of its reach (`gc.freeze`).
    Otherwise each full collection walks them all, 150-350 ms during which no request is answered
    (docs/results.md, issue 20); later garbage is still collected. Called by the server entry points
    (`app_from_env`, `serve`), not by `create_app*`, so a notebook or test process is left alone."""
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory slimtext.serve.app:app_from_env`` (one per worker).

    Reads ``SLIMTEXT_RUN_DIR`` (required), ``SLIMTEXT_MAX_CHARS``, ``SLIMTEXT_MAX_BATCH``,
    ``SLIMTEXT_MODEL_NAME``, ``SLIMTEXT_BACKEND`` (torch, torch-int8, onnx, onnx-int8, auto),
    the workbench settings of ``workbench_from_env`` and the batching ones of ``batching_from_env``."""
    run_dir = os.environ.get("SLIMTEXT_RUN_DIR")
    if not run_dir:
        raise SlimtextError("set SLIMTEXT_RUN_DIR to the run directory to serve")
    app = create_app_from_run(
        run_dir,
        max_chars=_env_int("SLIMTEXT_MAX_CHARS", 5000),
        max_batch=_env_int("SLIMTEXT_MAX_BATCH", 256),
        model_name=os.environ.get("SLIMTEXT_MODEL_NAME", ""),
        workbench=workbench_from_env(),
        batching=batching_from_env(),
    )
    settle_heap()
    return app


def serve(
    run_dir: str | os.PathLike | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    log_level: str = "info",
) -> None:
    """Serve ``run_dir`` with uvicorn until interrupted. With ``workers > 1`` every worker process
    loads its own copy of the model through ``app_from_env``."""
    import uvicorn

    if run_dir is None:
        raise SlimtextError("serve needs a run directory: slimtext serve RUN_DIR")
    run = Path(run_dir).resolve()
    if not run.is_dir():
        raise SlimtextError(
            f"run directory {run} does not exist; pass the folder a training run wrote"
        )
    if workers < 1:
        raise SlimtextError(f"workers must be at least 1, got {workers}")
    for warning in run_info(run).get("warnings", []):
        log.warning("%s: %s", run.name, warning)
        print(f"warning: {run}: {warning}; its verdicts are not to be trusted", file=sys.stderr)
    if workers == 1:
        app = create_app_from_run(
            run,
            max_chars=_env_int("SLIMTEXT_MAX_CHARS", 5000),
            max_batch=_env_int("SLIMTEXT_MAX_BATCH", 256),
            model_name=os.environ.get("SLIMTEXT_MODEL_NAME", ""),
            workbench=workbench_from_env(),
            batching=batching_from_env(),
        )
        settle_heap()
        uvicorn.run(app, host=host, port=port, log_level=log_level, http=HTTP_PROTOCOL)
    else:  # worker processes import the app by name, so the run dir travels in the environment
        os.environ["SLIMTEXT_RUN_DIR"] = str(run)
        uvicorn.run(
            "slimtext.serve.app:app_from_env",
            factory=True,
            http=HTTP_PROTOCOL,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )
