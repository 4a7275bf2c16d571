"""Does `torch.compile` speed up slimtext's training step on this CPU? Eager against compiled.

The same `minilm-l6` full fine-tuning step as `bench/train_speed.py` (our encoder, mean pooling,
`train_step`, length-bucketed batches of the `davidson` training tweets, fused AdamW), once eager
and once with the model wrapped in `torch.compile(dynamic=True)` (Inductor; the tweets' lengths
vary, so one graph with symbolic shapes instead of one per length). Two copies of the same
weights, interleaved rounds of `--steps` steps each; the compile time (the first steps of the
compiled copy) is reported apart and not in the rate.

    python bench/compile_speed.py --precision bf16 --threads 2 --json bench/results/compile_speed.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import machine, set_threads, write_json  # noqa: E402
from train_speed import Ours, load_train_split  # noqa: E402

from slimtext.models import hub  # noqa: E402
from slimtext.models.encoder import EncoderClassifier, load_encoder  # noqa: E402
from slimtext.train.loop import TrainConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: physical cores)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    folder = hub.resolve("minilm-l6")
    train, _ = load_train_split(folder, 128)
    torch.manual_seed(0)
    model = EncoderClassifier(load_encoder(folder), num_labels=2, dropout=0.1, pooling="mean").train()
    cfg = TrainConfig(batch_size=args.batch_size, lr=5e-5, precision=args.precision, seed=0)
    sides = {"eager": Ours(model, train, cfg), "compiled": Ours(copy.deepcopy(model), train, cfg)}
    t = time.perf_counter()
    sides["compiled"].model = torch.compile(sides["compiled"].model, dynamic=True)
    sides["compiled"].steps(3, 0)
    compile_s = time.perf_counter() - t
    sides["eager"].steps(3, 0)
    totals = {name: {"seconds": 0.0, "real_tokens": 0, "examples": 0} for name in sides}
    for _ in range(args.rounds):
        for name, side in sides.items():
            for r in side.steps(args.steps, 0):
                for k in totals[name]:
                    totals[name][k] += r[k]
    rows = {name: {**t, "real_tokens_per_s": t["real_tokens"] / t["seconds"],
                   "examples_per_s": t["examples"] / t["seconds"]} for name, t in totals.items()}
    ratio = rows["compiled"]["real_tokens_per_s"] / rows["eager"]["real_tokens_per_s"]
    print(f"minilm-l6 full, {args.precision}, {threads} threads, {args.rounds} rounds x {args.steps} steps")
    print(f"{'side':<10} {'real tokens/s':>14} {'ex/s':>8}")
    for name, r in rows.items():
        print(f"{name:<10} {r['real_tokens_per_s']:>14.0f} {r['examples_per_s']:>8.1f}")
    print(f"compiled / eager {ratio:.2f}x; compiling and the first 3 steps took {compile_s:.1f} s")
    result = {"precision": args.precision, "threads": threads, "steps": args.steps,
              "rounds": args.rounds, "batch_size": args.batch_size, "rows": rows,
              "compiled_over_eager": ratio, "compile_and_first_steps_s": compile_s,
              "torch": torch.__version__, "machine": machine()}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
