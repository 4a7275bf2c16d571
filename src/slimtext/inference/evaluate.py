"""`slimtext evaluate`: a finished run (any backend, TF-IDF included) on a split of its dataset,
with the run's own split ids: the argmax metrics training reported, the calibrated scores, and
(binary tasks) the metrics at the decision threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimtext.data.registry import DataConfig, load_dataset
from slimtext.errors import UnknownNameError
from slimtext.inference.calibration import scaled_softmax, scores
from slimtext.inference.predictor import load_predictor
from slimtext.rundir import RunDir
from slimtext.train.loop import logit_metrics
from slimtext.train.metrics import classification_metrics


def evaluate_run(run_dir: str | Path, split: str = "test", backend: str = "torch",
                 threshold: float | None = None, data_dir: str | None = None) -> dict:
    """Metrics of the run on `split`: loss and argmax metrics (as in summary.json), `calibrated`
    (ECE, Brier, NLL after the run's temperature) and, for binary tasks, `threshold` (the given
    one, else the run's; None is argmax) with `at_threshold` metrics."""
    cfg = RunDir(run_dir).read_config()
    data = DataConfig(**(cfg.get("data") or {}))
    if data_dir:
        data.data_dir = data_dir
    ds = load_dataset(data)
    if split not in ds.splits:
        raise UnknownNameError("split", split, list(ds.splits))
    # the run's evaluation batch size: the same batches, hence the same numbers, as training's
    batch = int((cfg.get("train") or {}).get("eval_batch_size") or 128)
    p = load_predictor(run_dir, backend=backend, batch_size=batch)
    examples = ds.splits[split]
    labels = np.array([e.label for e in examples], dtype=np.int64)
    logits = np.asarray(p.predict_logits([e.text for e in examples]), dtype=np.float32)  # (N, C)
    metrics, _ = logit_metrics(torch.from_numpy(logits), torch.from_numpy(labels), len(p.labels))
    probs = scaled_softmax(logits, p.temperature)  # (N, C) calibrated
    out = {"split": split, "n": len(examples), **metrics, "backend": p.backend,
           "temperature": p.temperature, "calibrated": scores(probs, labels)}
    if len(p.labels) == 2:
        t = p.threshold if threshold is None else threshold
        pred = p.decide(probs, t)
        out |= {"threshold": t, "positive_label": p.positive_label,
                "at_threshold": classification_metrics(probs, labels, len(p.labels), pred=pred)}
    return out
