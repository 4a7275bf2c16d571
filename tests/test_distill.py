"""Distillation on tiny models: which teacher layers a student gets (1-based, weight by weight),
layer-spec parsing, the teacher-logit cache (hit, no teacher pass, key), and tiny end-to-end runs
(layer student, LoRA student, DistilRNN, resume) that reload through `slimtext.inference.predictor`."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import write_tiny_bert
from slimtext.checkpoint import build_model, load_model
from slimtext.config import RunConfig
from slimtext.data.registry import load_dataset
from slimtext.errors import SlimtextError
from slimtext.models import hub, students
from slimtext.models.encoder import load_encoder
from slimtext.recipes import distill as D
from slimtext.recipes import teacher_cache
from slimtext.recipes.finetune import encode_splits, train
from slimtext.rundir import RunDir
from slimtext.train.loop import evaluate

transformers = pytest.importorskip("transformers")

def tiny_checkpoint(folder, layers: int = 4):
    return write_tiny_bert(folder, layers=layers, distinct=True)


def distinct_teacher(folder, layers: int):
    """A teacher classifier whose every tensor is drawn afresh (a fine-tuned teacher's weights
    differ from the checkpoint's; the classifier head too)."""
    teacher, _ = hub.load_classifier(str(tiny_checkpoint(folder, layers)), 2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return teacher


def assert_layer_from(student_layer, teacher_layers, src: int):
    """Student layer == teacher layer `src` (1-based) tensor by tensor, != its neighbour."""
    s = student_layer.state_dict()
    same = teacher_layers[src - 1].state_dict()
    other = teacher_layers[src if src < len(teacher_layers) else src - 2].state_dict()
    assert s.keys() == same.keys()
    for name in s:
        assert torch.equal(s[name], same[name]), (src, name)
        assert not torch.equal(s[name], other[name]), (src, name)


@pytest.mark.parametrize(
    ("spec", "expected"), [("odd", [1, 3, 5]), ("even", [2, 4, 6]), ("1,4", [1, 4])]
)
def test_student_gets_exactly_the_listed_teacher_layers(tmp_path, spec, expected):
    teacher = distinct_teacher(tmp_path / "ckpt", layers=6)
    layers = students.parse_student_layers(spec, 6)
    assert layers == expected
    student = students.layer_student(teacher, layers, num_labels=2)
    assert len(student.encoder.layers) == len(expected) == student.encoder.config.num_layers
    for i, src in enumerate(expected):
        assert_layer_from(student.encoder.layers[i], teacher.encoder.layers, src)
    for part in ("embeddings", "pooler"):
        t_state = getattr(teacher.encoder, part).state_dict()
        for name, value in getattr(student.encoder, part).state_dict().items():
            assert torch.equal(value, t_state[name]), (part, name)
    for name, value in student.classifier.state_dict().items():  # the head starts as the teacher's
        assert torch.equal(value, teacher.classifier.state_dict()[name])
    assert student.pooling == teacher.pooling == "pooler"
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():  # copies, not shared tensors
        student.encoder.layers[0].attention.query.weight.add_(1.0)
    assert not torch.equal(
        student.encoder.layers[0].attention.query.weight,
        teacher.encoder.layers[expected[0] - 1].attention.query.weight,
    )


def test_checkpoint_rebuilds_a_full_student_from_the_base_checkpoint(tmp_path):
    folder = tiny_checkpoint(tmp_path / "ckpt", layers=4)
    cfg = RunConfig()
    cfg.model.model, cfg.distill.teacher, cfg.distill.student_layers = str(folder), "unused", "1,4"
    model = build_model(cfg, 2, tokenizer=None)
    base = load_encoder(folder)
    assert len(model.encoder.layers) == 2
    for i, src in enumerate([1, 4]):
        assert_layer_from(model.encoder.layers[i], base.layers, src)


@pytest.mark.parametrize(
    ("spec", "n", "k", "expected"),
    [
        ("odd", 12, None, [1, 3, 5, 7, 9, 11]),
        ("even", 12, None, [2, 4, 6, 8, 10, 12]),
        ("odd", 6, None, [1, 3, 5]),
        ("even", 6, None, [2, 4, 6]),
        ("odd", 5, None, [1, 3, 5]),
        ("first", 12, None, [1, 2, 3, 4, 5, 6]),
        ("last", 6, None, [4, 5, 6]),
        ("first", 6, 2, [1, 2]),
        ("last:2", 12, None, [11, 12]),
        ("LAST:2", 12, 2, [11, 12]),
        (" 1, 4,7 ", 12, None, [1, 4, 7]),
        ("12", 12, None, [12]),
        ("odd", 6, 3, [1, 3, 5]),
    ],
)
def test_parse_student_layers(spec, n, k, expected):
    assert students.parse_student_layers(spec, n, k) == expected


@pytest.mark.parametrize(
    ("spec", "n", "k", "match"),
    [
        ("0,2", 6, None, "numbered from 1"),
        ("1,7", 6, None, r"\[7\] out of range"),
        ("3,1", 6, None, "increasing"),
        ("2,2", 6, None, "twice"),
        ("1;4", 6, None, "comma list"),
        ("", 6, None, "comma list"),
        ("odd", 6, 2, "picks 3"),
        ("first", 6, 7, "1..6"),
        ("first:x", 6, None, "first:K"),
        ("first:2", 6, 3, "disagrees"),
        ("middle:2", 6, None, "layer selection"),
        ("even", 1, None, "selects no layer"),
    ],
)
def test_parse_student_layers_errors(spec, n, k, match):
    with pytest.raises(SlimtextError, match=match):
        students.parse_student_layers(spec, n, k)


# --- end to end on a tiny teacher -----------------------------------------------------------------


def tiny_cfg(csv, model: str, epochs: int = 1) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data, cfg.model.model, cfg.model.max_length = str(csv), model, 32
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = epochs, 16, 0.01, 1
    return cfg


@pytest.fixture
def teacher_run(tiny_csv, tmp_path):
    train(
        tiny_cfg(tiny_csv, str(tiny_checkpoint(tmp_path / "ckpt"))),
        out=tmp_path / "teacher",
        quiet=True,
    )
    return tmp_path / "teacher"


@pytest.fixture
def teacher_passes(monkeypatch):
    """Counts teacher forward passes (distill runs the teacher only through `predict_logits`)."""
    calls = []
    real = teacher_cache.predict_logits

    def counting(model, split, *a, **kw):
        calls.append(len(split))
        return real(model, split, *a, **kw)

    # looked up where `teacher_logits` runs the teacher
    monkeypatch.setattr(teacher_cache, "predict_logits", counting)
    return calls


def student_cfg(
    teacher_run, student: str = "layers", method: str = "full", epochs: int = 1
) -> RunConfig:
    cfg = tiny_cfg("unused.csv", "lstm", epochs)
    cfg.data = RunConfig().data  # nothing asked: the teacher's data is used
    cfg.model.method = method
    cfg.distill.teacher, cfg.distill.student = str(teacher_run), student
    return cfg


def n_train(teacher_run) -> int:
    return len(RunDir(teacher_run).read_json("splits.json")["train"])


def assert_reloads(run_dir, summary):
    """`load_model` rebuilds the student exactly: it reproduces the summary's test metrics."""
    model, tok, cfg, labels = load_model(run_dir)
    test = encode_splits(load_dataset(cfg.data), tok)["test"]
    metrics, _ = evaluate(model, test, len(labels))
    assert metrics["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-5)
    assert metrics["accuracy"] == summary["test"]["accuracy"]
    return model


def test_students_share_one_teacher_pass(teacher_run, tmp_path, teacher_passes):
    n = n_train(teacher_run)
    first = D.distill(student_cfg(teacher_run), out=tmp_path / "odd", quiet=True)
    assert (
        teacher_passes == [n]
        and first["cache_hit"] is False
        and first["teacher_logits_seconds"] > 0
    )
    assert (
        first["student_layers"] == [1, 3]
        and first["kd_alpha"] == 0.5
        and first["temperature"] == 2.0
    )
    assert (
        first["teacher"] == str(teacher_run.resolve())
        and first["teacher_summary"]["method"] == "full"
    )
    # --precision auto: the logits in the precision the teacher itself ran in
    ran = RunDir(teacher_run).read_json("summary.json")["precision"]
    assert first["teacher_logits_precision"] == ran and first["teacher_logits_cache"].endswith(
        ".safetensors" if ran == "fp32" else "-bf16.safetensors")
    cfg = RunConfig.from_dict(RunDir(tmp_path / "odd").read_config())
    assert cfg.distill.student_layers == "1,3" and cfg.data.data.endswith("tiny.csv")
    model = assert_reloads(tmp_path / "odd", first)
    assert len(model.encoder.layers) == 2

    lora = D.distill(student_cfg(teacher_run, method="lora"), out=tmp_path / "lora", quiet=True)
    rnn = D.distill(student_cfg(teacher_run, student="gru"), out=tmp_path / "gru", quiet=True)
    assert teacher_passes == [n], "the teacher ran again"
    for s in (lora, rnn):
        assert s["cache_hit"] is True and s["teacher_logits_seconds"] == 0.0
        assert s["teacher_logits_cache"] == first["teacher_logits_cache"]
    assert lora["trainable_params"] < lora["total_params"] and lora["lora_layers"]
    assert rnn["model"] == "gru" and rnn["student_layers"] is None
    assert_reloads(tmp_path / "lora", lora)
    assert_reloads(tmp_path / "gru", rnn)
    assert {p.name for p in (tmp_path / "gru").iterdir()} >= {
        "summary.json",
        "model.safetensors",
        "tokenizer",
    }


def test_cache_key_follows_the_teacher_weights(teacher_run, tmp_path, teacher_passes):
    ids = load_dataset(RunConfig.from_dict(RunDir(teacher_run).read_config()).data).split_ids()[
        "train"
    ]
    key = teacher_cache.cache_key(teacher_run, ids)
    assert key == teacher_cache.cache_key(teacher_run, ids)
    assert key != teacher_cache.cache_key(teacher_run, ids[::-1]) and key != teacher_cache.cache_key(teacher_run, ids[:-1])
    D.distill(student_cfg(teacher_run, "lstm"), out=tmp_path / "a", quiet=True)
    weights = RunDir(teacher_run).weights_path
    sd = load_file(weights)
    sd["classifier.bias"] = sd["classifier.bias"] + 1.0
    save_file(sd, weights)
    assert teacher_cache.cache_key(teacher_run, ids) != key
    s = D.distill(student_cfg(teacher_run, "lstm"), out=tmp_path / "b", quiet=True)
    assert s["cache_hit"] is False and teacher_passes == [len(ids), len(ids)]
    assert len(list((teacher_cache.cache_path(key).parent).glob("*.safetensors"))) == 2


def test_cached_logits_join_by_example_id():
    logits = torch.arange(6.0).view(3, 2)  # (N, C)
    assert teacher_cache.align_logits(["a", "b", "c"], logits, ["a", "b", "c"]) is logits
    torch.testing.assert_close(teacher_cache.align_logits(["a", "b", "c"], logits, ["c", "a"]), logits[[2, 0]])
    with pytest.raises(SlimtextError, match="lack 1 train examples"):
        teacher_cache.align_logits(["a", "b"], logits[:2], ["a", "z"])


def test_interrupted_lora_student_resumes_to_the_same_weights(
    teacher_run, tmp_path, monkeypatch, teacher_passes
):
    whole = D.distill(
        student_cfg(teacher_run, method="lora", epochs=2), out=tmp_path / "whole", quiet=True
    )

    class Killed(Exception):
        pass

    def kill(pid, sig):
        raise Killed

    monkeypatch.setenv("SLIMTEXT_KILL_AFTER_EPOCH", "1")
    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(Killed):
        D.distill(
            student_cfg(teacher_run, method="lora", epochs=2), out=tmp_path / "cut", quiet=True
        )
    monkeypatch.delenv("SLIMTEXT_KILL_AFTER_EPOCH")
    assert not RunDir(tmp_path / "cut").is_finished()
    resumed = D.distill(
        RunConfig(), out=tmp_path / "cut", resume=True, quiet=True
    )  # cfg from the run dir
    assert teacher_passes == [n_train(teacher_run)]
    assert resumed["epochs_run"] == 2 and resumed["cache_hit"] is True
    a, b = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "cut" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == whole["test"]


def test_user_errors(teacher_run, tmp_path):
    cfg = student_cfg(teacher_run)
    cfg.data.data = "cola"
    with pytest.raises(SlimtextError, match="teacher was trained with data.data"):
        D.distill(cfg, out=tmp_path / "x", quiet=True)
    with pytest.raises(SlimtextError, match="unknown student 'bert'"):
        D.distill(student_cfg(teacher_run, student="bert"), out=tmp_path / "x", quiet=True)
    cfg = student_cfg(teacher_run)
    cfg.distill.student_layers = "0,1"
    with pytest.raises(SlimtextError, match="numbered from 1"):
        D.distill(cfg, out=tmp_path / "x", quiet=True)
    cfg = student_cfg(teacher_run)
    cfg.distill.kd_alpha = 2.0
    with pytest.raises(SlimtextError, match="kd_alpha"):
        D.distill(cfg, out=tmp_path / "x", quiet=True)
    cfg = student_cfg(teacher_run)
    cfg.distill.teacher = str(tmp_path / "nowhere")
    with pytest.raises(SlimtextError, match="not a run directory"):
        D.distill(cfg, out=tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()
