"""The moderator's workbench behind the page (`slimtext.serve.app`): word explanations, scoring an
uploaded file, and corrections ("wrong?") appended to a feedback file.

    POST /api/explain    {"text", "method"?, "threshold"?} -> the verdict and a score per word
    POST /api/score      multipart file (CSV / TSV / JSONL) + text_col -> the file back with
                         label, probability, needs_review, error (same format)
    POST /api/feedback   {"text", "model_label", "corrected_label"} -> {"saved": true}
    POST /score, /feedback   the same for the page's plain HTML forms (no JavaScript)

Uploads are read into memory up to `upload_max_bytes` (Starlette spools a large multipart body to
a temporary file in the system temp folder; the client's file name is never used as a path).
Feedback lines are appended with one `write` on an O_APPEND descriptor under an exclusive
`flock`, so several uvicorn workers can append to one file without interleaving.
"""


import fcntl
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from slimtext.errors import SlimtextError
from slimtext.inference.explain import ExplainLimitError, ExplainLimits
from slimtext.inference.score import FORMATS, ScoreConfig, ScoreLimitError, format_of, score_stream
from slimtext.serve.classifier import Classifier
from slimtext.serve.errors import ApiError
from slimtext.serve.schemas import (
    ERRORS,
    ExplainRequest,
    ExplainResponse,
    FeedbackRequest,
    FeedbackResponse,
)
from slimtext.train.degenerate import degenerate_warnings

MEDIA_TYPES = {"csv": "text/csv", "tsv": "text/tab-separated-values", "jsonl": "application/x-ndjson"}


@dataclass
class WorkbenchConfig:
    review_band: float = field(default=0.1, metadata={"help": "needs review within this distance of the threshold"})
    explain_max_chars: int = field(default=1000, metadata={"help": "longest text the page explains"})
    explain_max_words: int = field(default=128, metadata={"help": "most words the page explains"})
    explain_method: str = field(default="auto", metadata={"help": "auto, occlusion or integrated-gradients"})
    upload_max_bytes: int = field(default=2 * 1024 * 1024, metadata={"help": "largest file /api/score accepts"})
    upload_max_rows: int = field(default=10_000, metadata={"help": "most rows /api/score accepts"})
    feedback_path: Path | None = field(default=None, metadata={"help": "JSON Lines file the 'wrong?' button appends to (None: off)"})

    @property
    def explain_limits(self) -> ExplainLimits:
        return ExplainLimits(self.explain_max_chars, self.explain_max_words)


def append_feedback(path: Path, record: dict) -> None:
    """Append one JSON line atomically: one write on an O_APPEND descriptor, under flock."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)  # closing releases the lock


def run_info(run_dir: Path) -> dict[str, Any]:
    """What the page states about the model: dataset, test split and metrics (summary.json)."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    test = summary.get("test") or {}
    metrics = {k: test[k] for k in ("accuracy", "macro_f1", "mcc", "roc_auc") if test.get(k) is not None}
    return {"dataset": summary.get("dataset"), "test_split": summary.get("test_split"),
            "model": summary.get("model"), "method": summary.get("method"), "test": metrics,
            "warnings": degenerate_warnings(summary)}


def highlight_segments(text: str, words: list[dict], label: str) -> list[dict]:
    """The text cut into plain runs and scored words for the page: each word gets its score towards
    `label`, a direction (up: towards it, down: away) and a 0..1 strength relative to the
    strongest word (at least 0.05, so noise stays faint)."""
    scale = max([0.05] + [abs(w["scores"][label]) for w in words])
    out, pos = [], 0
    for w in words:
        if w["start"] > pos:
            out.append({"text": text[pos:w["start"]]})
        s = w["scores"][label]
        out.append({"text": w["word"], "score": s, "dir": "up" if s > 0 else "down" if s < 0 else "none",
                    "strength": round(min(1.0, abs(s) / scale), 3)})
        pos = w["end"]
    if pos < len(text):
        out.append({"text": text[pos:]})
    return out


def focus_label(clf: Classifier, verdict: str) -> str:
    """Binary tasks highlight towards the positive label, others towards the verdict."""
    return clf.policy.positive if clf.policy.binary else verdict


def explain_one(clf: Classifier, cfg: WorkbenchConfig, text: str, method: str | None = None,
                threshold: float | None = None) -> dict:
    """The verdict and word scores for one text, as the API and the page use them."""
    clf.check_text(text)
    try:
        e = clf.explain(text, method or cfg.explain_method, cfg.explain_limits)
    except ExplainLimitError as err:
        raise ApiError(413, str(err)) from None
    except SlimtextError as err:
        raise ApiError(422, str(err)) from None
    probs = [[e.probabilities[label] for label in clf.labels]]  # (1, C)
    verdict = clf.verdicts(probs, threshold)[0]
    return {**verdict.model_dump(), "method": e.method, "words": e.to_dict()["words"]}


