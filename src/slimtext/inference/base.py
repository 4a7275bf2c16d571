"""What every predictor backend shares: the file names of a run's models, a numpy softmax,
reading calibration.json, and `LabelPredictor`: `labels`, calibrated `predict_proba` and
`predict` on top of a backend's `predict_logits`, with the run's temperature and decision
threshold. Light on purpose (numpy only): reports and `serve`'s run choice import it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from slimtext.errors import SlimtextError

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"  # the names slimtext.inference.export writes
WEIGHTS_FILE, TFIDF_FILE = "model.safetensors", "tfidf.safetensors"  # a neural run, a TF-IDF run
CALIBRATION_FILE = "calibration.json"  # written by slimtext.inference.calibration.save_calibration


INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"  # zero-width characters: they carry no text
# white space to Python's str.isspace (so blank here) that the schema regex's \s (ECMA-262) misses
SPACE_BEYOND_ECMA = "\x1c\x1d\x1e\x1f\x85"


def is_blank(text: str | None) -> bool:
    """Nothing to classify: empty, or only white space and zero-width characters (in any order)."""
    return all(ch.isspace() or ch in INVISIBLE for ch in text or "")


def loadable(folder: str | Path) -> bool:
    """Whether `load_predictor` can load this folder: neural weights or a TF-IDF model."""
    return any((Path(folder) / f).exists() for f in (WEIGHTS_FILE, TFIDF_FILE))


def read_calibration(folder: str | Path) -> dict | None:
    """calibration.json of a run or export folder, or None when it has none."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise SlimtextError(f"{path} is not valid JSON ({e}); delete it to predict uncalibrated") from e


def decide(probs: np.ndarray, threshold: float | None, positive: int = 1) -> np.ndarray:
    """Predicted label indices (N,): argmax, or for a threshold `probs[:, positive] >= threshold`
    (the other class otherwise; binary tasks only)."""
    probs = np.asarray(probs)
    if threshold is None:
        return probs.argmax(1)
    if probs.shape[1] != 2:
        raise SlimtextError(f"a decision threshold needs a binary task; this one has {probs.shape[1]} labels")
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class LabelPredictor:
    """What every backend shares. A backend sets `labels` and implements `predict_logits(texts)
    -> (N, C)`; `use_calibration(folder)` reads the folder's calibration.json (absent: T = 1,
    threshold None). `predict_proba` divides the logits by `temperature` before the softmax;
    `predict` applies `threshold` (binary tasks: the positive label when its calibrated
    probability is >= threshold; None: argmax)."""

    labels: list[str]
    temperature: float = 1.0
    threshold: float | None = None
    positive_label: str | None = None

    def use_calibration(self, folder: str | Path) -> None:
        cal = read_calibration(folder) or {}
        self.temperature = float(cal.get("temperature") or 1.0)
        self.threshold = cal.get("threshold")
        self.positive_label = cal.get("positive_label") or (self.labels[1] if len(self.labels) == 2 else None)

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Calibrated probabilities (N, C): softmax(logits / temperature)."""
        return softmax(np.asarray(self.predict_logits(texts), dtype=np.float64) / self.temperature)

    def decide(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Label indices (N,) for calibrated probabilities: `threshold` (default the run's own)
        on the positive label's probability for binary tasks, else argmax."""
        threshold = self.threshold if threshold is None else threshold
        if threshold is None or len(self.labels) != 2:
            return np.asarray(probs).argmax(1)
        return decide(probs, threshold, self.labels.index(self.positive_label or self.labels[1]))

    def predict(self, texts: str | list[str], threshold: float | None = None) -> str | list[str]:
        """The label of one text (a str), or of each text in a list."""
        if isinstance(texts, str):
            return self.predict([texts], threshold)[0]
        return [self.labels[i] for i in self.decide(self.predict_proba(texts), threshold)]
