"""Datasets that share a label meaning: the toxic view, unions (`A+B`) split per source without
leaks, per-source test metrics, cross-dataset evaluation with label mapping, and the
train-on x test-on matrix of a report."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_runs import write_run
from slimtext.config import RunConfig
from slimtext.data.registry import DataConfig, load_dataset
from slimtext.data.union import view_index
from slimtext.errors import SlimtextError
from slimtext.experiments.cross import cross_evaluate, cross_matrix, cross_md
from slimtext.experiments.report import load_run, write_report
from slimtext.recipes.baseline import train_baseline
from slimtext.recipes.evaluation import evaluate_run, map_labels
from slimtext.recipes.finetune import train
from slimtext.rundir import RunDir

NICE = "nice lovely thanks kind great".split()
MEAN = "hate stupid idiot ugly awful".split()
NOISE = "the a you this that today people really so very".split()


def write_toxic_csv(path: Path, labels=("not toxic", "toxic"), n: int = 200, seed: int = 0,
                    texts: list[str] | None = None) -> Path:
    """A separable toy corpus: a mean cue word makes a text labels[1], a nice one labels[0]."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        words = [rng.choice(NOISE) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randint(0, len(words)), rng.choice(MEAN if y else NICE))
        lines.append(f"{texts[i] if texts else ' '.join(words)},{labels[y]}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_cfg(data: str) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data = data
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.lr, cfg.train.threads = 2, 0.02, 1
    return cfg


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "slimtext", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


# --- the toxic view and label mapping


def test_view_index_of_named_datasets_unions_and_files():
    assert view_index("davidson", ["not toxic", "toxic"]) == [0, 1]
    assert view_index("davidson-3class", ["hate speech", "offensive language", "neither"]) == [1, 1, 0]
    assert view_index("tweeteval-offensive", ["not offensive", "offensive"]) == [0, 1]
    assert view_index("davidson+tweeteval-offensive", ["not toxic", "toxic"]) == [0, 1]
    assert view_index("my.csv", ["offensive", "not offensive"]) == [1, 0]
    assert view_index("sst5", ["very negative", "negative", "neutral", "positive", "very positive"]) is None
    assert view_index("my.csv", ["neg", "pos"]) is None


def test_map_labels_by_name_view_and_index():
    same = map_labels("davidson", ["not toxic", "toxic"], "my.csv", ["toxic"])
    assert (same.labels, same.from_data, same.how) == (["not toxic", "toxic"], [1], "same label names")
    via = map_labels("davidson-3class", ["hate speech", "offensive language", "neither"],
                     "tweeteval-offensive", ["not offensive", "offensive"])
    assert (via.labels, via.from_run, via.from_data) == (["not toxic", "toxic"], [1, 1, 0], [0, 1])
    # hate 0.2 + offensive 0.5 = toxic 0.7; neither 0.3 = not toxic
    np.testing.assert_allclose(via.probs(np.array([[0.2, 0.5, 0.3]])), [[0.3, 0.7]])
    index = map_labels("davidson", ["not toxic", "toxic"], "f.csv", ["0", "1"])
    assert index.from_data == [0, 1] and index.how == "label index"
    with pytest.raises(SlimtextError, match=r"\['neg', 'pos'\].*\['not toxic', 'toxic'\]"):
        map_labels("davidson", ["not toxic", "toxic"], "f.csv", ["neg", "pos"])


# --- unions


def test_union_keeps_each_source_split_and_leaks_nothing(tmp_path):
    a = write_toxic_csv(tmp_path / "a.csv", seed=1)
    alone_a = load_dataset(DataConfig(data=str(a)))
    # b repeats two of a's test texts: the union must not train on them
    leaked = [e.text for e in alone_a.splits["test"][:2]]
    b = write_toxic_csv(tmp_path / "b.csv", labels=("not offensive", "offensive"), seed=2,
                        texts=leaked + [f"b text {i} {NOISE[i % 10]}" for i in range(198)])
    alone_b = load_dataset(DataConfig(data=str(b)))
    u = load_dataset(DataConfig(data=f"{a}+{b}"))
    assert u.labels == ["not toxic", "toxic"] and u.sources == [str(a), str(b)]
    ids = {k: {e.id for e in v} for k, v in u.splits.items()}
    texts = {k: {e.text.strip() for e in v} for k, v in u.splits.items()}
    for x, y in (("train", "test"), ("dev", "test"), ("train", "dev")):
        assert not ids[x] & ids[y]
    assert not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    assert any("dropped" in n for n in u.notes)
    # each source's test split is its standalone one (b's "offensive" 1 -> "toxic" 1, 0 -> 0)
    assert alone_b.labels == ["not offensive", "offensive"]
    for alone, src in ((alone_a, str(a)), (alone_b, str(b))):
        mine = [e for e in u.splits["test"] if e.source == src]
        assert [(e.id, e.text, e.label) for e in mine] == \
            [(f"{src}/{e.id}", e.text, e.label) for e in alone.splits["test"]]
    # the same ids on every load (splits saved in the cache)
    assert load_dataset(DataConfig(data=f"{a}+{b}")).split_ids() == u.split_ids()


def test_union_of_the_real_datasets_tests_each_source_on_its_own_test(shared_data):
    u = load_dataset(DataConfig(data="davidson+tweeteval-offensive"))
    for name in ("davidson", "tweeteval-offensive"):
        alone = load_dataset(DataConfig(data=name))
        mine = [(e.id, e.text, e.label) for e in u.splits["test"] if e.source == name]
        assert mine == [(f"{name}/{e.id}", e.text, e.label) for e in alone.splits["test"]]
        assert not {e.text for e in u.splits["train"]} & {e.text for e in alone.splits["test"]}
    assert len(u.splits["test"]) == 2479 + 1191


def test_union_without_a_shared_view_names_the_dataset(tmp_path, tiny_csv):
    a = write_toxic_csv(tmp_path / "a.csv")
    with pytest.raises(SlimtextError, match=f"{tiny_csv}.*no 'toxic' view"):
        load_dataset(DataConfig(data=f"{a}+{tiny_csv}"))
    with pytest.raises(SlimtextError, match="twice"):
        load_dataset(DataConfig(data=f"{a}+{a}"))


def test_data_show_counts_per_source(tmp_path):
    a, b = write_toxic_csv(tmp_path / "a.csv"), write_toxic_csv(tmp_path / "b.csv", ("not offensive", "offensive"))
    r = _cli("data", "show", f"{a}+{b}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("labels ['not toxic', 'toxic']")
    test = lines.index(next(line for line in lines if line.strip().startswith("test")))
    assert "20" in lines[test] and str(a) in lines[test + 1] and str(b) in lines[test + 2]


# --- per-source metrics in summary.json


def test_union_run_reports_test_metrics_per_source(tmp_path):
    a, b = write_toxic_csv(tmp_path / "a.csv"), write_toxic_csv(tmp_path / "b.csv", ("not offensive", "offensive"), seed=3)
    for s in (train(_tiny_cfg(f"{a}+{b}"), tmp_path / "lstm", quiet=True),
              train_baseline(_tiny_cfg(f"{a}+{b}"), tmp_path / "tfidf", quiet=True)):
        by = s["test_by_source"]
        assert list(by) == [str(a), str(b)] and [by[k]["n"] for k in by] == [20, 20]
        pooled = sum(by[k]["accuracy"] * by[k]["n"] for k in by) / 40
        assert pooled == pytest.approx(s["test"]["accuracy"])
    single = train_baseline(_tiny_cfg(str(a)), tmp_path / "single", quiet=True)
    assert "test_by_source" not in single


# --- cross-dataset evaluation


def test_toxic_run_on_a_tweeteval_style_file_maps_labels(tmp_path):
    run = tmp_path / "run"
    train(_tiny_cfg(str(write_toxic_csv(tmp_path / "a.csv"))), run, quiet=True)
    # the same texts, labelled the tweeteval way, and the davidson way
    off = write_toxic_csv(tmp_path / "off.csv", ("not offensive", "offensive"), n=60, seed=9)
    tox = write_toxic_csv(tmp_path / "tox.csv", n=60, seed=9)
    r_off = evaluate_run(run, DataConfig(data=str(off)))
    r_tox = evaluate_run(run, DataConfig(data=str(tox)))
    assert r_off["label_mapping"] == "toxic view" and r_tox["label_mapping"] == "same label names"
    assert r_off["n"] == r_tox["n"] == 60 and r_off["split"] == "all"
    for k in ("accuracy", "macro_f1", "mcc"):
        assert r_off[k] == r_tox[k]
    assert r_off["accuracy"] > 0.6  # better than chance: the cue words carry over
    # the run's own test split, as before: the summary's numbers
    own = evaluate_run(run)
    s = json.loads((run / "summary.json").read_text())
    assert own["split"] == "test" and own["accuracy"] == s["test"]["accuracy"]
    assert own["loss"] == pytest.approx(s["test"]["loss"], abs=1e-5)


def test_evaluate_on_other_label_names_is_a_one_line_error(tmp_path, tiny_csv):
    run = tmp_path / "run"
    train(_tiny_cfg(str(write_toxic_csv(tmp_path / "a.csv"))), run, quiet=True)
    r = _cli("evaluate", str(run), "--data", str(tiny_csv))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "['neg', 'pos']" in r.stderr and "['not toxic', 'toxic']" in r.stderr
    ok = _cli("evaluate", str(run), "--data", str(write_toxic_csv(tmp_path / "o.csv", ("not offensive", "offensive"))))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["label_mapping"] == "toxic view"


# --- the matrix


def test_cross_matrix_of_fake_runs_averages_seeds_per_row(tmp_path):
    runs = []
    for data, f1s in (("davidson", {"davidson": (0.9, 0.8), "tweeteval-offensive": (0.5, 0.6)}),
                      ("tweeteval-offensive", {"davidson": (0.4, 0.4), "tweeteval-offensive": (0.7, 0.75)})):
        for seed in (0, 1):
            d = write_run(tmp_path / f"lstm-{data}-s{seed}", f1=0.5, seed=seed)
            summary = json.loads((d / "summary.json").read_text())
            (d / "summary.json").write_text(json.dumps({**summary, "dataset": data}))
            (d / "cross.json").write_text(json.dumps({k: {"macro_f1": v[seed]} for k, v in f1s.items()}))
            runs.append(load_run(d))
    runs.append(load_run(write_run(tmp_path / "tfidf-s0", f1=0.5)))  # no cross.json: no row
    t = cross_matrix(runs)
    assert t.columns == ["davidson", "tweeteval-offensive"]
    assert t.rows == [("davidson", "lstm-davidson"), ("tweeteval-offensive", "lstm-tweeteval-offensive")]
    means = [[c[0] for c in row] for row in t.cells]
    np.testing.assert_allclose(means, [[0.85, 0.55], [0.4, 0.725]])
    assert [[c[2] for c in row] for row in t.cells] == [[2, 2], [2, 2]]
    md = "\n".join(cross_md(runs))
    assert "| davidson | lstm-davidson | 0.850 ± 0.071 (n=2) | 0.550 ± 0.071 (n=2) |" in md
    md_path, html_path = write_report([r.path for r in runs], tmp_path / "report")
    assert "Cross-dataset evaluation" in md_path.read_text() and "Cross-dataset evaluation" in html_path.read_text()
    assert cross_matrix(runs[-1:]) is None and cross_md(runs[-1:]) == []


def test_cross_evaluate_writes_run_and_study_files_and_skips_done_work(tmp_path):
    a = write_toxic_csv(tmp_path / "a.csv")
    b = write_toxic_csv(tmp_path / "b.csv", ("not offensive", "offensive"), seed=4)
    train(_tiny_cfg(str(a)), tmp_path / "lstm-s0", quiet=True)
    tfidf = train_baseline(_tiny_cfg(str(a)), tmp_path / "tfidf-s0", quiet=True)
    dirs = [tmp_path / "lstm-s0", tmp_path / "tfidf-s0"]
    summary = cross_evaluate(dirs, [str(a), str(b)], tmp_path, quiet=True)
    assert set(summary["runs"]) == {"lstm-s0", "tfidf-s0"} and not summary["skipped"] and not summary["failed"]
    tf = json.loads((tmp_path / "tfidf-s0" / "cross.json").read_text())
    # the rebuilt TF-IDF model predicts what the trained one did on the same test split
    assert tf[str(a)]["accuracy"] == tfidf["test"]["accuracy"]
    assert tf[str(b)]["split"] == "test" and tf[str(b)]["n"] == 20  # the matrix: test splits only
    assert json.loads((tmp_path / "cross.json").read_text())["matrix"]["columns"] == [str(a), str(b)]
    before = (tmp_path / "lstm-s0" / "cross.json").stat().st_mtime_ns
    cross_evaluate(dirs[:1], [str(a)], tmp_path, quiet=True)  # nothing left to do for this run
    assert (tmp_path / "lstm-s0" / "cross.json").stat().st_mtime_ns == before


def test_threshold_metrics_follow_the_predictors_threshold():
    from slimtext.recipes.evaluation import at_threshold

    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1], [0.2, 0.8]])  # (N, 2)
    labels = np.array([1, 1, 0, 1])
    assert at_threshold(probs, labels, 1, 0.5)["accuracy"] == 0.75
    assert at_threshold(probs, labels, 1, 0.25)["accuracy"] == 1.0  # 0.3 now counts as positive
    assert at_threshold(probs, labels, 0, 0.95)["accuracy"] == 0.75  # positive is index 0: none reach 0.95


