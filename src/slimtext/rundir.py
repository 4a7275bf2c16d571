"""Run directories: one folder per run, written atomically, read by reports and `serve`.

Layout (every method writes the same names):

    run/
      config.yaml       resolved config (every field, defaults included)
      command.txt       the command line that started the run
      metrics.jsonl     one JSON object per completed epoch
      summary.json      best epoch, test metrics, parameter counts, timings (written last)
      model.safetensors weights of the best epoch (written when training ends)
      checkpoint        pointer (a relative symlink) to the last committed checkpoint-N folder
      checkpoint-N/     epoch N: weights, optimizer/scheduler/RNG/loop state, metrics rows so far
      .lock             "PID HOST" of the process writing the run (an fcntl.flock)
      *.json            tokenizer / vocabulary / label names needed to rebuild the model
                        (label_mapping.json: how a user file's raw labels were normalised)
      cross.json        (optional) results on other datasets' test splits (experiments/cross.py)
      frozen.safetensors a head/LoRA layer student's frozen teacher layers (the run stands alone)

Every write goes to a temporary file in the same folder, is fsynced and then renamed over the
target, so a crash never leaves a half-written file behind. An epoch commits in one step: its
files go into a fresh folder, which is fsynced and renamed to `checkpoint-N`, and only then
does the `checkpoint` pointer switch to it (an atomic rename of a symlink). `--resume` reads
only what the pointer names; anything else is a leftover of a crash and is removed.
A new run is built under a temporary name and renamed into place, so it appears whole or not at all.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from slimtext.errors import SlimtextError

_UMASK = os.umask(0)
os.umask(_UMASK)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's (its entries') contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files (kept by some writers); the usual ones
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
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


def atomic_copy(src: Path, dst: Path) -> None:
    _atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


class RunLockedError(SlimtextError):
    """Another live process holds the run's lock."""


