"""Char-LM recipe: train `CharLM` with truncated backpropagation through time (TBPTT).

The training text is cut into `batch_size` contiguous streams (a (B, L) matrix, as in char-rnn);
each step reads the next `bptt` characters of every stream, predicts the following ones, and
carries the LSTM state into the next window (detached, so gradients stop at the window edge).
After a full pass the streams start again from a fresh state. The last `val_fraction` of the text
is held out for validation, read the same way without gradients.

Every `eval_every` steps (an "epoch" in metrics.jsonl) the recipe records train and validation
loss in nats/char, bits/char (loss / ln 2), perplexity (exp loss) and timings, saves a checkpoint
for `--resume`, and keeps the best weights as model.safetensors. It stops at whichever budget comes
first (`max_minutes`, `max_steps`, `max_epochs`) and then writes summary.json.

Character-classification tasks (`slimtext lm chartask`) are not trained here: they are datasets
(`chartask:TASK:WINDOW:CORPUS`, `slimtext.data.chartask`) that go through `recipes.finetune`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from slimtext.data.registry import text_corpus
from slimtext.errors import SlimtextError
from slimtext.models import param_report
from slimtext.models.charlm import (
    CharLM,
    CharLMConfig,
    CharLMVocab,
)
from slimtext.rundir import (
    RunDir,
    atomic_save_safetensors,
    atomic_torch_save,
    atomic_write_text,
    load_safetensors,
)
from slimtext.train.loop import TrainConfig, make_optimizer, resolve_device
from slimtext.train.progress import bar as progress_bar

LN2 = math.log(2)


@dataclass
class LMTrainConfig:
    data: str = field(
        default="tinyshakespeare", metadata={"help": "corpus name or path to a text file"}
    )
    out: str = field(default="runs/charlm", metadata={"help": "run directory to write"})
    model: CharLMConfig = field(
        default_factory=CharLMConfig, metadata={"help": "the language model (its options below)"}
    )
    batch_size: int = field(default=32, metadata={"help": "parallel streams per step"})
    bptt: int = field(default=100, metadata={"help": "characters per TBPTT window"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW, as `slimtext train` builds it)"})
    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "final lr / peak lr for the cosine decay"}
    )
    cosine: bool = field(
        default=True,
        metadata={"help": "cosine-decay the lr over the budget (the time budget counts too)"},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (never on biases)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = no clipping)"})
    max_minutes: float = field(default=20.0, metadata={"help": "time budget in minutes (0 = none)"})
    max_steps: int = field(default=0, metadata={"help": "step budget (0 = none)"})
    max_epochs: float = field(
        default=0.0, metadata={"help": "budget in passes over the text (0 = none)"}
    )
    eval_every: int = field(
        default=200, metadata={"help": "steps between validations (one metrics row each)"}
    )
    val_fraction: float = field(default=0.1, metadata={"help": "last part of the text held out"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads (0 = torch default)"})
    adapt_threads: bool = field(
        default=True,
        metadata={"help": "use 1 thread instead when it measures faster (busy shared CPUs)"},
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the run's last checkpoint"}
    )


class ThreadTuner:
    """Chooses between 1 and `max_threads` torch CPU threads by measured step time.

    It times `probe` steps with each count and keeps the fastest; it probes again after `every`
    steps, or at once when a multi-threaded step takes over twice its probed time. Alone on a
    machine 2 threads beat 1; on 2 cores that other processes keep busy, 2 threads that wait for
    each other at every parallel region measured 5x slower than 1 thread.
    """

    def __init__(self, max_threads: int, enabled=True, every=100, probe=3, clock=time.perf_counter):
        self.counts = [max_threads, 1] if enabled and max_threads > 1 else [max_threads]
        self.every, self.probe, self.clock = every, probe, clock
        torch.set_num_threads(max_threads)
        self._start_probe()

    def _start_probe(self) -> None:
        self.queue = (
            [n for n in self.counts for _ in range(self.probe)] if len(self.counts) > 1 else []
        )
        self.times, self.since, self.best_time = {}, 0, math.inf

    def before_step(self) -> None:
        if self.queue:
            torch.set_num_threads(self.queue[0])
        self.t0 = self.clock()

    def after_step(self) -> None:
        dt = self.clock() - self.t0
        if self.queue:
            n = self.queue.pop(0)
            self.times[n] = min(self.times.get(n, math.inf), dt)
            if not self.queue:  # probing done: keep the fastest
                best = min(self.times, key=self.times.get)
                self.best_time = self.times[best]
                torch.set_num_threads(best)
        elif len(self.counts) > 1:
            self.since += 1
            slow = torch.get_num_threads() > 1 and dt > 2 * self.best_time
            if self.since >= self.every or slow:
                self._start_probe()


def make_streams(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) ids -> (n, L) matrix of n contiguous streams (the tail that does not fit is dropped)."""
    L = len(ids) // n
    if L < 2:
        raise SlimtextError(f"text too short: {len(ids)} characters cannot fill {n} streams")
    return ids[: n * L].view(n, L)  # (n, L)


