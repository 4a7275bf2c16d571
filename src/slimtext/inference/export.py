"""Export a finished run for inference: LoRA merged into plain weights, ONNX, int8 ONNX.

    export(run, merged=True)           run/merged/: model.safetensors with every adapter folded in,
                                       config.yaml saying method full, labels.json, tokenizer/ -
                                       a run-like folder `load_predictor` reads as a full run
    export(run, onnx=True)             run/model.onnx: the classifier, LoRA merged,
                                       (input_ids, attention_mask) int64 (B, T) -> logits (B, C),
                                       batch and sequence axes dynamic
    export(run, onnx=True, int8=True)  also run/model.int8.onnx: ONNX Runtime dynamic quantization
                                       (int8 weights with per-channel scales, activations
                                       quantized per call) of ONNX Runtime's fused transformer
                                       graph (one Attention node per layer), where the fusion
                                       reproduces the plain graph's logits

A new model.onnx without int8 removes an older model.int8.onnx beside it (it would no longer be
derived from that model.onnx).

`out` puts the files in another folder; that folder then also gets config.yaml, labels.json,
calibration.json and tokenizer/, so `load_predictor(out, backend="onnx")` works on it alone. `load_predictor(run,
backend=...)` picks torch, torch-int8 (`torch_int8` below), onnx or onnx-int8.

The ONNX graph comes from the TorchScript-based exporter (`torch.onnx.export(dynamo=False)`):
it needs no extra package and on this model its graph runs as fast in ONNX Runtime as the
torch.export-based one, and exports five times faster.

References: ONNX Runtime quantization guide (dynamic quantization of transformer models),
https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slimtext.checkpoint import BASE_CONFIG, load_model, save_base
from slimtext.config import RunConfig
from slimtext.errors import SlimtextError
from slimtext.inference.base import CALIBRATION_FILE, INT8_FILE, ONNX_FILE
from slimtext.models.lora import merged_copy
from slimtext.rundir import RunDir, atomic_copy, atomic_save_safetensors, atomic_write_json

OPSET = 17


class _Logits(nn.Module):
    """Names the graph's inputs and fixes the call to the classifier contract."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask)


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every LoRA adapter folded into a plain nn.Linear."""
    return merged_copy(model).eval().requires_grad_(False)


def torch_int8(model: nn.Module) -> nn.Module:
    """Eager int8 (CPU): LoRA merged, then nn.Linear layers dynamically quantized
    (`torch.ao.quantization.quantize_dynamic`): int8 weights with one scale per output channel,
    activations quantized per call with one scale per batch. The `classifier` head and the
    feed-forward down-projections (`ffn.output`, whose inputs carry BERT's activation outliers)
    stay fp32: with them quantized, test macro-F1 of a minilm-l6 head run moved by up to 1.3
    points with the batch composition, without them by at most 0.35."""
    from torch.ao.quantization import per_channel_dynamic_qconfig  # noqa: PLC0415

    plain = inference_copy(model)
    keep_fp32 = ("classifier", "ffn.output")
    spec = {name: per_channel_dynamic_qconfig for name, m in plain.named_modules()
            if isinstance(m, nn.Linear) and not any(k in name for k in keep_fp32)}
    with warnings.catch_warnings():  # torch deprecates its quantized tensors in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(plain, spec, dtype=torch.qint8)


def export_onnx(model: nn.Module, path: str | Path, vocab_size: int, pad_id: int = 0) -> Path:
    """Write `model` (LoRA merged, eval mode, fp32, CPU) as ONNX with dynamic batch and sequence."""
    path = Path(path)
    net = _Logits(inference_copy(model).float().cpu())
    mask = (torch.arange(6)[None] < torch.tensor([[6], [3]])).long()  # (2, 6): row 2 is padded
    ids = (torch.arange(12).view(2, 6) + 1) % vocab_size  # (2, 6)
    ids = ids.masked_fill(mask == 0, pad_id)
    axes = {0: "batch", 1: "sequence"}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (ids, mask), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"],
                              dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                            "logits": {0: "batch"}})
        tmp.replace(path)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, SlimtextError):
            raise
        raise SlimtextError(f"ONNX export of {type(model).__name__} failed: {e}") from e
    return path


def _probe_feed(vocab_size: int, pad_id: int) -> dict[str, np.ndarray]:
    """(3, 7) int64 inputs, rows padded to 7, 4 and 1 tokens: the fused graph is checked on these."""
    lengths = np.array([[7], [4], [1]])
    mask = (np.arange(7)[None] < lengths).astype(np.int64)  # (3, 7)
    ids = (np.arange(21).reshape(3, 7) * 7 + 3) % vocab_size
    return {"input_ids": np.where(mask == 1, ids, pad_id).astype(np.int64), "attention_mask": mask}


def fuse_onnx(src: str | Path, dst: str | Path, num_heads: int, hidden_size: int,
              vocab_size: int, pad_id: int = 0) -> dict[str, int]:
    """ONNX Runtime's transformer fusions on a plain BERT-style export: each layer's attention
    becomes one `Attention` node, its residual adds and LayerNorms `SkipLayerNormalization`, the
    feed-forward bias and GELU `BiasGelu` (Microsoft-domain operators: ONNX Runtime only). Written
    to `dst` only if something fused and the fused graph's logits match the plain graph's on a
    padded probe batch; returns the fused operator counts ({} when nothing was kept).
    Reference: https://onnxruntime.ai/docs/performance/transformers-optimization.html"""
    import onnxruntime as ort  # noqa: PLC0415
    from onnxruntime.transformers.optimizer import optimize_model  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = optimize_model(str(src), model_type="bert", num_heads=num_heads,
                               hidden_size=hidden_size, opt_level=0)
    counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    if not counts:
        return {}
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        fused.save_model_to_file(str(tmp))
        feed = _probe_feed(vocab_size, pad_id)
        plain, new = (ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                      for f in (src, tmp))
        if not np.allclose(new, plain, atol=1e-4, rtol=1e-4):
            return {}
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


INT8_WEIGHT_BITS = 7  # see quantize_onnx; export.json records it, older exports lack the key


def quantize_onnx(src: str | Path, dst: str | Path, fused: bool = False) -> Path:
    """ONNX Runtime dynamic quantization: QInt8 weights with per-channel scales for every MatMul
    (and, on a `fuse_onnx` graph, every fused Attention, which becomes `QAttention`). A plain graph
    first gets ONNX Runtime's recommended pre-processing (shape inference, graph clean-up); a fused
    one cannot (its Microsoft-domain nodes have no shape inference), so its weights are declared
    float instead.

    Weights use 7 bits (`reduce_range`): a CPU without VNNI (AVX2, or AVX-512 without it) multiplies
    uint8 activations by int8 weights with `vpmaddubsw`, whose int16 sums of two products saturate
    at full 8-bit range (255 * 127 * 2 > 32767); a tiny BERT's probabilities then came out wrong
    (0.03 against 0.89 on an AMD EPYC with AVX2 only). With 7 bits ([-64, 64]) a pair sum fits
    (255 * 64 * 2 = 32640), so the file answers alike on every CPU. On that AVX2 CPU the speed was unchanged (32 tweets:
    604 ms at 8 bits, 606 at 7), and 99.2 % of 1,024 Davidson tweets kept the fp32 graph's label."""
    import onnx as onnx_lib  # noqa: PLC0415
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    dst = Path(dst)
    pre, tmp = dst.with_name(f".{dst.name}.pre.tmp"), dst.with_name(f".{dst.name}.tmp")
    try:
        if fused:
            logging.disable(logging.WARNING)  # its advice to pre-process, which a fused graph cannot
            try:
                quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True,
                                 extra_options={"DefaultTensorType": onnx_lib.TensorProto.FLOAT})
            finally:
                logging.disable(logging.NOTSET)
        else:
            quant_pre_process(str(src), str(pre))
            quantize_dynamic(str(pre), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True)
        tmp.replace(dst)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return dst


