"""`slimtext train`: fine-tune one classifier (RNN from scratch; transformer full / head / LoRA)
on one dataset and write a complete run directory. `resume` continues an interrupted run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slimtext.checkpoint import load_weights, save_weights
from slimtext.config import RunConfig
from slimtext.data.batches import EncodedSplit, collate
from slimtext.data.registry import TextDataset, load_dataset
from slimtext.errors import SlimtextError
from slimtext.inference.base import decide
from slimtext.inference.calibration import (
    calibrate,
    parse_rule,
    save_calibration,
    scaled_softmax,
)
from slimtext.models import format_param_report, param_report
from slimtext.models.factory import apply_method, build_classifier, build_tokenizer
from slimtext.recipes.evaluation import test_by_source
from slimtext.rundir import RunDir, load_safetensors
from slimtext.train import ddp, head_cache
from slimtext.train.degenerate import degenerate_warnings
from slimtext.train.loop import fit, logit_metrics, predict_logits, resolve_device, seed_everything
from slimtext.train.losses import class_weights
from slimtext.train.metrics import classification_metrics, confusion


@dataclass
class Prepared:
    data: TextDataset
    tokenizer: object
    splits: dict[str, EncodedSplit]
    model: torch.nn.Module
    lora_layers: list[str]


def encode_splits(data: TextDataset, tokenizer) -> dict[str, EncodedSplit]:
    return {name: EncodedSplit(tokenizer.encode([e.text for e in ex]), torch.tensor([e.label for e in ex]),
                               tokenizer.pad_id) for name, ex in data.splits.items()}


def prepare(cfg: RunConfig, saved_tokenizer: Path | None = None) -> Prepared:
    """Dataset, tokenizer, encoded splits and the model with its method applied (seeded)."""
    data = load_dataset(cfg.data)
    tokenizer = build_tokenizer(cfg, data.texts("train"), saved_tokenizer)
    seed_everything(cfg.train.seed)
    model = build_classifier(cfg, len(data.labels), tokenizer)
    lora_layers = apply_method(model, cfg)
    return Prepared(data, tokenizer, encode_splits(data, tokenizer), model, lora_layers)


def default_out(cfg: RunConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(cfg.data.data).stem.replace(":", "_").replace("/", "_")
    model = cfg.model.model.replace(":", "_").replace("/", "_")
    return Path("runs") / f"{name}-{model}-{cfg.model.method}-s{cfg.train.seed}-{stamp}"


def latency_ms(model, split: EncodedSplit, device, n: int = 32) -> dict:
    """Single-example latency (p50, p99 ms) over the first n examples, and batched ms/example."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(min(n, len(split))):
            b = collate(split, [i])
            t0 = time.perf_counter()
            model(b["input_ids"].to(device), b["attention_mask"].to(device))
            times.append((time.perf_counter() - t0) * 1000)
    return {"single_p50_ms": float(np.percentile(times, 50)), "single_p99_ms": float(np.percentile(times, 99))}


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def check_training_options(cfg: RunConfig) -> None:
    """Options checked before any work: --class-weight and --threshold-for."""
    class_weights(torch.zeros(0), 2, cfg.train.class_weight)
    parse_rule(cfg.train.threshold_for)


def train(cfg: RunConfig, out: Path | None = None, resume: bool = False, quiet: bool = False,
          loss_fn=None, prepared: Prepared | None = None, extra_summary: dict | None = None) -> dict:
    run = RunDir(out or default_out(cfg))
    if resume:
        cfg = RunConfig.from_dict(run.read_config())
    elif run.is_finished():
        raise SlimtextError(f"{run.path} already holds a finished run; choose another --out")
    elif run.exists():
        raise SlimtextError(f"{run.path} holds an unfinished run; continue it with --resume {run.path}")
    check_training_options(cfg)
    ddp.barrier()  # every rank has checked the run directory before rank 0 creates it
    p = prepared or prepare(cfg, saved_tokenizer=run.path / "tokenizer" if resume else None)
    report = param_report(p.model)
    log = (lambda *a: None) if quiet or not ddp.is_main() else (lambda *a: print(*a, file=sys.stderr))
    log(f"{cfg.model.model} [{cfg.model.method}] on {p.data.name}: {format_param_report(report)}; "
        f"splits {', '.join(f'{k} {len(v)}' for k, v in p.data.splits.items())}")
    for note in p.data.notes:
        log(f"note: {note}")
    if not resume and ddp.is_main():
        run.create(cfg.to_dict())
        p.tokenizer.save(run.path / "tokenizer")
        run.write_json("labels.json", p.data.labels)
        run.write_json("splits.json", p.data.split_ids())

    method = cfg.model.method
    model, splits, cache_seconds = p.model, p.splits, 0.0
    if method == "head" and head_cache.supports(p.model):  # frozen encoder: run it once, not per epoch
        t0 = time.perf_counter()
        to_cache = {k: p.splits[k] for k in ("train", "dev")}
        model, splits = head_cache.cache(p.model, to_cache, cfg.train, quiet=quiet or not ddp.is_main())
        cache_seconds = time.perf_counter() - t0
        log(f"head-only: cached the frozen encoder's features of train and dev in {cache_seconds:.1f}s")
    result = fit(model, splits["train"], splits["dev"], cfg.train, run, len(p.data.labels),
                 loss_fn=loss_fn, resume=resume, quiet=quiet,
                 state_fn=lambda m: save_weights(m, method), load_fn=lambda m, sd: load_weights(m, sd, method))
    if cache_seconds:  # the encoder pass is part of training time
        result["train_seconds"] = round(result["train_seconds"] + cache_seconds, 3)
        result["feature_cache_seconds"] = round(cache_seconds, 3)
    if not ddp.is_main():
        return result
    return finish(cfg, run, p, result, report, extra_summary)


