"""Dropout masks: slimtext's 16-bit mask (`slimtext.models.dropout`) against `F.dropout`.

The same tensors through both, interleaved over `--rounds`, at each `--threads`: a hidden-state
shape (batch, tokens, hidden) and an attention-probability shape (batch, heads, tokens, tokens)
of a `minilm-l6` fine-tuning step (batch 32, 30 tokens), in bf16 and fp32. Prints milliseconds
per call and the ratio; `--json` writes them with the machine.

    python bench/dropout_speed.py --threads 1,2 --json bench/results/dropout_speed.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, set_threads, write_json  # noqa: E402

from slimtext.models.dropout import dropout  # noqa: E402

SHAPES = {"hidden (32, 30, 384)": (32, 30, 384), "attention (32, 12, 30, 30)": (32, 12, 30, 30)}


def per_call_ms(fn, x: torch.Tensor, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn(x, 0.1, True)
    return (time.perf_counter() - t) / calls * 1000


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=50, help="calls per round and contender")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        set_threads(threads)
        for dtype in (torch.bfloat16, torch.float32):
            for name, shape in SHAPES.items():
                x = torch.randn(shape).to(dtype)
                times: dict[str, list[float]] = {"F.dropout": [], "slimtext": []}
                for fn in (F.dropout, dropout):
                    per_call_ms(fn, x, 3)  # warm-up
                for _ in range(args.rounds):
                    times["F.dropout"].append(per_call_ms(F.dropout, x, args.calls))
                    times["slimtext"].append(per_call_ms(dropout, x, args.calls))
                ref, ours = (statistics.median(times[k]) for k in ("F.dropout", "slimtext"))
                rows.append({"threads": threads, "dtype": str(dtype).removeprefix("torch."), "shape": name,
                             "torch_ms": ref, "slimtext_ms": ours, "speedup": ref / ours})
    print_table(rows, [("threads", "threads", "d"), ("dtype", "dtype", "s"), ("shape", "shape", "s"),
                       ("torch_ms", "F.dropout ms", ".3f"), ("slimtext_ms", "slimtext ms", ".3f"),
                       ("speedup", "speedup", ".2f")])
    result = {"rounds": args.rounds, "calls": args.calls, "rows": rows, "machine": machine()}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
