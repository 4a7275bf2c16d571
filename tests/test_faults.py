"""Crash consistency: a real training process is SIGKILLed at every write point of a run
(`slimtext.train.state.WRITE_POINTS`, plus `run_created`), and `--resume` must then end with
exactly the run an uninterrupted process writes: the same weights, the same metrics rows, the
same test metrics, one committed checkpoint and no leftovers. For an LSTM and a tiny BERT.
Also: one writer per run (the lock), and `study`/`sweep` children die with their parent.

The killed processes fork from a forkserver that imported slimtext once, so each case costs
its training time rather than an interpreter start."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import fault_hooks
from conftest import write_tiny_bert, write_tiny_csv
from fault_hooks import cut_run
from slimtext.config import RunConfig
from slimtext.recipes.finetune import train
from slimtext.rundir import RunDir
from slimtext.train.state import EPOCH_POINTS, WRITE_POINTS

EPOCHS = 2
CASES = [("run_created", 0)] + [(p, e) for e in range(1, EPOCHS + 1) for p in EPOCH_POINTS] + [("best_published", EPOCHS)]
TIMING = {"epoch_seconds", "examples_per_s", "peak_memory_mb"}

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["slimtext.recipes.finetune", "fault_hooks"])


def _config(kind: str, root) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data = str(write_tiny_csv(root / "tiny.csv", n=120))
    cfg.train.epochs, cfg.train.batch_size, cfg.train.threads = EPOCHS, 16, 1
    if kind == "lstm":
        cfg.rnn.embed_dim, cfg.rnn.hidden_dim, cfg.train.lr = 16, 16, 0.02
    else:
        cfg.model.model, cfg.model.max_length = str(write_tiny_bert(root / "tiny-bert")), 32
        cfg.train.lr, cfg.train.early_stop_metric = 5e-3, "loss"  # loss: epoch 1 or 2 can be best
    return cfg


@pytest.fixture(scope="module", params=["lstm", "bert"])
def reference(request, tmp_path_factory):
    """(kind, config, the uninterrupted run) per model."""
    root = tmp_path_factory.mktemp(request.param)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMTEXT_CACHE", str(root / "cache"))
        mp.delenv("SLIMTEXT_TEST_HOOK", raising=False)
        cfg = _config(request.param, root)
        train(cfg, root / "whole", quiet=True)
    return request.param, cfg, RunDir(root / "whole")


def _rows(run: RunDir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in run.read_metrics()]


@pytest.mark.parametrize("point,epoch", CASES, ids=[f"{p}-{e}" for p, e in CASES])
def test_kill_at_every_write_point_then_resume_equals_the_uninterrupted_run(reference, point, epoch, tmp_path):
    kind, cfg, whole = reference
    out = tmp_path / "cut"
    env = {**os.environ, "SLIMTEXT_KILL_AT": f"{point}:{epoch}"}
    child = _CTX.Process(target=fault_hooks.train_in_child, args=(cfg.to_dict(), str(out), env))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the process was not killed at {point}:{epoch}"
    run = RunDir(out)
    assert run.exists() and not run.is_finished()

    summary = train(RunConfig(), out, resume=True, quiet=True)

    assert _rows(run) == _rows(whole)
    assert summary["test"] == whole.read_summary()["test"]
    assert summary["best_epoch"] == whole.read_summary()["best_epoch"]
    a, b = load_file(whole.weights_path), load_file(run.weights_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kind
    last_a, last_b = load_file(whole.checkpoint_dir / "model.safetensors"), load_file(run.checkpoint_dir / "model.safetensors")
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)
    left = sorted(p.name for p in out.iterdir())
    assert [n for n in left if n.startswith("checkpoint")] == ["checkpoint", f"checkpoint-{EPOCHS}"]
    assert not [n for n in left if n.endswith(".tmp")] and not list(out.parent.glob(".cut.creating-*"))


def test_the_cases_cover_every_write_point_in_order(tmp_path, monkeypatch):
    seen = []
    monkeypatch.delenv("SLIMTEXT_TEST_HOOK")
    train(_config("lstm", tmp_path), tmp_path / "run", quiet=True, hook=lambda point, st: seen.append((point, st.epoch)))
    assert seen == [("run_filled", 0)] + CASES
    assert {p for p, _ in seen} == {"run_filled", "run_created", *WRITE_POINTS}


def test_a_kill_while_the_run_folder_is_built_leaves_no_run_and_the_next_start_cleans_up(tmp_path):
    cfg = _config("lstm", tmp_path)
    out = tmp_path / "cut"
    env = {**os.environ, "SLIMTEXT_KILL_AT": "run_filled:0"}
    child = _CTX.Process(target=fault_hooks.train_in_child, args=(cfg.to_dict(), str(out), env))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL
    assert not out.exists() and len(list(tmp_path.glob(".cut.creating-*"))) == 1  # a whole run, or none
    train(cfg, out, quiet=True)
    assert RunDir(out).is_finished() and not list(tmp_path.glob(".cut.creating-*"))


def test_a_run_interrupted_before_checkpoint_folders_existed_resumes(tmp_path):
    """The previous layout: a real `checkpoint/` folder (weights, state.pt without metrics rows) and
    the best weights already in model.safetensors."""
    cfg = _config("lstm", tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SLIMTEXT_TEST_HOOK")
        train(cfg, tmp_path / "whole", quiet=True)

        def stop(point, st):
            if point == "cleaned":
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "old", quiet=True, hook=stop)
    old = RunDir(tmp_path / "old")
    (old.path / "checkpoint").unlink()
    os.replace(old.path / "checkpoint-1", old.path / "checkpoint")
    (old.path / "checkpoint" / "metrics.jsonl").unlink()
    saved = torch.load(old.path / "checkpoint" / "state.pt", weights_only=True)
    del saved["loop"]["stopped"]
    torch.save(saved, old.path / "checkpoint" / "state.pt")
    os.link(old.path / "checkpoint" / "model.safetensors", old.weights_path)

    train(RunConfig(), old.path, resume=True, quiet=True)
    whole = RunDir(tmp_path / "whole")
    assert _rows(old) == _rows(whole)
    a, b = load_file(whole.weights_path), load_file(old.weights_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (old.path / "checkpoint").is_symlink() and not list(old.path.glob(".*.tmp"))


# --- one writer per run


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tiny_csv, tmp_path, capsys):
    from slimtext.rundir import RunLock, RunLockedError

    run = cut_run(tiny_csv, tmp_path / "run")
    with RunLock(run.path):  # a live writer (flock is per open file, so this process counts)
        with pytest.raises(RunLockedError, match=rf"run is being written by PID {os.getpid()} on "):
            train(RunConfig(), run.path, resume=True, quiet=True)
    assert len(run.read_metrics()) == 1
    (run.path / ".lock").write_text("999999999 elsewhere\n")  # a writer that died: no flock held
    train(RunConfig(), run.path, resume=True)
    assert "took over the stale lock of 999999999 elsewhere" in capsys.readouterr().err
    assert run.is_finished() and (run.path / ".lock").read_text() == ""


def test_a_study_leaves_a_run_another_process_is_writing_alone(tmp_path):
    from slimtext.experiments.study import PlannedRun, execute
    from slimtext.rundir import RunLock

    busy = tmp_path / "busy-s0"
    busy.mkdir()
    (busy / "config.yaml").write_text("{}\n")
    calls = []
    plan = [PlannedRun("busy-s0", "busy", 0, ["slimtext", "train", "--out", str(busy)])]
    with RunLock(busy):
        status = execute(plan, tmp_path, runner=lambda argv, log: calls.append(argv) or 1, quiet=True)
    assert status == {"busy-s0": "failed"} and not calls and (busy / "config.yaml").exists()


# --- study and sweep children die with them

# Ctrl-C reaches a study as KeyboardInterrupt only when SIGINT is not ignored; a process started
# in the background of a non-interactive shell (or by one that ignores it) inherits SIG_IGN, and
# then rightly does not die of it. The parent states the interactive case explicitly.
_PARENT = """
import signal, sys
from pathlib import Path
from slimtext.experiments.study import _sigterm_as_exit, subprocess_runner
signal.signal(signal.SIGINT, signal.default_int_handler)
with _sigterm_as_exit():
    subprocess_runner([sys.executable, "-c", sys.argv[2], sys.argv[1]], Path(sys.argv[1]).with_suffix(".log"))
"""
_CHILD = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(sys.argv[1], "w").write(f"{os.getpid()} {grandchild.pid}")
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has stopped running


def _wait(cond, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_a_dying_study_takes_its_children_along(tmp_path, sig):
    pids = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pids), _CHILD])
    try:
        assert _wait(lambda: pids.exists() and " " in pids.read_text(), 60), "the child never started"
        child, grandchild = map(int, pids.read_text().split())
        parent.send_signal(sig)
        parent.wait(30)
        assert _wait(lambda: _gone(child), 15), "the run outlived the study"
        if sig != signal.SIGKILL:  # a killed study cannot reach the group; PDEATHSIG ends the child
            assert _wait(lambda: _gone(grandchild), 15), "the run's own child outlived the study"
    finally:
        for pid in map(int, pids.read_text().split()) if pids.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        parent.kill()
