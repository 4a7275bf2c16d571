"""Training speed: slimtext's training step vs the Hugging Face Trainer, side by side on the CPU.

Same weights, same data (the `davidson` train split, tokenized once with the checkpoint's own
WordPiece), same batch size, optimizer (fused AdamW, weight decay 0.01, clip 1.0, linear schedule)
and dropout. What differs is each side's own way of training:

- slimtext: our encoder, `slimtext.train.loop.train_step` and length-bucketed batches
  (`train_batches`); `--precision bf16` is bfloat16 autocast. LoRA via `slimtext.models.lora`.
- Hugging Face: `BertForSequenceClassification` (attn_implementation="sdpa") under `Trainer`
  (use_cpu, no eval, no saving, report_to=[]), random batches padded to the longest by
  `DataCollatorWithPadding`; `bf16=True` when its precision is bf16. LoRA via `peft`.

full / lora: `--rounds` rounds of A then B, each `--steps` optimizer steps; the first step of
every round is a warm-up and is not timed. A length bucket holds 10 to 60 tokens per example, so
a few steps' raw examples/s swings with the buckets drawn: "ex/s" (and the speedup) is real
tokens/s divided by the split's mean length, which is what a whole epoch shows; "raw ex/s" is the
plain count. Use 30+ steps per round for a stable raw figure.

head: a whole `--head-epochs` run on the first `--head-examples` training examples, A then B per
round. slimtext's head-only run computes the frozen encoder's features once
(`slimtext.train.head_cache`) and runs the real `fit` loop, with its per-epoch evaluation of a dev
subset (dev:train as in the full split, 1:8) and checkpoints; the Trainer does no evaluation.
Both times include everything from the first encoder pass on.

Achieved training GFLOP/s counts useful work only: 6 * N * real tokens for full fine-tuning
(forward 2N, backward 4N; N = non-embedding parameters), 4 * N * real tokens for LoRA (forward
plus the input gradients; the adapters' own weight gradients are negligible). It is compared with
fp32 and bf16 linear-layer GFLOP/s measured in this process.

    python bench/train_speed.py --steps 5 --rounds 1 --threads 1          # smoke run
    python bench/train_speed.py --model bert-base-random --precision bf16 --json out.json
    python bench/train_speed.py --precision auto --methods full --json out.json

`--precision auto` resolves as training does (`slimtext.train.precision`: a cached probe of the
model's matmul shapes; bf16 only where >= 1.2x faster); the Trainer then runs fp32 (unless
--hf-precision says otherwise), which is the comparison issue 20 asks for. The probe's record
goes into the JSON as `precision_probe`, beside the matmul peaks measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import machine, matmul_peaks, print_table, set_threads, write_json  # noqa: E402

from slimtext.config import RunConfig  # noqa: E402
from slimtext.data.batches import EncodedSplit, collate, train_batches  # noqa: E402
from slimtext.data.registry import DataConfig, load_dataset  # noqa: E402
from slimtext.data.tokenize import WordPiece  # noqa: E402
from slimtext.models import hub  # noqa: E402
from slimtext.models.encoder import EncoderClassifier, load_encoder  # noqa: E402
from slimtext.models.factory import apply_method  # noqa: E402
from slimtext.recipes.finetune import encode_splits  # noqa: E402
from slimtext.rundir import RunDir  # noqa: E402
from slimtext.train import head_cache  # noqa: E402
from slimtext.train.loop import TrainConfig, fit, make_optimizer, make_scheduler, train_step  # noqa: E402
from slimtext.train.losses import CrossEntropy  # noqa: E402
from slimtext.train.malloc import retain_freed_memory  # noqa: E402
from slimtext.train.precision import resolve  # noqa: E402

BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072)


# ---- models and data --------------------------------------------------------------------------


def checkpoint_folder(name: str, tmp: Path) -> Path:
    """minilm-l6's folder, or a random-weight BERT-base-shaped checkpoint (minilm's vocabulary)."""
    minilm = hub.resolve("minilm-l6")
    if name == "minilm-l6":
        return minilm
    import shutil

    import transformers

    folder = tmp / "bert-base-random"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, **BERT_BASE)
    transformers.BertModel(config).save_pretrained(folder)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm / f, folder / f)
    return folder


def hf_classifier(folder: Path, method: str, args):
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation="sdpa")
    if method == "head":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
    if method == "lora":
        import peft

        cfg = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=args.lora_rank,
                              lora_alpha=args.lora_alpha, lora_dropout=0.0,
                              target_modules=args.lora_targets.split(","))
        model = peft.get_peft_model(model, cfg)
    return model


def our_classifier(folder: Path, method: str, args, hf_model):
    """Our EncoderClassifier on the same checkpoint and the same initial head as the HF model."""
    model = EncoderClassifier(load_encoder(folder), num_labels=2, dropout=0.1, pooling="pooler")
    hf_head = hf_model.get_submodule("base_model.model.classifier" if method == "lora"
                                     else "classifier")
    saved = getattr(hf_head, "modules_to_save", None)  # peft trains a copy of the head
    hf_head = saved["default"] if saved is not None else hf_head
    model.classifier.load_state_dict(hf_head.state_dict())
    cfg = RunConfig.from_dict({"model": {"method": method},
                               "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha,
                                        "targets": args.lora_targets}})
    apply_method(model, cfg)
    return model.train()


def non_embedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def load_train_split(folder: Path, max_length: int) -> tuple[EncodedSplit, EncodedSplit]:
    data = load_dataset(DataConfig(data="davidson"))
    splits = encode_splits(data, WordPiece(folder, max_length=max_length))
    return splits["train"], splits["dev"]


def subset(split: EncodedSplit, n: int) -> EncodedSplit:
    return EncodedSplit(split.input_ids[:n], split.labels[:n], split.pad_id) if n else split


# ---- the two contenders -----------------------------------------------------------------------


class Ours:
    """slimtext's training step on length-bucketed batches; the optimizer lives across rounds."""

    def __init__(self, model, split: EncodedSplit, cfg: TrainConfig):
        self.model, self.split, self.cfg = model, split, cfg
        self.opt = make_optimizer(model, cfg)
        self.sched = make_scheduler(self.opt, cfg, total_steps=10**6)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_fn = CrossEntropy()
        self.batches = self._batches()

    def _batches(self):
        epoch = 0
        while True:
            yield from train_batches(self.split.lengths, self.cfg.batch_size, self.cfg.seed, epoch)
            epoch += 1

    def steps(self, n: int, seed: int) -> list[dict]:
        self.model.train()
        out, t_prev = [], time.perf_counter()
        for _ in range(n):
            b = collate(self.split, next(self.batches), bucket=True)  # padded as `fit` pads
            train_step(self.model, b, self.loss_fn, self.opt, self.sched, self.cfg, self.params)
            t = time.perf_counter()
            out.append({"seconds": t - t_prev, "examples": len(b["labels"]),
                        "real_tokens": int(b["attention_mask"].sum()),
                        "padded_tokens": b["input_ids"].numel()})
            t_prev = t
        return out


