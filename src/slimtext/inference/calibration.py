"""Calibrated scores and a decision threshold, both fitted on the dev split.

    fit_temperature(logits, labels)       one scalar T > 0 minimising the dev NLL of softmax(z / T)
                                          (temperature scaling; LBFGS on log T, so T stays positive)
    ece / brier / nll / reliability       how well probabilities match frequencies
    choose_threshold(p_pos, labels, rule) the decision threshold of a binary task
    calibrate(...)                        everything above for one run: calibration.json's content
    save_calibration(folder, content)     (`inference.base.read_calibration` reads it back)

Temperature scaling divides every logit by the same T, so it never changes the argmax: accuracy
and the argmax metrics stay as they were, only the probabilities move (T > 1 softens an
over-confident model). The threshold is chosen on the calibrated dev probabilities of the
positive class (`labels[1]`) and applies as `p_pos >= threshold`.

`calibration.json` (written by training, read by every predictor; absent means T = 1, argmax):
    {"temperature": T, "positive_label": str | null, "threshold": float | null,
     "threshold_rule": "macro_f1" | "precision=0.9" | ..., "dev": {...},
     "test_before": {"ece", "brier", "nll"}, "test_after": {...}, "reliability": {...}}

References: Guo, Pleiss, Sun & Weinberger 2017, On Calibration of Modern Neural Networks
(temperature scaling, ECE, reliability diagrams), arXiv:1706.04599; Brier 1950 (the score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimtext.errors import SlimtextError
from slimtext.inference.base import CALIBRATION_FILE
from slimtext.rundir import atomic_write_json

RULES = ("macro_f1", "precision=P (0 < P <= 1)")
T_RANGE = (1e-2, 1e2)  # a fitted temperature is clipped to this range


class ThresholdError(SlimtextError):
    """No threshold satisfies the rule on the dev split, or the rule is malformed."""


def scaled_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) in float64, rows (N, C) summing to 1."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_temperature(logits, labels, max_iter: int = 100) -> float:
    """The T > 0 minimising mean NLL of softmax(logits / T) against `labels` (logits (N, C))."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return float(np.clip(t, *T_RANGE)) if np.isfinite(t) else 1.0


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (probabilities clipped at 1e-12)."""
    p = np.clip(np.asarray(probs)[np.arange(len(labels)), labels], 1e-12, 1.0)  # (N,)
    return float(-np.log(p).mean()) if len(labels) else 0.0


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950): squared error against the one-hot label, summed over
    classes and averaged over examples (0 is perfect, 2 the worst)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[labels]  # (N, C)
    return float(((probs - onehot) ** 2).sum(1).mean()) if len(labels) else 0.0


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    """Top-label reliability: equal-width confidence bins over [0, 1] (a confidence on an edge
    goes to the bin above it, 1.0 to the last); per bin the mean confidence, the accuracy and the
    number of examples (confidence and accuracy None for an empty bin)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == np.asarray(labels)).astype(np.float64)
    which = np.minimum((conf * bins).astype(int), bins - 1)  # (N,) bin index
    out = {"bins": bins, "confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out["count"].append(n)
        out["confidence"].append(float(conf[sel].mean()) if n else None)
        out["accuracy"].append(float(correct[sel].mean()) if n else None)
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (top label, equal-width bins): sum over bins of
    (bin size / N) * |accuracy - mean confidence|."""
    r = reliability(probs, labels, bins)
    total = sum(r["count"])
    return float(sum(n / total * abs(a - c) for n, a, c in zip(r["count"], r["accuracy"], r["confidence"])
                     if n)) if total else 0.0


def parse_rule(rule: str) -> tuple[str, float | None]:
    """`macro_f1` -> ("macro_f1", None); `precision=0.9` -> ("precision", 0.9); else an error."""
    if rule == "macro_f1":
        return "macro_f1", None
    name, sep, value = rule.partition("=")
    if name == "precision" and sep:
        try:
            target = float(value)
        except ValueError:
            target = -1.0
        if 0 < target <= 1:
            return "precision", target
    raise ThresholdError(f"unknown threshold rule {rule!r}; valid: {', '.join(RULES)}")


def _counts(p_pos: np.ndarray, labels: np.ndarray):
    """For every distinct probability t (ascending): TP, FP, FN, TN of `p_pos >= t`."""
    p_pos, pos = np.asarray(p_pos, dtype=np.float64), np.asarray(labels) == 1
    order = np.argsort(-p_pos, kind="stable")
    p_sorted, pos_sorted = p_pos[order], pos[order]
    tp_cum, fp_cum = np.cumsum(pos_sorted), np.cumsum(~pos_sorted)  # predicted positive: first k+1
    last = np.r_[p_sorted[1:] != p_sorted[:-1], True]  # the last row of each run of equal values
    t = p_sorted[last]
    tp, fp = tp_cum[last], fp_cum[last]
    fn, tn = pos.sum() - tp, (~pos).sum() - fp
    return t[::-1], tp[::-1], fp[::-1], fn[::-1], tn[::-1]  # ascending thresholds


def choose_threshold(p_pos, labels, rule: str = "macro_f1") -> float:
    """The threshold on `p_pos` (the positive class's probability, (N,)) for `labels` in {0, 1},
    searched exactly over the distinct values of `p_pos` (predict positive when p >= t). Every
    threshold between the chosen value and the next lower distinct value makes the same dev
    decisions; the midpoint of that gap is returned, so that a new text scored just under the
    lowest dev positive is not flipped (on separable dev data the cut lands between the classes,
    not on the edge of one):

      macro_f1        the one with the highest macro-F1 over both classes; a tie goes to the
                      LOWEST such threshold (it flags more texts: for a toxicity filter a missed
                      toxic text costs more than a second look at a clean one)
      precision=P     the lowest whose precision of the positive class is >= P; a
                      `ThresholdError` when none reaches P
    """
    name, target = parse_rule(rule)
    if len(np.asarray(labels)) == 0:
        raise ThresholdError("no dev examples to choose a threshold on")
    t, tp, fp, fn, tn = (a.astype(np.float64) for a in _counts(p_pos, labels))
    if name == "precision":
        precision = tp / np.maximum(tp + fp, 1)
        ok = np.flatnonzero(precision >= target - 1e-12)
        if not len(ok):
            raise ThresholdError(f"no threshold reaches a dev precision of {target} for the positive "
                                 f"class (best {precision.max():.3f}); ask for less or use macro_f1")
        return _midpoint_below(t, ok[0])
    f1_pos = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    f1_neg = 2 * tn / np.maximum(2 * tn + fn + fp, 1)
    macro = (f1_pos + f1_neg) / 2
    return _midpoint_below(t, np.flatnonzero(macro == macro.max())[0])


def _midpoint_below(t: np.ndarray, i: int) -> float:
    """Halfway between distinct threshold t[i] and the next lower one (t[0] itself for i = 0)."""
    return float(t[i]) if i == 0 else float((t[i - 1] + t[i]) / 2)


def scores(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    return {"ece": ece(probs, labels, bins), "brier": brier(probs, labels), "nll": nll(probs, labels)}


def calibrate(dev_logits, dev_labels, test_logits, test_labels, label_names: list[str],
              rule: str = "macro_f1", bins: int = 15) -> dict:
    """calibration.json's content: T fitted on dev; for binary tasks the threshold chosen on the
    calibrated dev probabilities of `label_names[1]`; ECE/Brier/NLL on test before and after.
    A rule no threshold satisfies leaves `threshold` None (argmax) and says why in `warning`."""
    dev_labels, test_labels = np.asarray(dev_labels), np.asarray(test_labels)
    t = fit_temperature(dev_logits, dev_labels)
    dev_before, dev_after = scaled_softmax(dev_logits), scaled_softmax(dev_logits, t)
    test_before, test_after = scaled_softmax(test_logits), scaled_softmax(test_logits, t)
    binary = len(label_names) == 2
    out = {"temperature": t, "positive_label": label_names[1] if binary else None, "threshold": None,
           "threshold_rule": rule if binary else None,
           "dev": {"n": int(len(dev_labels)), "before": scores(dev_before, dev_labels, bins),
                   "after": scores(dev_after, dev_labels, bins)},
           "test_before": scores(test_before, test_labels, bins),
           "test_after": scores(test_after, test_labels, bins),
           "reliability": {"before": reliability(test_before, test_labels, bins),
                           "after": reliability(test_after, test_labels, bins)}}
    if binary:
        try:
            out["threshold"] = choose_threshold(dev_after[:, 1], dev_labels, rule)
        except ThresholdError as e:
            out["warning"] = f"{e}; predictions use argmax"
    return out


def save_calibration(folder: str | Path, calibration: dict) -> None:
    atomic_write_json(Path(folder) / CALIBRATION_FILE, calibration)
