"""Error answers of the classifier API (`slimtext.serve.app`): every error is a 4xx/5xx with the
JSON body ``{"error": "<what is wrong and where>"}``.

``ApiError`` for requests the client must change, the exception handlers that turn validation,
HTTP and internal errors into that body, and ``LimitBody``, the middleware that refuses request
bodies over a size limit before they are parsed.
"""

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# the app's logger, as before this module was split out of app.py
log = logging.getLogger("slimtext.serve.app")


class ApiError(Exception):
    """A request the client must change: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


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
    is counted as it arrives and the read fails with ``BodyTooLarge`` (answered 413 below).
    ``per_path`` gives some paths (file uploads) their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None):
        self.app, self.max_bytes, self.per_path = app, max_bytes, per_path or {}

    def limit(self, path: str) -> int:
        # endswith: behind a proxy's root_path the scope's path may carry a prefix
        return next((n for p, n in self.per_path.items() if path.endswith(p)), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        max_bytes = self.limit(scope.get("path", ""))
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            response = _error(413, _too_large(max_bytes), {"Connection": "close"})
            return await response(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)


PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    """ASGI middleware: every response says nosniff, no framing and no referrer; HTML pages also
    carry a Content-Security-Policy (own scripts only; inline styles for the bars) except
    FastAPI's /docs and /redoc viewers, which load their scripts from a CDN."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        viewer = scope.get("path", "").rstrip("/").endswith(("/docs", "/redoc"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and not viewer:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def raw_error_response(status: int, reason: str, message: str,
                       extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response (``Connection: close``) with the JSON error body and the security
    headers, for answers the server writes itself, before any request reaches the app (uvicorn's
    parser errors: ``NoDelayHTTPProtocol.send_400_response``)."""
    body = json.dumps({"error": message}).encode()
    headers = [*extra_headers, (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close"), *SECURITY_HEADERS]
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return f"HTTP/1.1 {status} {reason}\r\n".encode() + head + b"\r\n" + body


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
            return _error(413, _too_large(request.app.state.body_limit(request.url.path)))
        return _error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")
