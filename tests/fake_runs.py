"""Fake run directories written by hand (summary.json, metrics.jsonl, config.yaml, command.txt),
shaped like those `slimtext train` / `distill` / the TF-IDF baseline write. Reports read only
these files, so report tests need no training."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

LABELS = ["not toxic", "toxic"]


def write_run(
    path: Path,
    *,
    f1: float,
    acc: float | None = None,
    mcc: float = 0.5,
    roc_auc=0.9,
    seed: int = 0,
    model: str = "minilm-l6",
    method: str = "full",
    params: int = 22_713_986,
    trainable: int | None = None,
    train_seconds: float = 60.0,
    ms: float = 1.0,
    memory: float = 900.0,
    dev_f1: float | None = None,
    epochs: int | None = 3,
    confusion=((40, 10), (5, 145)),
    config: dict | None = None,
    group: str | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    test = {
        "loss": 0.3,
        "accuracy": acc if acc is not None else f1 + 0.05,
        "macro_f1": f1,
        "mcc": mcc,
        "roc_auc": roc_auc,
    }
    dev = {**test, "macro_f1": dev_f1 if dev_f1 is not None else f1}
    rows = []
    for e in range(1, (epochs or 0) + 1):
        rows.append(
            {
                "epoch": e,
                "train_loss": 0.6 / e + 0.01 * seed,
                "dev_loss": 0.5 / e + 0.1,
                "dev_accuracy": 0.7 + 0.05 * e,
                "dev_macro_f1": f1 - 0.1 / e,
                "dev_mcc": 0.4,
                "dev_roc_auc": None,
                "epoch_seconds": 20.0,
                "examples_per_s": 50.0,
                "peak_memory_mb": memory,
                "lr": 1e-4,
            }
        )
    summary = {
        "dataset": "davidson",
        "model": model,
        "method": method,
        "labels": LABELS,
        "seed": seed,
        "best_epoch": epochs,
        "train_seconds": train_seconds,
        "peak_memory_mb": memory,
        "total_params": params,
        "trainable_params": trainable if trainable is not None else params,
        "reduction_pct": 0.0,
        "final_train_loss": rows[-1]["train_loss"] if rows else 0.25,
        "dev": dev,
        "test": test,
        "test_split": "test",
        "splits": {"dev": dev, "test": test},
        "confusion": {"dev": [list(r) for r in confusion], "test": [list(r) for r in confusion]},
        "inference_ms_per_example": ms,
        "single_p50_ms": ms * 2,
        "machine": {"platform": "Linux", "cpus": 2, "torch": "2.13.0", "threads": 1, "cuda": False},
    }
    if group:
        summary["group"] = group
    (path / "summary.json").write_text(json.dumps(summary))
    if rows:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config or {
        "data": {"data": "davidson", "split_seed": 0},
        "model": {"model": model, "method": method},
        "train": {"seed": seed, "lr": 1e-4, "batch_size": 32},
    }
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (path / "command.txt").write_text(
        f"slimtext train --model {model} --seed {seed} --out {path}\n"
    )
    return path


def write_study(root: Path, seeds=(0, 1, 2)) -> list[Path]:
    """A plausible quick study: teacher, odd/even/LoRA students, LSTM, DistilRNN, TF-IDF."""
    spec = {  # group: (f1 per seed, kwargs)
        "teacher": (
            (0.90, 0.91, 0.92),
            dict(params=22_713_986, ms=2.0, train_seconds=90, memory=1500),
        ),
        "odd": ((0.88, 0.87, 0.89), dict(params=17_390_000, ms=1.0, train_seconds=45, memory=1100)),
        "even": (
            (0.86, 0.89, 0.87),
            dict(params=17_390_000, ms=1.0, train_seconds=45, memory=1100),
        ),
        "lora-odd": (
            (0.84, 0.85, 0.83),
            dict(params=17_420_000, trainable=40_000, ms=1.1, method="lora"),
        ),
        "lstm": (
            (0.70, 0.74, 0.72),
            dict(model="lstm", params=800_000, ms=0.2, train_seconds=8, memory=400),
        ),
        "distilrnn": (
            (0.75, 0.77, 0.76),
            dict(model="lstm", params=800_000, ms=0.2, train_seconds=9),
        ),
        "tfidf": (
            (0.82, 0.82, 0.82),
            dict(
                model="tfidf",
                method="logreg",
                params=20_001,
                ms=0.05,
                train_seconds=2,
                epochs=None,
                roc_auc=None,
            ),
        ),
    }
    dirs = []
    for seed in seeds:
        for group, (f1s, kw) in spec.items():
            dirs.append(write_run(root / f"{group}-s{seed}", f1=f1s[seed % 3], seed=seed, **kw))
    return dirs
