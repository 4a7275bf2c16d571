"""Load a finished run directory as a `Predictor`: `labels` and `predict_proba(texts) -> (N, C)`.
Used by `slimtext predict`, `slimtext evaluate` and the web app.

`load_predictor(run, backend=...)` chooses the inference engine:
  torch       (default) eager PyTorch, fp32, the run's own weights
  torch-int8  eager PyTorch, linear layers dynamically quantized to int8 (CPU; see export.torch_int8)
  onnx        ONNX Runtime on run/model.onnx       (`slimtext export RUN --onnx`)
  onnx-int8   ONNX Runtime on run/model.int8.onnx  (`slimtext export RUN --onnx --int8`)
  auto        onnx-int8 if that file exists, else onnx if model.onnx exists, else torch
A TF-IDF baseline run (tfidf.safetensors) loads as a `TfidfPredictor` (backend "tfidf").
Every predictor has `.backend` naming the engine it runs on, and applies the run's
calibration.json: `predict_proba` is calibrated, `predict` uses the decision threshold.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from slimtext.checkpoint import load_model
from slimtext.data.batches import EncodedSplit
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.inference.base import INT8_FILE, ONNX_FILE, TFIDF_FILE, WEIGHTS_FILE, LabelPredictor
from slimtext.inference.export import INT8_WEIGHT_BITS, torch_int8
from slimtext.inference.onnx import OnnxPredictor
from slimtext.inference.tfidf import TfidfPredictor
from slimtext.train.loop import predict_logits

BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8", "auto")


class Predictor(LabelPredictor):
    """Eager PyTorch inference in length-sorted batches."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, tokenizer, labels: list[str], name: str = "", batch_size: int = 64):
        self.model, self.tokenizer, self.labels, self.name = model.eval(), tokenizer, labels, name
        self.batch_size = batch_size

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        """Logits (N, C) before calibration, in the order of `texts`."""
        split = EncodedSplit.from_texts(self.tokenizer, texts)
        return predict_logits(self.model, split, self.batch_size).numpy()


def onnx_folder(run_dir: str | Path, name: str) -> Path | None:
    """The folder holding a run's exported `name`: the run itself, or its `merged/` export
    (`slimtext export RUN --merged --onnx` writes the ONNX files there)."""
    for folder in (Path(run_dir), Path(run_dir) / "merged"):
        if (folder / name).is_file():
            return folder
    return None


def load_predictor(run_dir: str | Path, backend: str = "torch", batch_size: int | None = None):
    """A predictor for a finished run (or an export folder) on the chosen backend (see above),
    with the folder's calibration.json applied (temperature, threshold). A TF-IDF baseline run
    has one engine, `TfidfPredictor` (backend torch or auto). `batch_size`: texts per
    length-sorted batch (default: 16 for torch, 8 for ONNX)."""
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, list(BACKENDS))
    if (Path(run_dir) / TFIDF_FILE).exists() and not (Path(run_dir) / WEIGHTS_FILE).exists():
        if backend not in ("torch", "auto"):
            raise SlimtextError(f"{run_dir} is a TF-IDF run: it has no {backend} backend (use torch or auto)")
        return TfidfPredictor(run_dir)
    if backend == "auto":
        backend = next((b for b, f in (("onnx-int8", INT8_FILE), ("onnx", ONNX_FILE))
                        if onnx_folder(run_dir, f) is not None), "torch")
    if backend in ("onnx", "onnx-int8"):
        name = INT8_FILE if backend == "onnx-int8" else ONNX_FILE
        if backend == "onnx-int8":
            _warn_if_8_bit(onnx_folder(run_dir, name) or Path(run_dir))
        # 8 texts per batch: int8 minilm-l6 scored 3,000 tweets 3-5% faster than in batches of 16
        # and 40% faster than in batches of 64 (1 thread, AMD EPYC; docs/results.md, issue 17)
        return OnnxPredictor(onnx_folder(run_dir, name) or run_dir, int8=backend == "onnx-int8",
                             batch_size=batch_size or 8)
    model, tokenizer, cfg, labels = load_model(run_dir)
    if backend == "torch-int8":
        model = torch_int8(model)
    # 16 texts per length-sorted batch: 64 random texts then run 2.3x faster than as one padded
    # batch, and a whole split 10% faster than in batches of 64 (minilm-l6, CPU)
    predictor = Predictor(model, tokenizer, labels, batch_size=batch_size or 16,
                          name=f"{cfg.model.model}/{cfg.model.method} ({Path(run_dir).name})")
    predictor.backend = backend
    predictor.use_calibration(run_dir)
    return predictor


def _warn_if_8_bit(folder: Path) -> None:
    """An int8 file from before 7-bit weights (export.json without `int8_weight_bits`) saturates
    on CPUs without VNNI and can answer wrongly there: say so, and how to re-export."""
    if not (folder / INT8_FILE).is_file():
        return
    try:
        info = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if info.get("int8_weight_bits") != INT8_WEIGHT_BITS:
        warnings.warn(f"{folder / INT8_FILE} has 8-bit weights, which saturate on CPUs without VNNI "
                      f"(AVX2) and can give wrong probabilities there; re-export it: "
                      f"slimtext export {info.get('source', folder)} --int8", stacklevel=3)
