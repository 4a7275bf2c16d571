"""The model behind the classifier API (`slimtext.serve.app`): what the app needs from a
predictor, and the ``Classifier`` that validates texts, calls it under a lock of one call (or
through a ``Batcher`` that gathers concurrent requests into one call, `serve/batching.py`), and
turns calibrated probabilities into verdicts (`slimtext.inference.review`)."""

import asyncio
import threading
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np

from slimtext.inference.base import is_blank
from slimtext.inference.explain import ExplainLimits, Explanation, explain
from slimtext.inference.review import ReviewPolicy
from slimtext.serve.batching import Batcher, BatchingConfig
from slimtext.serve.errors import ApiError
from slimtext.serve.schemas import Prediction


class Predictor(Protocol):
    """What the app needs from a model (``slimtext.inference.predictor.load_predictor`` returns one)."""

    labels: list[str]

    def predict_proba(self, texts: list[str]) -> Any:
        """Class probabilities, array-like of shape (len(texts), len(labels))."""
        ...


# ---- the model behind a lock of one call ----------------------------------------------------


class Classifier:
    """Validates texts, runs ``predict_proba`` once per request and turns rows into predictions.

    Predictors that are safe to call from several threads at once set ``thread_safe = True``;
    for any other, a lock serialises the calls (held for exactly one ``predict_proba``).
    With ``batching`` on (``BatchingConfig.enabled_for(predictor.backend)``: by default for the
    ONNX backends), concurrent requests share model calls (``self.batcher``).
    """

    def __init__(self, predictor: Predictor, max_chars: int, max_batch: int,
                 policy: ReviewPolicy | None = None, batching: BatchingConfig | None = None):
        self.predictor = predictor
        self.labels = [str(label) for label in predictor.labels]
        self.max_chars, self.max_batch = max_chars, max_batch
        self.policy = policy or ReviewPolicy.for_predictor(predictor)
        thread_safe = getattr(predictor, "thread_safe", False)
        self._lock = nullcontext() if thread_safe else threading.Lock()
        batching = batching or BatchingConfig()
        workers = batching.workers if thread_safe else 1  # one call at a time anyway: the lock
        self.batcher = (Batcher(self._call, batching.max_size, batching.max_wait_ms, workers)
                        if batching.enabled_for(getattr(predictor, "backend", None)) else None)

    def check_text(self, text: str, field: str = "text") -> None:
        if is_blank(text):
            raise ApiError(422, f"{field} is empty (or only white space and invisible characters): "
                                "send some text to classify")
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

    def _call(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self.predictor.predict_proba(texts), dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """The predictor's calibrated probabilities (N, C): one call under the lock, or a share
        of a call gathered with other requests."""
        return self._rows(self.batcher.submit(texts) if self.batcher else self._call(texts), len(texts))

    def _rows(self, probs: np.ndarray, n: int) -> np.ndarray:
        if probs.shape != (n, len(self.labels)):
            raise RuntimeError(f"predict_proba returned shape {probs.shape}; expected ({n}, {len(self.labels)})")
        return probs

    def predict(self, texts: list[str], threshold: float | None = None) -> list[Prediction]:
        return self.verdicts(self.predict_proba(texts), threshold)

    async def predict_gathered(self, texts: list[str], threshold: float | None = None) -> list[Prediction]:
        """``predict`` for the async endpoints when batching is on: the texts join the batcher's
        queue and the event loop awaits their rows, so a waiting request holds no thread (under
        32 concurrent clients, 32 threads handing results back through the GIL cost more than the
        model's share of a gathered call)."""
        probs = await asyncio.wrap_future(self.batcher.submit_future(texts))
        return self.verdicts(self._rows(probs, len(texts)), threshold)

    def verdicts(self, probs: np.ndarray, threshold: float | None = None) -> list[Prediction]:
        policy = self.policy.with_threshold(threshold)
        v = policy.decide(probs)
        return [
            Prediction(
                label=label,
                probabilities={name: float(p) for name, p in zip(self.labels, row, strict=True)},
                probability=float(p),
                needs_review=bool(review),
                threshold=policy.threshold if policy.binary else None,
            )
            for label, p, review, row in zip(v.labels, v.probability, v.needs_review, probs)
        ]

    def explain(self, text: str, method: str, limits: ExplainLimits) -> Explanation:
        """Word scores for one text (occlusion is one predict_proba call; integrated gradients
        use the model directly), under the same lock as predictions."""
        with self._lock:
            return explain(self.predictor, text, method=method, limits=limits)