def hf_dataset(split: EncodedSplit) -> list[dict]:
    return [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(y)}
            for ids, y in zip(split.input_ids, split.labels.tolist())]


class HF:
    """transformers.Trainer; one fresh Trainer (and optimizer) per round, the model carries on."""

    def __init__(self, model, folder: Path, split: EncodedSplit, args, out: Path):
        import transformers

        self.model, self.args, self.out = model, args, out
        self.data = hf_dataset(split)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)

    def trainer(self, seed: int, collator, callbacks, **kw):
        import transformers

        targs = transformers.TrainingArguments(
            output_dir=str(self.out), use_cpu=True, report_to=[], save_strategy="no",
            eval_strategy="no", logging_strategy="no", disable_tqdm=True,
            per_device_train_batch_size=self.args.batch_size, learning_rate=self.args.lr,
            weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear", seed=seed,
            dataloader_num_workers=0, bf16=self.args.hf_precision == "bf16", **kw)
        return transformers.Trainer(model=self.model, args=targs, train_dataset=self.data,
                                    data_collator=collator, callbacks=callbacks)

    def steps(self, n: int, seed: int) -> list[dict]:
        import transformers

        pad = transformers.DataCollatorWithPadding(self.tokenizer)
        batches, ends = [], []

        def collator(features):
            b = pad(features)
            batches.append({"examples": len(features),
                            "real_tokens": int(b["attention_mask"].sum()),
                            "padded_tokens": b["input_ids"].numel()})
            return b

        class Timer(transformers.TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if not ends:
                    ends.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                ends.append(time.perf_counter())

        self.trainer(seed, collator, [Timer()], max_steps=n).train()
        # accelerate's loader fetches one batch ahead: batch i is step i
        return [{**batches[i], "seconds": ends[i + 1] - ends[i]} for i in range(n)]


# ---- measurements -----------------------------------------------------------------------------


def summarize(steps: list[dict], per_round: int, mean_length: float,
              flops_per_token: float) -> dict:
    """Throughput over the timed steps. A length-bucketed batch holds 10 to 60 tokens per example,
    so a few steps' raw examples/s swings with the buckets drawn; `examples_per_s` is therefore
    real tokens/s divided by the split's mean example length (both sides alike), which is what a
    whole epoch would show. `raw_examples_per_s` is the plain count."""
    timed = [s for i, s in enumerate(steps) if i % per_round]  # a round's first step: warm-up
    sec = sum(s["seconds"] for s in timed)
    ex = sum(s["examples"] for s in timed)
    real, padded = sum(s["real_tokens"] for s in timed), sum(s["padded_tokens"] for s in timed)
    return {"examples_per_s": real / sec / mean_length, "raw_examples_per_s": ex / sec,
            "real_tokens_per_s": real / sec, "ms_per_step": 1000 * sec / len(timed),
            "ms_per_example": 1000 * sec / ex,
            "real_tokens_per_step": real / len(timed),
            "padded_tokens_per_step": padded / len(timed),
            "padding_overhead": padded / real, "gflops": flops_per_token * real / sec / 1e9,
            "timed_steps": len(timed)}


def bench_steps(method: str, folder: Path, split: EncodedSplit, args, tmp: Path) -> list[dict]:
    hf_model = hf_classifier(folder, method, args)
    ours_model = our_classifier(folder, method, args, hf_model)
    cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, weight_decay=0.01, grad_clip=1.0,
                      precision=args.precision, seed=0)
    contenders = {"slimtext": Ours(ours_model, split, cfg),
                  "hf-trainer": HF(hf_model, folder, split, args, tmp / "hf")}
    runs = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, c in contenders.items():  # interleaved: A, B, A, B, ...
            runs[name] += c.steps(args.steps, seed=r)
            print(f"  {method} round {r + 1}/{args.rounds}: {name} done", file=sys.stderr)
    n = non_embedding_params(ours_model)
    mean_length = split.lengths.float().mean().item()
    per_token = (6 if method == "full" else 4) * n
    rows = []
    for name in contenders:
        precision = args.precision if name == "slimtext" else args.hf_precision
        rows.append({"method": method, "contender": name, "precision": precision,
                     "non_embedding_params": n, "flops_per_token": per_token,
                     **summarize(runs[name], args.steps, mean_length, per_token)})
    rows[0]["speedup"] = rows[0]["examples_per_s"] / rows[1]["examples_per_s"]
    return rows