def windows(streams: torch.Tensor, bptt: int, start: int = 0):
    """Yield (position, x (B, t), y (B, t)) over the streams, y shifted one character ahead."""
    L = streams.size(1)
    for i in range(start, L - 1, bptt):
        t = min(bptt, L - 1 - i)
        yield i, streams[:, i : i + t], streams[:, i + 1 : i + 1 + t]


@torch.no_grad()
def evaluate_lm(model: CharLM, streams: torch.Tensor, bptt: int) -> float:
    """Mean negative log-likelihood per character (nats) over all windows, state carried."""
    model.eval()
    total, count, state = 0.0, 0, None
    for _, x, y in windows(streams, bptt):
        logits, state = model(x, state)  # (B, t, V)
        total += F.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="sum"
        ).item()  # (B*t, V)
        count += y.numel()
    model.train()
    return total / count


def lm_row(prefix: str, loss: float) -> dict:
    return {
        f"{prefix}_loss": round(loss, 5),
        f"{prefix}_bpc": round(loss / LN2, 5),
        f"{prefix}_ppl": round(math.exp(loss), 4),
    }


def train_lm(cfg: LMTrainConfig, argv: list[str] | None = None) -> dict:
    """Train a CharLM into `cfg.out`; returns the summary (also written as summary.json)."""
    wall0 = time.time()
    device = resolve_device(cfg.device)
    tuner = ThreadTuner(
        cfg.threads or torch.get_num_threads(), cfg.adapt_threads and device.type == "cpu"
    )
    torch.manual_seed(cfg.seed)
    if not (cfg.max_minutes > 0 or cfg.max_steps > 0 or cfg.max_epochs > 0):
        raise SlimtextError("set at least one budget: --max-minutes, --max-steps or --max-epochs")
    run = RunDir(cfg.out)
    committed = run.committed_checkpoint() if cfg.resume and run.exists() else None
    resuming = committed is not None
    if run.exists() and not cfg.resume:
        raise SlimtextError(
            f"{run.path} already holds a run; pass --resume or choose another --out"
        )

    text = text_corpus(cfg.data)
    vocab = CharLMVocab.load(run.path / "vocab.json") if resuming else CharLMVocab.from_text(text)
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    n_val = int(len(ids) * cfg.val_fraction)
    if n_val < 2:
        raise SlimtextError(f"val_fraction {cfg.val_fraction} leaves no validation text")
    train, val = make_streams(ids[:-n_val], cfg.batch_size), ids[-n_val:]
    val = make_streams(val, max(1, min(cfg.batch_size, len(val) // (cfg.bptt + 1))))
    train, val = train.to(device), val.to(device)
    chars_per_pass = train.numel()

    mcfg = replace(cfg.model, vocab_size=vocab.vocab_size)
    model = CharLM(mcfg, vocab).to(device)
    opt = make_optimizer(model, TrainConfig(optimizer="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay))
    st = {
        "step": 0,
        "epoch": 0,
        "pos": 0,
        "passes": 0,
        "elapsed": 0.0,
        "best_val": math.inf,
        "best_epoch": 0,
    }
    state = None
    if resuming:
        model.load_state_dict(load_safetensors(committed / "model.safetensors"))
        saved = torch.load(committed / "state.pt", weights_only=True)
        opt.load_state_dict(saved.pop("optimizer"))
        torch.set_rng_state(saved.pop("rng"))
        hidden = saved.pop("hidden")
        state = tuple(h.to(device) for h in hidden) if hidden else None
        st.update(saved)
        run.write_metrics([r for r in run.read_metrics() if r["epoch"] <= st["epoch"]])
        cmd = (run.path / "command.txt").read_text(encoding="utf-8")
        atomic_write_text(
            run.path / "command.txt", cmd + "# resumed: " + " ".join(argv or sys.argv) + "\n"
        )
    else:
        run.create(asdict(cfg), argv)
        vocab.save(run.path / "vocab.json")
        run.write_json("model_config.json", asdict(mcfg))

    budget_s = cfg.max_minutes * 60
    t0, prior = time.time(), st["elapsed"]

    def progress() -> float:  # fraction of the first budget to run out
        fr = [
            st["step"] / cfg.max_steps if cfg.max_steps else 0.0,
            st["passes_f"] / cfg.max_epochs if cfg.max_epochs else 0.0,
            st["elapsed"] / budget_s if budget_s else 0.0,
        ]
        return min(1.0, max(fr))

    def save_checkpoint() -> None:
        """Commit this evaluation as checkpoint-N, as the classifier loop does (rundir.commit_checkpoint)."""
        hidden = [h.detach().cpu() for h in state] if state is not None else []
        saved = {k: st[k] for k in ("step", "epoch", "pos", "passes", "elapsed", "best_val", "best_epoch")}

        def write(folder: Path) -> None:
            atomic_save_safetensors(folder / "model.safetensors", model.state_dict())
            atomic_torch_save(folder / "state.pt", {**saved, "optimizer": opt.state_dict(),
                                                    "rng": torch.get_rng_state(), "hidden": hidden})

        run.commit_checkpoint(st["epoch"], write)
        run.clean(keep=set())

    with run.lock():  # one writer per run, as for classifier runs
        bar = progress_bar(
            total=cfg.max_steps or None,
            initial=st["step"],
            unit="step",
            disable=not sys.stderr.isatty(),
        )
        interval_loss, interval_n, interval_t0, last_eval_s = 0.0, 0, time.time(), 0.0
        stopped = None
        model.train()
        while stopped is None:
            for pos, x, y in windows(train, cfg.bptt, st["pos"]):
                st["passes_f"] = st["passes"] + pos / train.size(1)
                lr = cfg.lr
                if cfg.cosine:
                    lo = cfg.lr * cfg.min_lr_ratio
                    lr = lo + 0.5 * (cfg.lr - lo) * (1 + math.cos(math.pi * progress()))
                for g in opt.param_groups:
                    g["lr"] = lr
                if state is not None:
                    state = tuple(s.detach() for s in state)  # truncate BPTT at the window edge
                tuner.before_step()
                logits, state = model(x, state)  # (B, t, V)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*t, V) vs (B*t,)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                tuner.after_step()
                st["step"] += 1
                st["pos"] = pos + x.size(1)
                st["elapsed"] = prior + time.time() - t0
                interval_loss, interval_n = interval_loss + loss.item(), interval_n + 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")

                if cfg.max_steps and st["step"] >= cfg.max_steps:
                    stopped = "max_steps"
                elif cfg.max_epochs and st["passes_f"] >= cfg.max_epochs:
                    stopped = "max_epochs"
                elif budget_s and st["elapsed"] + last_eval_s >= budget_s:
                    stopped = "max_minutes"
                if st["step"] % cfg.eval_every == 0 or stopped:
                    e0 = time.time()
                    val_loss = evaluate_lm(model, val, cfg.bptt)
                    last_eval_s = time.time() - e0
                    st["elapsed"] = prior + time.time() - t0
                    st["epoch"] += 1
                    seconds = time.time() - interval_t0
                    run.append_metrics(
                        {
                            "epoch": st["epoch"],
                            "step": st["step"],
                            "passes": round(st["passes_f"], 4),
                            **lm_row("train", interval_loss / interval_n),
                            **lm_row("val", val_loss),
                            "lr": lr,
                            "epoch_seconds": round(seconds, 2),
                            "eval_seconds": round(last_eval_s, 2),
                            "elapsed_seconds": round(st["elapsed"], 2),
                            "chars_per_second": round(interval_n * x.numel() / seconds, 1),
                            "threads": torch.get_num_threads(),
                        }
                    )
                    if val_loss < st["best_val"]:
                        st["best_val"], st["best_epoch"] = val_loss, st["epoch"]
                        atomic_save_safetensors(
                            run.weights_path, model.state_dict(), metadata={"epoch": str(st["epoch"])}
                        )
                    save_checkpoint()
                    interval_loss, interval_n, interval_t0 = 0.0, 0, time.time()
                if stopped:
                    break
            else:  # a full pass: start the streams again from a fresh state
                st["passes"], st["pos"], state = st["passes"] + 1, 0, None
        bar.close()

        rows = run.read_metrics()
        best, last = rows[st["best_epoch"] - 1], rows[-1]
        summary = {
            "method": "charlm",
            "stopped": stopped,
            "best_epoch": st["best_epoch"],
            **{f"best_{k}": best[k] for k in ("val_loss", "val_bpc", "val_ppl")},
            **{f"final_{k}": last[k] for k in ("train_loss", "val_loss", "val_bpc", "val_ppl")},
            "steps": st["step"],
            "passes": last["passes"],
            "train_chars_per_pass": chars_per_pass,
            "val_chars": val.numel(),
            "vocab_size": vocab.vocab_size,
            **param_report(model),
            "train_seconds": round(st["elapsed"], 2),
            "process_wall_seconds": round(time.time() - wall0, 2),
            "device": str(device),
            "threads_max": tuner.counts[0],
        }
        run.write_summary(summary)
    return summary


def load_charlm(run_dir: str | Path, device: str = "cpu") -> CharLM:
    """The best CharLM of a run directory, in eval mode."""
    run = RunDir(run_dir)
    if not run.weights_path.exists():
        raise SlimtextError(
            f"{run.path} has no model.safetensors; is it a finished `lm train` run?"
        )
    model = CharLM(
        CharLMConfig(**run.read_json("model_config.json")),
        CharLMVocab.load(run.path / "vocab.json"),
    )
    model.load_state_dict(load_safetensors(run.weights_path))
    return model.to(device).eval()
