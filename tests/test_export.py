"""Export: merged LoRA weights, ONNX parity with eager PyTorch, int8 ONNX and eager int8, and
`load_predictor` on every backend (tiny BERT trained on the tiny CSV)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import write_tiny_csv
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.inference.export import export, torch_int8
from slimtext.inference.predictor import load_model, load_predictor
from test_speed_paths import tiny_bert_folder, tiny_run_config

ort = pytest.importorskip("onnxruntime")

TEXTS = ["a good movie", "bad", "the plot was really awful and the actor quite poor",
         "very fine film", "", "great great great scene", "poor", "the a the a movie film plot"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A finished LoRA run of the tiny BERT (trained once for this module)."""
    from slimtext.recipes.finetune import train

    tmp = tmp_path_factory.mktemp("export")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMTEXT_CACHE", str(tmp / "cache"))
        cfg = tiny_run_config(tiny_bert_folder(tmp / "bert"), write_tiny_csv(tmp / "tiny.csv"),
                              "lora", epochs=2, lr=2e-2)
        train(cfg, tmp / "run", quiet=True)
    yield tmp / "run"
    torch.set_num_threads(threads)


def batch(tokenizer, texts):
    ids = tokenizer.encode(texts)
    T = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), T), tokenizer.pad_id)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
    return input_ids, mask


