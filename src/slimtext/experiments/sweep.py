"""`slimtext sweep CONFIG.yaml`: a grid or an Optuna search over `slimtext train` runs.

    name: lstm-cfimdb            # optional (default: the file's stem); names the folder and study
    base:                        # a run config, sections as in RunConfig
      data: {data: cfimdb}
      model: {model: lstm}
      train: {epochs: 3}
    grid:                        # override key -> values
      train.optimizer: [sgd, adam, adamw, rmsprop]
      train.batch_size: [16, 64]
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range: Optuna only
    metric: dev.macro_f1         # objective (split.metric); loss is minimised, the rest maximised
    search: grid                 # or optuna
    trials: 20                   # optuna: total number of trials
    seeds: [0, 1, 2]             # optional: then rerun the best point with these seeds
    best_per: [model.model]      # optional: with seeds, the best point per value of these keys

Every point is a subprocess `python -m slimtext train --config <sweep>/base.yaml --set key=value
... --out <sweep>/<point>`, named from its values (`optimizer-adam_batch_size-16`), so a rerun
skips finished points and resumes interrupted ones (as `slimtext study` does). Optuna keeps its
trials in `<sweep>/optuna.db` (SQLite, `load_if_exists`): a rerun continues the search up to
`trials` finished trials, and a trial interrupted mid-run is retried with the same values, which
resumes its run directory. At the end, `report.md` / `report.html` with the hyper-parameter
table (best run marked).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import threading
from pathlib import Path

import yaml

from slimtext.config import RunConfig, apply_overrides
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.experiments.report import write_report
from slimtext.experiments.study import (
    HEARTBEAT_S,
    PlannedRun,
    Runner,
    default_jobs,
    execute,
    write_plan,
)
from slimtext.rundir import atomic_write_text

SEARCHES = ("grid", "optuna")


def load_sweep(config_path: Path) -> dict:
    path = Path(config_path)
    if not path.is_file():
        raise SlimtextError(f"no such sweep file: {path}")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(spec) - {"name", "base", "grid", "metric", "search", "trials", "seeds",
                        "best_per"}
    if unknown:
        raise SlimtextError(
            f"{path}: unknown key(s) {sorted(unknown)}; valid: name, base, grid, metric, "
            "search, trials, seeds, best_per"
        )
    seeds = spec.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
        raise SlimtextError(f"{path}: `seeds` must be a list of integers, e.g. [0, 1, 2]")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise SlimtextError(
            f"{path}: `grid` must map override keys (train.lr, ...) to lists of values"
        )
    base = spec.get("base") or {}
    RunConfig.from_dict(base)  # fails early on a bad section or key
    for key, values in grid.items():
        if "." not in key:
            raise SlimtextError(f"{path}: grid key {key!r} needs its section, e.g. train.{key}")
        probe = values[0] if isinstance(values, list) and values else (values or {}).get("low")
        if probe is None:
            raise SlimtextError(f"{path}: grid key {key!r} needs a non-empty list or {{low, high}}")
        apply_overrides(
            {}, [f"{key}={probe}"]
        )  # unknown section/key -> a message naming the valid ones
    if seeds and "train.seed" in grid:
        raise SlimtextError(f"{path}: use either `seeds` or a `train.seed` grid key, not both")
    best_per = spec.get("best_per") or []
    stray = [k for k in best_per if k not in grid] if isinstance(best_per, list) else [best_per]
    if stray:
        raise SlimtextError(f"{path}: `best_per` takes a list of grid keys; {stray} are not in "
                            f"the grid ({', '.join(grid)})")
    return {
        "name": str(spec.get("name") or path.stem),
        "base": base,
        "grid": grid,
        "metric": spec.get("metric", "dev.macro_f1"),
        "search": spec.get("search", "grid"),
        "trials": spec.get("trials"),
        "seeds": seeds,
        "best_per": best_per,
    }


def point_name(values: dict) -> str:
    """A folder name from the values: the key's last component, '-', the value; '_' between.
    A swept `train.seed` becomes a `-s<seed>` suffix, so reports group a setting's seeds."""
    parts = []
    for key, v in values.items():
        if key != "train.seed":
            text = f"{v:.6g}" if isinstance(v, float) else str(v)
            parts.append(f"{key.split('.')[-1]}-{text}")
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(parts)) or "base"
    return f"{name}-s{values['train.seed']}" if "train.seed" in values else name


def _point(sweep_dir: Path, values: dict) -> PlannedRun:
    name = point_name(values)
    sets = [x for k, v in values.items() for x in ("--set", f"{k}={v}")]
    return PlannedRun(
        name,
        re.sub(r"-s\d+$", "", name) if "train.seed" in values else name,
        values.get("train.seed"),
        [
            "slimtext",
            "train",
            "--config",
            str(sweep_dir / "base.yaml"),
            *sets,
            "--quiet",
            "--out",
            str(sweep_dir / name),
        ],
        ["slimtext", "train", "--resume", str(sweep_dir / name), "--quiet"],
    )


