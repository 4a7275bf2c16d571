"""`slimtext sweep`: grid points and Optuna trials as resumable runs. Fast tests inject a fake
runner (no training); slow ones train tiny LSTMs on a tiny CSV in subprocesses, kill them and
resume them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from fake_runs import write_run
from slimtext.config import apply_overrides
from slimtext.errors import SlimtextError
from slimtext.experiments import study
from slimtext.experiments.sweep import load_sweep, point_name, run_sweep
from slimtext.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
SCORES = {("sgd", 16): 0.61, ("sgd", 32): 0.64, ("adam", 16): 0.83, ("adam", 32): 0.78}


class FakeTrain:
    """Stands in for `python -m slimtext train --config base.yaml --set k=v ... --out DIR`."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], log: Path) -> int:
        self.calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        cfg = yaml.safe_load(Path(argv[argv.index("--config") + 1]).read_text())
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        cfg = apply_overrides(cfg, sets)
        train = cfg["train"]
        dev = SCORES[(train["optimizer"], train.get("batch_size", 16))] + 0.01 * train.get(
            "seed", 0
        )
        write_run(out, f1=dev - 0.01, dev_f1=dev, model="lstm", config=cfg)
        return 0


def _sweep_file(tmp_path: Path, data: str = "tiny.csv", **extra) -> Path:
    spec = {
        "name": "tiny",
        "base": {
            "data": {"data": data},
            "model": {"model": "lstm"},
            "rnn": {"embed_dim": 8, "hidden_dim": 8},
            "train": {"epochs": 1, "threads": 1, "lr": 0.02},
        },
        "grid": {"train.optimizer": ["sgd", "adam"], "train.batch_size": [16, 32]},
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _hyper_rows(md: str) -> list[str]:
    table = md.split("## Hyper-parameters")[1].split("## Training curves")[0]
    return [li for li in table.splitlines() if li.startswith("| ") and "---" not in li][1:]


def test_grid_runs_every_point_once_and_marks_the_best(tmp_path):
    runner = FakeTrain()
    md = run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=runner, quiet=True)
    names = sorted(Path(a[a.index("--out") + 1]).name for a in runner.calls)
    assert names == sorted(
        [
            "optimizer-sgd_batch_size-16",
            "optimizer-sgd_batch_size-32",
            "optimizer-adam_batch_size-16",
            "optimizer-adam_batch_size-32",
        ]
    )
    assert all(a[2:4] == ["slimtext", "train"] for a in runner.calls)
    rows = _hyper_rows(md.read_text())
    assert len(rows) == 4
    assert rows[0].startswith("| ★ **optimizer-adam_batch_size-16** | adam | 16 | 0.830 |")
    plan = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert plan["search"] == "grid" and len(plan["runs"]) == 4
    again = FakeTrain()
    run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=again, quiet=True)
    assert again.calls == []


def test_optuna_search_continues_from_its_sqlite_storage(tmp_path):
    pytest.importorskip("optuna")
    import optuna

    path = _sweep_file(tmp_path)
    runner = FakeTrain()
    run_sweep(path, out=tmp_path / "sw", search="optuna", trials=2, runner=runner, quiet=True)
    storage = f"sqlite:///{tmp_path / 'sw' / 'optuna.db'}"

    def done():
        trials = optuna.load_study(study_name="tiny", storage=storage).trials
        return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]

    assert len(done()) == 2
    first = len(runner.calls)
    md = run_sweep(path, out=tmp_path / "sw", search="optuna", trials=3, runner=runner, quiet=True)
    assert len(done()) == 3
    assert len(runner.calls) - first <= 1  # one more trial (none when it repeats a finished point)
    for t in done():
        assert t.value == SCORES[(t.params["train.optimizer"], t.params["train.batch_size"])]
    assert "★" in md.read_text()


def test_optuna_retries_a_trial_left_running_by_an_interrupted_process(tmp_path):
    pytest.importorskip("optuna")
    import optuna

    path = _sweep_file(tmp_path)
    (tmp_path / "sw").mkdir()
    storage = f"sqlite:///{tmp_path / 'sw' / 'optuna.db'}"
    s = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    s.enqueue_trial({"train.optimizer": "adam", "train.batch_size": 32})
    t = s.ask(
        {
            "train.optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"]),
            "train.batch_size": optuna.distributions.CategoricalDistribution([16, 32]),
        }
    )
    t.set_user_attr("run", "optimizer-adam_batch_size-32")  # the process died here: trial RUNNING
    runner = FakeTrain()
    run_sweep(path, out=tmp_path / "sw", search="optuna", trials=1, runner=runner, quiet=True)
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert trials[1].params == {"train.optimizer": "adam", "train.batch_size": 32}