def _write_run_files(run: RunDir, folder: Path, cfg: RunConfig) -> None:
    """config.yaml (method full: the weights are plain), labels.json, tokenizer/, splits.json,
    calibration.json (the temperature and threshold hold for the exported logits too) and the base
    checkpoint's config.json (BASE_CONFIG: the folder loads without that checkpoint)."""
    target = RunDir(folder)
    full = RunConfig.from_dict(cfg.to_dict())
    full.model.method = "full"
    target.create(full.to_dict(), argv=["slimtext", "export", str(run.path)])
    if (run.path / BASE_CONFIG).is_file():
        atomic_copy(run.path / BASE_CONFIG, folder / BASE_CONFIG)
    else:  # a head/LoRA run (its base was just loaded, checked against its sha256) or an older run
        save_base(folder, full)
    for name in ("labels.json", "splits.json", CALIBRATION_FILE):
        if (run.path / name).exists():
            shutil.copy(run.path / name, folder / name)
    if (folder / "tokenizer").exists():
        shutil.rmtree(folder / "tokenizer")
    shutil.copytree(run.path / "tokenizer", folder / "tokenizer")


def _fused_int8(plain: nn.Module, folder: Path, tokenizer, fuse: bool) -> dict[str, int]:
    """model.int8.onnx from model.onnx: fused first (`fuse_onnx`) where the model is an encoder
    and the fusion checks out, else quantized as it is. Returns the fused operator counts."""
    encoder = getattr(plain, "encoder", None)
    config = getattr(encoder, "config", None)
    src, fused_path = folder / ONNX_FILE, folder / f".{INT8_FILE}.fused.tmp"
    counts: dict[str, int] = {}
    try:
        if fuse and config is not None and hasattr(config, "num_heads"):
            try:
                counts = fuse_onnx(src, fused_path, config.num_heads, config.hidden_size,
                                   tokenizer.vocab_size, tokenizer.pad_id)
            except Exception as e:  # noqa: BLE001 - an optimisation: the plain graph still exports
                warnings.warn(f"ONNX Runtime's transformer fusion failed ({type(e).__name__}: {e}); "
                              "quantizing the plain graph", stacklevel=2)
                counts = {}
        quantize_onnx(fused_path if counts else src, folder / INT8_FILE, fused=bool(counts))
    finally:
        fused_path.unlink(missing_ok=True)
    return counts


