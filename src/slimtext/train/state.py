"""What the training loop carries from epoch to epoch, how an epoch is committed to the run
directory, and the hook that observes each write.

`LoopState` is the loop's whole memory (completed epochs, best score and epoch, patience count,
time, whether it stopped early, the metrics rows). `commit_epoch` writes it with the weights and
the optimizer/scheduler/RNG state into `checkpoint-N` in one atomic step (see `slimtext.rundir`);
`restore` reads back exactly what the pointer names. The best epoch's folder is kept until a
better epoch replaces it, and `publish_best` copies its weights to `model.safetensors` at the end,
so the best weights always agree with the committed state.

A hook is `hook(point: str, state: LoopState)`, called after every write point in `WRITE_POINTS`
(and `run_filled`, `run_created` by `recipes.finetune` as it builds the run folder). Tests use one to SIGKILL a real process at each point;
`SLIMTEXT_TEST_HOOK=module:function` (or `path/to/file.py:function`) installs one in a subprocess.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from slimtext.errors import SlimtextError
from slimtext.rundir import RunDir, atomic_copy, atomic_save_safetensors, load_safetensors

# in the order they happen: per epoch, then once at the end of training
EPOCH_POINTS = ("checkpoint_written", "checkpoint_renamed", "committed", "metrics_published", "cleaned")
WRITE_POINTS = EPOCH_POINTS + ("best_published",)


@dataclass
class LoopState:
    epoch: int = 0  # completed epochs
    best: float = float("-inf")  # best validation score so far, signed so that higher is better
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    train_seconds: float = 0.0
    stopped: bool = False  # early stopping ended training
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl, one row per completed epoch

    def to_saved(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rows"}


Hook = Callable[[str, LoopState], None]


def hook_from_env() -> Hook | None:
    """The hook named by $SLIMTEXT_TEST_HOOK (`module:function` or `file.py:function`), if set."""
    spec = os.environ.get("SLIMTEXT_TEST_HOOK")
    if not spec:
        return None
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        loader = importlib.util.spec_from_file_location(Path(where).stem, where)
        if loader is None or not Path(where).is_file():
            raise SlimtextError(f"SLIMTEXT_TEST_HOOK: no such file {where}")
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def commit_epoch(run: RunDir, st: LoopState, weights: dict, extra: dict, hook: Hook | None) -> None:
    """Write epoch `st.epoch` (weights, `extra` tensors/values, loop state, rows) as one commit,
    then publish metrics.jsonl and remove checkpoints that are neither the new one nor the best."""
    point = (lambda name: hook(name, st)) if hook else (lambda name: None)

    def write(folder: Path) -> None:
        atomic_save_safetensors(folder / "model.safetensors", weights)
        torch.save({**extra, "loop": st.to_saved()}, folder / "state.pt")
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in st.rows),
                                             encoding="utf-8")

    run.commit_checkpoint(st.epoch, write, point)
    run.write_metrics(st.rows)
    point("metrics_published")
    run.clean(keep={run.checkpoint_path(st.best_epoch).name})
    point("cleaned")


def restore(run: RunDir, writer: bool = True) -> tuple[LoopState, dict, dict] | None:
    """(loop state, weights, saved extra) of the committed checkpoint, or None before the first
    commit. The `writer` (DDP rank 0) removes the leftovers of a crash and rewrites metrics.jsonl
    from the checkpoint."""
    folder = run.committed_checkpoint()
    if folder is None:
        if writer:
            run.clean(keep=set())
        return None
    saved = torch.load(folder / "state.pt", weights_only=True)
    rows_path = folder / "metrics.jsonl"
    if rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:  # the layout before checkpoint-N folders: rows past the checkpoint are dropped
        rows = run.read_metrics()[: saved["loop"]["epoch"]]
    st = LoopState(**{k: v for k, v in saved.pop("loop").items() if k in LoopState.__dataclass_fields__},
                   rows=rows)
    if writer:
        run.clean(keep={run.checkpoint_path(st.best_epoch).name})
        run.write_metrics(rows)
    return st, load_safetensors(folder / "model.safetensors"), saved


def publish_best(run: RunDir, st: LoopState, hook: Hook | None) -> None:
    """Copy the best epoch's weights to model.safetensors (the old layout kept them there already);
    only the committed checkpoint stays."""
    best = run.checkpoint_path(st.best_epoch) / "model.safetensors"
    if best.exists():
        atomic_copy(best, run.weights_path)
    elif not run.weights_path.exists():
        raise SlimtextError(f"{run.path}: the best epoch's weights ({best.parent.name}) are missing")
    run.clean(keep=set())  # the best epoch's folder, unless it is the committed one
    if hook:
        hook("best_published", st)