def test_swept_seeds_are_grouped_per_setting(tmp_path):
    grid = {"train.optimizer": ["sgd", "adam"], "train.seed": [0, 1, 2]}
    md = run_sweep(
        _sweep_file(tmp_path, grid=grid), out=tmp_path / "sw", runner=FakeTrain(), quiet=True
    )
    text = md.read_text()
    assert (tmp_path / "sw" / "optimizer-adam-s2" / "summary.json").exists()
    assert text.count("| optimizer-adam |") >= 1 and text.count("| optimizer-sgd |") >= 1
    # adam: dev 0.83/0.84/0.85 -> mean 0.840 ± 0.010; its lead over sgd exceeds the spread
    assert "optimizer-adam has the best mean dev macro_f1 (0.840 ± 0.010)" in text
    assert "larger than the seed spread" in text
    assert len(_hyper_rows(text)) == 6


def test_seeds_rerun_the_point_best_on_dev_and_group_with_it(tmp_path):
    runner = FakeTrain()
    md = run_sweep(_sweep_file(tmp_path, seeds=[0, 1, 2]), out=tmp_path / "sw", runner=runner,
                   quiet=True)
    names = [Path(a[a.index("--out") + 1]).name for a in runner.calls]
    assert names[4:] == ["optimizer-adam_batch_size-16-s1", "optimizer-adam_batch_size-16-s2"]
    assert "train.seed=2" in runner.calls[-1]
    text = md.read_text()  # adam/16: dev 0.83/0.84/0.85 over its three seeds
    assert "optimizer-adam_batch_size-16 has the best mean dev macro_f1 (0.840 ± 0.010)" in text
    again = FakeTrain()  # a rerun: nothing left to train
    run_sweep(_sweep_file(tmp_path, seeds=[0, 1, 2]), out=tmp_path / "sw", runner=again, quiet=True)
    assert again.calls == []
    with pytest.raises(SlimtextError, match="either `seeds` or"):
        load_sweep(_sweep_file(tmp_path, seeds=[1], grid={"train.seed": [0, 1]}))
    with pytest.raises(SlimtextError, match="list of integers"):
        load_sweep(_sweep_file(tmp_path, seeds="0,1"))
    with pytest.raises(SlimtextError, match="not in the grid"):
        load_sweep(_sweep_file(tmp_path, seeds=[0, 1], best_per=["model.model"]))


def test_best_per_reruns_the_best_point_of_each_value(tmp_path):
    runner = FakeTrain()
    run_sweep(_sweep_file(tmp_path, seeds=[0, 1], best_per=["train.optimizer"]),
              out=tmp_path / "sw", runner=runner, quiet=True)
    reruns = sorted(Path(a[a.index("--out") + 1]).name for a in runner.calls[4:])
    # sgd: 32 beats 16 (0.64 > 0.61); adam: 16 beats 32 (0.83 > 0.78)
    assert reruns == ["optimizer-adam_batch_size-16-s1", "optimizer-sgd_batch_size-32-s1"]


def test_where_runs_only_the_matching_grid_points_and_the_rest_later(tmp_path):
    runner = FakeTrain()
    run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=runner, quiet=True,
              where=["train.optimizer=adam"])
    assert sorted(Path(a[a.index("--out") + 1]).name for a in runner.calls) == [
        "optimizer-adam_batch_size-16", "optimizer-adam_batch_size-32"]
    later = FakeTrain()  # the whole grid into the same folder: only the other points train
    run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=later, quiet=True)
    assert sorted(Path(a[a.index("--out") + 1]).name for a in later.calls) == [
        "optimizer-sgd_batch_size-16", "optimizer-sgd_batch_size-32"]
    with pytest.raises(SlimtextError, match="takes sgd, adam"):
        run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=FakeTrain(), where=["train.optimizer=adamw"])
    with pytest.raises(SlimtextError, match="with a grid key"):
        run_sweep(_sweep_file(tmp_path), out=tmp_path / "sw", runner=FakeTrain(), where=["train.lr=0.1"])


def test_where_keeps_the_folders_plan_files_and_report_whole(tmp_path):
    spec = _sweep_file(tmp_path, seeds=[0, 1], best_per=["train.optimizer"])
    first = FakeTrain()
    run_sweep(spec, out=tmp_path / "sw", runner=first, quiet=True, where=["train.optimizer=adam"])
    assert sorted(Path(a[a.index("--out") + 1]).name for a in first.calls) == [
        "optimizer-adam_batch_size-16", "optimizer-adam_batch_size-16-s1", "optimizer-adam_batch_size-32"]
    later = FakeTrain()  # the other model's rows later, into the same folder
    md = run_sweep(spec, out=tmp_path / "sw", runner=later, quiet=True, where=["train.optimizer=sgd"])
    assert sorted(Path(a[a.index("--out") + 1]).name for a in later.calls) == [
        "optimizer-sgd_batch_size-16", "optimizer-sgd_batch_size-32", "optimizer-sgd_batch_size-32-s1"]
    plan = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert len(plan["runs"]) == 4  # every grid point, not only the last --where's
    seeds = json.loads((tmp_path / "sw" / "seeds.json").read_text())
    assert sorted(r["name"] for r in seeds["runs"]) == ["optimizer-adam_batch_size-16-s1",
                                                        "optimizer-sgd_batch_size-32-s1"]
    text = md.read_text()
    assert "optimizer-adam_batch_size-16" in text and "optimizer-sgd_batch_size-32" in text