def export(run_dir: str | Path, merged: bool = False, onnx: bool = False, int8: bool = False,
           out: str | Path | None = None, fuse: bool = True) -> Path:
    """Write the chosen exports of a finished run; returns the folder that holds them.

    merged: `model.safetensors` with LoRA folded in, in a run-like folder (default run/merged)
    loadable as a method=full run. onnx: `model.onnx` (default in the run folder). int8: also
    `model.int8.onnx` (implies onnx), quantized from ONNX Runtime's fused transformer graph
    where `fuse` and the fusion reproduces the plain graph's logits (`fuse_onnx`; model.onnx itself
    stays plain, standard ONNX). With both merged and onnx the ONNX files go to the merged folder.
    """
    if not (merged or onnx or int8):
        raise SlimtextError("nothing to export: choose --merged, --onnx and/or --int8")
    run = RunDir(run_dir)
    model, tokenizer, cfg, labels = load_model(run.path)
    folder = Path(out) if out is not None else (run.path / "merged" if merged else run.path)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() != run.path.resolve():
        _write_run_files(run, folder, cfg)
    plain = inference_copy(model)
    files = []
    if merged:
        atomic_save_safetensors(folder / "model.safetensors", plain.state_dict())
        files.append("model.safetensors")
    if onnx or int8:
        export_onnx(plain, folder / ONNX_FILE, tokenizer.vocab_size, tokenizer.pad_id)
        files.append(ONNX_FILE)
        if not int8:
            (folder / INT8_FILE).unlink(missing_ok=True)
    fusions: dict[str, int] = {}
    if int8:
        fusions = _fused_int8(plain, folder, tokenizer, fuse)
        files.append(INT8_FILE)
    atomic_write_json(folder / "export.json", {
        "source": str(run.path.resolve()), "method": cfg.model.method, "files": files,
        "labels": labels, "onnx_opset": OPSET if (onnx or int8) else None,
        "int8_fused_operators": fusions if int8 else None,
        "int8_weight_bits": INT8_WEIGHT_BITS if int8 else None,
        "torch": torch.__version__,
    })
    return folder

