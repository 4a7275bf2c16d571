"""Classification metrics (accuracy, macro-F1, MCC, ROC-AUC, confusion) and resource meters
(wall time, peak resident memory)."""

from __future__ import annotations

import os
import resource
import threading

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    roc_auc_score,
)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_labels: int,
                           pred: np.ndarray | None = None) -> dict:
    """probs (N, C) rows summing to 1; labels (N,); `pred` (N,) the predicted labels (default
    argmax). ROC-AUC: binary on class 1's probability, multi-class one-vs-rest macro; None when a
    class is missing from `labels`."""
    pred = probs.argmax(1) if pred is None else pred
    out = {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro", labels=list(range(num_labels)), zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, pred)),
        "roc_auc": None,
    }
    if len(np.unique(labels)) == num_labels and num_labels >= 2:
        if num_labels == 2:
            out["roc_auc"] = float(roc_auc_score(labels, probs[:, 1]))
        else:
            out["roc_auc"] = float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    return out


def confusion(probs: np.ndarray, labels: np.ndarray, num_labels: int,
              pred: np.ndarray | None = None) -> list[list[int]]:
    """Rows: true label, columns: predicted (default argmax)."""
    pred = probs.argmax(1) if pred is None else pred
    return confusion_matrix(labels, pred, labels=list(range(num_labels))).tolist()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: lifetime peak instead
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak resident set size (MiB) while the block runs, sampled every `interval` seconds;
    on CUDA also the peak allocated by torch. Use as a context manager; read `.peak_mb`."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self):
        self.peak = _rss_bytes()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return round(max(self.peak, _rss_bytes()) / 2**20, 1)
