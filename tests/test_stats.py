"""Verdicts with confidence (experiments/stats.py): the paired bootstrap on hand-made predictions,
the seed test, the sample sizes needed, and the discussion's sentences."""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import f1_score

from fake_runs import write_run
from slimtext.experiments.report import write_report
from slimtext.experiments.stats import (
    PREDICTIONS,
    compare,
    macro_f1_weighted,
    needed,
    paired_bootstrap,
    paired_seed_test,
)
from slimtext.recipes.finetune import PREDICTIONS as WRITTEN


def _gold(n=400, seed=0):
    return np.random.default_rng(seed).integers(0, 2, n)


def _noisy(gold, flip, seed):
    """`gold` with a fraction `flip` of its labels flipped (binary)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(gold)) < flip, 1 - gold, gold)


def test_the_recipe_writes_the_file_the_stats_read():
    assert WRITTEN == PREDICTIONS


def test_weighted_macro_f1_matches_scikit_learn_and_counts_repeats():
    gold, pred = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 0, 2])
    w = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 1, 3, 1, 1]], float)
    got = macro_f1_weighted(gold, pred, w, 3)
    assert np.isclose(got[0], f1_score(gold, pred, average="macro", labels=[0, 1, 2], zero_division=0))
    rep = np.repeat(np.arange(6), [2, 0, 1, 3, 1, 1])
    assert np.isclose(got[1], f1_score(gold[rep], pred[rep], average="macro", labels=[0, 1, 2], zero_division=0))


def test_identical_predictions_give_a_zero_interval():
    gold = _gold()
    pred = np.stack([_noisy(gold, 0.2, s) for s in range(3)])  # (3, N)
    out = paired_bootstrap(gold, pred, pred.copy(), 2, n_boot=300)
    assert out["diff"] == 0.0 and out["lo"] == 0.0 and out["hi"] == 0.0


def test_a_clearly_better_model_has_an_interval_excluding_zero():
    gold = _gold()
    good = np.stack([_noisy(gold, 0.05, s) for s in range(3)])
    bad = np.stack([_noisy(gold, 0.30, 10 + s) for s in range(3)])
    out = paired_bootstrap(gold, good, bad, 2, n_boot=500)
    assert 0 < out["lo"] <= out["diff"] <= out["hi"]
    flipped = paired_bootstrap(gold, bad, good, 2, n_boot=500)
    assert flipped["hi"] < 0


def test_seed_test_and_sizes_needed():
    assert paired_seed_test([0.9], [0.8]) is None
    assert paired_seed_test([0.90, 0.91, 0.92], [0.80, 0.81, 0.83]) < 0.01
    assert paired_seed_test([0.90, 0.80, 0.85], [0.80, 0.90, 0.85]) > 0.5
    seeds, examples = needed(0.005, seed_sd=0.01, se=0.004, n_examples=2000)
    # normal approximation (2.8 * 0.01 / 0.005)^2 = 31.4; the t distribution with n-1 df asks a
    # little more; 2000 * (2.8 * 0.004 / 0.005)^2 = 10,036 examples
    assert 32 <= seeds <= 36 and 10_000 < examples < 10_100
    # the full preset's odd-vs-even seeds (per-seed differences +0.18 and +0.43 points): 2 seeds
    # did not detect a 0.3-point gap, and 2 cannot detect a 0.5-point one either (t with 1 df)
    seeds, _ = needed(0.005, seed_sd=0.0018, se=None, n_examples=2479)
    assert seeds == 4


def _run_with_predictions(path, gold, pred, seed, f1=None, ids=None):
    f1 = f1 if f1 is not None else f1_score(gold, pred, average="macro")
    write_run(path, f1=float(f1), seed=seed)
    ids = ids or [f"e{i}" for i in range(len(gold))]
    (path / PREDICTIONS).write_text(json.dumps({"split": "test", "ids": ids, "gold": gold.tolist(),
                                                "pred": pred.tolist()}))
    return path


def test_compare_pairs_by_seed_joins_by_id_and_skips_runs_without_predictions(tmp_path):
    gold = _gold(300)
    a = [_run_with_predictions(tmp_path / f"a-s{s}", gold, _noisy(gold, 0.05, s), s) for s in range(2)]
    b = [_run_with_predictions(tmp_path / f"b-s{s}", gold, _noisy(gold, 0.3, 9 + s), s) for s in range(2)]
    b.append(write_run(tmp_path / "b-s2", f1=0.5, seed=2))  # an older run: no predictions
    a.append(write_run(tmp_path / "a-s2", f1=0.5, seed=2))
    v = compare("a", a, "b", b, 2, n_boot=300)
    assert v.seeds == 2 and v.examples == 300 and v.detected and v.lo > 0
    assert v.sentence().startswith(f"a beats b by {v.diff:.3f} macro-F1 (95% CI [")
    # b's rows in another order give the same verdict (joined by example id)
    order = np.random.default_rng(0).permutation(300)
    pb = _noisy(gold, 0.3, 9)
    _run_with_predictions(tmp_path / "c-s0", gold[order], pb[order], 0, ids=[f"e{i}" for i in order])
    v0 = compare("a", a[:1], "b", b[:1], 2, n_boot=200)
    vc = compare("a", a[:1], "c", [tmp_path / "c-s0"], 2, n_boot=200)
    assert np.isclose(v0.diff, vc.diff) and np.isclose(v0.lo, vc.lo)
    assert "one seed: the training noise is not measured" in v0.sentence()
    turned = compare("b", b, "a", a, 2, n_boot=300)
    flipped = v.turned()  # what reports use instead of comparing the pair again
    assert (flipped.a, flipped.b, flipped.p_seeds) == ("b", "a", turned.p_seeds)
    assert np.allclose([flipped.diff, flipped.lo, flipped.hi], [turned.diff, turned.lo, turned.hi])
    assert turned.sentence().startswith(f"a beats b by {v.diff:.3f} macro-F1 (95% CI [+{-turned.hi:.3f}, +")
    none = compare("a", a[2:], "b", b[2:], 2)
    assert none.diff is None and "no paired comparison" in none.sentence()
    # runs tested on different datasets share no example: no comparison, not a division by zero
    other = _run_with_predictions(tmp_path / "d-s0", gold, _noisy(gold, 0.3, 5), 0, ids=[f"x{i}" for i in range(300)])
    apart = compare("a", a[:1], "d", [other], 2)
    assert apart.diff is None and apart.examples == 0 and "(no test example in common)" in apart.sentence()


def _study_report(tmp_path, groups: dict[str, float]) -> str:
    """report.md of 3 seeds per group, each group's predictions `gold` with that share flipped."""
    gold = _gold(300)
    dirs = [_run_with_predictions(tmp_path / f"{name}-s{s}", gold, _noisy(gold, noise, 20 * k + s), s)
            for s in range(3) for k, (name, noise) in enumerate(groups.items())]
    return write_report(dirs, tmp_path / "r")[0].read_text()


