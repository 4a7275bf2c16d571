"""Serve a trained classifier: an HTML page that works without JavaScript, and a JSON API.

    GET  /                     page with a text box (``?text=...`` pre-fills it)
    POST /                     HTML form post: the page re-rendered with the result (no JavaScript)
    POST /api/classify         {"text": "..."}        -> {"label", "probabilities", "latency_ms"}
    POST /api/classify/batch   {"texts": ["...", ...]} -> {"results": [...], "latency_ms"}
    GET  /healthz              {"status": "ok", "model": ..., "labels": [...]}
    GET  /openapi.json, /docs  FastAPI's generated schema and its viewer

Every error is a 4xx/5xx with the JSON body ``{"error": "<what is wrong and where>"}`` (the page
shows the same message). The model is loaded once, before the first request; endpoints are sync
functions, so FastAPI runs inference in its threadpool, and the only lock (when the predictor does
not declare ``thread_safe = True``) is held for one ``predict_proba`` call. How a request travels
from the page to the model and back, and how to deploy: ``docs/web.md``.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from slimtext import __version__
from slimtext.errors import SlimtextError

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
DEFAULT_EXAMPLES = (
    "I hate you",
    "Thanks so much for helping me move last weekend!",
    "You are an idiot and everyone knows it.",
    "The weather is lovely today, let's go for a walk.",
)


class Predictor(Protocol):
    """What the app needs from a model (``slimtext.predict.load_predictor`` returns one)."""

    labels: list[str]

    def predict_proba(self, texts: list[str]) -> Any:
        """Class probabilities, array-like of shape (len(texts), len(labels))."""
        ...


# ---- request / response bodies (they also document the API in /openapi.json) ------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "I hate you"}]}
    )
    text: str = Field(description="Text to classify; not empty, at most max_chars characters.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["I hate you", "Have a nice day"]}]},
    )
    texts: list[str] = Field(description="1 to max_batch texts, each as in /api/classify.")


class Prediction(BaseModel):
    label: str = Field(description="The most probable label.")
    probabilities: dict[str, float] = Field(description="Probability of every label (sums to 1).")


class ClassifyResponse(Prediction):
    latency_ms: float = Field(description="Server time to validate, run the model and format.")


class BatchResponse(BaseModel):
    results: list[Prediction] = Field(description="One prediction per input text, in order.")
    latency_ms: float = Field(description="Server time for the whole batch.")


class Health(BaseModel):
    status: str
    model: str
    backend: str | None = Field(None, description="predictor.backend if it has one, e.g. onnx")
    labels: list[str]
    max_chars: int
    max_batch: int


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong with the request, naming the field.")


ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 422, 500)}


class ApiError(Exception):
    """A request the client must change: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ---- the model behind a lock of one call ----------------------------------------------------


class Classifier:
    """Validates texts, runs ``predict_proba`` once per request and turns rows into predictions.

    Predictors that are safe to call from several threads at once set ``thread_safe = True``;
    for any other, a lock serialises the calls (held for exactly one ``predict_proba``).
    """

    def __init__(self, predictor: Predictor, max_chars: int, max_batch: int):
        self.predictor = predictor
        self.labels = [str(label) for label in predictor.labels]
        self.max_chars, self.max_batch = max_chars, max_batch
        thread_safe = getattr(predictor, "thread_safe", False)
        self._lock = nullcontext() if thread_safe else threading.Lock()

    def check_text(self, text: str, field: str = "text") -> None:
        if not text.strip():
            raise ApiError(422, f"{field} is empty: send some text to classify")
        if len(text) > self.max_chars:
            raise ApiError(
                413, f"{field} has {len(text)} characters; the limit is {self.max_chars}"
            )

    def check_batch(self, texts: list[str]) -> None:
        if not texts:
            raise ApiError(422, f"texts is empty: send 1 to {self.max_batch} texts")
        if len(texts) > self.max_batch:
            raise ApiError(
                413, f"texts has {len(texts)} items; the limit is {self.max_batch} per request"
            )
        for i, text in enumerate(texts):
            self.check_text(text, f"texts[{i}]")

    def predict(self, texts: list[str]) -> list[Prediction]:
        with self._lock:
            probs = np.asarray(self.predictor.predict_proba(texts), dtype=np.float64)
        if probs.shape != (len(texts), len(self.labels)):
            raise RuntimeError(
                f"predict_proba returned shape {probs.shape}; "
                f"expected ({len(texts)}, {len(self.labels)})"
            )
        return [
            Prediction(
                label=self.labels[int(row.argmax())],
                probabilities={label: float(p) for label, p in zip(self.labels, row, strict=True)},
            )
            for row in probs
        ]


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


