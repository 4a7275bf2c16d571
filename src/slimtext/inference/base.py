"""What every predictor backend shares: the file names `export` writes, a numpy softmax, and
`LabelPredictor` (`labels`, and `predict` on top of a backend's `predict_proba`)."""

from __future__ import annotations

import numpy as np

ONNX_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"  # the names slimtext.inference.export writes


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class LabelPredictor:
    """What every backend shares: `labels`, and `predict` on top of the backend's `predict_proba`."""

    labels: list[str]

    def predict(self, texts: str | list[str]) -> str | list[str]:
        """The label of one text (a str), or of each text in a list."""
        if isinstance(texts, str):
            return self.predict([texts])[0]
        return [self.labels[i] for i in self.predict_proba(texts).argmax(1)]
