"""Reports: compare finished run directories in `report.md` and a self-contained `report.html`.

A report reads only run directories (summary.json, metrics.jsonl, config.yaml, command.txt), so
it can be rebuilt at any time with `slimtext report RUN_DIR...`. Runs are grouped by method: the
`group` key of the summary or config when present, else the run name without its seed suffix
(`odd-s2` -> `odd`; `davidson-lstm-full-s0-20250101-120000` -> `davidson-lstm-full`). Each group
shows mean ± sample standard deviation (n - 1) over its runs.

Contents: a generated discussion (only claims the numbers support), warnings on constant or
near-chance runs, the comparison table, for sweeps the hyper-parameter table with the best run
marked, per-epoch curves (mean over seeds, ± one std shaded), confusion matrices summed over
seeds, calibration (temperature, threshold, ECE/Brier/NLL, reliability diagrams), and every run
with its command.
The HTML embeds its plots as base64 PNG and its CSS inline: it opens offline, as one file.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from slimtext.errors import SlimtextError
from slimtext.experiments.report_data import (
    SEED_SUFFIX,
    Run,
    group_runs,
    load_run,
    read_json,
)
from slimtext.experiments.report_discussion import discussion
from slimtext.experiments.report_figures import curve_figures, reliability_figure
from slimtext.experiments.report_html import render_html
from slimtext.experiments.report_md import RELIABILITY_PNG, Report, render_md
from slimtext.rundir import atomic_write_text
from slimtext.train.degenerate import degenerate_warnings


def _meta(runs: list[Run]) -> list[str]:
    datasets = sorted({str(r.get("dataset")) for r in runs if r.get("dataset")})
    splits = sorted({str(r.get("test_split")) for r in runs if r.get("test_split")})
    seeds = sorted({r.get("seed") for r in runs if isinstance(r.get("seed"), int)})
    line = [
        f"dataset: {', '.join(datasets) or 'unknown'}",
        f"test split: {', '.join(splits) or 'unknown'}",
        f"{len(runs)} finished runs",
        f"seeds: {', '.join(map(str, seeds)) or 'unknown'}",
    ]
    machines = {json.dumps(r.get("machine"), sort_keys=True) for r in runs if r.get("machine")}
    out = [" · ".join(line)]
    if len(machines) == 1:
        m = json.loads(next(iter(machines)))
        out.append(
            f"machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, "
            f"torch {m.get('torch', '?')}, "
            f"threads {m.get('threads', '?')}, CUDA {'yes' if m.get('cuda') else 'no'}"
        )
    elif machines:
        out.append(
            f"runs come from {len(machines)} different machine setups: compare times with care"
        )
    out.append(
        f"generated {dt.datetime.now().isoformat(timespec='seconds')} from run directories only"
    )
    return out


def collect_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories from command-line paths: a run directory itself, or a folder of them (a
    study or sweep folder; its study.json / sweep.json, when present, gives the order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").exists() or (p / "summary.json").exists():
            out.append(p)
            continue
        if not p.is_dir():
            raise SlimtextError(f"{p} is neither a run directory nor a folder of run directories")
        found = sorted(
            d for d in p.iterdir() if (d / "config.yaml").exists() or (d / "summary.json").exists()
        )
        order = []
        for plan in ("study.json", "sweep.json"):
            data = read_json(p / plan)
            if isinstance(data, dict):
                order = [
                    r["name"] for r in data.get("runs", []) if isinstance(r, dict) and "name" in r
                ]
        rank = {name: i for i, name in enumerate(order)}
        found.sort(key=lambda d: (rank.get(d.name, len(rank)), d.name))
        if not found:
            raise SlimtextError(
                f"{p} holds no run directories (folders with config.yaml or summary.json)"
            )
        out += found
    return list(dict.fromkeys(out))


def write_report(
    run_dirs: list[Path],
    out_dir: Path,
    title: str | None = None,
    sweep: bool | None = None,
    metric: str = "macro_f1",
) -> tuple[Path, Path]:
    """Write `out_dir/report.md` (with `figures/*.png`) and a self-contained `out_dir/report.html`.

    sweep: show the hyper-parameter table; None decides from the names (no run carries a seed
    suffix and every run is its own group). metric: the dev/test metric of the sweep table.
    Runs without summary.json (unfinished) are listed in a note and left out."""
    out_dir = Path(out_dir)
    loaded = [load_run(Path(p)) for p in run_dirs]
    runs = [r for r in loaded if r.summary is not None]
    notes = []
    missing = [r.name for r in loaded if r.summary is None]
    if missing:
        notes.append(
            f"{len(missing)} run director{'ies have' if len(missing) > 1 else 'y has'} "
            "no summary.json "
            f"(unfinished or failed) and {'are' if len(missing) > 1 else 'is'} left out: "
            + ", ".join(missing)
        )
    notes += [f"warning: {r.name}: {w}" for r in runs for w in degenerate_warnings(r.summary)]
    groups = group_runs(runs)
    kind = "sweep" if sweep else "report"  # the title names a sweep only when the caller says so
    if sweep is None:
        sweep = (
            len(runs) > 1
            and all(len(g.runs) == 1 for g in groups)
            and not any(SEED_SUFFIX.match(r.name) for r in runs)
        )
    title = title or (
        f"slimtext {kind}: "
        + (", ".join(sorted({str(r.get("dataset")) for r in runs if r.get("dataset")})) or "runs")
    )
    rep = Report(
        title,
        _meta(runs),
        discussion(groups, runs if sweep else None, metric),
        notes,
        groups,
        runs,
        sweep,
        metric,
        curve_figures(groups) if runs else [],
        reliability_figure(groups),
    )
    fig_dir = out_dir / "figures"
    fig_paths = []
    for key, fig_title, png in rep.figures:
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / f"{key}.png").write_bytes(png)
        fig_paths.append((fig_title, f"figures/{key}.png"))
    if rep.reliability:
        fig_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RELIABILITY_PNG).write_bytes(rep.reliability)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, render_md(rep, fig_paths))
    atomic_write_text(html_path, render_html(rep))
    return md_path, html_path