# --- the study option


def test_study_cross_option_is_checked_first_and_writes_cross_json(tmp_path, tiny_csv):
    from slimtext.experiments.study import run_study
    from test_study import FakeRunner

    a = write_toxic_csv(tmp_path / "a.csv")
    b = write_toxic_csv(tmp_path / "b.csv", ("not offensive", "offensive"))
    runner = FakeRunner()
    with pytest.raises(SlimtextError, match=r"\['neg', 'pos'\]"):
        run_study(data=str(a), seeds=(0,), out=tmp_path / "bad", runner=runner, quiet=True, cross=[str(tiny_csv)])
    assert runner.calls == []  # refused before any run
    run_study(data=str(a), seeds=(0,), out=tmp_path / "s", runner=runner, quiet=True, cross=[str(b)])
    assert json.loads((tmp_path / "s" / "study.json").read_text())["cross"] == [str(b)]
    cross = json.loads((tmp_path / "s" / "cross.json").read_text())
    # fake runs hold no weights: listed as skipped, no matrix
    assert cross["datasets"] == [str(b)] and set(cross["skipped"]) == set(runner.names()) and cross["matrix"] is None


def test_moderator_feedback_trains_beside_a_named_dataset(shared_data, tmp_path):
    """The web page's feedback file (JSON Lines: text, model_label, corrected_label, time) joins
    davidson as `--data FEEDBACK.jsonl+davidson --label-col corrected_label`."""
    import json as _json

    feedback = tmp_path / "feedback.jsonl"
    feedback.write_text("".join(_json.dumps({
        "text": f"comment {i} " + ("you idiot" if i % 2 else "lovely day"), "model_label": "toxic",
        "corrected_label": "toxic" if i % 2 else "not toxic", "time": "2026-11-30T08:00:00"}) + "\n"
        for i in range(40)))
    ds = load_dataset(DataConfig(data=f"{feedback}+davidson", label_col="corrected_label"))
    assert ds.labels == ["not toxic", "toxic"] and len(ds.sources) == 2
    mine = [e for split in ds.splits.values() for e in split if e.source == str(feedback)]
    assert len(mine) == 40 and {ds.labels[e.label] for e in mine} == {"toxic", "not toxic"}