def score_upload(clf: Classifier, cfg: WorkbenchConfig, upload: UploadFile, text_col: str,
                 threshold: float | None) -> Response:
    """The uploaded file scored, as a download in the upload's own format."""
    try:
        fmt = format_of(upload.filename or "")
    except SlimtextError as err:
        raise ApiError(415, str(err)) from None
    data = upload.file.read(cfg.upload_max_bytes + 1)
    if len(data) > cfg.upload_max_bytes:
        raise ApiError(413, f"the file is larger than {cfg.upload_max_bytes} bytes; "
                            "split it or score it with `slimtext score RUN FILE`")
    try:
        src = io.StringIO(data.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the file is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    dst = io.StringIO()
    score_cfg = ScoreConfig(text_col=text_col or "text", max_chars=clf.max_chars, max_rows=cfg.upload_max_rows)
    try:
        score_stream(clf, src, dst, fmt, clf.policy.with_threshold(threshold), score_cfg,
                     where=_safe_name(upload.filename))
    except ScoreLimitError as err:
        raise ApiError(413, str(err)) from None
    except SlimtextError as err:
        raise ApiError(422, str(err)) from None
    name = f"{Path(_safe_name(upload.filename)).stem}.scored.{'jsonl' if fmt == 'jsonl' else fmt}"
    return Response(dst.getvalue(), media_type=MEDIA_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _safe_name(name: str | None) -> str:
    """The upload's base name with anything but letters, digits, dot, dash and underscore replaced."""
    base = re.sub(r"[^\w.-]", "_", Path(name or "upload").name)[:80].lstrip(".")
    return base or "upload"


def save_feedback(clf: Classifier, cfg: WorkbenchConfig, body: FeedbackRequest) -> None:
    if cfg.feedback_path is None:
        raise ApiError(404, "feedback is off on this server; serve with --feedback PATH to turn it on")
    clf.check_text(body.text)
    for name in ("model_label", "corrected_label"):
        if getattr(body, name) not in clf.labels:
            raise ApiError(422, f"{name} {getattr(body, name)!r} is not a label; labels are {clf.labels}")
    append_feedback(cfg.feedback_path, {
        "text": body.text, "model_label": body.model_label, "corrected_label": body.corrected_label,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def add_workbench_routes(app: FastAPI, clf: Classifier, cfg: WorkbenchConfig, render) -> None:
    """The explain / score / feedback endpoints; `render(request, text, status, **extra)` draws the page."""

    @app.post("/api/explain", response_model=ExplainResponse, responses=ERRORS)
    def explain_api(body: ExplainRequest) -> ExplainResponse:
        """The verdict on one text and how much each word pushed it towards each label."""
        start = time.perf_counter()
        result = explain_one(clf, cfg, body.text, body.method, body.threshold)
        return ExplainResponse(**result, latency_ms=round((time.perf_counter() - start) * 1000, 3))

    @app.post("/api/score", responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}, **ERRORS})
    def score_api(file: Annotated[UploadFile, File(description=f"{', '.join(sorted(FORMATS))} file")],
                  text_col: Annotated[str, Form()] = "text",
                  threshold: Annotated[float | None, Form(ge=0, le=1)] = None) -> Response:
        """Score every row of an uploaded file; the download adds label, probability, needs_review, error."""
        return score_upload(clf, cfg, file, text_col, threshold)

    @app.post("/api/feedback", response_model=FeedbackResponse, responses=ERRORS)
    def feedback_api(body: FeedbackRequest) -> FeedbackResponse:
        """Record that the model's label was wrong (one JSON line in the feedback file)."""
        save_feedback(clf, cfg, body)
        return FeedbackResponse(saved=True)

    @app.post("/score", include_in_schema=False)
    def score_form(request: Request, file: Annotated[UploadFile | None, File()] = None,
                   text_col: Annotated[str, Form()] = "text",
                   threshold: Annotated[str, Form()] = "") -> Response:
        try:
            if file is None or not file.filename:
                raise ApiError(422, "choose a file to score")
            return score_upload(clf, cfg, file, text_col, form_threshold(threshold))
        except ApiError as e:
            return render(request, "", e.status, error=e.message)

    @app.post("/feedback", response_class=HTMLResponse, include_in_schema=False)
    def feedback_form(request: Request, text: Annotated[str, Form()] = "",
                      model_label: Annotated[str, Form()] = "", corrected_label: Annotated[str, Form()] = "",
                      threshold: Annotated[str, Form()] = "") -> HTMLResponse:
        try:
            save_feedback(clf, cfg, FeedbackRequest(text=text, model_label=model_label,
                                                    corrected_label=corrected_label))
        except ApiError as e:
            return render(request, text, e.status, error=e.message)
        return render(request, text, threshold=form_threshold(threshold),
                      notice=f"Thanks: saved as “{corrected_label}” for review.")


def form_threshold(value: str) -> float | None:
    """A form field's threshold: empty means the run's own; anything else must be in [0, 1]."""
    if not value.strip():
        return None
    try:
        t = float(value)
    except ValueError:
        raise ApiError(422, f"threshold must be a number between 0 and 1, got {value!r}") from None
    if not 0 <= t <= 1:
        raise ApiError(422, f"threshold must be between 0 and 1, got {t}")
    return t
