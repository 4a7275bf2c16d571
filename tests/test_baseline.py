"""The TF-IDF + logistic-regression baseline writes a run directory a report can read: the same
summary keys as `slimtext train`, the same split ids, no per-epoch metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slimtext.config import RunConfig
from slimtext.errors import SlimtextError
from slimtext.recipes.baseline import train_baseline
from slimtext.recipes.finetune import prepare
from slimtext.rundir import RunDir

SUMMARY_KEYS = {
    "dataset", "model", "method", "labels", "seed", "best_epoch", "train_seconds", "peak_memory_mb",
    "total_params", "trainable_params", "reduction_pct", "final_train_loss", "dev", "test",
    "test_split", "splits", "confusion", "inference_ms_per_example", "single_p50_ms",
}  # fmt: skip


def test_baseline_run_directory(tiny_csv, tmp_path):
    cfg = RunConfig()
    cfg.data.data = str(tiny_csv)
    s = train_baseline(cfg, tmp_path / "tfidf-s0", quiet=True)
    assert SUMMARY_KEYS <= set(s)
    assert s["model"] == "tfidf" and s["test"]["accuracy"] > 0.9  # one cue word decides the label
    assert set(s["test"]) == {"loss", "accuracy", "macro_f1", "mcc", "roc_auc"}
    assert sum(map(sum, s["confusion"]["test"])) == 30  # 10% of 300
    run = RunDir(tmp_path / "tfidf-s0")
    assert run.is_finished() and run.read_metrics() == [] and (run.path / "tfidf.safetensors").exists()
    assert run.read_config()["data"]["data"] == str(tiny_csv)
    # the very same split ids as a neural run on the same data config
    assert run.read_json("splits.json") == prepare(cfg).data.split_ids()
    pred = run.read_json("test_predictions.json")  # what the report's paired comparisons read
    assert pred["split"] == "test" and pred["ids"] == run.read_json("splits.json")["test"]
    right = sum(p == g for p, g in zip(pred["pred"], pred["gold"]))
    assert right / len(pred["gold"]) == pytest.approx(s["test"]["accuracy"])
    with pytest.raises(SlimtextError, match="already holds a run"):
        train_baseline(cfg, tmp_path / "tfidf-s0", quiet=True)


def test_baseline_module_command(tiny_csv, tmp_path):
    out = tmp_path / "b"
    proc = subprocess.run(
        [sys.executable, "-m", "slimtext.recipes.baseline", "--data", str(tiny_csv), "--seed", "3",
         "--max-examples", "100", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["seed"] == 3 and sum(map(sum, s["confusion"]["test"])) == 30  # test of 300 is 30 < 100
    assert "slimtext.recipes.baseline" in (out / "command.txt").read_text()
