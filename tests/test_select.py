"""Model choice is made on dev, never on test: `select_best` and `serve`'s default run."""

from __future__ import annotations

from slimtext.experiments.report_data import load_run
from slimtext.experiments.select import default_run, select_best
from slimtext.rundir import RunDir


def fake_run(path, dev: float, test: float, weights: bool = True):
    run = RunDir(path)
    run.create({"model": {"model": "lstm"}}, argv=["slimtext"])
    run.write_summary({"dev": {"macro_f1": dev, "loss": 1 - dev}, "test": {"macro_f1": test}})
    if weights:
        (path / "model.safetensors").write_bytes(b"")
    return path


def test_serve_default_is_the_best_on_dev_where_dev_and_test_disagree(tmp_path):
    study = tmp_path / "runs" / "study-x"
    dev_best = fake_run(study / "a-s0", dev=0.90, test=0.70)
    fake_run(study / "b-s0", dev=0.80, test=0.95)  # best on test: must not be chosen
    fake_run(study / "c-s0", dev=0.99, test=0.99, weights=False)  # not loadable
    (study / "study.json").write_text("{}")
    assert default_run(tmp_path / "runs") == dev_best


def test_select_best_reads_the_split_asked_for_and_minimises_loss(tmp_path):
    runs = [load_run(fake_run(tmp_path / n, dev=d, test=t)) for n, d, t in
            (("a", 0.9, 0.7), ("b", 0.8, 0.95))]
    assert select_best(runs).name == "a"
    assert select_best(runs, split="test").name == "b"
    assert select_best(runs, metric="loss").name == "a"  # lower dev loss
    assert select_best(runs, metric="mcc") is None
