"""How much memory full fine-tuning holds: peak and final resident size over training steps.

Each setting runs in its own process (a fresh allocator): slimtext's `train_step` (fused AdamW,
`--precision` autocast, the allocator settings `fit` uses) on batches of `--batch-size` random
token ids whose lengths are drawn uniformly from `--lengths` (seeded, the same in every setting),
in `fit`'s length-bucketed batches, padded as `fit` pads them (`--bucket on`: `slimtext.data.batches.bucket_length`) or to the longest
sequence (`off`). Long, varied lengths are where a run's memory grows: every new tensor size
leaves holes in the heap that the allocator keeps.

    python bench/train_memory.py --model minilm-l6 --steps 60 --bucket off,on --json bench/results/train_memory.json
    python bench/train_memory.py --model mpnet-base --steps 20 --bucket on

To compare code versions, run it with `PYTHONPATH=<other checkout>/src`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, set_threads, write_json  # noqa: E402


def child(args: argparse.Namespace) -> dict:
    """One setting, in this process: steps of train_step; prints nothing, returns the figures."""
    import torch  # noqa: PLC0415

    from slimtext.data.batches import EncodedSplit, collate, train_batches  # noqa: PLC0415
    from slimtext.models import hub  # noqa: PLC0415
    from slimtext.models.encoder import EncoderClassifier, load_encoder  # noqa: PLC0415
    from slimtext.train.loop import TrainConfig, make_optimizer, make_scheduler, train_step  # noqa: PLC0415
    from slimtext.train.losses import CrossEntropy  # noqa: PLC0415
    from slimtext.train.malloc import retain_freed_memory  # noqa: PLC0415

    set_threads(args.threads)
    if args.keep_freed_memory:
        retain_freed_memory()
    torch.manual_seed(0)
    folder = hub.resolve(args.model)
    model = EncoderClassifier(load_encoder(folder), num_labels=2, pooling="mean").train()
    cfg = TrainConfig(batch_size=args.batch_size, lr=2e-5, precision=args.precision)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, args.steps)
    params = [p for p in model.parameters() if p.requires_grad]
    lo, hi = (int(x) for x in args.lengths.split("-"))
    rng = random.Random(0)
    seqs = [[rng.randrange(1000, 20000) for _ in range(rng.randint(lo, hi))] for _ in range(args.steps * args.batch_size)]
    split = EncodedSplit(seqs, torch.tensor([i % 2 for i in range(len(seqs))]))
    batches = train_batches(split.lengths, args.batch_size, seed=0, epoch=0)  # as `fit` draws them
    padded = real = 0
    t0 = time.perf_counter()
    for idx in batches[: args.steps]:
        try:
            b = collate(split, idx, bucket=args.bucket == "on")
        except TypeError:  # a checkout from before bucketing: padded to the longest only
            assert args.bucket == "off", "this checkout's collate has no bucket argument"
            b = collate(split, idx)
        padded += b["input_ids"].numel()
        real += int(b["attention_mask"].sum())
        train_step(model, b, CrossEntropy(), opt, sched, cfg, params)
    seconds = time.perf_counter() - t0
    final = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    return {"bucket": args.bucket, "steps": args.steps, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "final_rss_gb": final / 1e9, "s_per_step": seconds / args.steps, "padded_per_real": padded / real}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lengths", default="64-512", help="token lengths drawn uniformly from LO-HI")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: physical cores)")
    ap.add_argument("--bucket", default="off,on", help="comma list of off, on")
    ap.add_argument("--keep-freed-memory", type=int, default=1, choices=[0, 1],
                    help="1: glibc keeps freed memory, as `fit` sets it (slimtext.train.malloc)")
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    rows = []
    for bucket in args.bucket.split(","):
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--lengths", args.lengths, "--precision", args.precision,
               "--threads", str(args.threads), "--bucket", bucket, "--keep-freed-memory", str(args.keep_freed_memory)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"{args.model}, batch {args.batch_size} of {args.lengths} tokens, {args.precision}, "
          f"{args.threads} thread(s), keep freed memory {args.keep_freed_memory}, {args.steps} steps")
    print_table(rows, [("bucket", "bucketed padding", "s"), ("peak_rss_gb", "peak RSS GB", ".2f"),
                       ("final_rss_gb", "final RSS GB", ".2f"), ("s_per_step", "s/step", ".2f"),
                       ("padded_per_real", "padded/real tokens", ".3f")])
    result = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "child"}, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
