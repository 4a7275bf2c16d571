"""Transformer fine-tuning methods end to end on a tiny random BERT: full, head, LoRA.
Parameter counts in the summary match the loaded model; a saved run (LoRA: adapter + head only)
reloaded in a fresh process gives the same test metrics as at the end of training."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from slimtext.config import RunConfig
from slimtext.inference.predictor import load_model
from slimtext.recipes.finetune import train


def cfg_for(csv, folder, method: str) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data, cfg.model.model, cfg.model.method = str(csv), str(folder), method
    cfg.model.max_length = 32
    cfg.train.epochs, cfg.train.batch_size, cfg.train.threads = 2, 16, 1
    cfg.train.lr = {"full": 1e-3, "head": 1e-2, "lora": 5e-3}[method]
    cfg.lora.rank, cfg.lora.alpha = 4, 8
    return cfg


@pytest.mark.parametrize("method", ["full", "head", "lora"])
def test_method_param_counts_and_fresh_process_reload(tiny_csv, tiny_bert, tmp_path, method):
    out = tmp_path / method
    s = train(cfg_for(tiny_csv, tiny_bert, method), out=out, quiet=True)
    model, *_ = load_model(out)
    assert s["total_params"] == sum(p.numel() for p in model.parameters())
    assert s["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    saved = load_file(out / "model.safetensors")
    if method == "full":
        assert s["trainable_params"] == s["total_params"]
    else:  # only what trains is saved: the head, plus the adapters for LoRA
        assert sum(t.numel() for t in saved.values()) == s["trainable_params"] < s["total_params"] / 10
        assert any(k.startswith("classifier.") for k in saved)
        assert all(("lora_" in k) == (method == "lora" and not k.startswith("classifier.")) for k in saved)
    r = subprocess.run([sys.executable, "-m", "slimtext", "evaluate", str(out), "--split", "test"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stderr
    fresh = json.loads(r.stdout)
    for k in ("accuracy", "macro_f1", "mcc"):
        assert fresh[k] == s["test"][k], k
    assert abs(fresh["loss"] - s["test"]["loss"]) < 1e-6
