"""The fast training paths: head-only training on cached features, LoRA without gradient work
for frozen weights, the fused optimizer and bf16 autocast."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.errors import UnknownNameError
from slimtext.models.encoder import Encoder, EncoderClassifier, EncoderConfig
from slimtext.models.lora import LoRAConfig, inject
from slimtext.recipes.finetune import train
from slimtext.rundir import RunDir, load_safetensors
from slimtext.train import head_cache, loop
from slimtext.train.loop import TrainConfig, fit, make_optimizer, predict_logits

transformers = pytest.importorskip("transformers")

WORDS = "the a movie film plot actor scene really quite very good great fine bad awful poor".split()


def tiny_bert_folder(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, hidden-32 BERT checkpoint with a WordPiece vocabulary of the tiny CSV's words."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37,
                                     max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


def tiny_run_config(model: Path, data: Path, method: str, epochs: int = 2, **train) -> RunConfig:
    return RunConfig.from_dict({
        "data": {"data": str(data)},
        "model": {"model": str(model), "method": method, "max_length": 32},
        "train": {"epochs": epochs, "batch_size": 16, "lr": 5e-3, "threads": 1, **train},
        "lora": {"rank": 4, "alpha": 8},
    })


def tiny_classifier(dropout: float = 0.1, seed: int = 0) -> EncoderClassifier:
    torch.manual_seed(seed)
    config = EncoderConfig(family="bert", vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                           intermediate_size=24, max_position_embeddings=64, has_pooler=True,
                           hidden_dropout=dropout, attention_dropout=dropout)
    return EncoderClassifier(Encoder(config), num_labels=3, dropout=dropout)


def random_split(n: int = 70, seed: int = 1) -> EncodedSplit:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 20, (n,), generator=g).tolist()
    ids = [torch.randint(3, 50, (k,), generator=g).tolist() for k in lengths]
    return EncodedSplit(ids, torch.randint(0, 3, (n,), generator=g), pad_id=0)


def freeze_all_but_head(model: torch.nn.Module) -> torch.nn.Module:
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.")
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cached_features_give_the_full_models_eval_logits():
    model = freeze_all_but_head(tiny_classifier()).eval()
    train_split, dev_split = random_split(40, seed=1), random_split(25, seed=2)
    assert head_cache.supports(model)
    head, cached = head_cache.cache(model, {"train": train_split, "dev": dev_split}, TrainConfig())
    assert [n for n, _ in head.named_parameters()] == ["classifier.weight", "classifier.bias"]
    for split, name in ((train_split, "train"), (dev_split, "dev")):
        assert torch.equal(cached[name].lengths, split.lengths)  # same length buckets as uncached
        torch.testing.assert_close(predict_logits(head, cached[name]), predict_logits(model, split),
                                   atol=1e-5, rtol=1e-5)
    assert not head_cache.supports(tiny_classifier())  # full fine-tuning: the encoder trains


def test_features_persist_on_disk_keyed_by_frozen_weights_and_tokens(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path))
    model = freeze_all_but_head(tiny_classifier()).eval()
    split = random_split(30, seed=4)
    first, _ = head_cache.cache(model, {"train": split}, TrainConfig())
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    real = head_cache.pooled_features
    monkeypatch.setattr(head_cache, "pooled_features", lambda *a, **k: pytest.fail("encoder ran"))
    torch.nn.init.normal_(model.classifier.weight)  # another head (seed): the same features
    again, _ = head_cache.cache(model, {"train": split}, TrainConfig())
    assert torch.equal(again.features, first.features)
    monkeypatch.setattr(head_cache, "pooled_features", real)
    other = random_split(30, seed=5)  # other tokens: encoded, not read
    fresh, _ = head_cache.cache(model, {"train": other}, TrainConfig())
    assert not torch.equal(fresh.features, first.features)
    with torch.no_grad():  # a changed frozen weight: another key
        next(p for n, p in model.named_parameters() if not n.startswith("classifier.")).add_(0.5)
    changed, _ = head_cache.cache(model, {"train": split}, TrainConfig())
    assert not torch.allclose(changed.features, first.features)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 3
    monkeypatch.setenv("SLIMTEXT_FEATURE_CACHE", "0")
    head_cache.cache(model, {"train": random_split(9, seed=6)}, TrainConfig())
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 3


def test_cached_head_training_matches_the_uncached_loop_without_dropout(tmp_path):
    base = freeze_all_but_head(tiny_classifier(dropout=0.0))
    train_split, dev_split = random_split(70, seed=1), random_split(30, seed=2)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, seed=3)
    uncached = copy.deepcopy(base)
    fit(uncached, train_split, dev_split, cfg, RunDir(tmp_path / "a"), 3, quiet=True)
    model = copy.deepcopy(base)
    head, cached = head_cache.cache(model, {"train": train_split, "dev": dev_split}, cfg)
    fit(head, cached["train"], cached["dev"], cfg, RunDir(tmp_path / "b"), 3, quiet=True)
    for name in ("weight", "bias"):  # the full model's head is the one the cached path trained
        torch.testing.assert_close(getattr(model.classifier, name),
                                   getattr(uncached.classifier, name), atol=1e-5, rtol=1e-4)
    rows_a, rows_b = RunDir(tmp_path / "a").read_metrics(), RunDir(tmp_path / "b").read_metrics()
    assert len(rows_a) == len(rows_b) == 3
    for a, b in zip(rows_a, rows_b):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["dev_macro_f1"] == pytest.approx(b["dev_macro_f1"], abs=1e-9)
    saved = load_safetensors(RunDir(tmp_path / "b").weights_path)
    assert sorted(saved) == ["classifier.bias", "classifier.weight"]


def assert_reloaded_model_gives_the_summarys_scores(run: Path, summary: dict) -> None:
    """The run's full model, reloaded, scores every non-train split as its summary.json says."""
    from slimtext.checkpoint import load_model
    from slimtext.data.registry import load_dataset
    from slimtext.recipes.finetune import encode_splits
    from slimtext.train.loop import evaluate

    model, tok, rcfg, labels = load_model(run)
    for name, split in encode_splits(load_dataset(rcfg.data), tok).items():
        if name != "train":
            metrics, _ = evaluate(model, split, len(labels))
            assert metrics["loss"] == pytest.approx(summary["splits"][name]["loss"], abs=1e-5)
            assert metrics["accuracy"] == summary["splits"][name]["accuracy"]