def test_the_report_states_each_verdict_with_its_interval(tmp_path):
    md = _study_report(tmp_path, {"odd": 0.10, "even": 0.10, "distilrnn": 0.05, "lstm": 0.35, "distilrnn-aug5": 0.02})
    assert "distilrnn-aug5 beats lstm by " in md  # a transfer-set variant meets both baselines
    assert "distilrnn-aug5 beats distilrnn by " in md or "distilrnn-aug5 vs distilrnn: " in md
    assert "odd vs even: no difference detectable at this size (difference " in md
    assert "3 seeds × 300 test examples" in md
    assert "distilrnn beats lstm by " in md and "paired t-test across seeds p = " in md
    assert "detecting a 0.5-point difference would take about " in md


def test_the_summary_lines_agree_with_the_paired_verdicts(tmp_path):
    # odd and even equally noisy: the means differ by chance, and the summary's line about them
    # must not call that "larger than the seed spread" when the paired verdict says otherwise
    md = _study_report(tmp_path, {"odd": 0.10, "even": 0.10, "distilrnn": 0.05, "lstm": 0.35})
    odd_even = next(line for line in md.splitlines() if line.startswith("- The odd-layer student"))
    assert "but the paired comparison finds no difference detectable at this size (95% CI [" in odd_even
    assert "seed spread" not in odd_even
    rnn = next(line for line in md.splitlines() if line.startswith("- DistilRNN (the LSTM"))
    assert "which the paired comparison confirms (95% CI [+" in rnn and "for distilrnn − lstm" in rnn