def objective_value(run_dir: Path, metric: str) -> float | None:
    split, _, name = metric.partition(".")
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = (summary.get(split) or {}).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def run_sweep(
    config_path: Path,
    out: Path | None = None,
    search: str | None = None,
    trials: int | None = None,
    metric: str | None = None,
    quiet: bool = False,
    runner: Runner | None = None,
    jobs: int | None = None,
    where: list[str] | None = None,
    heartbeat: float = HEARTBEAT_S,
) -> Path:
    """Run (or continue) the sweep of `config_path`; returns the path of its report.md.
    search / trials / metric override the file's. out: default runs/sweep-<name>.
    jobs: points at once (default: the cores over the base config's train.threads; 1 when that
    is 0, torch's default of every core). where: `KEY=VALUE` filters (grid search only): run only
    the points (and seed reruns) whose grid values match, e.g. the cheap model's rows first; the
    plan files (sweep.json, seeds.json) and the report still cover every point of the folder.
    heartbeat: seconds between progress lines for running runs (0: none)."""
    spec = load_sweep(config_path)
    if jobs is None:
        jobs = default_jobs(int((spec["base"].get("train") or {}).get("threads") or 0))
    if jobs < 1:
        raise SlimtextError(f"--jobs must be at least 1, got {jobs}")
    search = search or spec["search"]
    metric = metric or spec["metric"]
    if search not in SEARCHES:
        raise UnknownNameError("search", search, list(SEARCHES))
    if metric.partition(".")[0] not in ("dev", "test") or not metric.partition(".")[2]:
        raise SlimtextError(f"metric {metric!r}: write split.metric, e.g. dev.macro_f1 or dev.loss")
    if metric.startswith("test."):
        print(
            "warning: choosing hyper-parameters on the test split leaks it; prefer dev.*",
            file=sys.stderr,
        )
    sweep_dir = Path(out or Path("runs") / f"sweep-{spec['name']}").absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    base_yaml = yaml.safe_dump(spec["base"], sort_keys=False)
    if (sweep_dir / "base.yaml").exists() and (sweep_dir / "base.yaml").read_text(
        encoding="utf-8"
    ) != base_yaml:
        raise SlimtextError(
            f"{sweep_dir} holds a sweep with another base config; choose another --out"
        )
    atomic_write_text(sweep_dir / "base.yaml", base_yaml)

    if search == "grid":
        grid = spec["grid"]
        ranges = [k for k, v in grid.items() if not isinstance(v, list)]
        if ranges:
            raise SlimtextError(
                f"grid search needs value lists; {ranges} are ranges (use --search optuna)"
            )
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        every = [_point(sweep_dir, v) for v in points]
        selected = {point_name(v) for v in select_points(points, grid, where or [])}
        runs = [r for r in every if r.name in selected]
        header = {
            "kind": "sweep",
            "name": spec["name"],
            "search": "grid",
            "grid": grid,
            "metric": metric,
        }
        write_plan(sweep_dir / "sweep.json", header, every, ("grid",))
        status = execute(runs, sweep_dir, runner, quiet, jobs, heartbeat)
        names = [r.name for r in every]
    else:
        if where:
            raise SlimtextError("--where filters grid points; an optuna search draws its own")
        header = {
            "kind": "sweep",
            "name": spec["name"],
            "search": "optuna",
            "grid": spec["grid"],
            "metric": metric,
            "storage": "optuna.db",
        }
        write_plan(sweep_dir / "sweep.json", header, [], ("grid", "metric"))
        names, status = _optuna(
            spec, sweep_dir, trials or spec["trials"] or 10, metric, runner, quiet, jobs, heartbeat
        )
        selected = set(names)

    if spec["seeds"]:
        reruns, values = seed_reruns(spec, sweep_dir, names, metric)
        if reruns:
            write_plan(sweep_dir / "seeds.json", {**header, "best": values}, reruns, ("grid",))
            mine = [r for r in reruns if r.group in selected]  # --where: the selected points' groups
            if not quiet and mine:
                print(f"best on {metric}: {values}; rerunning {', '.join(sorted({r.group for r in mine}))} "
                      f"with seeds {[r.seed for r in mine]}", file=sys.stderr)
            status.update(execute(mine, sweep_dir, runner, quiet, jobs, heartbeat))
            names = [*names, *(r.name for r in reruns)]

    dirs = [sweep_dir / n for n in dict.fromkeys(names) if (sweep_dir / n).is_dir()]
    md, html = write_report(
        dirs,
        sweep_dir,
        title=f"slimtext sweep: {spec['name']}",
        sweep=True,
        metric=metric.partition(".")[2],
    )
    if not quiet:
        print(f"report: {md}\n        {html}", file=sys.stderr)
    failed = [n for n, s in status.items() if s == "failed"]
    if failed and len(failed) == len(status):
        raise SlimtextError(f"every sweep point failed; see the logs in {sweep_dir / 'logs'}")
    return md


