"""The model behind the classifier API (`slimtext.serve.app`): what the app needs from a
predictor, and the ``Classifier`` that validates texts and calls it under a lock of one call."""

import threading
from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np

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
