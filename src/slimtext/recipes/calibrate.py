"""`slimtext calibrate RUN`: fit (again) a finished run's temperature and decision threshold on its
dev split, without training: for runs made before calibration existed, or to choose the threshold
by another rule (`--threshold-for precision=0.9`). Writes calibration.json and updates
summary.json's `calibration`, `test_at_threshold` and `warnings`, as training does at its end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimtext.config import RunConfig
from slimtext.data.registry import load_dataset
from slimtext.errors import SlimtextError
from slimtext.inference.predictor import load_predictor
from slimtext.recipes.finetune import calibration_summary, write_summary
from slimtext.rundir import RunDir


def recalibrate(run_dir: str | Path, rule: str | None = None, data_dir: str | None = None,
                backend: str = "torch") -> dict:
    """Calibrate a finished run on its own dev split (the split ids it trained with); returns
    the updated summary. `rule`: the threshold rule (default: the run's `train.threshold_for`)."""
    run = RunDir(run_dir)
    if not run.is_finished():
        raise SlimtextError(f"{run.path} is not a finished run (no summary.json)")
    saved = run.read_config()
    saved.pop("tfidf", None)  # the TF-IDF baseline's own settings
    cfg = RunConfig.from_dict(saved)
    if data_dir:
        cfg.data.data_dir = data_dir
    data = load_dataset(cfg.data)
    ids = run.read_json("splits.json") if (run.path / "splits.json").exists() else None
    summary = run.read_summary()
    test = summary.get("test_split", "test")
    for split in ("dev", test):
        if ids is not None and [e.id for e in data.splits[split]] != ids.get(split):
            raise SlimtextError(f"the {split} split of {cfg.data.data} is not the one {run.path} trained "
                                "with (another split seed or data file?); cannot calibrate on it")
    predictor = load_predictor(run.path, backend=backend, batch_size=cfg.train.eval_batch_size)
    logits = {s: np.asarray(predictor.predict_logits([e.text for e in data.splits[s]]), dtype=np.float32)
              for s in ("dev", test)}  # (N, C) raw
    gold = {s: np.array([e.label for e in data.splits[s]]) for s in ("dev", test)}
    summary.update(calibration_summary(run, logits["dev"], gold["dev"], logits[test], gold[test], data.labels,
                                       rule or cfg.train.threshold_for))
    return write_summary(run, summary)