def select_points(points: list[dict], grid: dict, where: list[str]) -> list[dict]:
    """The points matching every `KEY=VALUE` of `where` (values compared as the grid spells them)."""
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or key not in grid:
            raise SlimtextError(f"--where {item!r}: write KEY=VALUE with a grid key ({', '.join(grid)})")
        spelled = [str(v) for v in grid[key]]
        if value not in spelled:
            raise SlimtextError(f"--where {item!r}: {key} takes {', '.join(spelled)} in this grid")
        points = [p for p in points if str(p[key]) == value]
    return points


def best_point(sweep_dir: Path, names: list[str], metric: str) -> str | None:
    """The finished point best on `metric` (loss minimised, the rest maximised); ties: first."""
    scored = [(v, n) for n in dict.fromkeys(names)
              if (v := objective_value(sweep_dir / n, metric)) is not None]
    if not scored:
        return None
    sign = -1 if metric.endswith(".loss") else 1
    return max(scored, key=lambda vn: (sign * vn[0], -names.index(vn[1])))[1]


def point_values(spec: dict, sweep_dir: Path, name: str) -> dict:
    """A point's grid values: the grid's own spelling when it is a grid point (so rerun names line
    up with it), else (an optuna point) the values its run config holds."""
    grid = spec["grid"]
    if all(isinstance(v, list) for v in grid.values()):
        for combo in itertools.product(*grid.values()):
            if point_name(dict(zip(grid, combo))) == name:
                return dict(zip(grid, combo))
    cfg = yaml.safe_load((sweep_dir / name / "config.yaml").read_text(encoding="utf-8"))
    return {k: cfg[k.split(".")[0]][k.split(".")[1]] for k in grid}


def seed_reruns(spec: dict, sweep_dir: Path, names: list[str], metric: str) -> tuple[list[PlannedRun], list[dict]]:
    """The best point (per `best_per` values) rerun with every `seeds` entry but the base config's
    own seed; the reruns and the chosen points' values."""
    groups: dict[tuple, list[str]] = {}
    for n in dict.fromkeys(names):
        if (sweep_dir / n / "config.yaml").is_file():
            v = point_values(spec, sweep_dir, n)
            groups.setdefault(tuple(str(v[k]) for k in spec["best_per"]), []).append(n)
    base_seed = RunConfig.from_dict(spec["base"]).train.seed
    runs, chosen = [], []
    for members in groups.values():
        best = best_point(sweep_dir, members, metric)
        if best is None:
            continue
        point = point_values(spec, sweep_dir, best)
        chosen.append(point)
        for seed in spec["seeds"]:
            if seed != base_seed:  # the base-seed point keeps its name; its seeds join its group
                run = _point(sweep_dir, {**point, "train.seed": seed})
                run.group = best
                runs.append(run)
    return runs, chosen


def _optuna(spec: dict, sweep_dir: Path, trials: int, metric: str, runner, quiet: bool, jobs: int = 1,
            heartbeat: float = HEARTBEAT_S):
    try:
        import optuna  # noqa: PLC0415
    except ImportError:
        raise SlimtextError("--search optuna needs optuna: pip install 'slimtext[sweep]'") from None
    if quiet:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if metric.endswith(".loss") else "maximize"
    study = optuna.create_study(
        study_name=spec["name"],
        # several machines share one search through one database (docs/scale.md)
        storage=os.environ.get("SLIMTEXT_OPTUNA_STORAGE") or f"sqlite:///{sweep_dir / 'optuna.db'}",
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    # A trial left RUNNING by an interrupted process: close it, retry the same values (its run
    # directory then resumes from its checkpoint).
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
    status: dict[str, str] = {}
    names: list[str] = []
    point_locks: dict[str, threading.Lock] = {}  # two trials at once may draw the same point
    guard = threading.Lock()

    def suggest(trial) -> dict:
        values = {}
        for key, choice in spec["grid"].items():
            if isinstance(choice, list):
                values[key] = trial.suggest_categorical(key, choice)
            elif (
                isinstance(choice.get("low"), int)
                and isinstance(choice.get("high"), int)
                and not choice.get("log")
            ):
                values[key] = trial.suggest_int(key, choice["low"], choice["high"])
            else:
                values[key] = trial.suggest_float(
                    key, float(choice["low"]), float(choice["high"]), log=bool(choice.get("log"))
                )
        return values

    def objective(trial) -> float:
        run = _point(sweep_dir, suggest(trial))
        trial.set_user_attr("run", run.name)
        with guard:
            names.append(run.name)
            lock = point_locks.setdefault(run.name, threading.Lock())
        with lock:  # the second of two equal trials finds the first one's run finished
            status.update(execute([run], sweep_dir, runner, quiet, heartbeat=heartbeat))
        value = objective_value(sweep_dir / run.name, metric)
        if value is None:
            raise RuntimeError(
                f"{run.name} did not finish or has no {metric}; see logs/{run.name}.log"
            )
        return value

    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if done < trials:
        study.optimize(objective, n_trials=trials - done, catch=(RuntimeError,), n_jobs=jobs)
    names = [
        t.user_attrs["run"] for t in study.get_trials(deepcopy=False) if "run" in t.user_attrs
    ] + names
    return names, status
