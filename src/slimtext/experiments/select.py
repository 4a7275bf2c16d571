"""Choosing a model: by a dev-split metric, never by test (test numbers are for reporting only).

`select_best` is the one rule the report's "best run" mark and `slimtext serve`'s default model
both use; `default_run` finds the candidates for `serve` under a runs folder.
"""

from __future__ import annotations

from pathlib import Path

from slimtext.errors import SlimtextError
from slimtext.experiments.report_data import Run, load_run
from slimtext.inference.base import loadable


def select_best(runs: list[Run], metric: str = "macro_f1", split: str = "dev") -> Run | None:
    """The run with the best `split` `metric` (lowest for `loss`), or None if none has it."""
    scored = [r for r in runs if r.get(f"{split}.{metric}") is not None]
    if not scored:
        return None
    sign = -1 if metric == "loss" else 1
    return max(scored, key=lambda r: sign * r.get(f"{split}.{metric}"))


def default_run(root: str | Path = "runs", metric: str = "macro_f1") -> Path:
    """The model `slimtext serve` serves when given none: in the newest study under `root` (a
    folder with study.json), else anywhere under `root`, the finished run `load_predictor` can
    load (neural weights, or a TF-IDF model) with the best **dev** `metric`."""
    root = Path(root)
    studies = sorted(root.glob("*/study.json"), key=lambda p: p.stat().st_mtime)
    search = studies[-1].parent if studies else root
    runs = [load_run(s.parent) for s in sorted(search.glob("**/summary.json")) if loadable(s.parent)]
    best = select_best(runs, metric, split="dev")
    if best is None:
        raise SlimtextError(f"no trained model under {root}/: train one first (`make demo`, or "
                            "`slimtext train --data davidson --out runs/mine`), then `slimtext serve runs/mine`")
    return best.path
