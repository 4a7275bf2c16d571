"""Where a training step's time goes: `torch.profiler` over slimtext's full fine-tuning step.

The same step as `bench/train_speed.py` (our encoder, `train_step`, length-bucketed Davidson
batches, fused AdamW, `--precision` autocast), profiled for `--steps` steps after a warm-up.
Prints the top operators by self time and a grouped share of the step (matmuls, dropout masks,
autocast casts, zero fills, attention bmm, optimizer, the rest), and writes the groups as JSON.
The shares are what to read; under the profiler and on a shared machine absolute times grow.

    python bench/profile_step.py --precision bf16 --threads 1 --steps 6
    python bench/profile_step.py --model mpnet-base --pooling mean --precision bf16 --threads 1 --steps 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import machine, set_threads, write_json  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from train_speed import Ours, load_train_split  # noqa: E402

from slimtext.models import hub  # noqa: E402
from slimtext.models.encoder import EncoderClassifier, load_encoder  # noqa: E402
from slimtext.train.loop import TrainConfig  # noqa: E402
from slimtext.train.precision import resolve  # noqa: E402

# operator -> group (everything else is "other")
GROUPS = {"aten::mm": "matmul", "aten::addmm": "matmul", "aten::bernoulli_": "dropout masks",
          "aten::random_": "dropout masks",  # slimtext.models.dropout draws 64-bit words
          "aten::copy_": "casts and copies", "aten::fill_": "zero fills", "aten::bmm": "attention bmm",
          "aten::_fused_adamw_": "optimizer", "aten::_fused_adam_": "optimizer"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: physical cores)")
    ap.add_argument("--steps", type=int, default=6, help="profiled steps (after 3 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="minilm-l6", help="minilm-l6 or mpnet-base (the full preset's teacher)")
    ap.add_argument("--pooling", default="pooler", help="pooler or mean (what the study's runs use)")
    ap.add_argument("--top", type=int, default=20, help="operators in the printed table")
    ap.add_argument("--json", help="write the grouped shares here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    folder = hub.resolve(args.model)
    train, _ = load_train_split(folder, 128)
    torch.manual_seed(0)
    model = EncoderClassifier(load_encoder(folder), num_labels=2, dropout=0.1, pooling=args.pooling).train()
    precision, _ = resolve(args.precision, model, torch.device("cpu"))
    ours = Ours(model, train, TrainConfig(batch_size=args.batch_size, lr=2e-5, precision=precision))
    ours.steps(3, 0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds = sum(s["seconds"] for s in ours.steps(args.steps, 1))
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        group = GROUPS.get(e.key, "other")
        shares[group] = shares.get(group, 0.0) + e.self_cpu_time_total / total
    print(f"{args.model} ({args.pooling}), precision {precision}, {args.threads} thread(s), {seconds / args.steps * 1e3:.0f} ms/step under the profiler")
    for group, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<18} {share:6.1%}")
    result = {"model": args.model, "pooling": args.pooling, "precision": precision, "threads": args.threads, "steps": args.steps,
              "ms_per_step_profiled": seconds / args.steps * 1e3, "shares": shares, "machine": machine()}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
