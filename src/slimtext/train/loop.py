"""The one training loop. It knows nothing about a model beyond
`model(input_ids, attention_mask) -> logits` and a loss `loss_fn(logits, batch) -> scalar`.

Per epoch: length-bucketed batches (seeded by seed + epoch), AdamW/Adam/SGD/RMSprop, warm-up then
linear decay, gradient clipping; then validation metrics appended to `metrics.jsonl`, the best
weights kept by the chosen validation metric (early stopping with `patience`), and one atomic
commit of the epoch (weights, optimizer, scheduler, RNG, loop state, metrics rows; see
`slimtext.train.state`) so `--resume` continues exactly where an interrupted run stopped. Under `torchrun`, DDP with gloo (CPU) or nccl (CUDA): every rank
takes its share of the same global batch; rank 0 alone writes.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from slimtext.data.batches import EncodedSplit, collate, eval_batches, train_batches
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.rundir import RunDir
from slimtext.train import ddp
from slimtext.train.losses import CrossEntropy, class_weights
from slimtext.train.malloc import retain_freed_memory
from slimtext.train.metrics import PeakMemory, classification_metrics
from slimtext.train.precision import resolve
from slimtext.train.state import Hook, LoopState, commit_epoch, hook_from_env, publish_best, restore

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
METRICS = ("accuracy", "macro_f1", "mcc", "roc_auc", "loss")
PROGRESS_EVERY_S = 30.0  # how often a training run notes its step in progress.json (for a study's heartbeat)


@dataclass
class TrainConfig:
    epochs: int = field(default=3, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=32, metadata={"help": "examples per optimizer step (global, across DDP ranks)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    optimizer: str = field(default="adamw", metadata={"help": "sgd, adam, adamw or rmsprop"})
    weight_decay: float = field(default=0.01, metadata={"help": "decoupled (adamw) or L2 weight decay; never on biases/norms"})
    momentum: float = field(default=0.9, metadata={"help": "momentum for sgd and rmsprop"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of steps warming the lr up linearly from 0"})
    schedule: str = field(default="linear", metadata={"help": "after warm-up: linear decay to 0, or constant"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: off)"})
    early_stop_metric: str = field(default="macro_f1", metadata={"help": "validation metric that picks the best epoch"})
    patience: int = field(default=0, metadata={"help": "stop after this many epochs without improvement (0: off)"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, dropout and batch order"})
    eval_batch_size: int = field(default=128, metadata={"help": "batch size for evaluation (and at most 16,384 padded tokens a batch)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cpu or cuda"})
    threads: int = field(default=0, metadata={"help": "torch intra-op threads (0: torch's default, one per physical core)"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 where a short cached probe finds this machine's bf16 matmuls >= 1.2x faster, else fp32), fp32, or bf16: bfloat16 autocast for the training forward and the per-epoch dev evaluation (weights, gradients and optimizer state stay fp32)"})
    class_weight: str = field(default="none", metadata={"help": "none, or balanced: weight the cross-entropy by inverse class frequency in the train split"})
    threshold_for: str = field(default="macro_f1", metadata={"help": "binary tasks: the decision threshold chosen on dev after training, by macro_f1 (the best dev macro-F1) or precision=P (the lowest threshold reaching dev precision P for the positive label)"})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(precision: str, device: torch.device):
    """The forward's precision context: nothing for fp32, bfloat16 autocast for bf16 (`auto` is
    resolved first: `slimtext.train.precision.resolve`)."""
    if precision not in ("fp32", "bf16"):
        raise UnknownNameError("precision", precision, ["fp32", "bf16"])
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    import random  # noqa: PLC0415

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig,
                   extra: list[tuple[str, torch.nn.Parameter]] = ()) -> torch.optim.Optimizer:
    """The optimizer of `model`'s trainable parameters and `extra` (name, parameter) pairs (a
    loss's own parameters, e.g. a distillation projection); no weight decay on biases/norms."""
    if cfg.optimizer not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg.optimizer, list(OPTIMIZERS))
    decay, no_decay = [], []
    for name, p in [*model.named_parameters(), *extra]:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # the fused kernel updates every tensor in one pass (6x faster than the per-tensor loop on CPU)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return cls(groups, lr=cfg.lr, fused=fused or None)


