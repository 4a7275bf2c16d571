"""Test-only write-point hooks, installed in training processes by $SLIMTEXT_TEST_HOOK
(conftest sets it to `kill` for every test). `kill` SIGKILLs the process at a named write point:

    SLIMTEXT_KILL_AT=POINT:EPOCH      e.g. committed:1 (see slimtext.train.state.WRITE_POINTS)
    SLIMTEXT_KILL_AFTER_EPOCH=N       once epoch N is fully written (its last point, `cleaned`)

`os.kill` is looked up at call time, so an in-process test may monkeypatch it."""

from __future__ import annotations

import os
import signal


def kill(point: str, state) -> None:
    at = os.environ.get("SLIMTEXT_KILL_AT")
    after = os.environ.get("SLIMTEXT_KILL_AFTER_EPOCH")
    if at == f"{point}:{state.epoch}" or (point == "cleaned" and after == str(state.epoch)):
        os.kill(os.getpid(), signal.SIGKILL)


def train_in_child(config: dict, out: str, env: dict) -> None:
    """A training process for the fault tests (started by a forkserver that imported slimtext
    once): it takes the test's environment, then trains until `kill` stops it."""
    from pathlib import Path

    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train

    os.environ.clear()
    os.environ.update(env)
    train(RunConfig.from_dict(config), Path(out), quiet=True)


class Stop(Exception):
    """Raised by `stop_after_epoch_1` where a crash would be."""


def stop_after_epoch_1(point: str, state) -> None:
    """An in-process hook: stop once epoch 1 is fully written (its last write point)."""
    if point == "cleaned":
        raise Stop


def cut_run(tiny_csv, out):
    """A tiny 2-epoch LSTM run stopped after epoch 1 (a hook raises where a crash would be)."""
    import pytest

    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train
    from slimtext.rundir import RunDir

    cfg = RunConfig()
    cfg.data.data, cfg.rnn.embed_dim, cfg.rnn.hidden_dim = str(tiny_csv), 8, 8
    cfg.train.epochs, cfg.train.threads = 2, 1
    with pytest.raises(Stop):
        train(cfg, out, quiet=True, hook=stop_after_epoch_1)
    return RunDir(out)