# ---- error bodies ---------------------------------------------------------------------------


def _field(loc: Sequence[Any]) -> str:
    """("body", "texts", 3) -> "texts[3]"."""
    name = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _describe(error: dict[str, Any]) -> str:
    field, kind = _field(error.get("loc", ())), error.get("type", "")
    if not field:  # the body as a whole
        if kind == "missing":
            return 'request body is missing: send a JSON object such as {"text": "..."}'
        if isinstance(error.get("input"), bytes):
            return "request body is not JSON: send it with Content-Type: application/json"
        return f'request body must be a JSON object such as {{"text": "..."}}: {error["msg"]}'
    if kind == "missing":
        return f"{field}: field required"
    if kind == "extra_forbidden":
        return f"{field}: unknown field"
    return f"{field}: {error['msg']}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyTooLarge(Exception):
    pass


class LimitBody:
    """ASGI middleware: refuse request bodies over ``max_bytes`` before they are parsed.

    A too large Content-Length is answered at once (the body is never read); a chunked body
    is counted as it arrives and the read fails with ``BodyTooLarge`` (answered 413 below)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            response = _error(413, _too_large(self.max_bytes), {"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def _too_large(max_bytes: int) -> str:
    return f"request body is too large: the limit is {max_bytes} bytes"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        for e in errors:
            if e.get("type") == "json_invalid":
                where = e["loc"][-1] if e.get("loc") else "?"
                reason = (e.get("ctx") or {}).get("error", "cannot parse")
                return _error(400, f"malformed JSON in request body: {reason} at character {where}")
        return _error(422, "; ".join(_describe(e) for e in errors))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause, message = exc.__cause__, str(exc.detail)
        if isinstance(cause, UnicodeDecodeError):
            message = f"request body is not valid UTF-8 (byte {cause.start}): encode text as UTF-8"
        elif exc.status_code == 404:
            message = f"not found: {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        elif isinstance(cause, BodyTooLarge):
            return _error(413, _too_large(request.app.state.max_body_bytes))
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")


# ---- the app --------------------------------------------------------------------------------


def create_app(
    predictor: Predictor,
    *,
    max_chars: int = 5000,
    max_batch: int = 256,
    model_name: str = "",
    examples: Sequence[str] = DEFAULT_EXAMPLES,
) -> FastAPI:
    """Build the app around an already loaded predictor (anything with ``labels`` and
    ``predict_proba``). ``max_chars`` limits each text, ``max_batch`` the texts per batch call."""
    clf = Classifier(predictor, max_chars, max_batch)
    model_name = model_name or type(predictor).__name__
    # Coarse guard on the raw body before JSON parsing; the per-text limits above give the
    # precise message. 12 bytes/char covers JSON escapes such as "\ud83d\ude00" (one character).
    max_body_bytes = max_batch * (12 * max_chars + 8) + 65536

    app = FastAPI(
        title="slimtext classifier",
        version=__version__,
        description=f"Model **{model_name}**, labels: {', '.join(clf.labels)}.",
    )
    app.add_middleware(LimitBody, max_bytes=max_body_bytes)
    app.state.classifier = clf
    app.state.max_body_bytes = max_body_bytes
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    def render(request: Request, text: str = "", status: int = 200, **extra: Any) -> HTMLResponse:
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
            **extra,
        }
        return templates.TemplateResponse(request, "index.html", context, status_code=status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request, text: str = "") -> HTMLResponse:
        return render(request, text[:max_chars])

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    def page_post(request: Request, text: Annotated[str, Form()] = "") -> HTMLResponse:
        start = time.perf_counter()
        try:
            clf.check_text(text)
            prediction = clf.predict([text])[0]
        except ApiError as e:
            return render(request, text, e.status, error=e.message)
        return render(request, text, result=prediction, latency_ms=_ms_since(start))

    @app.post("/api/classify", response_model=ClassifyResponse, responses=ERRORS)
    def classify(body: ClassifyRequest) -> ClassifyResponse:
        """Classify one text."""
        start = time.perf_counter()
        clf.check_text(body.text)
        prediction = clf.predict([body.text])[0]
        return ClassifyResponse(**prediction.model_dump(), latency_ms=_ms_since(start))

    @app.post("/api/classify/batch", response_model=BatchResponse, responses=ERRORS)
    def classify_batch(body: BatchRequest) -> BatchResponse:
        """Classify up to max_batch texts in one model call."""
        start = time.perf_counter()
        clf.check_batch(body.texts)
        results = clf.predict(body.texts)
        return BatchResponse(results=results, latency_ms=_ms_since(start))

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
        )

    return app


def create_app_from_run(
    run_dir: str | os.PathLike,
    *,
    max_chars: int = 5000,
    max_batch: int = 256,
    model_name: str = "",
) -> FastAPI:
    """Load the run's predictor once (``slimtext.predict.load_predictor``), warm it up, build the app."""
    from slimtext.predict import load_predictor  # lazy: torch / onnxruntime load only to serve

    run = Path(run_dir)
    if not run.is_dir():
        raise SlimtextError(
            f"run directory {run} does not exist; pass the folder a training run wrote"
        )
    start = time.perf_counter()
    predictor = load_predictor(run, backend=os.environ.get("SLIMTEXT_BACKEND", "torch"))
    predictor.predict_proba(["warm up"])  # first call pays for lazy init, not the first user
    log.info("loaded %s in %.1f s", run, time.perf_counter() - start)
    return create_app(
        predictor, max_chars=max_chars, max_batch=max_batch, model_name=model_name or run.name
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


HTTP_PROTOCOL = "slimtext.serve.app:NoDelayHTTPProtocol"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise SlimtextError(f"{name}={value!r} is not an integer") from None


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory slimtext.serve.app:app_from_env`` (one per worker).

    Reads ``SLIMTEXT_RUN_DIR`` (required), ``SLIMTEXT_MAX_CHARS``, ``SLIMTEXT_MAX_BATCH``,
    ``SLIMTEXT_MODEL_NAME`` and ``SLIMTEXT_BACKEND`` (torch, torch-int8, onnx, onnx-int8, auto)."""
    run_dir = os.environ.get("SLIMTEXT_RUN_DIR")
    if not run_dir:
        raise SlimtextError("set SLIMTEXT_RUN_DIR to the run directory to serve")
    return create_app_from_run(
        run_dir,
        max_chars=_env_int("SLIMTEXT_MAX_CHARS", 5000),
        max_batch=_env_int("SLIMTEXT_MAX_BATCH", 256),
        model_name=os.environ.get("SLIMTEXT_MODEL_NAME", ""),
    )


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
    if workers == 1:
        app = create_app_from_run(
            run,
            max_chars=_env_int("SLIMTEXT_MAX_CHARS", 5000),
            max_batch=_env_int("SLIMTEXT_MAX_BATCH", 256),
            model_name=os.environ.get("SLIMTEXT_MODEL_NAME", ""),
        )
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
