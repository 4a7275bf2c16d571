"""A `Predictor` backed by ONNX Runtime: the run's exported `model.onnx` or `model.int8.onnx`.

Same interface as `slimtext.inference.predictor.Predictor` (`labels`, `predict_logits`, calibrated
`predict_proba(texts) -> (N, C)`, `predict` with the run's threshold), so
`slimtext predict`, `evaluate` and the web app take either. An `InferenceSession` may be called
from several threads at once, hence `thread_safe = True` (the web app then skips its lock).
Create the files with `slimtext export RUN --onnx [--int8]`; `load_predictor(RUN,
backend="onnx" | "onnx-int8" | "auto")` returns this class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimtext.data.batches import EncodedSplit, cheapest_batches, collate
from slimtext.data.tokenize import load_tokenizer
from slimtext.errors import SlimtextError
from slimtext.inference.base import INT8_FILE, ONNX_FILE, LabelPredictor
from slimtext.rundir import RunDir

# What one more ONNX Runtime call costs, in padded tokens: minilm-l6 int8 on 2 threads takes about
# 0.45 ms per call plus 60-90 us per padded token (docs/results.md, issue 20), so texts of mixed
# lengths are split wherever padding them together would cost more than another call.
CALL_TOKENS = 8


class OnnxPredictor(LabelPredictor):
    """ONNX Runtime inference on a run (or export) folder holding model[.int8].onnx, labels.json
    and tokenizer/. Texts are sorted by length and run in batches of at most `batch_size`, each
    padded only to its own longest text, cut where that is cheapest (`cheapest_batches`). `threads` 0 lets ONNX Runtime use every physical core."""

    thread_safe = True

    def __init__(self, run_dir: str | Path, int8: bool = False, threads: int = 0,
                 batch_size: int = 8):
        import onnxruntime as ort  # noqa: PLC0415  (optional dependency: pip install 'slimtext[onnx]')

        run = RunDir(run_dir)
        path = run.path / (INT8_FILE if int8 else ONNX_FILE)
        if not path.exists():
            flags = "--onnx --int8" if int8 else "--onnx"
            raise SlimtextError(f"{path} does not exist; create it with: "
                                f"slimtext export {run.path} {flags}")
        self.labels: list[str] = run.read_json("labels.json")
        self.tokenizer = load_tokenizer(run.path / "tokenizer")
        self.backend = "onnx-int8" if int8 else "onnx"
        model = run.read_config().get("model", {})
        self.name = f"{model.get('model')}/{model.get('method')} ({run.path.name}) [{self.backend}]"
        self.batch_size = batch_size
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.use_calibration(run.path)

    def predict_logits(self, texts: list[str]) -> np.ndarray:
        """Logits (N, C) float32 in the order of `texts` (length-sorted batches, as in eager)."""
        split = EncodedSplit.from_texts(self.tokenizer, texts)
        out = np.empty((len(split), len(self.labels)), dtype=np.float32)
        for idx in cheapest_batches(split.lengths, self.batch_size, CALL_TOKENS):
            b = collate(split, idx)
            feed = {"input_ids": b["input_ids"].numpy(), "attention_mask": b["attention_mask"].numpy()}
            out[idx.numpy()] = self.session.run(["logits"], feed)[0]
        return out