def finish(cfg: RunConfig, run: RunDir, p: Prepared, result: dict, report: dict, extra: dict | None = None) -> dict:
    """Reload the best epoch, evaluate dev and test splits, calibrate on dev (temperature and,
    for binary tasks, a decision threshold: calibration.json), time inference, write summary.json."""
    device = resolve_device(cfg.train.device)
    load_weights(p.model, load_safetensors(run.weights_path), cfg.model.method)
    p.model.to(device)
    n_labels = len(p.data.labels)
    evals, conf, logits, probs_of = {}, {}, {}, {}
    t_eval = {}
    for name, split in p.splits.items():
        if name == "train":
            continue
        t0 = time.perf_counter()
        logits[name] = predict_logits(p.model, split, cfg.train.eval_batch_size, device)
        evals[name], probs = logit_metrics(logits[name], split.labels, n_labels)
        t_eval[name] = (time.perf_counter() - t0) * 1000 / max(1, len(split))
        conf[name], probs_of[name] = confusion(probs, split.labels.numpy(), n_labels), probs
    test = "test" if "test" in evals else "dev"
    rows = run.read_metrics()
    labels = {k: p.splits[k].labels.numpy() for k in logits}
    calibration = calibration_summary(run, logits["dev"].numpy(), labels["dev"], logits[test].numpy(),
                                      labels[test], p.data.labels, cfg.train.threshold_for)
    summary = {
        "dataset": p.data.name, "model": cfg.model.model, "method": cfg.model.method, "labels": p.data.labels,
        "seed": cfg.train.seed, **result, **report,
        "final_train_loss": rows[-1]["train_loss"] if rows else None,
        "dev": evals.get("dev"), "test": evals.get(test), "test_split": test,
        "test_source": p.data.test_source if test == "test" else "dev (no test split)",
        "splits": {k: v for k, v in evals.items()}, "confusion": conf,
        **calibration,
        **test_by_source(p.data, test, probs_of[test]),
        "inference_ms_per_example": round(t_eval[test], 4),
        **latency_ms(p.model, p.splits[test], device),
        "lora_layers": p.lora_layers, "machine": machine(),
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        **(extra or {}),
    }
    return write_summary(run, summary)


def calibration_summary(run: RunDir, dev_logits: np.ndarray, dev_labels: np.ndarray, test_logits: np.ndarray,
                        test_labels: np.ndarray, label_names: list[str], rule: str) -> dict:
    """Fit the temperature and threshold on dev, write calibration.json, and return the summary
    keys: `calibration` (its content) and, for binary tasks with a threshold, `test_at_threshold`
    (test metrics and confusion with the threshold applied to the calibrated probabilities)."""
    cal = calibrate(dev_logits, dev_labels, test_logits, test_labels, label_names, rule)
    save_calibration(run.path, cal)
    out = {"calibration": cal}
    if cal["threshold"] is not None:
        probs = scaled_softmax(test_logits, cal["temperature"])  # (N, C) calibrated
        pred = decide(probs, cal["threshold"])
        n = len(label_names)
        out["test_at_threshold"] = {"threshold": cal["threshold"],
                                    **classification_metrics(probs, test_labels, n, pred=pred),
                                    "confusion": confusion(probs, test_labels, n, pred=pred)}
    return out


def write_summary(run: RunDir, summary: dict) -> dict:
    """Add `warnings` (a constant or near-chance model; calibration trouble), print each as a
    `warning:` line on stderr, and write summary.json."""
    summary["warnings"] = degenerate_warnings(summary)
    if summary.get("calibration", {}).get("warning"):
        summary["warnings"].append(summary["calibration"]["warning"])
    for w in summary["warnings"]:
        print(f"warning: {run.path.name}: {w}", file=sys.stderr)
    run.write_summary(summary)
    return summary
