"""Cross-dataset evaluation: every finished run on every listed dataset's test split, and the
`train-on x test-on` macro-F1 matrix a report shows.

Design (the simplest that survives reruns and partial studies): results live in the run
directories themselves. `cross_evaluate(run_dirs, datasets, out)` evaluates each run on each
dataset's test split (`recipes.evaluation.evaluate_run`: labels mapped by name or through the
toxic view, split with the run's split seed, so a run never meets an example it trained on) and
stores the results in `<run>/cross.json` as `{dataset: result}`. Entries already there are kept,
so a rerun only fills in what is missing. It also writes `<out>/cross.json`: the datasets, each
run's macro-F1 per dataset, the matrix, and the runs it skipped (not loadable) or that failed.

A report reads only run directories: `cross_matrix(runs)` reads their `cross.json` and
averages macro-F1 over the runs (seeds) of each row; a row is a training dataset and a method
group, a column a test dataset. `cross_md` and the HTML template (report_html) render that section; both say nothing
when no run has cross results. `slimtext study --cross A,B` runs this after the study's runs;
`slimtext report RUNS --cross A,B` on any finished runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from slimtext.data.registry import DataConfig, load_dataset
from slimtext.errors import SlimtextError
from slimtext.experiments.report_data import Run, Stat, fmt, load_run, read_json, stat
from slimtext.recipes.evaluation import evaluate_run, map_labels
from slimtext.rundir import RunDir, atomic_write_json

CROSS_FILE = "cross.json"
SPLIT = "test"


def parse_cross(text: str | None) -> list[str]:
    """`A,B` -> ["A", "B"] (a union `A+B` stays one dataset)."""
    return [d.strip() for d in (text or "").split(",") if d.strip()]


def check_cross(train_data: str, datasets: list[str], data_dir: str | None = None) -> None:
    """Fail before training when a run on `train_data` could not be compared with a dataset."""
    train_labels = load_dataset(DataConfig(data=train_data, data_dir=data_dir)).labels
    for name in datasets:
        ds = load_dataset(DataConfig(data=name, data_dir=data_dir))
        map_labels(train_data, train_labels, ds.name, ds.labels)


def _loadable(run: Path) -> bool:
    return (run / "model.safetensors").exists() or (run / "tfidf.safetensors").exists()


def cross_evaluate(run_dirs: list[Path], datasets: list[str], out: Path, data_dir: str | None = None,
                   backend: str = "torch", quiet: bool = False) -> dict:
    """Evaluate each finished run on each dataset's test split (see the module docstring);
    returns what `<out>/cross.json` holds."""
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    runs = [Path(r) for r in run_dirs if RunDir(r).is_finished()]
    skipped = {r.name: "no model weights to load" for r in runs if not _loadable(r)}
    runs = [r for r in runs if _loadable(r)]
    failed: dict[str, dict[str, str]] = {}
    loaded: dict[tuple, object] = {}  # (dataset, split seed) -> TextDataset, loaded once
    for run in runs:
        done = read_json(run / CROSS_FILE) or {}
        todo = [d for d in datasets if d not in done]
        if not todo:
            continue
        seed = RunDir(run).read_config().get("data", {}).get("split_seed", 0)
        for name in todo:
            key = (name, seed)
            if key not in loaded:
                loaded[key] = load_dataset(DataConfig(data=name, data_dir=data_dir, split_seed=seed))
            try:
                done[name] = evaluate_run(run, DataConfig(data=name, data_dir=data_dir), SPLIT, backend=backend,
                                          data_dir=data_dir, dataset=loaded[key])
            except SlimtextError as e:
                failed.setdefault(run.name, {})[name] = str(e)
                say(f"cross: {run.name} on {name}: {e}")
                continue
            say(f"cross: {run.name} on {name}: macro-F1 {done[name]['macro_f1']:.3f}")
        atomic_write_json(run / CROSS_FILE, done)
    table = cross_matrix([load_run(r) for r in runs], datasets)
    summary = {
        "datasets": datasets, "split": SPLIT, "metric": "macro_f1",
        "runs": {r.name: {d: (read_json(r / CROSS_FILE) or {}).get(d, {}).get("macro_f1") for d in datasets}
                 for r in runs},
        "matrix": table.to_dict() if table else None, "skipped": skipped, "failed": failed,
    }
    atomic_write_json(Path(out) / CROSS_FILE, summary)
    return summary


@dataclass
class CrossTable:
    columns: list[str]  # test datasets
    rows: list[tuple[str, str]]  # (train dataset, method group)
    cells: list[list[tuple[float | None, float | None, int]]]  # (mean, std, n runs) per row and column

    def to_dict(self) -> dict:
        return {"columns": self.columns, "rows": [{"train": d, "method": g} for d, g in self.rows],
                "macro_f1_mean": [[c[0] for c in row] for row in self.cells],
                "macro_f1_std": [[c[1] for c in row] for row in self.cells],
                "n": [[c[2] for c in row] for row in self.cells]}


def cross_matrix(runs: list[Run], datasets: list[str] | None = None) -> CrossTable | None:
    """Mean (± sample std) test macro-F1 per (training dataset, method) row and test-dataset
    column, from the runs' cross.json; None when no run has one. Columns: `datasets`, else every
    dataset found, in order of first appearance."""
    results = {r.name: read_json(r.path / CROSS_FILE) for r in runs}
    results = {k: v for k, v in results.items() if isinstance(v, dict) and v}
    if not results:
        return None
    columns = datasets or list(dict.fromkeys(d for v in results.values() for d in v))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        if r.name in results:
            groups.setdefault((str(r.get("dataset") or "?"), r.group), []).append(results[r.name])
    cells = []
    for members in groups.values():
        row = []
        for d in columns:
            s = stat(m.get(d, {}).get("macro_f1") for m in members)
            row.append((s.mean, s.std, s.n))
        cells.append(row)
    return CrossTable(columns, list(groups), cells)


NOTE = ("Macro-F1 on each dataset's test split (columns) of the runs trained on a dataset with a method "
        "(rows); mean ± sample std over the runs (seeds), n runs. Labels are compared by name, or "
        "through the toxic view (`not toxic` / `toxic`) when the datasets name them differently.")


def cross_cell(c) -> str:
    return fmt(Stat(*c))


def cross_md(runs: list[Run]) -> list[str]:
    """The report.md section (no lines when no run has cross results)."""
    t = cross_matrix(runs)
    if t is None:
        return []
    md = ["## Cross-dataset evaluation (train on rows, test on columns)", "", NOTE, "",
          "| Train on | Method | " + " | ".join(c.replace("|", "\\|") for c in t.columns) + " |",
          "| --- | --- | " + " | ".join("---:" for _ in t.columns) + " |"]
    for (data, group), row in zip(t.rows, t.cells):
        md.append(f"| {data} | {group} | " + " | ".join(f"{cross_cell(c)} (n={c[2]})" if c[2] else "–" for c in row) + " |")
    return md + [""]