def make_scheduler(opt, cfg: TrainConfig, total_steps: int):
    warm = int(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    if cfg.schedule not in ("linear", "constant"):
        raise UnknownNameError("schedule", cfg.schedule, ["linear", "constant"])
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.inference_mode()
def map_batches(model: torch.nn.Module, fn, split: EncodedSplit, batch_size: int = 128,
                device: torch.device | str = "cpu", precision: str = "fp32",
                desc: str | None = None) -> torch.Tensor:
    """`fn(input_ids, attention_mask)` over the split in eval mode, in length-sorted batches (little
    padding); rows (N, ...) fp32 on `device`, in the split's order. `fn` is `model` or one of its
    methods; a progress bar titled `desc` shows on a terminal."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    out = torch.empty(0, device=device)
    show = desc is not None and show_progress()
    for idx in tqdm(eval_batches(split.lengths, batch_size), desc=desc, disable=not show, leave=False):
        b = collate(split, idx)
        with autocast(precision, device):
            y = fn(b["input_ids"].to(device), b["attention_mask"].to(device)).float()
        if out.numel() == 0:
            out = torch.empty(len(split), *y.shape[1:], device=device)
        out[idx.to(device)] = y
    model.train(was_training)
    return out


def predict_logits(model: torch.nn.Module, split: EncodedSplit, batch_size: int = 128,
                   device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """Logits (N, C) fp32 on the CPU, in the split's order (length-sorted batches)."""
    return map_batches(model, model, split, batch_size, device, precision).cpu()


def logit_metrics(logits: torch.Tensor, labels: torch.Tensor, num_labels: int) -> tuple[dict, np.ndarray]:
    """Metrics (loss, accuracy, macro-F1, MCC, ROC-AUC; argmax decisions) of logits (N, C) and
    their probabilities (N, C)."""
    logits = torch.as_tensor(logits).float()
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    probs = logits.softmax(-1).numpy()
    return {"loss": loss, **classification_metrics(probs, labels.numpy(), num_labels)}, probs


def evaluate(model, split: EncodedSplit, num_labels: int, batch_size: int = 128, device="cpu",
             precision: str = "fp32") -> tuple[dict, np.ndarray]:
    """Metrics (loss, accuracy, macro-F1, MCC, ROC-AUC) and probabilities (N, C); the forward in
    length-sorted batches (the inference path's), under `precision`'s autocast."""
    return logit_metrics(predict_logits(model, split, batch_size, device, precision), split.labels, num_labels)


def train_step(net: torch.nn.Module, batch: dict, loss_fn: Callable, opt, sched, cfg: TrainConfig,
               params: list[torch.Tensor]) -> float:
    """One optimizer step on one batch (already on the device); returns the batch's mean loss.
    `params` are the trainable parameters (gradient clipping). The loss is computed in fp32."""
    with autocast(cfg.precision, batch["input_ids"].device):
        logits = net(batch["input_ids"], batch["attention_mask"])
    loss = loss_fn(logits.float(), batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step()
    sched.step()
    return loss.item()


@dataclass
class _Fit:
    """What the end of an epoch needs besides the loop state (one object, not a dozen arguments)."""
    model: torch.nn.Module
    dev: EncodedSplit
    cfg: TrainConfig
    run: RunDir
    num_labels: int
    device: torch.device
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    state_fn: Callable
    hook: Hook | None
    mem: PeakMemory
    quiet: bool
    aux: list  # (name, parameter) of the loss's own trainable parameters

    @property
    def sign(self) -> float:  # scores are compared as sign * metric: higher is better
        return -1.0 if self.cfg.early_stop_metric == "loss" else 1.0


def show_progress(quiet: bool = False) -> bool:
    """Progress bars on a terminal or in a notebook, unless `quiet` or $SLIMTEXT_QUIET=1."""
    if quiet or os.environ.get("SLIMTEXT_QUIET", "") not in ("", "0"):
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def fit(model: torch.nn.Module, train: EncodedSplit, dev: EncodedSplit, cfg: TrainConfig, run: RunDir,
        num_labels: int, loss_fn: Callable | None = None, resume: bool = False, quiet: bool = False,
        state_fn: Callable | None = None, load_fn: Callable | None = None, hook: Hook | None = None) -> dict:
    """Train; returns {'best_epoch', 'best_<metric>', 'train_seconds', 'peak_memory_mb', 'epochs_run',
    'precision'} and, for `auto`, 'precision_probe' (`slimtext.train.precision.probe`).
    The best epoch's weights (`state_fn(model)`, default the full state dict) end up in
    `run.weights_path`; `load_fn(model, state)` puts such a state back (for --resume).
    `hook(point, state)` runs after every write (`slimtext.train.state.WRITE_POINTS`); by default
    the one $SLIMTEXT_TEST_HOOK names, if any. A resume without a committed epoch starts at epoch 1."""
    state_fn = state_fn or (lambda m: m.state_dict())
    load_fn = load_fn or (lambda m, sd: m.load_state_dict(sd))
    hook = hook or hook_from_env()
    if cfg.early_stop_metric not in METRICS:
        raise UnknownNameError("metric", cfg.early_stop_metric, list(METRICS))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = ddp.rank(), ddp.world()
    # big per-step buffers (embedding gradients) reused, not page-faulted anew; DDP ranks keep
    # glibc's defaults until the gloo abort seen in test_ddp is understood (it also happened
    # with this off, so this is caution, not its cure)
    if world == 1:
        retain_freed_memory()
    if cfg.batch_size % world:
        raise SlimtextError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    device = resolve_device(cfg.device)
    chosen, probe = resolve(cfg.precision, model, device)  # auto: a cached probe of this machine
    cfg = replace(cfg, precision=chosen)
    model.to(device)
    weight = class_weights(train.labels, num_labels, cfg.class_weight)  # an unknown mode fails here
    loss_fn = (loss_fn or CrossEntropy(weight)).to(device)
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    # a loss with parameters of its own (LayerKD's projection) trains them with the model; they
    # are checkpointed beside the optimizer so a resume is exact (not synced across DDP ranks)
    aux = [(n, p) for n, p in loss_fn.named_parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg, aux)
    params = [p for p in model.parameters() if p.requires_grad] + [p for _, p in aux]
    steps_per_epoch = len(train_batches(train.lengths, cfg.batch_size, cfg.seed, 0, rank=rank, world=world))
    sched = make_scheduler(opt, cfg, cfg.epochs * steps_per_epoch)
    st = LoopState()
    saved = restore(run, writer=rank == 0) if resume else None
    if saved is not None:
        st, weights, extra = saved
        load_fn(model, weights)
        opt.load_state_dict(extra["optimizer"])
        sched.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        with torch.no_grad():
            for n, p in aux:
                p.copy_(extra["loss_params"][n])

    show = show_progress(quiet) and rank == 0
    with PeakMemory() as mem:
        ctx = _Fit(model, dev, cfg, run, num_labels, device, opt, sched, state_fn, hook, mem, quiet, aux)
        for epoch in range(st.epoch, cfg.epochs if not st.stopped else st.epoch):
            net.train()
            t0 = time.perf_counter()
            batches = train_batches(train.lengths, cfg.batch_size, cfg.seed, epoch, rank=rank, world=world)
            total, seen, noted = 0.0, 0, -math.inf
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
            for step, idx in enumerate(bar, 1):
                b = {k: v.to(device) for k, v in collate(train, idx, bucket=True).items()}
                total += train_step(net, b, loss_fn, opt, sched, cfg, params) * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{total / seen:.4f}")
                now = time.perf_counter()
                if rank == 0 and (now - noted >= PROGRESS_EVERY_S or step == len(batches)):
                    run.write_progress(epoch + 1, cfg.epochs, step, len(batches), now - t0)
                    noted = now
            train_loss = total / max(seen, 1)
            if world > 1:  # mean over ranks, weighted by examples
                t = torch.tensor([total, seen], dtype=torch.float64)
                dist.all_reduce(t)
                train_loss, seen = (t[0] / t[1]).item(), int(t[1].item())
            epoch_seconds = time.perf_counter() - t0
            st.train_seconds += epoch_seconds
            st.epoch = epoch + 1
            if rank == 0:
                _end_of_epoch(ctx, st, train_loss, seen, epoch_seconds)
            stop = st.stopped
            if world > 1:  # every rank stops together
                flag = torch.tensor([int(stop)])
                dist.broadcast(flag, 0)
                stop = bool(flag.item())
            if stop:
                break
    if rank == 0:
        publish_best(run, st, hook)
    return {"best_epoch": st.best_epoch, f"best_dev_{cfg.early_stop_metric}": ctx.sign * st.best,
            "train_seconds": round(st.train_seconds, 3), "peak_memory_mb": mem.peak_mb,
            "epochs_run": st.epoch, "precision": chosen, **({"precision_probe": probe} if probe else {})}


def _end_of_epoch(ctx: _Fit, st: LoopState, train_loss: float, seen: int, epoch_seconds: float) -> None:
    """Rank 0: validate, track the best epoch and early stopping, commit the epoch, log."""
    cfg = ctx.cfg
    dev_metrics, _ = evaluate(ctx.model, ctx.dev, ctx.num_labels, cfg.eval_batch_size, ctx.device, cfg.precision)
    score = dev_metrics[cfg.early_stop_metric]
    score = -math.inf if score is None else ctx.sign * score
    if score > st.best or st.best_epoch < 0:
        st.best, st.best_epoch, st.bad_epochs = score, st.epoch, 0
    else:
        st.bad_epochs += 1
    st.stopped = bool(cfg.patience and st.bad_epochs >= cfg.patience)
    row = {"epoch": st.epoch, "train_loss": train_loss, **{f"dev_{k}": v for k, v in dev_metrics.items()},
           "epoch_seconds": round(epoch_seconds, 3), "examples_per_s": round(seen / epoch_seconds, 2),
           "peak_memory_mb": ctx.mem.peak_mb, "lr": ctx.sched.get_last_lr()[0]}
    st.rows.append(row)
    extra = {"optimizer": ctx.opt.state_dict(), "scheduler": ctx.sched.state_dict(), "rng": torch.get_rng_state(),
             "loss_params": {n: p.detach().cpu().clone() for n, p in ctx.aux}}
    commit_epoch(ctx.run, st, ctx.state_fn(ctx.model), extra, ctx.hook)
    if not ctx.quiet:
        print(f"epoch {st.epoch}: train_loss {train_loss:.4f}  dev_loss {dev_metrics['loss']:.4f}  "
              f"dev_acc {dev_metrics['accuracy']:.4f}  dev_f1 {dev_metrics['macro_f1']:.4f}  "
              f"({epoch_seconds:.1f}s, {row['examples_per_s']:.0f} ex/s)", file=sys.stderr)
