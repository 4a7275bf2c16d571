"""Warnings for a finished run that learned (almost) nothing: a constant classifier or a test
MCC near zero. Numpy only, so reports and the web app can call it on any summary.json."""

from __future__ import annotations

import numpy as np

MIN_MCC = 0.05  # below this a classifier is barely better than a constant


def degenerate_warnings(summary: dict) -> list[str]:
    """Warnings for a run summary whose test predictions are all one class or whose test MCC is
    below MIN_MCC, at argmax and (when the run has one) at its decision threshold. Reads only
    summary.json keys, so it works on any finished run, old ones included."""
    out = []
    split = summary.get("test_split") or "test"
    names = summary.get("labels") or []
    blocks = [("", summary.get("test"), (summary.get("confusion") or {}).get(split))]
    at = summary.get("test_at_threshold")
    if isinstance(at, dict):
        blocks.append((f" at threshold {at.get('threshold'):.3g}", at, at.get("confusion")))
    for where, metrics, matrix in blocks:
        if matrix:
            predicted = np.asarray(matrix).sum(0)  # (C,) predictions per class
            if (predicted > 0).sum() == 1:
                k = int(predicted.argmax())
                name = names[k] if k < len(names) else str(k)
                out.append(f"all {int(predicted.sum())} {split} predictions{where} are {name!r}: "
                           "the model is constant")
                continue
        mcc = (metrics or {}).get("mcc")
        if isinstance(mcc, int | float) and mcc < MIN_MCC:
            out.append(f"{split} MCC{where} is {mcc:.3f} (< {MIN_MCC}): barely better than chance")
    return out
