"""The training loop and run directories, on tiny models and a tiny CSV: summary contents,
parameter counts, atomic writes, resume after a real SIGKILL, optimizers, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from slimtext.config import RunConfig, apply_overrides
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.recipes.finetune import prepare, train
from slimtext.rundir import RunDir, atomic_write_text

TIMING = {"epoch_seconds", "examples_per_s", "peak_memory_mb"}


def tiny_cfg(csv, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data = str(csv)
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 3, 16, 0.02, 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_train_writes_a_complete_run(tiny_csv, tmp_path):
    s = train(tiny_cfg(tiny_csv), out=tmp_path / "run", quiet=True)
    run = RunDir(tmp_path / "run")
    for name in ("config.yaml", "command.txt", "metrics.jsonl", "summary.json", "model.safetensors",
                 "labels.json", "splits.json", "tokenizer/tokenizer_meta.json", "checkpoint/state.pt"):
        assert (run.path / name).exists(), name
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "dev_loss", "dev_accuracy", "dev_macro_f1", "dev_mcc", "dev_roc_auc"} <= set(rows[0])
    assert s["test"]["accuracy"] > 0.8  # the toy task is separable by one cue word
    assert not list(run.path.glob("**/*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for weights in ("model.safetensors", "checkpoint/model.safetensors"):  # readable by a server's user
        assert (run.path / weights).stat().st_mode & 0o777 == 0o666 & ~umask, weights
    model = prepare(tiny_cfg(tiny_csv)).model
    assert s["total_params"] == sum(p.numel() for p in model.parameters())
    assert s["trainable_params"] == s["total_params"]


def test_head_method_counts_only_the_head(tiny_csv, tmp_path):
    cfg = tiny_cfg(tiny_csv, epochs=1)
    cfg.model.method = "head"
    s = train(cfg, out=tmp_path / "run", quiet=True)
    p = prepare(cfg)
    assert s["trainable_params"] == sum(q.numel() for q in p.model.classifier.parameters())
    assert s["total_params"] == sum(q.numel() for q in p.model.parameters())


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "slimtext", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_killed_run_resumes_to_the_same_result(tiny_csv, tmp_path):
    args = ["train", "--data", str(tiny_csv), "--rnn-embed-dim", "16", "--rnn-hidden-dim", "16", "--epochs", "3",
            "--batch-size", "16", "--lr", "0.02", "--threads", "1", "--quiet"]
    full = _cli(*args, "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    killed = _cli(*args, "--out", str(tmp_path / "killed"), env={"SLIMTEXT_KILL_AFTER_EPOCH": "1"})
    assert killed.returncode == -9  # a real SIGKILL right after epoch 1 was written
    run = RunDir(tmp_path / "killed")
    assert len(run.read_metrics()) == 1 and not run.is_finished()
    resumed = _cli("train", "--resume", str(tmp_path / "killed"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a, b = RunDir(tmp_path / "full"), run
    assert _strip(a.read_metrics()) == _strip(b.read_metrics())
    assert a.read_summary()["test"] == b.read_summary()["test"]
    from safetensors.torch import load_file

    wa, wb = load_file(a.weights_path), load_file(b.weights_path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_refuses_to_overwrite_and_says_how_to_resume(tiny_csv, tmp_path):
    cfg = tiny_cfg(tiny_csv, epochs=1)
    train(cfg, out=tmp_path / "r", quiet=True)
    with pytest.raises(SlimtextError, match="already holds a finished run"):
        train(cfg, out=tmp_path / "r", quiet=True)
    (tmp_path / "r" / "summary.json").unlink()
    with pytest.raises(SlimtextError, match="--resume"):
        train(cfg, out=tmp_path / "r", quiet=True)


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(tiny_csv, tmp_path, opt):
    lr = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.005}[opt]
    s = train(tiny_cfg(tiny_csv, optimizer=opt, lr=lr, epochs=4), out=tmp_path / opt, quiet=True)
    rows = RunDir(tmp_path / opt).read_metrics()
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert s["test"]["accuracy"] > 0.6


def test_unknown_optimizer_lists_valid_names(tiny_csv, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown optimizer 'adamx'; valid optimizers: adam, adamw, rmsprop, sgd"):
        train(tiny_cfg(tiny_csv, optimizer="adamx"), out=tmp_path / "r", quiet=True)
    assert not (tmp_path / "r" / "summary.json").exists()


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # fails inside the write
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_overrides_and_config_errors():
    d = apply_overrides({}, ["train.lr=0.5", "epochs=2", "lora.rslora=true"])
    assert d == {"train": {"lr": 0.5, "epochs": 2}, "lora": {"rslora": True}}
    with pytest.raises(SlimtextError, match="unknown"):
        apply_overrides({}, ["train.lrr=1"])
    with pytest.raises(SlimtextError, match="unknown key"):
        RunConfig.from_dict({"train": {"nope": 1}})


def test_cli_train_predict_evaluate(tiny_csv, tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--data", str(tiny_csv), "--epochs", "3", "--rnn-hidden-dim", "16", "--lr", "0.02",
             "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "macro-F1" in r.stdout and "test" in r.stdout
    p = _cli("predict", str(out), "a really good movie", "an awful plot")
    assert p.returncode == 0, p.stderr
    assert [line.split("\t")[0] for line in p.stdout.splitlines()] == ["pos", "neg"]
    e = _cli("evaluate", str(out), "--split", "test")
    assert json.loads(e.stdout)["accuracy"] == RunDir(out).read_summary()["test"]["accuracy"]


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    r = _cli("train", "--data", "davidsn", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "error: unknown dataset 'davidsn'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import stat

    atomic_write_text(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask


def test_default_run_serves_the_best_loadable_model_tfidf_included(tiny_csv, tmp_path):
    from slimtext.experiments.select import default_run
    from slimtext.inference.predictor import load_predictor
    from slimtext.recipes.baseline import train_baseline

    cfg = tiny_cfg(tiny_csv, epochs=1)
    train(cfg, out=tmp_path / "runs" / "lstm", quiet=True)
    train_baseline(cfg, tmp_path / "runs" / "tfidf", quiet=True)
    for name, f1 in (("tfidf", 1.0), ("lstm", 0.0)):  # the baseline scores best on dev
        s = RunDir(tmp_path / "runs" / name).read_summary()
        s["dev"]["macro_f1"] = f1
        RunDir(tmp_path / "runs" / name).write_summary(s)
    chosen = default_run(tmp_path / "runs")
    assert chosen == tmp_path / "runs" / "tfidf"  # it loads now (TfidfPredictor)
    assert load_predictor(chosen).predict("a good movie") in ("neg", "pos")
    (chosen / "tfidf.safetensors").unlink()  # a run it cannot load is never chosen
    assert default_run(tmp_path / "runs") == tmp_path / "runs" / "lstm"


def test_progress_bars_follow_quiet_and_slimtext_quiet(monkeypatch):
    from slimtext.train.loop import show_progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.delenv("SLIMTEXT_QUIET", raising=False)
    assert show_progress() and not show_progress(quiet=True)
    monkeypatch.setenv("SLIMTEXT_QUIET", "1")
    assert not show_progress()


def test_an_option_given_at_its_default_still_overrides_the_config_file(tmp_path):
    from slimtext.config import from_cli

    (tmp_path / "c.yaml").write_text("train:\n  epochs: 5\n  lr: 0.5\n")
    cfg = from_cli({"epochs": 3, "lr": 1e-3}, ["train"], tmp_path / "c.yaml", ["seed=2"], given={"epochs"})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.seed) == (3, 0.5, 2)
    assert cfg.explicit == {("train", "epochs"), ("train", "lr"), ("train", "seed")}


@pytest.mark.parametrize("method", ["lora", "head"])
def test_a_lora_or_head_student_stands_alone_once_its_teacher_is_gone(tiny_csv, tiny_bert, tmp_path, method):
    import shutil

    from slimtext.inference.predictor import load_predictor
    from slimtext.recipes.distill import distill

    teacher = tiny_cfg(tiny_csv, epochs=1, lr=5e-3)
    teacher.model.model, teacher.model.max_length = str(tiny_bert), 32
    train(teacher, out=tmp_path / "teacher", quiet=True)
    student = RunConfig()
    student.model.method, student.distill.teacher, student.distill.student_layers = method, str(tmp_path / "teacher"), "2"
    student.train.epochs, student.train.threads, student.train.lr = 1, 1, 1e-2
    distill(student, out=tmp_path / "student", quiet=True)
    texts = ["a good movie", "an awful plot", "the actor was fine"]
    before = load_predictor(tmp_path / "student").predict_proba(texts)
    shutil.move(tmp_path / "teacher", tmp_path / "moved")  # the study folder was reorganised
    after = load_predictor(tmp_path / "student").predict_proba(texts)
    assert (tmp_path / "student" / "frozen.safetensors").exists()
    assert (before == after).all()


def test_bucketed_padding_and_token_capped_evaluation_batches():
    """Training pads batches of 64 tokens or more to 8 lengths per octave (fewer tensor sizes for
    the allocator; shorter ones are left alone) and evaluation batches hold at most
    EVAL_MAX_TOKENS padded tokens, every example exactly once."""
    from slimtext.data.batches import EncodedSplit, bucket_length, collate, eval_batches

    assert [bucket_length(n) for n in (1, 17, 63, 64, 65, 130, 300, 511, 512)] == [1, 17, 63, 64, 72, 144, 320, 512, 512]
    assert all(n <= bucket_length(n) <= n * 9 / 8 for n in range(1, 2000))
    assert len({bucket_length(n) for n in range(257, 513)}) == 8
    split = EncodedSplit([[5] * n for n in (3, 65, 9)], torch.tensor([0, 1, 0]))
    b = collate(split, [0, 1], bucket=True)
    assert b["input_ids"].shape == (2, 72) and b["attention_mask"].sum(1).tolist() == [3, 65]
    assert collate(split, [0, 2])["input_ids"].shape == (2, 9)
    lengths = torch.tensor([512, 20, 500, 30, 40, 510, 25])
    batches = eval_batches(lengths, batch_size=4, max_tokens=1100)
    assert sorted(torch.cat(batches).tolist()) == list(range(7))
    for idx in batches:
        assert len(idx) <= 4 and (len(idx) == 1 or len(idx) * lengths[idx].max() <= 1100)
    assert [lengths[idx].tolist() for idx in batches] == [[20, 25, 30, 40], [500, 510], [512]]
    assert eval_batches(torch.tensor([], dtype=torch.long), 4) == []


def test_cheapest_batches_are_optimal_and_within_limits():
    """The cuts minimise (calls x call_tokens + padded tokens), checked against every contiguous
    cut of the sorted lengths; each example once; size and token limits kept; one call for equal
    lengths, a cut between a long text and short ones."""
    import itertools
    import random

    from slimtext.data.batches import cheapest_batches

    def cost(batches, lengths, call):
        return sum(call + len(b) * max(lengths[i] for i in b) for b in batches)

    rng = random.Random(0)
    for _ in range(200):
        n, size, call = rng.randint(1, 8), rng.randint(1, 5), rng.choice([0.5, 4, 8, 30])
        lengths = [rng.randint(1, 60) for _ in range(n)]
        max_tokens = rng.choice([10_000, 90])
        got = cheapest_batches(torch.tensor(lengths), size, call, max_tokens)
        assert sorted(torch.cat(got).tolist()) == list(range(n))
        for b in got:
            assert len(b) <= size and (len(b) == 1 or len(b) * max(lengths[i] for i in b.tolist()) <= max_tokens)
        s = sorted(lengths)
        best = min(  # every way to cut the sorted lengths into contiguous batches
            sum(call + (e - a) * s[e - 1] for a, e in zip((0, *cuts), (*cuts, n), strict=True))
            for k in range(n) for cuts in itertools.combinations(range(1, n), k)
            if all(e - a <= size and (e - a == 1 or (e - a) * s[e - 1] <= max_tokens)
                   for a, e in zip((0, *cuts), (*cuts, n), strict=True)))
        assert cost([b.tolist() for b in got], lengths, call) == pytest.approx(best)
    assert sorted(len(b) for b in cheapest_batches(torch.tensor([12] * 10), 4, 8)) == [2, 4, 4]
    mixed = torch.tensor([31, 5, 12, 11, 16, 15, 17, 7])  # the load test's tweets, in tokens
    assert [mixed[b].tolist() for b in cheapest_batches(mixed, 8, 8)][-1] == [31]
    assert cheapest_batches(torch.tensor([], dtype=torch.long), 4, 8) == []
