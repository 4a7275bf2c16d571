"""The moderator's workbench, timed: word explanations and file scoring, on the CPU.

  explanation latency   `explain(predictor, tweet, "occlusion")` on the ONNX int8 backend: the
                        tweet and its one-word-shorter variants in one predict_proba call;
                        p50 / p99 over `--explain` davidson tweets (tokenization included), with
                        `--threads` ONNX Runtime threads and with all cores (the served default),
                        interleaved tweet by tweet
  slimtext score        `score_file` (what `slimtext score RUN FILE` runs) on `--rows` davidson
                        tweets written as `--rounds` CSV files, ONNX int8: rows/s with the files
                        read and written, empty rows included
  hf pipeline loop      `for text in rows: pipe(text)` with transformers.pipeline
                        ("text-classification") on an HF folder holding the same fine-tuned
                        weights (fp32, sdpa attention), on the first `--pipeline-rows / --rounds`
                        rows of each of those files (a subset, to spare a shared machine; rows/s
                        is what is compared). Rounds alternate the two, so a noisy neighbour
                        slows both alike.

The run is a minilm-l6 head run (BERT with a pooler, so the HF folder is exact); with no --run
one is trained and exported first:

    slimtext train --data davidson --model minilm-l6 --method head --epochs 1 \\
        --max-examples 2000 --threads 1 --out runs/bench-minilm-head
    slimtext export runs/bench-minilm-head --onnx --int8
    python bench/explain_score.py --run runs/bench-minilm-head --threads 1

Targets (issue 17): explanation p50 <= 50 ms; slimtext score >= 5x the pipeline loop's rows/s.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import machine, print_table, set_threads, write_json  # noqa: E402
from infer_speed import HFPipeline, hf_folder  # noqa: E402

from slimtext.data.registry import DataConfig, load_dataset  # noqa: E402
from slimtext.inference.explain import explain  # noqa: E402
from slimtext.inference.onnx import OnnxPredictor  # noqa: E402
from slimtext.inference.review import ReviewPolicy  # noqa: E402
from slimtext.inference.score import ScoreConfig, score_file  # noqa: E402

HERE = Path(__file__).resolve().parent


def davidson_texts(n: int, seed: int = 0) -> list[str]:
    """n davidson tweets (all splits), seeded order; repeats the corpus if n is larger."""
    ds = load_dataset(DataConfig(data="davidson"))
    texts = [e.text for split in ds.splits.values() for e in split]
    random.Random(seed).shuffle(texts)
    return (texts * (n // len(texts) + 1))[:n]


def make_run(out: Path) -> Path:
    from slimtext.config import RunConfig  # noqa: PLC0415
    from slimtext.inference.export import export  # noqa: PLC0415
    from slimtext.recipes.finetune import train  # noqa: PLC0415

    cfg = RunConfig()
    cfg.data.data, cfg.data.max_examples = "davidson", 2000
    cfg.model.model, cfg.model.method = "minilm-l6", "head"
    cfg.train.epochs, cfg.train.threads = 1, 1
    train(cfg, out=out, quiet=True)
    export(out, onnx=True, int8=True)
    return out


def percentiles(ms: list[float]) -> dict:
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def time_explanations(predictors: dict, texts: list[str]) -> list[dict]:
    """Occlusion latency per predictor, and one plain classification of the same tweet for
    scale (an explanation costs about words + 1 of them), interleaved tweet by tweet."""
    ms = {f"{what} ({name})": [] for name in predictors for what in ("explain, occlusion", "classify only")}
    words = []
    for p in predictors.values():
        explain(p, texts[0], "occlusion")  # warm-up
    for t in texts:
        for name, p in predictors.items():
            t0 = time.perf_counter()
            e = explain(p, t, "occlusion")
            t1 = time.perf_counter()
            p.predict_proba([t])
            ms[f"explain, occlusion ({name})"].append((t1 - t0) * 1000)
            ms[f"classify only ({name})"].append((time.perf_counter() - t1) * 1000)
        words.append(len(e.words))
    return [{"contender": name, **percentiles(v), "mean_words": float(np.mean(words))} for name, v in ms.items()]


def write_csv(path: Path, texts: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(texts))
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="minilm-l6 run with model.int8.onnx (default: train one)")
    ap.add_argument("--rows", type=int, default=20_000, help="tweets slimtext score reads (in --rounds files)")
    ap.add_argument("--pipeline-rows", type=int, default=2_000, help="of those, how many the pipeline loop runs")
    ap.add_argument("--rounds", type=int, default=5, help="rounds interleaving the two scorers")
    ap.add_argument("--explain", type=int, default=200, help="tweets explained")
    ap.add_argument("--threads", type=int, default=1, help="threads for scoring (both contenders)")
    ap.add_argument("--json", default=str(HERE / "results" / "explain_score.json"))
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    run = args.run or make_run(Path("runs/bench-minilm-head"))
    onnx = OnnxPredictor(run, int8=True, threads=threads)  # load_predictor(run, "onnx-int8"), threads set
    cores = OnnxPredictor(run, int8=True, threads=0)  # what `slimtext serve --backend onnx-int8` runs
    explained = time_explanations({f"onnx-int8, {threads} thread": onnx, "onnx-int8, all cores": cores},
                                  davidson_texts(args.explain, seed=1))

    texts = davidson_texts(args.rows)
    texts[::1000] = [""] * len(texts[::1000])  # some empty rows: they come back with an error
    per, per_pipe = args.rows // args.rounds, args.pipeline_rows // args.rounds
    totals = {"slimtext": [0, 0.0], "pipeline": [0, 0.0]}
    with tempfile.TemporaryDirectory() as tmp:
        pipe = HFPipeline(hf_folder(run, Path(tmp) / "hf"), 128)
        pipe.pipe(texts[1], top_k=None)  # warm-up
        for r in range(args.rounds):
            part = texts[r * per:(r + 1) * per]
            src, out = write_csv(Path(tmp) / f"tweets{r}.csv", part), Path(tmp) / f"scored{r}.csv"
            t0 = time.perf_counter()
            stats = score_file(onnx, src, out, ReviewPolicy.for_predictor(onnx), ScoreConfig(), quiet=True)
            totals["slimtext"][1] += time.perf_counter() - t0
            totals["slimtext"][0] += stats.rows
            with open(out, newline="", encoding="utf-8") as f:
                assert sum(1 for _ in csv.DictReader(f)) == len(part)  # every row back
            t0 = time.perf_counter()
            for t in part[:per_pipe]:
                pipe.pipe(t, top_k=None)  # an empty text is classified too: the pipeline does not check
            totals["pipeline"][1] += time.perf_counter() - t0
            totals["pipeline"][0] += per_pipe
    names = {"slimtext": f"slimtext score (onnx-int8, {threads} thread)",
             "pipeline": f"transformers.pipeline loop (fp32, {threads} thread)"}
    rows = [{"contender": names[k], "rows": n, "seconds": sec, "rows_per_s": n / sec} for k, (n, sec) in totals.items()]
    speedup = rows[0]["rows_per_s"] / rows[1]["rows_per_s"]
    print()
    print_table(explained, [("contender", "explanation latency", ""), ("n", "tweets", "d"),
                            ("mean_words", "words", ".1f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f")])
    print("(target p50 <= 50 ms)\n")
    print_table(rows, [("contender", "scoring", ""), ("rows", "rows", "d"), ("seconds", "s", ".1f"),
                       ("rows_per_s", "rows/s", ".0f")])
    print(f"\nslimtext score / pipeline loop: {speedup:.2f}x rows/s (target >= 5x)")
    result = {"run": str(run), "args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(),
              "explain": explained, "score": rows, "speedup": speedup}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
