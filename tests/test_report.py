"""Reports from hand-written run directories: mean/std in the table, a self-contained HTML file,
the generated discussion in both directions, missing fields, and the sweep table's best run."""

from __future__ import annotations

import re
import statistics

import pytest

from fake_runs import write_run, write_study
from slimtext.experiments.report import write_report
from slimtext.experiments.report_data import group_of, load_run, stat, swept_keys


def _row(md: str, method: str) -> list[str]:
    """Cells of the comparison-table row of `method` in report.md."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == method:
            return cells
    raise AssertionError(f"no row for {method}")


def _header(md: str) -> list[str]:
    line = next(li for li in md.splitlines() if li.startswith("| Method"))
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_shows_mean_and_sample_std_per_method(tmp_path):
    f1s, accs = [0.80, 0.82, 0.87], [0.90, 0.91, 0.95]
    dirs = [
        write_run(tmp_path / f"teacher-s{i}", f1=f, acc=a, seed=i, train_seconds=10.0 * (i + 1))
        for i, (f, a) in enumerate(zip(f1s, accs))
    ]
    dirs.append(write_run(tmp_path / "lstm-s0", f1=0.70, model="lstm", params=12_345))
    md_path, html_path = write_report(dirs, tmp_path / "report")
    md = md_path.read_text()
    head, teacher, lstm = _header(md), _row(md, "teacher"), _row(md, "lstm")
    col = {h: i for i, h in enumerate(head)}
    assert teacher[col["n"]] == "3"
    assert (
        teacher[col["Macro-F1"]] == f"**{statistics.mean(f1s):.3f} ± {statistics.stdev(f1s):.3f}**"
    )
    assert (
        teacher[col["Accuracy"]]
        == f"**{statistics.mean(accs):.3f} ± {statistics.stdev(accs):.3f}**"
    )
    assert teacher[col["Train s"]] == "20.0 ± 10.0"
    assert teacher[col["Params"]] == "22.71M"  # identical over seeds: no ± 0
    assert lstm[col["Macro-F1"]] == "0.700"  # one run: no std at all
    assert lstm[col["Params"]] == "12.3k"
    html = html_path.read_text()
    assert f"{statistics.mean(f1s):.3f} ± {statistics.stdev(f1s):.3f}" in html


def test_stat_ignores_missing_values():
    s = stat([0.5, None, 0.7, float("nan")])
    assert (s.mean, s.n) == (pytest.approx(0.6), 2) and s.std == pytest.approx(
        statistics.stdev([0.5, 0.7])
    )
    assert stat([None]).mean is None and stat([1.0]).std is None


def test_html_is_self_contained_and_both_files_are_written(tmp_path):
    dirs = write_study(tmp_path / "study")
    md_path, html_path = write_report(dirs, tmp_path / "study", title="A study")
    assert md_path.exists() and html_path.exists()
    html = html_path.read_text()
    assert html.startswith("<!doctype html>") and "<style>" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", html, re.I)
    assert (
        "<script" not in html
        and "<link" not in html
        and "@import" not in html
        and "url(" not in html
    )
    assert (
        html.count('src="data:image/png;base64,') == 4
    )  # train loss, dev loss, dev F1, dev accuracy
    md = md_path.read_text()
    for name in ("train_loss", "dev_loss", "dev_macro_f1", "dev_accuracy"):
        assert f"(figures/{name}.png)" in md
        assert (tmp_path / "study" / "figures" / f"{name}.png").stat().st_size > 5000
    assert "tfidf" in md and "lora-odd" in md  # every method is in the table


def test_html_escapes_every_text_it_shows(tmp_path):
    """Names, titles and commands come from files anyone can write: the template escapes them."""
    run = write_run(tmp_path / "evil-s0", f1=0.8, group="<img src=x onerror=alert(1)>")
    (run / "command.txt").write_text("slimtext train --data '<script>alert(1)</script>'\n")
    _, html_path = write_report([run], tmp_path / "r", title="<b>title</b>")
    html = html_path.read_text()
    assert "<img src=x" not in html and "<script>" not in html and "<b>title" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;title&lt;/b&gt;" in html


def _two_groups(tmp_path, a: list[float], b: list[float]) -> str:
    dirs = [write_run(tmp_path / f"alpha-s{i}", f1=f, seed=i) for i, f in enumerate(a)]
    dirs += [write_run(tmp_path / f"beta-s{i}", f1=f, seed=i) for i, f in enumerate(b)]
    md, html = write_report(dirs, tmp_path / "r")
    return md.read_text(), html.read_text()


def test_margin_larger_than_the_seed_spread(tmp_path):
    md, html = _two_groups(tmp_path, [0.90, 0.91, 0.92], [0.80, 0.81, 0.82])  # std 0.01 each
    sentence = (
        "alpha has the best mean test macro-F1 (0.910 ± 0.010); its margin over the runner-up beta "
        "(0.810 ± 0.010) is 0.100, larger than the seed spread (combined std 0.014, n = 3 and 3)."
    )
    assert sentence in md and sentence in html


def test_margin_within_the_seed_spread(tmp_path):
    md, html = _two_groups(tmp_path, [0.80, 0.90, 0.85], [0.84, 0.86, 0.79])  # std 0.05 and ~0.036
    assert "alpha has the best mean test macro-F1 (0.850 ± 0.050)" in md
    assert (
        "is 0.020, within the seed spread (combined std 0.062, n = 3 and 3), so these seeds do not "
        "separate the two." in md
    )
    assert "within the seed spread" in html and "larger than the seed spread" not in md


def test_single_seed_says_the_spread_is_unknown(tmp_path):
    md, _ = _two_groups(tmp_path, [0.90], [0.80])
    assert "spread across seeds is unknown" in md and "larger than" not in md


def test_study_sentences_odd_even_distilrnn_and_teacher(tmp_path):
    md = write_report(write_study(tmp_path / "s"), tmp_path / "s")[0].read_text()
    # odd 0.88/0.87/0.89 vs even 0.86/0.89/0.87: 0.007 apart, combined std 0.018
    assert (
        "The odd-layer student scores 0.007 higher in mean test macro-F1 than the even-layer "
        "student "
        "(0.880 ± 0.010 vs 0.873 ± 0.015), within the seed spread (combined std 0.018"
    ) in md
    # DistilRNN 0.75/0.77/0.76 vs LSTM 0.70/0.74/0.72: 0.040 apart, combined std 0.022
    assert "scores 0.040 higher in mean test macro-F1 than the LSTM trained on labels alone" in md
    assert "larger than the seed spread (combined std 0.022" in md
    assert (
        "odd: 23% fewer parameters than the teacher (17.39M vs 22.71M), 2.0× faster per example"
        in md
    )
    assert (
        "lora-odd: 23% fewer parameters than the teacher (17.42M vs 22.71M), trains 0.23% of them"
        in md
    )
    assert "lstm: 28× fewer parameters than the teacher (800.0k vs 22.71M)" in md
    assert "tfidf: 1,136× fewer parameters than the teacher (20.0k vs 22.71M), 40.0× faster" in md


def test_copes_with_missing_fields_and_unfinished_runs(tmp_path):
    tfidf = write_run(
        tmp_path / "tfidf-s0", f1=0.8, model="tfidf", method="logreg", epochs=None, roc_auc=None
    )
    lstm = write_run(tmp_path / "lstm-s0", f1=0.7, model="lstm")
    (lstm / "summary.json").unlink()  # unfinished: config and metrics only
    (lstm / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 0.5}\n')
    empty = tmp_path / "empty-s0"
    empty.mkdir()
    md_path, html_path = write_report([tfidf, lstm, empty], tmp_path / "r")
    md = md_path.read_text()
    assert "2 run directories have no summary.json" in md and "lstm-s0, empty-s0" in md
    roc = _header(md).index("ROC-AUC")
    assert _row(md, "tfidf")[roc] == "–"
    assert "No run has per-epoch metrics." in md
    assert "Only one method is present: tfidf" in md
    assert html_path.exists()


def test_sweep_table_marks_the_best_run_and_lists_swept_keys(tmp_path):
    dirs = []
    for name, lr, opt, dev in [
        ("a", 0.1, "sgd", 0.60),
        ("b", 0.01, "adam", 0.75),
        ("c", 0.001, "adam", 0.70),
    ]:
        cfg = {
            "data": {"data": "x.csv", "data_dir": f"/tmp/{name}"},
            "model": {"model": "lstm", "method": "full"},
            "train": {"lr": lr, "optimizer": opt, "batch_size": 16, "threads": 1},
        }
        dirs.append(
            write_run(tmp_path / f"lr-{lr}_optimizer-{opt}", f1=dev - 0.02, dev_f1=dev, config=cfg)
        )
    assert swept_keys([load_run(d) for d in dirs]) == [
        "train.lr",
        "train.optimizer",
    ]  # not data_dir
    md_path, html_path = write_report(dirs, tmp_path / "r")  # auto-detected: no seed suffixes
    md = md_path.read_text()
    table = md.split("## Hyper-parameters")[1].split("## Training curves")[0]
    rows = [li for li in table.splitlines() if li.startswith("| ")]
    assert rows[0].split("|")[1:4] == [" Run ", " train.lr ", " train.optimizer "]
    assert rows[2].startswith("| ★ **lr-0.01_optimizer-adam** | 0.01 | adam | 0.750 | 0.730 |")
    assert sum("★" in r for r in rows) == 1
    assert (
        "Best single run by dev macro_f1: lr-0.01_optimizer-adam "
        "(train.lr=0.01, train.optimizer=adam), dev 0.750, test 0.730" in md
    )
    assert (  # the ranking uses dev, never test
        "lr-0.01_optimizer-adam has the best mean dev macro_f1 (0.750); its margin over the "
        "runner-up lr-0.001_optimizer-adam (0.700) is 0.050, with a single run" in md
    )
    html = html_path.read_text()
    assert re.search(r'<tr class="best"><td>★ lr-0\.01_optimizer-adam</td>', html)
    assert md.startswith("# slimtext report: ")  # plain runs are not called a sweep
    md_sweep = write_report(dirs, tmp_path / "s", sweep=True)[0].read_text()
    assert md_sweep.startswith("# slimtext sweep: ")


def test_grouping_by_name_and_group_key():
    assert group_of("odd-s12", None, None) == "odd"
    assert group_of("lora-odd-s0", None, None) == "lora-odd"
    assert group_of("davidson-lstm-full-s0-20250101-120000", None, None) == "davidson-lstm-full"
    assert group_of("optimizer-adam_batch_size-16", None, None) == "optimizer-adam_batch_size-16"
    assert group_of("x-s0", {"group": "mine"}, None) == "mine"


def test_collect_run_dirs_expands_a_study_folder_in_plan_order(tmp_path):
    import json

    from slimtext.errors import SlimtextError
    from slimtext.experiments.report import collect_run_dirs

    dirs = write_study(tmp_path / "study", seeds=(0,))
    (tmp_path / "study" / "logs").mkdir()
    plan = {"runs": [{"name": d.name} for d in dirs]}
    (tmp_path / "study" / "study.json").write_text(json.dumps(plan))
    assert collect_run_dirs([tmp_path / "study"]) == dirs  # teacher first, not alphabetical
    assert collect_run_dirs([dirs[1], dirs[0], dirs[1]]) == [dirs[1], dirs[0]]
    with pytest.raises(SlimtextError, match="holds no run directories"):
        collect_run_dirs([tmp_path / "study" / "logs"])
