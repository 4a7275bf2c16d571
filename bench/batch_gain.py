"""What gathering requests can buy at most: N texts answered one call each vs in one call.

The model-side ceiling of `serve`'s dynamic batching, without HTTP: the same `--n` texts (the
load test's samples, in turn) through a run's predictor, as `--n` calls of one text and as one
call of `--n` texts (which the predictor runs in length-sorted batches), interleaved over
`--rounds`. A server that batches perfectly still pays its per-request HTTP cost on top, so its
requests/s gain stays below this ratio.

    python bench/batch_gain.py --run runs/toxic-minilm --backend onnx-int8 --n 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, set_threads, write_json  # noqa: E402
from load import TEXTS  # noqa: E402

from slimtext.inference.predictor import load_predictor  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a run directory")
    ap.add_argument("--backend", default="onnx-int8", help="torch, torch-int8, onnx, onnx-int8")
    ap.add_argument("--n", type=int, default=32, help="texts (the concurrent requests gathered)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: physical cores)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    predictor = load_predictor(args.run, backend=args.backend)
    texts = [TEXTS[i % len(TEXTS)] for i in range(args.n)]
    ways = {"one call each": lambda: [predictor.predict_proba([t]) for t in texts],
            f"one call of {args.n}": lambda: predictor.predict_proba(texts)}
    for fn in ways.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1000)
    rows = {name: statistics.median(ts) for name, ts in times.items()}
    single, batched = rows.values()
    print(f"{args.backend}, {args.n} texts, median of {args.rounds} rounds")
    for name, ms in rows.items():
        print(f"  {name:<16} {ms:8.1f} ms  {args.n / ms * 1000:8.1f} texts/s")
    print(f"  ratio            {single / batched:8.2f}x")
    result = {"run": args.run, "backend": args.backend, "n": args.n, "rounds": args.rounds,
              "ms": rows, "ratio": single / batched, "machine": machine()}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