def test_onnx_logits_match_eager_pytorch(lora_run):
    folder = export(lora_run, onnx=True)
    assert folder == lora_run and (folder / "model.onnx").exists()
    model, tokenizer, _, _ = load_model(lora_run)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (TEXTS, TEXTS[:1], TEXTS[2:3] * 5):  # other batch sizes and lengths than traced
        ids, mask = batch(tokenizer, texts)
        with torch.inference_mode():
            eager = model(ids, mask).numpy()
        (onnx,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        np.testing.assert_allclose(onnx, eager, atol=1e-4, rtol=1e-4)
    torch_p, onnx_p = load_predictor(lora_run), load_predictor(lora_run, backend="onnx")
    assert onnx_p.backend == "onnx" and onnx_p.thread_safe and onnx_p.labels == torch_p.labels
    np.testing.assert_allclose(onnx_p.predict_proba(TEXTS), torch_p.predict_proba(TEXTS), atol=1e-4)
    assert onnx_p.predict_proba([]).shape == (0, 2)


def test_int8_paths_run_and_mostly_agree(lora_run):
    export(lora_run, onnx=True, int8=True)
    size = (lora_run / "model.int8.onnx").stat().st_size
    assert size < (lora_run / "model.onnx").stat().st_size
    texts = TEXTS * 4
    ref = load_predictor(lora_run).predict_proba(texts).argmax(1)
    auto = load_predictor(lora_run, backend="auto")
    assert auto.backend == "onnx-int8"
    for p in (auto, load_predictor(lora_run, backend="torch-int8")):
        proba = p.predict_proba(texts)
        assert proba.shape == (len(texts), 2)
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
        assert (proba.argmax(1) == ref).mean() >= 0.8, p.backend


def test_int8_weights_fit_in_7_bits_so_no_cpu_saturates(lora_run):
    """Without VNNI, uint8 x int8 pair sums saturate at int16 for 8-bit weights (an AVX2 CPU gave
    0.03 for 0.89); every quantized weight must lie in [-64, 64], and export.json says so."""
    import onnx
    from onnx import numpy_helper

    export(lora_run, onnx=True, int8=True)
    graph = onnx.load(str(lora_run / "model.int8.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and sum(w.size for w in weights) > 1000
    assert all(abs(int(w.min())) <= 64 and int(w.max()) <= 64 for w in weights)  # 255 * 64 * 2 < 32767
    info = json.loads((lora_run / "export.json").read_text())
    assert info["int8_weight_bits"] == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_predictor(lora_run, backend="onnx-int8")
    info.pop("int8_weight_bits")  # an export from before: the predictor warns, and says how to redo it
    (lora_run / "export.json").write_text(json.dumps(info))
    try:
        with pytest.warns(UserWarning, match="re-export it: slimtext export .* --int8"):
            load_predictor(lora_run, backend="onnx-int8")
    finally:
        export(lora_run, onnx=True, int8=True)


def test_merged_export_equals_the_lora_model(lora_run, tmp_path):
    folder = export(lora_run, merged=True)
    assert folder == lora_run / "merged"
    model, _, cfg, _ = load_model(folder)
    assert cfg.model.method == "full"
    assert not any("lora" in name for name in model.state_dict())
    lora = load_predictor(lora_run).predict_proba(TEXTS)
    np.testing.assert_allclose(load_predictor(folder).predict_proba(TEXTS), lora, atol=1e-5)
    # merged + onnx into another folder: self-contained for both backends
    out = export(lora_run, merged=True, onnx=True, out=tmp_path / "exported")
    assert out == tmp_path / "exported"
    onnx = load_predictor(out, backend="onnx").predict_proba(TEXTS)
    np.testing.assert_allclose(onnx, lora, atol=1e-4)
    only_onnx = export(lora_run, onnx=True, out=tmp_path / "onnx-only")
    auto = load_predictor(only_onnx, "auto").predict_proba(TEXTS)
    np.testing.assert_allclose(auto, lora, atol=1e-4)
    # the files of `export RUN --merged --onnx` land in RUN/merged/: RUN finds them
    export(lora_run, merged=True, onnx=True)
    beside = load_predictor(lora_run, backend="onnx")
    np.testing.assert_allclose(beside.predict_proba(TEXTS), lora, atol=1e-4)
    assert load_predictor(lora_run, "auto").backend.startswith("onnx")


def test_torch_int8_quantizes_every_linear(lora_run):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    model, *_ = load_model(lora_run)
    kinds = [type(m) for m in torch_int8(model).modules()]
    assert DynamicInt8Linear in kinds
    fp32 = [n for n, m in torch_int8(model).named_modules() if type(m) is torch.nn.Linear]
    assert fp32 == ["encoder.layers.0.ffn.output", "encoder.layers.1.ffn.output", "classifier"]
    assert not any(k.__name__ == "LoRALinear" for k in kinds)  # merged before quantizing
    assert any(type(m).__name__ == "LoRALinear" for m in model.modules())  # the model is untouched


def test_errors_say_what_to_do(lora_run, tmp_path):
    with pytest.raises(SlimtextError, match="nothing to export"):
        export(lora_run)
    bare = export(lora_run, merged=True, out=tmp_path / "bare")
    with pytest.raises(SlimtextError, match="slimtext export .* --onnx --int8"):
        load_predictor(bare, backend="onnx-int8")
    with pytest.raises(UnknownNameError, match="onnx-int8"):
        load_predictor(lora_run, backend="onnx_int8")
    assert load_predictor(bare, backend="auto").backend == "torch"


def test_int8_is_quantized_from_the_fused_graph_and_matches_the_unfused_one(lora_run, tmp_path):
    """The tiny BERT's attention, residual LayerNorms and GELU fuse; the fused int8 graph gives
    the logits of the int8 graph quantized without fusion (same int8 weights, other kernels)."""
    import json

    import onnx

    fused = export(lora_run, int8=True, out=tmp_path / "fused")
    plain = export(lora_run, int8=True, out=tmp_path / "plain", fuse=False)
    ops = [n.op_type for n in onnx.load(str(fused / "model.int8.onnx")).graph.node]
    counts = json.loads((fused / "export.json").read_text())["int8_fused_operators"]
    assert counts["Attention"] >= 1 and ops.count("QAttention") == counts["Attention"], counts
    assert ops.count("SkipLayerNormalization") == counts["SkipLayerNormalization"] >= 2, counts
    assert "BiasGelu" in ops
    assert "QAttention" not in {n.op_type for n in onnx.load(str(plain / "model.int8.onnx")).graph.node}
    assert json.loads((plain / "export.json").read_text())["int8_fused_operators"] == {}
    texts = TEXTS * 3
    a = load_predictor(fused, backend="onnx-int8").predict_logits(texts)
    b = load_predictor(plain, backend="onnx-int8").predict_logits(texts)
    np.testing.assert_allclose(a, b, atol=0.05)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9


def test_a_failing_fusion_still_exports_the_plain_int8_graph(lora_run, tmp_path, monkeypatch):
    import json

    import onnxruntime.transformers.optimizer as optimizer

    def broken(*args, **kwargs):
        raise RuntimeError("no fusion today")

    monkeypatch.setattr(optimizer, "optimize_model", broken)
    with pytest.warns(UserWarning, match="fusion failed .*no fusion today"):
        folder = export(lora_run, int8=True, out=tmp_path / "plain")
    assert json.loads((folder / "export.json").read_text())["int8_fused_operators"] == {}
    proba = load_predictor(folder, backend="onnx-int8").predict_proba(TEXTS)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_an_export_folder_evaluates_like_its_run(lora_run, tmp_path):
    """`slimtext evaluate` takes the folder `export --out` wrote: the same split, the same int8
    graph, the same numbers as the run it came from."""
    from slimtext.recipes.evaluation import evaluate_run

    folder = export(lora_run, int8=True, out=tmp_path / "served")
    export(lora_run, int8=True)
    here, there = evaluate_run(folder, backend="onnx-int8"), evaluate_run(lora_run, backend="onnx-int8")
    assert here["n"] == there["n"] > 0
    for key in ("accuracy", "macro_f1", "loss"):
        assert here[key] == pytest.approx(there[key], abs=1e-6), key
    with pytest.raises(SlimtextError, match="neither a finished run .* nor a folder"):
        evaluate_run(tmp_path)
