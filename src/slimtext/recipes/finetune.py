"""`slimtext train`: fine-tune one classifier (RNN from scratch; transformer full / head / LoRA)
on one dataset and write a complete run directory. `resume` continues an interrupted run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from slimtext.checkpoint import FROZEN, load_weights, needs_frozen_copy, save_base, save_weights
from slimtext.config import ConfigError, RunConfig, validate
from slimtext.data.batches import EncodedSplit, collate
from slimtext.data.registry import TextDataset, check_trainable, load_dataset
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
from slimtext.rundir import RunDir, atomic_save_safetensors, load_safetensors
from slimtext.train import ddp, head_cache
from slimtext.train.degenerate import degenerate_warnings
from slimtext.train.loop import fit, logit_metrics, predict_logits, resolve_device, seed_everything
from slimtext.train.losses import class_weights
from slimtext.train.metrics import classification_metrics, confusion
from slimtext.train.precision import device_name, resolve
from slimtext.train.state import Hook, LoopState, hook_from_env

PREDICTIONS = "test_predictions.json"


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
    check_trainable(data)
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
    return {"cpu": device_name(torch.device("cpu")), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}


def check_training_options(cfg: RunConfig) -> None:
    """Options checked before any work: --class-weight and --threshold-for."""
    class_weights(torch.zeros(0), 2, cfg.train.class_weight)
    parse_rule(cfg.train.threshold_for)


def check_out(out: Path) -> None:
    """A new run's folder: absent, or empty; never a file, a finished run or someone else's files."""
    run = RunDir(out)
    if out.exists() and not out.is_dir():
        raise SlimtextError(f"--out {out} is a file; give a folder for the run")
    if run.is_finished():
        raise SlimtextError(f"{out} already holds a finished run; choose another --out")
    if run.exists():
        raise SlimtextError(f"{out} holds an unfinished run; continue it with --resume {out}")
    if out.is_dir() and any(out.iterdir()):
        raise SlimtextError(f"--out {out} is a folder that is not empty and holds no run; choose a new folder")


def check_resume(path: Path) -> RunDir:
    run = RunDir(path)
    if not path.exists():
        raise SlimtextError(f"--resume {path}: no such run directory")
    if not path.is_dir():
        raise SlimtextError(f"--resume {path} is a file; give a run directory")
    if not run.exists():
        raise SlimtextError(f"--resume {path} is not a run directory (no config.yaml)")
    return run


RESUME_MAY_CHANGE = {("train", "threads"), ("train", "eval_batch_size"), ("train", "device"), ("data", "data_dir")}


def resumed_config(given: RunConfig, saved: RunConfig) -> RunConfig:
    """The saved config, with the settings that do not change the result (threads, evaluation batch
    size, device, data folder) taken from `given` where set. Any other setting given with another
    value than the run's is refused, naming each. What counts as given: `given.explicit` (from the
    command line), else every value that is not its default."""
    default, g, s = RunConfig().to_dict(), given.to_dict(), saved.to_dict()
    changed = []
    for section, values in g.items():
        for key, value in values.items():
            set_here = (section, key) in given.explicit if given.explicit is not None else value != default[section][key]
            if not set_here or value == s[section][key]:
                continue
            if (section, key) in RESUME_MAY_CHANGE:
                s[section][key] = value
            else:
                changed.append(f"{section}.{key} (run: {s[section][key]!r}, given: {value!r})")
    if changed:
        raise SlimtextError(f"--resume continues a run with its own settings; these differ: {'; '.join(changed)}. "
                            "Drop them, or start a new run with --out")
    return RunConfig.from_dict(s)


def position_limit(model: torch.nn.Module) -> int | None:
    """The longest input a transformer's learned positions allow (None: no limit, e.g. RNNs)."""
    for m in model.modules():
        pos = getattr(m, "position_embeddings", None)
        if isinstance(pos, torch.nn.Embedding):
            offset = m.pad_token_id + 1 if getattr(m, "family", "") == "mpnet" else 0  # MPNet numbers from pad+1
            return pos.num_embeddings - offset
    return None


