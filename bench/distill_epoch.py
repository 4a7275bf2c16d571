"""Does distillation cost more per epoch than plain fine-tuning of the same student?

With the teacher's logits cached, a KD epoch adds only a row lookup and a KL term to the
student's own step. This script trains the same layer-selected student for one epoch with the KD
loss (alpha 0.5) and with plain cross-entropy (alpha 0: the same student, same data, same batches),
alternating A, B, A, B ... so machine load affects both alike, and reports the epoch seconds and
their ratio. The teacher's logits are computed once, before the first timed epoch.

    python bench/distill_epoch.py --teacher runs/study-davidson-quick/teacher-s0 --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from slimtext.config import RunConfig
from slimtext.recipes.distill import distill
from slimtext.rundir import RunDir


def one_epoch(teacher: Path, alpha: float, layers: str, threads: int, max_examples: int | None, out: Path) -> float:
    cfg = RunConfig.from_dict(RunDir(teacher).read_config())
    cfg.distill.teacher, cfg.distill.student_layers, cfg.distill.kd_alpha = str(teacher), layers, alpha
    cfg.train.epochs, cfg.train.threads = 1, threads
    if max_examples:
        cfg.data.max_examples = max_examples
    distill(cfg, out=out, quiet=True)
    return RunDir(out).read_metrics()[0]["epoch_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="a finished transformer teacher run")
    ap.add_argument("--layers", default="odd", help="student layers (1-based spec)")
    ap.add_argument("--rounds", type=int, default=2, help="A/B pairs to time")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    times: dict[str, list[float]] = {"distill (alpha 0.5)": [], "plain CE (alpha 0)": []}
    with tempfile.TemporaryDirectory() as tmp:
        one_epoch(a.teacher, 0.5, a.layers, a.threads, a.max_examples, Path(tmp) / "warm")  # fills the cache
        for r in range(a.rounds):
            for name, alpha in (("distill (alpha 0.5)", 0.5), ("plain CE (alpha 0)", 0.0)):
                times[name].append(one_epoch(a.teacher, alpha, a.layers, a.threads, a.max_examples,
                                             Path(tmp) / f"{alpha}-{r}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["distill (alpha 0.5)"] / med["plain CE (alpha 0)"]
    print(f"{'student epoch':22s} {'median s':>9s}  runs")
    for k, v in times.items():
        print(f"{k:22s} {med[k]:9.2f}  {', '.join(f'{x:.2f}' for x in v)}")
    print(f"distill / plain = {ratio:.3f}  (target: within 1.15)")
    if a.json:
        a.json.write_text(json.dumps({"teacher": str(a.teacher), "layers": a.layers, "times": times,
                                      "median": med, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
