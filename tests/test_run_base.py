"""What a transformer run keeps of its base checkpoint (`checkpoint.save_base`): a full run (or a
layer student) its config.json, and reloads from it alone, base folder gone or `model:` edited; a
head/LoRA run the sha256 of its frozen base, and refuses other weights. Runs without these files
load as before. Tiny BERT checkpoints, one epoch each."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from conftest import write_tiny_bert
from hf_tiny import tiny_checkpoint
from slimtext.checkpoint import BASE_CONFIG, BASE_RECORD, load_model
from slimtext.config import RunConfig
from slimtext.data.sources import sha256_file
from slimtext.errors import SlimtextError
from slimtext.inference.export import export
from slimtext.models import hf_keys, hub
from slimtext.recipes import distill as D
from slimtext.recipes.finetune import train

pytest.importorskip("transformers")

IDS = torch.tensor([[2, 5, 9, 14, 3, 0], [2, 7, 3, 0, 0, 0]])  # (B, T) ids of the tiny vocab
MASK = (IDS != 0).long()


def tiny_cfg(csv, model, method: str = "full", pooling: str = "auto") -> RunConfig:
    cfg = RunConfig()
    cfg.data.data, cfg.model.model, cfg.model.method, cfg.model.pooling = str(csv), str(model), method, pooling
    cfg.model.max_length = 32
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 1, 16, 1e-3, 1
    cfg.lora.rank, cfg.lora.alpha = 4, 8
    return cfg


def logits(run) -> torch.Tensor:
    model, *_ = load_model(run)
    with torch.no_grad():
        return model(IDS, MASK)


def no_base_reads(monkeypatch):
    """Fail any resolution of a model name or read of checkpoint weights."""
    def refuse(*a, **k):
        raise AssertionError("the base checkpoint was read")

    monkeypatch.setattr(hub, "resolve", refuse)
    monkeypatch.setattr(hf_keys, "read_checkpoint", refuse)


def set_model(run, model: str) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["model"] = model
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.parametrize("pooling", ["auto", "mean"])
def test_full_run_loads_without_its_base_checkpoint(tiny_csv, tmp_path, monkeypatch, pooling):
    base = write_tiny_bert(tmp_path / "base")  # BertModel: has a pooler
    run = tmp_path / "run"
    train(tiny_cfg(tiny_csv, base, pooling=pooling), out=run, quiet=True)
    assert json.loads((run / BASE_CONFIG).read_text()) == json.loads((base / "config.json").read_text())
    assert not (run / BASE_RECORD).exists()
    before = logits(run)

    shutil.move(base, tmp_path / "moved")  # the base folder is gone
    with monkeypatch.context() as m:
        no_base_reads(m)
        torch.testing.assert_close(logits(run), before, rtol=0, atol=0)

    other = write_tiny_bert(tmp_path / "other", layers=3, seed=1, distinct=True)
    set_model(run, str(other))  # config.yaml edited to another checkpoint: still the run's own model
    torch.testing.assert_close(logits(run), before, rtol=0, atol=0)
    set_model(run, "hf:someone/not-downloaded")
    torch.testing.assert_close(logits(run), before, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["mpnet", "gpt2"])
def test_full_mpnet_and_gpt2_runs_load_without_their_base(tiny_csv, tmp_path, monkeypatch, family):
    base = tiny_checkpoint(tmp_path / "base", family)
    run = tmp_path / "run"
    train(tiny_cfg(tiny_csv, base), out=run, quiet=True)
    before = logits(run)
    shutil.rmtree(base)
    with monkeypatch.context() as m:
        no_base_reads(m)
        torch.testing.assert_close(logits(run), before, rtol=0, atol=0)


def test_a_merged_export_of_a_lora_run_stands_alone(tiny_csv, tmp_path, monkeypatch):
    base = write_tiny_bert(tmp_path / "base")
    run = tmp_path / "run"
    train(tiny_cfg(tiny_csv, base, "lora"), out=run, quiet=True)
    before = logits(run)
    merged = export(run, merged=True, out=tmp_path / "merged")
    assert (merged / BASE_CONFIG).is_file() and not (merged / BASE_RECORD).exists()
    shutil.rmtree(base)
    with monkeypatch.context() as m:
        no_base_reads(m)
        torch.testing.assert_close(logits(merged), before, rtol=1e-5, atol=1e-6)


def test_a_run_from_before_base_config_loads_through_its_base_as_before(tiny_csv, tmp_path):
    base = write_tiny_bert(tmp_path / "base")
    run = tmp_path / "run"
    train(tiny_cfg(tiny_csv, base), out=run, quiet=True)
    before = logits(run)
    shutil.rmtree(run / "base")
    torch.testing.assert_close(logits(run), before, rtol=0, atol=0)
    shutil.rmtree(base)
    with pytest.raises(SlimtextError):  # as before: the base checkpoint is needed
        load_model(run)


@pytest.mark.parametrize("method", ["head", "lora"])
def test_head_and_lora_runs_refuse_other_base_weights(tiny_csv, tmp_path, method):
    base = write_tiny_bert(tmp_path / "base")
    run = tmp_path / "run"
    train(tiny_cfg(tiny_csv, base, method), out=run, quiet=True)
    assert not (run / BASE_CONFIG).exists()
    record = json.loads((run / BASE_RECORD).read_text())
    assert record == {"model": str(base), "folder": str(base), "sha256": sha256_file(base / "model.safetensors")}
    before = logits(run)

    shutil.copytree(base, tmp_path / "copy")  # the same weights elsewhere: fine
    set_model(run, str(tmp_path / "copy"))
    torch.testing.assert_close(logits(run), before, rtol=0, atol=0)

    write_tiny_bert(tmp_path / "copy", seed=1, distinct=True)  # weights replaced in place
    with pytest.raises(SlimtextError, match=f"was trained on base weights sha256 {record['sha256'][:16]}") as err:
        load_model(run)
    assert str(tmp_path / "copy") in str(err.value)

    (run / BASE_RECORD).unlink()  # a run from before the record: not checked, as before
    load_model(run)


def test_weights_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    base = write_tiny_bert(tmp_path / "base")
    digest = hub.weights_sha256(base)
    assert digest == sha256_file(base / "model.safetensors")
    with monkeypatch.context() as m:
        m.setattr(hub, "sha256_file", lambda p: pytest.fail("hashed again"))
        assert hub.weights_sha256(base) == digest
    write_tiny_bert(base, seed=1, distinct=True)  # rewritten: size or mtime differ
    assert hub.weights_sha256(base) == sha256_file(base / "model.safetensors") != digest


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layer_student_loads_without_any_base_checkpoint(tiny_csv, tmp_path, monkeypatch, method):
    base = write_tiny_bert(tmp_path / "base", layers=4, distinct=True)
    teacher = tmp_path / "teacher"
    train(tiny_cfg(tiny_csv, base), out=teacher, quiet=True)
    cfg = tiny_cfg("unused.csv", "lstm", method)
    cfg.data = RunConfig().data  # the teacher's
    cfg.distill.teacher, cfg.distill.student, cfg.distill.student_layers = str(teacher), "layers", "1,4"
    student = tmp_path / "student"
    D.distill(cfg, out=student, quiet=True)
    assert (student / BASE_CONFIG).read_bytes() == (base / "config.json").read_bytes()
    before = logits(student)

    shutil.rmtree(base)
    shutil.rmtree(teacher)
    with monkeypatch.context() as m:
        no_base_reads(m)
        model, *_ = load_model(student)
        assert len(model.encoder.layers) == 2
        torch.testing.assert_close(logits(student), before, rtol=0, atol=0)