def write_run_files(folder: Path, cfg: RunConfig, p: Prepared) -> None:
    """What rebuilds the model besides its weights: tokenizer, labels (and how they were
    normalised), split ids, a head/LoRA student's frozen teacher layers (so that the run
    stands alone: no path to its teacher is followed again), and what it needs of its base
    checkpoint (`checkpoint.save_base`: its config.json, or the sha256 of the frozen base)."""
    run = RunDir(folder)
    save_base(folder, cfg)
    p.tokenizer.save(folder / "tokenizer")
    run.write_json("labels.json", p.data.labels)
    run.write_json("splits.json", p.data.split_ids())
    if p.data.label_mapping:
        run.write_json("label_mapping.json", p.data.label_mapping)
    if needs_frozen_copy(cfg):
        atomic_save_safetensors(folder / FROZEN, p.model.state_dict())


def train(cfg: RunConfig, out: Path | None = None, resume: bool = False, quiet: bool = False,
          loss_fn=None, prepared: Prepared | None = None, extra_summary: dict | None = None,
          hook: Hook | None = None) -> dict:
    """Everything is checked before the run directory exists (config, flags, data, model), which
    then appears whole (`RunDir.build`) and stays locked by this process until the run is finished."""
    log = (lambda *a: None) if quiet or not ddp.is_main() else (lambda *a: print(*a, file=sys.stderr))
    if resume:
        run = check_resume(Path(out))
        if run.is_finished():
            log(f"{run.path} is already finished; nothing to do")
            return run.read_summary()
        cfg = resumed_config(cfg, RunConfig.from_dict(run.read_config()))
    else:
        run = RunDir(out or default_out(cfg))
        check_out(run.path)
    validate(cfg)
    check_training_options(cfg)
    hook = hook or hook_from_env()
    ddp.barrier()  # every rank has checked the run directory before rank 0 creates it
    lock = run.lock() if resume and ddp.is_main() else None  # before reading what the writer may change
    try:
        p = prepared or prepare(cfg, saved_tokenizer=run.path / "tokenizer" if resume else None)
        limit = position_limit(p.model)
        if limit is not None and cfg.model.max_length > limit:
            raise ConfigError(f"model.max_length {cfg.model.max_length} exceeds the {limit} positions of "
                              f"{cfg.model.model}; use --max-length {limit} or less")
        if not resume and ddp.is_main():
            lock = run.build(cfg.to_dict(), lambda folder: write_run_files(folder, cfg, p),
                             point=lambda name: hook(name, LoopState()) if hook else None)
        if lock and lock.stale:
            log(f"note: took over the stale lock of {lock.stale} (that process is gone)")
        if hook and not resume:
            hook("run_created", LoopState())
        return _train(cfg, run, p, resume, quiet, loss_fn, extra_summary, hook, log)
    finally:
        if lock:
            lock.release()


def _train(cfg: RunConfig, run: RunDir, p: Prepared, resume: bool, quiet: bool, loss_fn,
           extra_summary: dict | None, hook: Hook | None, log) -> dict:
    report = param_report(p.model)
    log(f"{cfg.model.model} [{cfg.model.method}] on {p.data.name}: {format_param_report(report)}; "
        f"splits {', '.join(f'{k} {len(v)}' for k, v in p.data.splits.items())}")
    for note in p.data.notes:
        log(f"note: {note}")
    for warning in p.data.warnings:
        log(f"warning: {warning}")
    method = cfg.model.method
    model, splits, cache_seconds = p.model, p.splits, 0.0
    if method == "head" and head_cache.supports(p.model):  # frozen encoder: run it once, not per epoch
        t0 = time.perf_counter()
        # resolved once here (auto: the machine's probe); the final dev/test scores always come
        # from fp32 features, the served model's numbers (cached here, or by _scoring_features)
        precision = resolve(cfg.train.precision, p.model, resolve_device(cfg.train.device))[0]
        to_cache = p.splits if precision == "fp32" else {k: p.splits[k] for k in ("train", "dev")}
        model, splits = head_cache.cache(p.model, to_cache, replace(cfg.train, precision=precision),
                                         quiet=quiet or not ddp.is_main())
        cache_seconds = time.perf_counter() - t0
        log(f"head-only: cached the frozen encoder's features of {', '.join(to_cache)} in {cache_seconds:.1f}s")
    result = fit(model, splits["train"], splits["dev"], cfg.train, run, len(p.data.labels),
                 loss_fn=loss_fn, resume=resume, quiet=quiet, hook=hook,
                 state_fn=lambda m: save_weights(m, method), load_fn=lambda m, sd: load_weights(m, sd, method))
    if cache_seconds:  # the encoder pass is part of training time
        result["train_seconds"] = round(result["train_seconds"] + cache_seconds, 3)
        result["feature_cache_seconds"] = round(cache_seconds, 3)
    if not ddp.is_main():
        return result
    return finish(cfg, run, p, result, report, extra_summary, _scoring_features(cfg, p, model, splits, quiet))


