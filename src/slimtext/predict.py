"""Load a finished run directory as a `Predictor`: `labels` and `predict_proba(texts) -> (N, C)`.
Used by `slimtext predict`, `slimtext evaluate` and the web app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.errors import SlimtextError
from slimtext.models.registry import apply_method, build_classifier, build_tokenizer
from slimtext.runs.rundir import RunDir, load_safetensors
from slimtext.train.finetune import load_weights
from slimtext.train.loop import predict_logits


class Predictor:
    def __init__(self, model: torch.nn.Module, tokenizer, labels: list[str], name: str = "", batch_size: int = 64):
        self.model, self.tokenizer, self.labels, self.name = model.eval(), tokenizer, labels, name
        self.batch_size = batch_size

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        split = EncodedSplit(self.tokenizer.encode(list(texts)), torch.zeros(len(texts), dtype=torch.long),
                             self.tokenizer.pad_id)
        return predict_logits(self.model, split, self.batch_size).softmax(-1).numpy()

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(1)]


def load_model(run_dir: str | Path) -> tuple[torch.nn.Module, object, RunConfig, list[str]]:
    run = RunDir(run_dir)
    if not run.weights_path.exists():
        raise SlimtextError(f"{run.path}: no model.safetensors (is it a finished slimtext run?)")
    cfg = RunConfig.from_dict(run.read_config())
    labels = run.read_json("labels.json")
    tokenizer = build_tokenizer(cfg, saved=run.path / "tokenizer")
    model = build_classifier(cfg, len(labels), tokenizer)
    apply_method(model, cfg)
    load_weights(model, load_safetensors(run.weights_path), cfg.model.method)
    return model.eval(), tokenizer, cfg, labels


def load_predictor(run_dir: str | Path) -> Predictor:
    model, tokenizer, cfg, labels = load_model(run_dir)
    return Predictor(model, tokenizer, labels, name=f"{cfg.model.model}/{cfg.model.method} ({Path(run_dir).name})")
