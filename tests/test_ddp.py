"""Distributed data parallel: 2 processes with gloo on this machine give the same result as one
process with the same global batch size.

Tolerance: dropout is off and each rank takes half of every global batch, so the only difference
is the order of floating-point sums (each rank's mean, then the all-reduce). Adam divides every
update by the root of the squared-gradient average, which magnifies such rounding differences
where gradients are small: after one epoch at lr 0.02 the largest weight difference measured was
1.8e-5 (LSTM recurrent weights), so weights must agree to 1e-4 and losses to 1e-5."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from safetensors.torch import load_file

from slimtext.rundir import RunDir

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


# gloo on the 2-core VM: in 2 of 3 full clean-clone suites on 2026-11-30 one rank aborted with a
# C++ std::terminate ("terminate called without an active exception"; never when the test ran
# alone, 15 times). Cause not found; that one failure is retried once, any other fails at once.
GLOO_ABORT = "terminate called without an active exception"


def _train(launcher: list[str], args: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for attempt in (1, 2):
        r = subprocess.run([*launcher, "-m", "slimtext", "train", *args, "--out", str(out)],
                           capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0 and attempt == 1 and launcher == TORCHRUN and GLOO_ABORT in r.stderr:
            # shown in pytest's warnings summary: which process aborted, and when, to find the cause
            warnings.warn(f"test_ddp: retried after a gloo abort; stderr tail:\n{r.stderr[-2500:]}", stacklevel=1)
            shutil.rmtree(out, ignore_errors=True)
            continue
        assert r.returncode == 0, r.stderr[-3000:]
        return


def _compare(one: Path, two: Path) -> None:
    a, b = load_file(RunDir(one).weights_path), load_file(RunDir(two).weights_path)
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-4, k
    ra, rb = RunDir(one).read_metrics(), RunDir(two).read_metrics()
    assert abs(ra[0]["train_loss"] - rb[0]["train_loss"]) < 1e-5
    assert abs(ra[0]["dev_loss"] - rb[0]["dev_loss"]) < 1e-5
    assert RunDir(one).read_summary()["test"]["accuracy"] == RunDir(two).read_summary()["test"]["accuracy"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # rank 0 alone wrote


@pytest.mark.slow
def test_two_gloo_processes_match_one_for_an_lstm(tiny_csv, tmp_path):
    args = ["--data", str(tiny_csv), "--epochs", "1", "--batch-size", "16", "--lr", "0.02", "--rnn-dropout", "0",
            "--rnn-hidden-dim", "16", "--rnn-embed-dim", "16", "--threads", "1", "--quiet"]
    _train([sys.executable], args, tmp_path / "one")
    _train(TORCHRUN, args, tmp_path / "two")
    _compare(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_two_gloo_processes_match_one_for_a_tiny_transformer(tiny_csv, tiny_bert, tmp_path):
    args = ["--data", str(tiny_csv), "--model", str(tiny_bert), "--epochs", "1", "--batch-size", "16",
            "--lr", "1e-3", "--head-dropout", "0", "--set", "model.max_length=32", "--threads", "1", "--quiet"]
    (tiny_bert / "config.json").write_text(
        (tiny_bert / "config.json").read_text().replace('"hidden_dropout_prob": 0.1', '"hidden_dropout_prob": 0.0')
        .replace('"attention_probs_dropout_prob": 0.1', '"attention_probs_dropout_prob": 0.0'))
    _train([sys.executable], args, tmp_path / "one")
    _train(TORCHRUN, args, tmp_path / "two")
    _compare(tmp_path / "one", tmp_path / "two")
