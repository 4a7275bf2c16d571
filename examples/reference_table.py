"""The reference table of issue 21 from finished `slimtext sweep` folders (sweep files with `seeds`).

    python examples/reference_table.py runs/sweep-sst5-head runs/sweep-cola-head ... > table.md

One row per dev-chosen setting (the sweep's `best_per` groups): its grid values, the seeds it ran
with, the sweep's metric on every evaluated split as mean ± std over those seeds, the mean training
time of one run without the frozen encoder's pass, and (head-only) that pass's time, paid once per
model, pooling and length by the first point that needed it (later points read its disk cache). Then, per sweep, every grid point's dev score at seed 0 (the learning-rate curve the choice
was made on). Nothing is chosen on test.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def summary(run: Path) -> dict | None:
    try:
        return json.loads((run / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def rows(sweep: Path) -> tuple[list[str], list[str]]:
    plan = json.loads((sweep / "sweep.json").read_text(encoding="utf-8"))
    metric = plan["metric"].partition(".")[2]
    seeds_plan = sweep / "seeds.json"
    reruns = json.loads(seeds_plan.read_text(encoding="utf-8"))["runs"] if seeds_plan.exists() else []
    groups: dict[str, list[str]] = {}
    for r in reruns:
        groups.setdefault(r["group"], [r["group"]]).append(r["name"])
    table = []
    for best, members in groups.items():
        done = [(n, s) for n in members if (s := summary(sweep / n))]
        if not done:
            continue
        first = done[0][1]
        cfg = _config(sweep / best)
        splits = [k for k in first["splits"] if k != "train"]
        scores = {k: [s["splits"][k][metric] for _, s in done if s["splits"].get(k, {}).get(metric) is not None]
                  for k in splits}
        wall = statistics.mean(s["train_seconds"] - (s.get("feature_cache_seconds") or 0) for _, s in done)
        encoder = encoder_pass(sweep, plan, cfg)
        table.append(
            f"| {first['dataset']} | {first['model']} | {first['method']} | {cfg['model']['pooling']} | "
            f"{cfg['model']['max_length']} | {cfg['train']['lr']:g} | {len(done)} | "
            + "; ".join(f"{k} {mean_std(v)}" for k, v in scores.items())
            + f" | {wall:.0f} | {encoder} | {first.get('precision', '')} |"
        )
    curve = []
    for run in plan["runs"]:
        s = summary(sweep / run["name"])
        if s:
            curve.append(f"| {run['name']} | {s['dev'][metric]:.3f} | {s['train_seconds']:.0f} |")
    return table, [f"`{sweep.name}` ({plan['metric']}, seed 0):", "", "| point | dev | train s |",
                   "|---|---:|---:|", *curve, ""]


def encoder_pass(sweep: Path, plan: dict, cfg: dict) -> str:
    """The longest feature pass among the sweep's points with this model, pooling and length: the
    one that encoded the splits (the others read the cache). '—' for runs that train the encoder."""
    same = []
    for run in plan["runs"]:
        s, c = summary(sweep / run["name"]), _config(sweep / run["name"]) if (sweep / run["name"]).is_dir() else None
        if s and c and all(c["model"][k] == cfg["model"][k] for k in ("model", "pooling", "max_length")):
            same.append(s.get("feature_cache_seconds") or 0)
    if not same or max(same) == 0:
        return "—"
    return f"{max(same):.0f}" if max(same) >= 5 else "cached earlier"  # every point read the disk cache


def _config(run: Path) -> dict:
    import yaml  # noqa: PLC0415 (slimtext's own dependency)

    return yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    head = ["| data | model | method | pooling | max_length | lr (dev) | seeds | metric per split "
            "(mean ± std) | training s per run | encoder pass s (once) | precision |",
            "|---|---|---|---|---:|---:|---:|---|---:|---:|---|"]
    tables, curves = [], []
    for folder in argv:
        t, c = rows(Path(folder))
        tables += t
        curves += c
    print("\n".join(head + tables + ["", *curves]))


if __name__ == "__main__":
    main(sys.argv[1:])
