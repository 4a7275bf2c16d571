"""Run directories: one folder per run, written atomically, read by reports and `serve`.

Layout (every method writes the same names):

    run/
      config.yaml       resolved config (every field, defaults included)
      command.txt       the command line that started the run
      metrics.jsonl     one JSON object per completed epoch
      summary.json      best epoch, test metrics, parameter counts, timings (written last)
      model.safetensors weights of the best epoch
      checkpoint/       last completed epoch: weights, optimizer, scheduler, RNG (for --resume)
      *.json            tokenizer / vocabulary / label names needed to rebuild the model
      cross.json        (optional) results on other datasets' test splits (experiments/cross.py)

Every write goes to a temporary file in the same folder and is then renamed over the target,
so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _atomic(path, write)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    # safetensors refuses shared storage and non-contiguous tensors: store independent copies
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def atomic_torch_save(path: Path, obj: Any) -> None:
    """For optimizer/scheduler/RNG state only (tensors and plain Python values), reloaded with
    `torch.load(weights_only=True)`; never used for anything that needs unpickling code."""
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


class RunDir:
    """Paths and small helpers for one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoint"

    def exists(self) -> bool:
        return self.config_path.exists()

    def is_finished(self) -> bool:
        return self.summary_path.exists()

    # --- writing
    def create(self, config: dict, argv: list[str] | None = None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))
        argv = sys.argv if argv is None else argv
        atomic_write_text(self.path / "command.txt", shlex.join(argv) + "\n")

    def append_metrics(self, row: dict) -> None:
        """Rewrite metrics.jsonl with one more row (atomic: never a torn last line)."""
        rows = self.read_metrics()
        rows.append(row)
        self.write_metrics(rows)

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, default=str) + "\n" for r in rows))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary_path, summary)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    # --- reading
    def read_config(self) -> dict:
        if not self.config_path.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.yaml)")
        return yaml.safe_load(self.config_path.read_text(encoding="utf-8"))

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def read_summary(self) -> dict:
        return json.loads(self.summary_path.read_text(encoding="utf-8"))

    def read_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text(encoding="utf-8"))