def test_head_run_uses_the_cache_reloads_and_resumes_exactly(tmp_path, tiny_csv):
    from slimtext.inference.predictor import load_predictor

    folder = tiny_bert_folder(tmp_path / "bert")
    cfg = tiny_run_config(folder, tiny_csv, "head", epochs=2)
    summary = train(cfg, tmp_path / "run", quiet=True)
    assert summary["feature_cache_seconds"] > 0 and summary["epochs_run"] == 2
    # dev/test were scored from the cached features: the full reloaded model gives the same numbers
    assert_reloaded_model_gives_the_summarys_scores(tmp_path / "run", summary)
    assert summary["inference_ms_per_example"] > 0 and summary["machine"]["cpu"]
    predictor = load_predictor(tmp_path / "run")
    assert predictor.predict_proba(["a good movie", "bad"]).shape == (2, 2)
    # a run killed after epoch 1 and resumed ends with exactly the same weights
    script = ("import sys; from pathlib import Path; from slimtext.config import RunConfig; "
              "from slimtext.recipes.finetune import train; import yaml; "
              "train(RunConfig.from_dict(yaml.safe_load(Path(sys.argv[1]).read_text())), "
              "Path(sys.argv[2]), quiet=True)")
    cfg.save(tmp_path / "cfg.yaml")
    env = {**os.environ, "SLIMTEXT_KILL_AFTER_EPOCH": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cfg.yaml"),
                           str(tmp_path / "killed")], env=env, capture_output=True)
    assert proc.returncode != 0 and (tmp_path / "killed" / "checkpoint" / "state.pt").exists()
    train(cfg, tmp_path / "killed", resume=True, quiet=True)
    full = load_safetensors(tmp_path / "run" / "checkpoint" / "model.safetensors")
    resumed = load_safetensors(tmp_path / "killed" / "checkpoint" / "model.safetensors")
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_bf16_head_run_scores_dev_and_test_from_fp32_features_kept_for_the_next_seed(
        tmp_path, tiny_csv, monkeypatch):
    monkeypatch.setenv("SLIMTEXT_CACHE", str(tmp_path / "cache"))
    folder = tiny_bert_folder(tmp_path / "bert")
    summary = train(tiny_run_config(folder, tiny_csv, "head", epochs=1, precision="bf16"), tmp_path / "run",
                    quiet=True)
    assert summary["precision"] == "bf16"
    assert_reloaded_model_gives_the_summarys_scores(tmp_path / "run", summary)  # in fp32
    tables = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(tables) == 4  # train and dev in bf16 (training), dev and test in fp32 (scoring)
    # the next seed encodes nothing: every table comes from the disk cache
    monkeypatch.setattr(head_cache, "pooled_features", lambda *a, **k: pytest.fail("encoder ran"))
    again = train(tiny_run_config(folder, tiny_csv, "head", epochs=1, precision="bf16", seed=1),
                  tmp_path / "run-s1", quiet=True)
    assert again["test"]["accuracy"] is not None
    assert sorted((tmp_path / "cache" / "features").glob("*.safetensors")) == tables


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_first_token_only_last_layer_gives_the_same_cls_vector(family):
    torch.manual_seed(0)
    config = EncoderConfig(family=family, vocab_size=50, hidden_size=16, num_layers=2, num_heads=2,
                           intermediate_size=24, max_position_embeddings=64,
                           pad_token_id=0 if family == "bert" else 1)
    encoder = Encoder(config).eval()
    if family == "mpnet":  # a visible relative-position bias
        torch.nn.init.normal_(encoder.relative_attention_bias.weight, 0.0, 1.0)
    split = random_split(6)
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in split.input_ids],
                                          batch_first=True, padding_value=config.pad_token_id)
    mask = (ids != config.pad_token_id).long()
    with torch.no_grad():
        first = encoder(ids, mask, first_token_only=True)
        full = encoder(ids, mask)
    assert first.shape == (6, 1, 16)
    torch.testing.assert_close(first[:, 0], full[:, 0], atol=1e-6, rtol=1e-5)