class RunLock:
    """One writer per run: an exclusive `fcntl.flock` on `run/.lock`, which holds "PID HOST".
    The kernel drops the lock when its process dies, so a lock file naming a dead process is
    stale: it is taken over and `stale` says whose it was."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.fd: int | None = None
        self.stale: str | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = self.path.read_text(encoding="utf-8").strip() or "another process"
            pid, _, host = holder.partition(" ")
            raise RunLockedError(f"{self.path.parent} is being written by PID {pid} on {host or 'this host'}; "
                                 "wait for it to finish or stop it") from None
        previous = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        if previous:
            self.stale = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty file: released cleanly, not stale
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self if self.fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
        """The pointer to the last committed checkpoint (reading through it reads that folder)."""
        return self.path / "checkpoint"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / f"checkpoint-{epoch}"

    @property
    def progress_path(self) -> Path:
        """Where training is now (`write_progress`); not one of the run's results."""
        return self.path / "progress.json"

    def exists(self) -> bool:
        return self.config_path.exists()

    def is_finished(self) -> bool:
        return self.summary_path.exists()

    def has_checkpoint(self) -> bool:
        return self.committed_checkpoint() is not None

    def lock(self) -> RunLock:
        return RunLock(self.path).acquire()

    # --- writing
    def create(self, config: dict, argv: list[str] | None = None) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))
        argv = sys.argv if argv is None else argv
        atomic_write_text(self.path / "command.txt", shlex.join(argv) + "\n")

    def build(self, config: dict, fill: Callable[[Path], None] | None = None, argv: list[str] | None = None,
              point: Callable[[str], None] = lambda name: None) -> RunLock:
        """Create the run folder whole: config, command line and `fill(folder)` are written into
        `.<name>.creating-<pid>` beside it, which is locked and then renamed into place (over an
        empty folder at most); `point("run_filled")` runs just before the rename. Returns the held lock."""
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        for old in parent.glob(f".{self.path.name}.creating-*"):  # left by a killed process
            if not _alive(old.name.rpartition("-")[2]):
                shutil.rmtree(old, ignore_errors=True)
        tmp = parent / f".{self.path.name}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        lock = RunLock(tmp).acquire()
        try:
            RunDir(tmp).create(config, argv)
            if fill:
                fill(tmp)
            for f in tmp.rglob("*"):
                fsync_path(f)
            fsync_path(tmp)
            point("run_filled")
            try:
                os.replace(tmp, self.path)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise
                raise SlimtextError(f"{self.path} appeared while this run was being set up; choose another --out") from None
            fsync_path(parent)
        except BaseException:
            lock.release()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        lock.path = self.path / ".lock"
        return lock

    # --- checkpoints: commit, read, clean
    def committed_checkpoint(self) -> Path | None:
        """The folder the pointer names; None before the first commit."""
        link = self.checkpoint_dir
        if link.is_symlink():
            target = self.path / os.readlink(link)
            if not (target / "state.pt").is_file():
                raise SlimtextError(f"{link} names {target.name}, which is missing or incomplete")
            return target
        if (link / "state.pt").is_file():  # a run written before checkpoint-N folders
            return link
        return None

    def commit_checkpoint(self, epoch: int, write: Callable[[Path], None],
                          point: Callable[[str], None] = lambda name: None) -> Path:
        """Commit epoch `epoch`: `write(folder)` fills a fresh folder, which is fsynced, renamed to
        checkpoint-N, and then named by the pointer (the commit). `point(name)` runs after each step."""
        final, tmp = self.checkpoint_path(epoch), self.path / f".checkpoint-{epoch}.tmp"
        if self.committed_checkpoint() == final:
            raise SlimtextError(f"{final} is already committed")
        for old in (tmp, final):  # an earlier attempt at this epoch that never committed
            shutil.rmtree(old, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        point("checkpoint_written")
        os.replace(tmp, final)
        fsync_path(self.path)
        point("checkpoint_renamed")
        self._point_to(final.name)
        point("committed")
        return final

    def _point_to(self, name: str) -> None:
        link, tmp = self.checkpoint_dir, self.path / ".checkpoint.link.tmp"
        if link.is_dir() and not link.is_symlink():  # the old layout's folder: move it aside
            os.replace(link, self.path / ".checkpoint-legacy.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(name, tmp)
        os.replace(tmp, link)
        fsync_path(self.path)

    def clean(self, keep: set[str]) -> None:
        """Remove crash leftovers (temporary files and folders) and checkpoint-N folders other than
        the committed one and `keep`. Only the lock holder may call it."""
        committed = self.committed_checkpoint()
        keep = keep | ({committed.name} if committed else set())
        for p in self.path.iterdir():
            old_ckpt = p.name.startswith("checkpoint-") and p.name not in keep
            if p.name.startswith(".") and p.name.endswith(".tmp") or old_ckpt:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()

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

    def write_progress(self, epoch: int, epochs: int, step: int, steps: int, epoch_seconds: float) -> None:
        """Step `step` of `steps` in epoch `epoch` of `epochs`, `epoch_seconds` into that epoch:
        what a study's heartbeat reads (`describe_progress`) while the run trains quietly."""
        atomic_write_json(self.progress_path, {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                                               "epoch_seconds": round(epoch_seconds, 1)})

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

    def describe_progress(self) -> str:
        """One phrase for a heartbeat line: 'epoch 1/3, step 270/620 (44 %), ~1h05m of training
        left', 'evaluating epoch 1/3', 'training done, evaluating', or 'not training yet' (data,
        tokenizer, a teacher's logits) when the run has written no progress."""
        try:
            p = json.loads(self.progress_path.read_text(encoding="utf-8"))
            epoch, epochs, step, steps, secs = (p[k] for k in ("epoch", "epochs", "step", "steps", "epoch_seconds"))
        except (OSError, ValueError, KeyError, TypeError):
            return "not training yet"
        if step >= steps:
            return "training done, evaluating" if epoch >= epochs else f"evaluating epoch {epoch}/{epochs}"
        left = (steps - step + (epochs - epoch) * steps) * secs / max(step, 1)
        return (f"epoch {epoch}/{epochs}, step {step}/{steps} ({100 * step // steps} %), "
                f"~{_hours_minutes(left)} of training left")


def _hours_minutes(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{max(m, 1)}m"


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