def bench_head(folder: Path, split: EncodedSplit, dev: EncodedSplit, args, tmp: Path) -> list[dict]:
    train_split = subset(split, args.head_examples)
    n = len(train_split)
    dev_split = subset(dev, max(1, n * len(dev) // len(split)))  # the real run's dev:train ratio
    cfg = TrainConfig(epochs=args.head_epochs, batch_size=args.batch_size, lr=1e-3,
                      weight_decay=0.01, precision=args.precision, seed=0)
    hf_model = hf_classifier(folder, "head", args)
    hf = HF(hf_model, folder, train_split, args, tmp / "hf-head")
    times = {"slimtext": [], "hf-trainer": []}
    for r in range(args.rounds):
        ours_model = our_classifier(folder, "head", args, hf_model)
        t0 = time.perf_counter()
        head, cached = head_cache.cache(ours_model, {"train": train_split, "dev": dev_split}, cfg)
        fit(head, cached["train"], cached["dev"], cfg, RunDir(tmp / f"head-{r}"), 2, quiet=True)
        times["slimtext"].append(time.perf_counter() - t0)
        print(f"  head round {r + 1}/{args.rounds}: slimtext done", file=sys.stderr)
        import transformers

        trainer = hf.trainer(r, transformers.DataCollatorWithPadding(hf.tokenizer), [],
                             num_train_epochs=args.head_epochs)
        t0 = time.perf_counter()
        trainer.train()
        times["hf-trainer"].append(time.perf_counter() - t0)
        print(f"  head round {r + 1}/{args.rounds}: hf-trainer done", file=sys.stderr)
    rows = []
    for name, t in times.items():
        sec = statistics.median(t)
        rows.append({"method": "head", "contender": name, "precision": args.precision
                     if name == "slimtext" else args.hf_precision, "run_seconds": sec,
                     "examples_per_s": args.head_epochs * n / sec, "head_examples": n,
                     "head_epochs": args.head_epochs})
    rows[0]["speedup"] = rows[0]["examples_per_s"] / rows[1]["examples_per_s"]
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6", choices=["minilm-l6", "bert-base-random"])
    ap.add_argument("--methods", default="full,head,lora", help="comma list of full, head, lora")
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps per contender per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A, B, A, B, ...)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128, help="truncate to this many tokens")
    ap.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"],
                    help="slimtext's training precision (auto: the probe's choice)")
    ap.add_argument("--hf-precision", default="same", choices=["same", "fp32", "bf16"],
                    help="the Trainer's precision (same: as --precision; fp32 with auto)")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=16)
    ap.add_argument("--lora-targets", default="query,value")
    ap.add_argument("--head-examples", type=int, default=2000, help="head run size (0: all)")
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: physical cores)")
    ap.add_argument("--keep-freed-memory", type=int, default=1, choices=[0, 1],
                    help="1: call train.malloc.retain_freed_memory() as fit does (default); 0: glibc's defaults")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.hf_precision == "same":
        args.hf_precision = "fp32" if args.precision == "auto" else args.precision
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if bad := set(methods) - {"full", "head", "lora"}:
        ap.error(f"unknown method(s) {sorted(bad)}; use full, head, lora")
    set_threads(args.threads)
    # what `fit` does before training: big freed buffers stay in the process (train/malloc.py). It
    # is process-wide, so the Trainer's steps in this process get it too (real Trainer runs would not)
    kept = retain_freed_memory() if args.keep_freed_memory else False
    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = checkpoint_folder(args.model, tmp)
        split, dev = load_train_split(folder, args.max_length)
        encoder = load_encoder(folder)
        hidden = encoder.config.hidden_size
        probe = None
        if args.precision == "auto":  # as training resolves it (cached per machine)
            args.precision, probe = resolve("auto", encoder, torch.device("cpu"))
            print(f"precision auto -> {args.precision} (bf16 {probe['speedup']}x fp32 on the "
                  f"model's shapes{', cached' if probe['cached'] else ''})", file=sys.stderr)
        print(f"{args.model}: measuring matmul peaks ...", file=sys.stderr)
        peaks = matmul_peaks(hidden, tokens=args.batch_size * 32)
        rows = []
        for method in methods:
            if method == "head":
                rows += bench_head(folder, split, dev, args, tmp)
            else:
                rows += bench_steps(method, folder, split, args, tmp)
    for r in rows:
        if "gflops" in r:
            r["pct_of_peak"] = 100 * r["gflops"] / peaks[r["precision"]]["peak_gflops"]
    print(f"\n{args.model}, batch {args.batch_size}, davidson train, threads "
          f"{torch.get_num_threads()}; FLOPs = 6*N*real tokens (full), 4*N*real tokens (lora)")
    print_table(rows, [("method", "method", ""), ("contender", "contender", ""),
                       ("precision", "prec", ""), ("examples_per_s", "ex/s", ".1f"),
                       ("speedup", "vs HF", ".2f"), ("raw_examples_per_s", "raw ex/s", ".1f"),
                       ("ms_per_step", "ms/step", ".0f"),
                       ("padding_overhead", "padded/real", ".2f"), ("gflops", "GFLOP/s", ".1f"),
                       ("pct_of_peak", "% peak", ".0f"), ("run_seconds", "run s", ".1f")])
    steps = {(r["method"], r["contender"]): 1 / r["real_tokens_per_s"] for r in rows
             if "real_tokens_per_s" in r}
    lora_vs_full = {c: steps[("lora", c)] / steps[("full", c)] for c in ("slimtext", "hf-trainer")
                    if ("lora", c) in steps and ("full", c) in steps}  # per real token
    print(f"matmul peak GFLOP/s: fp32 {peaks['fp32']['peak_gflops']:.0f}, "
          f"bf16 {peaks['bf16']['peak_gflops']:.0f}")
    for c, v in lora_vs_full.items():
        print(f"{c}: a LoRA step takes {v:.2f}x the time of a full step (per real token)")
    result = {"model": args.model, "args": vars(args), "machine": machine(), "kept_freed_memory": kept, "matmul": peaks,
              "precision_probe": probe, "rows": rows, "lora_step_vs_full_step": lora_vs_full}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
