"""`--precision auto`: the probe's decision rule, its cache (key and reuse), the choice in
summary.json, and bf16 autocast keeping fp32 parameters and optimizer state."""

from __future__ import annotations

import json

import pytest
import torch

from slimtext.config import RunConfig
from slimtext.errors import UnknownNameError
from slimtext.recipes.finetune import train
from slimtext.rundir import RunDir
from slimtext.train import precision
from slimtext.train.loop import TrainConfig, fit, make_optimizer, make_scheduler, train_step
from slimtext.train.precision import cache_key, decide, linear_shapes, probe, resolve

CPU = torch.device("cpu")


class FakeTimer:
    """Timings with a fixed fp32/bf16 ratio; counts its calls."""

    def __init__(self, speedup: float):
        self.speedup, self.calls = speedup, 0

    def __call__(self, shapes, rows, device):
        self.calls += 1
        return 0.013 * self.speedup, 0.013


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


@pytest.fixture(autouse=True)
def probe_small_models(monkeypatch):
    """These tests probe tiny models, which `resolve` otherwise leaves at fp32 unprobed."""
    monkeypatch.setattr(precision, "MIN_PROBE_WEIGHTS", 0)


def test_decision_rule():
    assert decide(1.3, 1.0) == "bf16"
    assert decide(1.1, 1.0) == "fp32"
    assert decide(1.2, 1.0) == "bf16"  # the threshold itself counts
    assert decide(0.5, 1.0) == "fp32"  # emulated bf16: slower


@pytest.mark.parametrize(("speedup", "expected"), [(1.3, "bf16"), (1.1, "fp32")])
def test_auto_follows_the_probe(speedup, expected):
    timer = FakeTimer(speedup)
    chosen, record = resolve("auto", mlp(), CPU, timer=timer)
    assert chosen == expected and record["choice"] == expected
    assert record["speedup"] == pytest.approx(speedup, abs=1e-3) and record["cached"] is False
    assert record["shapes"] == [[16, 3], [8, 16]] or record["shapes"] == [[8, 16], [16, 3]]
    assert resolve("fp32", mlp(), CPU, timer=timer) == ("fp32", None)  # explicit: no probe
    assert resolve("bf16", mlp(), CPU, timer=timer) == ("bf16", None)
    with pytest.raises(UnknownNameError, match="precision"):
        resolve("fp16", mlp(), CPU)


def test_probe_is_cached_per_machine_and_reused(monkeypatch):
    model, timer = mlp(), FakeTimer(1.3)
    first = probe(model, CPU, timer=timer)
    again = probe(model, CPU, timer=FakeTimer(1.1))  # a cache hit: the old numbers, no timing
    assert timer.calls == 1 and again["cached"] is True and again["choice"] == "bf16"
    assert again["fp32_s"] == first["fp32_s"]
    files = list((precision.cache_dir() / "precision").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["choice"] == "bf16"
    key = cache_key(CPU, linear_shapes(model), 1024)
    assert files[0].stem == key
    # another CPU model or another torch version: another key, a fresh probe
    with monkeypatch.context() as m:
        m.setattr(precision, "device_name", lambda device: "Some Other CPU")
        assert cache_key(CPU, linear_shapes(model), 1024) != key
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert cache_key(CPU, linear_shapes(model), 1024) != key
    other = probe(model, CPU, timer=FakeTimer(1.1))
    assert other["cached"] is False and other["choice"] == "fp32"


def test_real_probe_times_both_precisions():
    record = probe(mlp(), CPU, rows=64)
    assert record["fp32_s"] > 0 and record["bf16_s"] > 0 and record["choice"] in ("fp32", "bf16")


def test_the_choice_and_the_probe_go_into_summary(tiny_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "time_matmuls", FakeTimer(1.3))
    cfg = RunConfig()
    cfg.data.data, cfg.model.model, cfg.model.max_length = str(tiny_csv), "lstm", 32
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.threads = 1, 32, 1
    assert cfg.train.precision == "auto"  # the default
    s = train(cfg, out=tmp_path / "run", quiet=True)
    assert s["precision"] == "bf16" and s["precision_probe"]["speedup"] == pytest.approx(1.3, abs=1e-3)
    saved = RunDir(tmp_path / "run").read_summary()
    assert saved["precision"] == "bf16" and saved["precision_probe"]["choice"] == "bf16"
    monkeypatch.setattr(precision, "time_matmuls", FakeTimer(1.1))
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "other-cache"))
    s = train(cfg, out=tmp_path / "run2", quiet=True)
    assert s["precision"] == "fp32" and s["precision_probe"]["choice"] == "fp32"


def test_bf16_autocast_keeps_fp32_master_weights_and_optimizer_state(tmp_path):
    from test_speed_paths import random_split, tiny_classifier

    model = tiny_classifier()
    cfg = TrainConfig(epochs=1, batch_size=8, precision="bf16", optimizer="adamw")
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, 10)
    split = random_split(8)
    batch = {"input_ids": torch.randint(3, 50, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long),
             "labels": split.labels[:8], "index": torch.arange(8)}
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    loss = train_step(model, batch, lambda logits, b: torch.nn.functional.cross_entropy(logits, b["labels"]),
                      opt, sched, cfg, params)
    assert loss == loss  # finite
    assert any(not torch.equal(a, p) for a, p in zip(before, params))  # it did train
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in params)
    states = [opt.state[p] for p in params]
    assert states and all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32
                          for s in states)
    # a whole fit in bf16 also evaluates dev in bf16 and keeps fp32 weights
    result = fit(model, random_split(), random_split(20, seed=2), cfg, RunDir(tmp_path / "r"), 3, quiet=True)
    assert result["precision"] == "bf16" and "precision_probe" not in result
    assert all(p.dtype == torch.float32 for p in model.parameters())



def test_tiny_models_stay_fp32_without_a_probe(monkeypatch):
    monkeypatch.setattr(precision, "MIN_PROBE_WEIGHTS", 256 * 256)
    timer = FakeTimer(3.0)
    chosen, record = resolve("auto", mlp(), CPU, timer=timer)
    assert chosen == "fp32" and timer.calls == 0 and "too small" in record["reason"]
    big = torch.nn.Linear(384, 1536)
    assert resolve("auto", big, CPU, timer=timer)[0] == "bf16" and timer.calls == 1


def test_the_probe_leaves_the_global_rng_alone():
    model = mlp()
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    probe(model, CPU, rows=16)
    assert torch.equal(torch.rand(4), expected)  # a run that probes == a run that reads the cache


@pytest.mark.parametrize("native", [False, True])
def test_an_lstm_under_bf16_autocast_runs_where_onednn_has_no_bf16_rnn(monkeypatch, native):
    """Without native bf16 the recurrent layer runs in fp32 inside the autocast region (oneDNN
    cannot build a bf16 LSTM there: the quick study's LSTM failed on an AVX2-only EPYC)."""
    from slimtext.models import rnn

    if native and not rnn._cpu_has_bf16_rnn():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setattr(rnn, "_cpu_has_bf16_rnn", lambda: native)
    torch.manual_seed(0)
    net = rnn.RNNClassifier(rnn.RNNConfig(embed_dim=8, hidden_dim=8, vocab_size=20)).eval()
    ids = torch.randint(1, 20, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.inference_mode():
        ref = net(ids, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(ids, mask)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.05, rtol=0.05)
    if not native:  # the recurrent features themselves stayed fp32
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert net.features(ids, mask).dtype == torch.float32