def test_bad_sweep_files_say_what_to_fix(tmp_path):
    with pytest.raises(SlimtextError, match="needs its section"):
        load_sweep(_sweep_file(tmp_path, grid={"lr": [0.1]}))
    with pytest.raises(SlimtextError, match="unknown train key 'learning_rate'"):
        load_sweep(_sweep_file(tmp_path, grid={"train.learning_rate": [0.1]}))
    with pytest.raises(SlimtextError, match="unknown key"):
        load_sweep(_sweep_file(tmp_path, extra_key=1))
    with pytest.raises(SlimtextError, match="use --search optuna"):
        run_sweep(
            _sweep_file(tmp_path, grid={"train.lr": {"low": 0.001, "high": 0.1}}),
            out=tmp_path / "x",
            runner=FakeTrain(),
        )
    assert point_name({"train.lr": 0.001, "model.method": "lora"}) == "lr-0.001_method-lora"
    assert point_name({"train.seed": 3, "train.lr": 0.5}) == "lr-0.5-s3"
    assert point_name({"train.seed": 3}) == "base-s3"


def test_example_sweep_file_is_valid():
    spec = load_sweep(REPO / "examples" / "sweep-lstm-cfimdb.yaml")
    assert spec["base"]["data"]["data"] == "cfimdb" and spec["base"]["model"]["model"] == "lstm"
    assert set(spec["grid"]["train.optimizer"]) == {"sgd", "adam", "adamw", "rmsprop"}
    assert len(spec["grid"]["train.batch_size"]) == 2


# --- real tiny runs (subprocesses) ---------------------------------------------------------------


class Counting:
    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv, log):
        self.calls.append(argv)
        return study.subprocess_runner(argv, log)


@pytest.mark.slow
def test_real_grid_on_a_tiny_csv_then_rerun_skips(tiny_csv, tmp_path):
    path = _sweep_file(tmp_path, data=str(tiny_csv))
    runner = Counting()
    md = run_sweep(path, out=tmp_path / "sw", runner=runner, quiet=True)
    assert len(runner.calls) == 4, [p.read_text() for p in (tmp_path / "sw" / "logs").glob("*.log")]
    rows = _hyper_rows(md.read_text())
    assert len(rows) == 4 and sum("★" in r for r in rows) == 1
    for name in ("optimizer-adam_batch_size-16", "optimizer-sgd_batch_size-32"):
        run = RunDir(tmp_path / "sw" / name)
        assert run.is_finished() and len(run.read_metrics()) == 1
        cfg = run.read_config()
        assert (
            cfg["rnn"]["hidden_dim"] == 8 and cfg["train"]["optimizer"] == name.split("_")[0][10:]
        )
    again = Counting()
    run_sweep(path, out=tmp_path / "sw", runner=again, quiet=True)
    assert again.calls == []


@pytest.mark.slow
def test_real_optuna_two_trials_then_three(tiny_csv, tmp_path):
    optuna = pytest.importorskip("optuna")
    path = _sweep_file(tmp_path, data=str(tiny_csv))
    run_sweep(path, out=tmp_path / "sw", search="optuna", trials=2, quiet=True)
    storage = f"sqlite:///{tmp_path / 'sw' / 'optuna.db'}"

    def states():
        return [t.state.name for t in optuna.load_study(study_name="tiny", storage=storage).trials]

    assert states() == ["COMPLETE", "COMPLETE"]
    md = run_sweep(path, out=tmp_path / "sw", search="optuna", trials=3, quiet=True)
    assert states() == ["COMPLETE"] * 3
    assert "★" in md.read_text()


@pytest.mark.slow
def test_real_kill_then_rerun_resumes_every_point(tiny_csv, tmp_path, monkeypatch):
    """SIGKILL after epoch 1 of 2 (a real one, from the training loop), then the same command."""
    path = _sweep_file(tmp_path, data=str(tiny_csv), grid={"train.optimizer": ["sgd", "adam"]})
    spec = yaml.safe_load(path.read_text())
    spec["base"]["train"]["epochs"] = 2
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("SLIMTEXT_KILL_AFTER_EPOCH", "1")
    with pytest.raises(SlimtextError, match="every sweep point failed"):
        run_sweep(path, out=tmp_path / "sw", quiet=True)
    for name in ("optimizer-sgd", "optimizer-adam"):
        run = RunDir(tmp_path / "sw" / name)
        assert not run.is_finished() and len(run.read_metrics()) == 1
        assert (run.checkpoint_dir / "state.pt").exists()
    monkeypatch.delenv("SLIMTEXT_KILL_AFTER_EPOCH")
    runner = Counting()
    run_sweep(path, out=tmp_path / "sw", runner=runner, quiet=True)
    assert [a[a.index("--resume") + 1] for a in runner.calls] == [
        str(tmp_path / "sw" / "optimizer-sgd"),
        str(tmp_path / "sw" / "optimizer-adam"),
    ]
    for name in ("optimizer-sgd", "optimizer-adam"):
        run = RunDir(tmp_path / "sw" / name)
        assert run.is_finished() and [r["epoch"] for r in run.read_metrics()] == [1, 2]
    assert os.environ.get("SLIMTEXT_KILL_AFTER_EPOCH") is None
