"""Reading run directories for a report, and the numbers it shows: runs grouped by method, mean
± sample standard deviation per group, and how those numbers are printed."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

SEED_SUFFIX = re.compile(r"^(?P<group>.+?)-s\d+(?:-\d{8}-\d{6})?$")
# config keys that never count as swept hyper-parameters (paths, hardware, bookkeeping)
NOT_SWEPT = {
    "data.data_dir",
    "train.threads",
    "train.device",
    "train.eval_batch_size",
    "distill.teacher",
    "rnn.vocab_size",
    "rnn.num_labels",
    "rnn.pad_id",
}


# --- reading run directories ---------------------------------------------------------------------


@dataclass
class Run:
    name: str
    path: Path
    group: str
    summary: dict | None
    metrics: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    command: str | None = None

    def get(self, key: str):
        """A dotted summary value (`test.macro_f1`), or None when any part is missing."""
        value = self.summary
        for part in key.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value if not isinstance(value, float) or math.isfinite(value) else None


def group_of(name: str, summary: dict | None, config: dict | None) -> str:
    for source in (summary or {}, config or {}):
        if isinstance(source.get("group"), str):
            return source["group"]
    m = SEED_SUFFIX.match(name)
    return m.group("group") if m else name


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_run(path: Path) -> Run:
    path = Path(path)
    summary = read_json(path / "summary.json")
    metrics = []
    if (path / "metrics.jsonl").exists():
        for line in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                metrics.append(json.loads(line))
            except ValueError:  # a torn line cannot happen with atomic writes; skip it anyway
                continue
    config = {}
    if (path / "config.yaml").exists():
        config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    command = None
    if (path / "command.txt").exists():
        command = (path / "command.txt").read_text(encoding="utf-8").strip()
    return Run(
        path.name, path, group_of(path.name, summary, config), summary, metrics, config, command
    )


# --- numbers ------------------------------------------------------------------------------------


@dataclass
class Stat:
    mean: float | None
    std: float | None  # None with fewer than two values: the spread is unknown
    n: int


def stat(values) -> Stat:
    vals = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not vals:
        return Stat(None, None, 0)
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return Stat(float(np.mean(vals)), std, len(vals))


@dataclass
class Column:
    header: str
    key: str  # dotted summary key
    kind: str  # "metric" (higher is better), "cost" (lower is better), "count", "loss"
    digits: int = 3


COLUMNS = [
    Column("Accuracy", "test.accuracy", "metric"),
    Column("Macro-F1", "test.macro_f1", "metric"),
    Column("MCC", "test.mcc", "metric"),
    Column("ROC-AUC", "test.roc_auc", "metric"),
    Column("Final train loss", "final_train_loss", "loss"),
    Column("Params", "total_params", "count"),
    Column("Trainable", "trainable_params", "count"),
    Column("Train s", "train_seconds", "cost", 1),
    Column("ms / example", "inference_ms_per_example", "cost", 3),
    Column("Peak MiB", "peak_memory_mb", "cost", 0),
]


@dataclass
class Group:
    name: str
    runs: list[Run]

    def stat(self, key: str) -> Stat:
        return stat(r.get(key) for r in self.runs)

    @property
    def models(self) -> str:
        seen = dict.fromkeys(
            f"{r.get('model') or '?'} ({r.get('method') or '?'})" for r in self.runs
        )
        return ", ".join(seen)


def human_count(x: float) -> str:
    for div, unit, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(x) >= div:
            return f"{x / div:.{digits}f}{unit}"
    return f"{x:.0f}"


def fmt(s: Stat, col: Column | None = None, digits: int = 3) -> str:
    if s.mean is None:
        return "–"
    if col is not None and col.kind == "count":
        text = human_count(s.mean)
        return text if not s.std else f"{text} ± {human_count(s.std)}"
    d = col.digits if col is not None else digits
    if s.std is None:
        return f"{s.mean:.{d}f}"
    return f"{s.mean:.{d}f} ± {s.std:.{d}f}"


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    return [Group(k, v) for k, v in groups.items()]


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def swept_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between runs (in config order)."""
    flat = [flatten(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    return [
        k
        for k in keys
        if k not in NOT_SWEPT and len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1
    ]


def show_value(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def show_setting(x) -> str:
    return f"{x:.6g}" if isinstance(x, float) else "–" if x is None else str(x)
