"""From calibrated probabilities to a moderator's verdict: the label, its probability, and
whether it needs a human look ("needs review").

Binary tasks use the run's threshold (`predictor.threshold` from calibration.json; 0.5 without
one): the positive label when its probability >= threshold, and needs review when that
probability lies within `band` of the threshold. Tasks with more labels take the argmax and need
review when the top two probabilities are within 2 * band (the same rule for a binary task at
threshold 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slimtext.errors import SlimtextError
from slimtext.inference.base import decide


@dataclass
class ReviewConfig:
    band: float = field(default=0.1, metadata={"help": "needs review when the positive probability is within this of the threshold"})
    threshold: float | None = field(default=None, metadata={"help": "binary decision threshold (default: the run's calibrated one, else 0.5)"})


@dataclass
class Verdicts:
    labels: list[str]  # (N,) the chosen label of each row
    probability: np.ndarray  # (N,) calibrated probability of that label
    needs_review: np.ndarray  # (N,) bool


class ReviewPolicy:
    def __init__(self, labels: list[str], threshold: float | None = None, positive: str | None = None,
                 band: float = 0.1):
        self.labels = [str(label) for label in labels]
        if not 0 <= band <= 0.5:
            raise SlimtextError(f"review band must be between 0 and 0.5, got {band}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise SlimtextError(f"threshold must be between 0 and 1, got {threshold}")
        self.band = float(band)
        self.binary = len(self.labels) == 2
        self.positive = positive if positive in self.labels else (self.labels[1] if self.binary else None)
        self.threshold = float(threshold) if threshold is not None else 0.5
        self.calibrated_threshold = threshold is not None

    @classmethod
    def for_predictor(cls, predictor, cfg: ReviewConfig | None = None) -> ReviewPolicy:
        """The predictor's own threshold and positive label (calibration contract), unless
        `cfg.threshold` overrides it."""
        cfg = cfg or ReviewConfig()
        threshold = cfg.threshold if cfg.threshold is not None else getattr(predictor, "threshold", None)
        return cls(predictor.labels, threshold, getattr(predictor, "positive_label", None), cfg.band)

    def with_threshold(self, threshold: float | None) -> ReviewPolicy:
        if threshold is None:
            return self
        return ReviewPolicy(self.labels, threshold, self.positive, self.band)

    def decide(self, probs) -> Verdicts:
        probs = np.asarray(probs, dtype=np.float64)  # (N, C)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise ValueError(f"probabilities of shape {probs.shape}; expected (N, {len(self.labels)})")
        if self.binary:
            pos = self.labels.index(self.positive)
            p = probs[:, pos]  # (N,)
            chosen = decide(probs, self.threshold, pos)
            review = np.abs(p - self.threshold) <= self.band + 1e-12
        else:
            chosen = probs.argmax(1)
            top2 = np.sort(probs, axis=1)[:, -2:]  # (N, 2)
            review = top2[:, 1] - top2[:, 0] <= 2 * self.band + 1e-12
        return Verdicts([self.labels[i] for i in chosen], probs[np.arange(len(probs)), chosen], review)