def test_lora_computes_no_gradient_for_frozen_weights():
    model = tiny_classifier()
    inject(model, LoRAConfig(rank=2, alpha=4, targets="query,value"))
    seen = {}

    def record(module, args, out):
        seen["embeddings_need_grad"] = out.requires_grad

    model.encoder.embeddings.register_forward_hook(record)
    split = random_split(8)
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in split.input_ids],
                                          batch_first=True)
    model(ids, ids.ne(0).long()).logsumexp(-1).sum().backward()
    assert seen["embeddings_need_grad"] is False  # backward stops at the first adapter
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(dict(model.named_parameters())[n].grad is None for n in frozen)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("classifier.") for n in trained)
    assert all(dict(model.named_parameters())[n].grad is not None for n in trained)


def test_fused_optimizer_bf16_autocast_and_bad_precision(tmp_path):
    model = tiny_classifier()
    opt = make_optimizer(model, TrainConfig(optimizer="adamw"))
    assert opt.defaults["fused"] is True
    cfg = TrainConfig(epochs=1, batch_size=8, precision="bf16")
    result = fit(model, random_split(), random_split(20, seed=2), cfg, RunDir(tmp_path / "r"), 3,
                 quiet=True)
    assert result["epochs_run"] == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights
    rows = RunDir(tmp_path / "r").read_metrics()
    assert torch.isfinite(torch.tensor(rows[0]["train_loss"]))
    with pytest.raises(UnknownNameError, match="precision"):
        fit(model, random_split(), random_split(), TrainConfig(precision="fp16"),
            RunDir(tmp_path / "s"), 3, quiet=True)


def test_fit_notes_its_progress_for_a_studys_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)  # every step
    noted = []
    real = RunDir.write_progress
    monkeypatch.setattr(RunDir, "write_progress", lambda self, *a: (noted.append(a), real(self, *a)))
    fit(tiny_classifier(), random_split(20), random_split(10, seed=2), TrainConfig(epochs=2, batch_size=8),
        RunDir(tmp_path / "r"), 3, quiet=True)
    steps = noted[0][3]
    assert steps == 3 and [a[:4] for a in noted] == [(e, 2, s, steps) for e in (1, 2) for s in (1, 2, 3)]
    assert RunDir(tmp_path / "r").describe_progress() == "training done, evaluating"
    noted.clear()
    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 3600.0)  # the first and last step of each epoch only
    fit(tiny_classifier(), random_split(20), random_split(10, seed=2), TrainConfig(epochs=1, batch_size=8),
        RunDir(tmp_path / "s"), 3, quiet=True)
    assert [a[:3] for a in noted] == [(1, 1, 1), (1, 1, 3)]
