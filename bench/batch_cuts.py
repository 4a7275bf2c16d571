"""Where to cut a gathered call: fixed batches of 8 against `cheapest_batches`, ONNX Runtime.

A server that gathers concurrent requests hands the predictor a handful of texts of mixed
lengths. Sorted by length and cut every 8 (what `eval_batches` does), eight tweets of 5-31 tokens
become one call padded to 31 tokens; `cheapest_batches` charges each call `CALL_TOKENS` padded
tokens and cuts where padding would cost more. This script times both on the same texts (the load
test's samples, gathered n at a time), interleaved, and with `--grid` the cost of one call by
batch size and length, which is where `CALL_TOKENS` comes from.

    python bench/batch_cuts.py --run runs/toxic-minilm --n 4,8,16,32 --grid --json bench/results/batch_cuts.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_json  # noqa: E402
from load import TEXTS  # noqa: E402

import slimtext.inference.onnx as onnx_backend  # noqa: E402
from slimtext.data.batches import cheapest_batches, eval_batches  # noqa: E402


def median_ms(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def call_grid(session, rounds: int) -> list[dict]:
    """One session call of B x T tokens (all real), B in 1..32, T in 6..48."""
    rng, rows = np.random.default_rng(0), []
    for b in (1, 2, 4, 8, 16, 32):
        for t in (6, 12, 24, 48):
            feed = {"input_ids": rng.integers(1000, 20000, (b, t)).astype(np.int64),
                    "attention_mask": np.ones((b, t), np.int64)}
            ms = median_ms(lambda feed=feed: session.run(None, feed), rounds)
            rows.append({"batch": b, "tokens": t, "padded_tokens": b * t, "ms": ms})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run (or export) folder with model.int8.onnx")
    ap.add_argument("--backend", default="onnx-int8", choices=["onnx", "onnx-int8"])
    ap.add_argument("--n", default="4,8,16,32", help="texts per gathered call")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: physical cores)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--grid", action="store_true", help="also time one call by batch size and length")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    p = onnx_backend.OnnxPredictor(args.run, int8=args.backend == "onnx-int8", threads=args.threads)
    ways = {"fixed 8": lambda lengths, size, call=None: eval_batches(lengths, 8),
            "cheapest": lambda lengths, size, call=onnx_backend.CALL_TOKENS: cheapest_batches(lengths, size, call)}
    rows = []
    print(f"{args.backend}, {p.name}, CALL_TOKENS {onnx_backend.CALL_TOKENS}, median of {args.rounds}")
    print(f"{'texts':>5} {'fixed 8 ms':>11} {'cheapest ms':>12} {'speedup':>8}  calls (fixed / cheapest)")
    for n in (int(x) for x in args.n.split(",")):
        texts = [TEXTS[(i * 3) % len(TEXTS)] for i in range(n)]
        row = {"texts": n}
        for name, cut in ways.items():
            onnx_backend.cheapest_batches = cut  # the predictor's cut, swapped for this way
            row[name] = median_ms(lambda texts=texts: p.predict_logits(texts), args.rounds)
        onnx_backend.cheapest_batches = cheapest_batches
        lengths = torch.tensor([len(x) for x in p.tokenizer.encode(texts)])
        row["calls"] = {name: len(cut(lengths, p.batch_size)) for name, cut in ways.items()}
        row["speedup"] = row["fixed 8"] / row["cheapest"]
        rows.append(row)
        print(f"{n:>5} {row['fixed 8']:>11.2f} {row['cheapest']:>12.2f} {row['speedup']:>7.2f}x"
              f"  {row['calls']['fixed 8']} / {row['calls']['cheapest']}")
    result = {"run": args.run, "backend": args.backend, "call_tokens": onnx_backend.CALL_TOKENS,
              "rounds": args.rounds, "rows": rows, "machine": machine()}
    if args.grid:
        grid = call_grid(p.session, args.rounds)
        print("one call, ms (B x T real tokens):")
        for r in grid:
            print(f"  B {r['batch']:>2} T {r['tokens']:>2}  {r['ms']:7.2f} ms  "
                  f"{r['ms'] / r['padded_tokens'] * 1000:5.0f} us/token")
        result["grid"] = grid
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