def test_a_union_teacher_teaches_a_student_on_one_source_without_leaks(tmp_path):
    from slimtext.recipes.distill import distill

    a, b = write_toxic_csv(tmp_path / "a.csv", seed=4), write_toxic_csv(tmp_path / "b.csv", seed=5)
    train(_tiny_cfg(f"{a}+{b}"), tmp_path / "teacher", quiet=True)
    student = _tiny_cfg(str(a))
    student.distill.teacher, student.distill.student = str(tmp_path / "teacher"), "lstm"
    s = distill(student, out=tmp_path / "student", quiet=True)
    assert s["dataset"] == str(a) and sum(map(sum, s["confusion"]["test"])) == 20  # a's own test
    assert RunDir(tmp_path / "student").read_config()["data"]["data"] == str(a)
    splits = RunDir(tmp_path / "teacher").read_json("splits.json")  # a test example in its train
    splits["train"].append(splits["test"][0])
    (tmp_path / "teacher" / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(SlimtextError, match="would leak"):
        distill(student, out=tmp_path / "student2", quiet=True)
    other = _tiny_cfg(str(tmp_path / "c.csv"))  # not a source of the union
    write_toxic_csv(tmp_path / "c.csv", seed=6)
    other.distill.teacher, other.distill.student = str(tmp_path / "teacher"), "lstm"
    with pytest.raises(SlimtextError, match="one source of a teacher's union"):
        distill(other, out=tmp_path / "student3", quiet=True)