def _scoring_features(cfg: RunConfig, p: Prepared, model, splits: dict, quiet: bool) -> tuple | None:
    """A head-only run's (HeadOnly, cached dev/test splits) in fp32, the served model's numbers;
    None for runs that train the encoder. fp32 runs cached dev/test with train; bf16 runs cache
    fp32 features of dev/test now (on disk too, so the next seed or lr reads them). Called on the
    main process only."""
    if model is p.model:
        return None
    scored = {k: v for k, v in p.splits.items() if k != "train"}
    if set(scored) <= set(splits):
        return model, {k: splits[k] for k in scored}
    return head_cache.cache(p.model, scored, replace(cfg.train, precision="fp32"), quiet=quiet)


TIMED = 64  # examples the full model runs for a head-only run's batched ms/example


def finish(cfg: RunConfig, run: RunDir, p: Prepared, result: dict, report: dict, extra: dict | None = None,
           cached: tuple | None = None) -> dict:
    """Reload the best epoch, evaluate dev and test splits, calibrate on dev (temperature and,
    for binary tasks, a decision threshold: calibration.json), time inference, write summary.json.
    `cached`: a head-only run's (HeadOnly, cached splits): the splits' logits come from the cached
    features (the same numbers, without running the frozen encoder again), and the full model's
    batched ms/example is timed on the first TIMED test examples instead of the whole split."""
    device = resolve_device(cfg.train.device)
    load_weights(p.model, load_safetensors(run.weights_path), cfg.model.method)  # HeadOnly shares the head
    p.model.to(device)
    n_labels = len(p.data.labels)
    net, esplits = cached or (p.model, p.splits)
    evals, conf, logits, probs_of = {}, {}, {}, {}
    t_eval = {}
    for name, split in esplits.items():
        if name == "train":
            continue
        t0 = time.perf_counter()
        logits[name] = predict_logits(net, split, cfg.train.eval_batch_size, device)
        evals[name], probs = logit_metrics(logits[name], split.labels, n_labels)
        t_eval[name] = (time.perf_counter() - t0) * 1000 / max(1, len(split))
        conf[name], probs_of[name] = confusion(probs, split.labels.numpy(), n_labels), probs
    test = "test" if "test" in evals else "dev"
    if cached:
        whole = p.splits[test]
        part = EncodedSplit(whole.input_ids[:TIMED], whole.labels[:TIMED], whole.pad_id)
        t0 = time.perf_counter()
        predict_logits(p.model, part, cfg.train.eval_batch_size, device)
        t_eval[test] = (time.perf_counter() - t0) * 1000 / max(1, len(part))
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
    write_predictions(run, p.data.splits[test], logits[test], test)
    return write_summary(run, summary)


def write_predictions(run: RunDir, examples: list, logits: torch.Tensor, split: str) -> None:
    """`test_predictions.json`: example ids, gold labels and argmax predictions on the test split,
    for paired comparisons of runs (`experiments.stats`)."""
    run.write_json(PREDICTIONS, {"split": split, "ids": [e.id for e in examples],
                                 "gold": [e.label for e in examples], "pred": logits.argmax(-1).tolist()})


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
