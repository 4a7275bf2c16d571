"""Calibration (temperature, ECE, Brier, reliability), the decision threshold, class weights,
degenerate-model warnings, and predictors that apply calibration.json (TF-IDF included)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from slimtext.cli import app
from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.inference.calibration import (
    ThresholdError,
    brier,
    calibrate,
    choose_threshold,
    ece,
    fit_temperature,
    nll,
    reliability,
    scaled_softmax,
)
from slimtext.inference.predictor import load_predictor
from slimtext.recipes.baseline import train_baseline
from slimtext.recipes.evaluation import evaluate_run
from slimtext.recipes.finetune import train, write_summary
from slimtext.rundir import RunDir
from slimtext.train.degenerate import degenerate_warnings
from slimtext.train.losses import CrossEntropy, class_weights
from test_train import tiny_cfg

# --- temperature, scores -----------------------------------------------------------------------


def test_temperature_scaling_softens_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 3)) * 1.5
    p = scaled_softmax(true_logits)
    labels = (rng.random((4000, 1)) < p.cumsum(1)).argmax(1)  # a draw from each row of p
    overconfident = 4.0 * true_logits  # the same ranking, probabilities pushed to 0 and 1
    t = fit_temperature(overconfident, labels)
    assert 3.0 < t < 5.0  # recovers the factor it was inflated by
    before, after = scaled_softmax(overconfident), scaled_softmax(overconfident, t)
    assert nll(after, labels) < nll(before, labels) - 0.1
    assert ece(after, labels) < ece(before, labels)
    assert (after.argmax(1) == before.argmax(1)).all()  # the argmax never moves


def test_ece_brier_and_reliability_on_a_hand_computed_example():
    probs = np.array([[0.1, 0.9], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([1, 0, 0, 1])  # 0.9: right, wrong; 0.6: right, right
    # bin [0.9, 1.0): accuracy 0.5, confidence 0.9; bin [0.6, 0.7): accuracy 1, confidence 0.6
    assert ece(probs, labels, bins=10) == pytest.approx(2 / 4 * 0.4 + 2 / 4 * 0.4)
    r = reliability(probs, labels, bins=10)
    assert r["count"] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert r["accuracy"][9] == 0.5 and r["confidence"][6] == pytest.approx(0.6) and r["accuracy"][0] is None
    # Brier: squared error to the one-hot label summed over classes, mean over examples
    assert brier(probs, labels) == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)
    assert nll(probs, labels) == pytest.approx(-np.log([0.9, 0.1, 0.6, 0.6]).mean())


# --- the threshold ------------------------------------------------------------------------------

P = np.array([0.1, 0.4, 0.35, 0.8, 0.65, 0.9])
Y = np.array([0, 0, 1, 1, 0, 1])


def test_threshold_rules_on_a_hand_made_example():
    # macro-F1 per threshold (p >= t): 0.1 .333, 0.35 .625, 0.4 .486, 0.65 .667, 0.8 .829, 0.9 .625
    assert choose_threshold(P, Y) == pytest.approx(0.725)  # 0.8 chosen; midway to 0.65 below it
    # precision per threshold: 0.1 .50, 0.35 .60, 0.4 .50, 0.65 .67, 0.8 1.0, 0.9 1.0
    assert choose_threshold(P, Y, "precision=0.6") == pytest.approx(0.225)  # 0.35, the lowest reaching it
    assert choose_threshold(P, Y, "precision=0.9") == pytest.approx(0.725)
    # a tie in macro-F1 (0.4 and 0.8 both .733) goes to the lower threshold
    assert choose_threshold([0.2, 0.4, 0.6, 0.8], [0, 1, 0, 1]) == pytest.approx(0.3)
    # separable dev data: the cut falls between the classes, not on the lowest positive
    assert choose_threshold([0.01, 0.02, 0.97, 0.99], [0, 0, 1, 1]) == pytest.approx(0.495)
    with pytest.raises(ThresholdError, match="no threshold reaches a dev precision of 0.9"):
        choose_threshold([0.3, 0.9], [1, 0], "precision=0.9")
    for bad in ("recall=0.9", "precision=2", "precision=x"):
        with pytest.raises(ThresholdError, match="unknown threshold rule"):
            choose_threshold(P, Y, bad)


def test_threshold_search_matches_brute_force():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    p = np.round(rng.random(300), 2)  # many ties
    y = (rng.random(300) < p).astype(int)
    best = max(f1_score(y, p >= t, average="macro") for t in np.unique(p))
    t = choose_threshold(p, y)
    assert f1_score(y, p >= t, average="macro") == pytest.approx(best)
    assert all(f1_score(y, p >= u, average="macro") < best - 1e-12 for u in np.unique(p) if u < t)


def test_calibrate_multiclass_has_no_threshold():
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    cal = calibrate(z, y, z, y, ["a", "b", "c"])
    assert cal["threshold"] is None and cal["positive_label"] is None and cal["temperature"] > 0
    assert set(cal["test_before"]) == {"ece", "brier", "nll"}


# --- class weights, warnings --------------------------------------------------------------------


def test_balanced_class_weights():
    labels = torch.tensor([0, 0, 0, 1])
    w = class_weights(labels, 3, "balanced")  # N / (C * n_c); class 2 never occurs
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 0.0]))
    assert class_weights(labels, 3, "none") is None
    with pytest.raises(UnknownNameError):
        class_weights(labels, 3, "inverse")
    logits = torch.randn(4, 3)
    batch = {"labels": labels}
    manual = -(w[labels] * logits.log_softmax(-1)[torch.arange(4), labels]).sum() / w[labels].sum()
    torch.testing.assert_close(CrossEntropy(w)(logits, batch), manual)


def _summary(matrix, mcc):
    return {"labels": ["not toxic", "toxic"], "test_split": "test", "test": {"mcc": mcc},
            "confusion": {"test": matrix}}


def test_degenerate_warnings(tmp_path, capsys):
    constant = _summary([[40, 0], [10, 0]], 0.0)
    assert degenerate_warnings(constant) == ["all 50 test predictions are 'not toxic': the model is constant"]
    weak = _summary([[20, 20], [5, 5]], 0.01)
    assert degenerate_warnings(weak) == ["test MCC is 0.010 (< 0.05): barely better than chance"]
    assert degenerate_warnings(_summary([[38, 2], [3, 7]], 0.68)) == []
    at = {"threshold": 0.99, "mcc": 0.0, "confusion": [[40, 0], [10, 0]]}
    assert "at threshold 0.99" in degenerate_warnings({**_summary([[38, 2], [3, 7]], 0.68),
                                                      "test_at_threshold": at})[0]
    run = RunDir(tmp_path / "r")
    write_summary(run, constant)
    assert run.read_summary()["warnings"] == degenerate_warnings(constant)
    assert "warning: r: all 50 test predictions" in capsys.readouterr().err


# --- runs, predictors, CLI ----------------------------------------------------------------------


@pytest.fixture
def lstm_run(tiny_csv, tmp_path):
    cfg = tiny_cfg(tiny_csv, epochs=2)
    train(cfg, out=tmp_path / "lstm", quiet=True)
    return tmp_path / "lstm"


def test_training_writes_calibration_and_the_predictor_uses_its_threshold(lstm_run):
    run = RunDir(lstm_run)
    cal, s = run.read_json("calibration.json"), run.read_summary()
    assert cal["positive_label"] == "pos" and cal["threshold_rule"] == "macro_f1"
    assert 0 < cal["threshold"] <= 1 and cal["temperature"] > 0
    assert s["calibration"]["temperature"] == cal["temperature"] and s["warnings"] == []
    assert s["test_at_threshold"]["threshold"] == cal["threshold"]
    assert set(s["test"]) == {"loss", "accuracy", "macro_f1", "mcc", "roc_auc"}  # still argmax

    texts = ["a really good movie", "an awful plot", "the film"]
    p = load_predictor(lstm_run)
    assert p.threshold == cal["threshold"]
    np.testing.assert_allclose(p.predict_proba(texts), scaled_softmax(p.predict_logits(texts), p.temperature),
                               atol=1e-6)
    for text in texts:  # a threshold just above / at a text's calibrated P(pos) flips its label
        q = float(p.predict_proba([text])[0, 1])
        cal["threshold"] = q + 1e-6
        run.write_json("calibration.json", cal)
        assert load_predictor(lstm_run).predict(text) == "neg"
        cal["threshold"] = q
        run.write_json("calibration.json", cal)
        assert load_predictor(lstm_run).predict(text) == "pos"
    assert load_predictor(lstm_run).predict(texts, threshold=1.01) == ["neg"] * 3  # override
    (lstm_run / "calibration.json").unlink()  # absent: T = 1, argmax
    bare = load_predictor(lstm_run)
    assert bare.temperature == 1.0 and bare.threshold is None


def test_cli_threshold_overrides(lstm_run):
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(lstm_run), "a really good movie", "an awful plot", "--threshold", "0"])
    assert r.exit_code == 0, r.output
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["pos", "pos"]
    r = runner.invoke(app, ["predict", str(lstm_run), "a really good movie", "--threshold", "1.01"])
    assert isinstance(r.exception, SlimtextError) and "threshold must be between 0 and 1" in str(r.exception)
    r = runner.invoke(app, ["evaluate", str(lstm_run), "--threshold", "0"])
    out = json.loads(r.output)
    s = RunDir(lstm_run).read_summary()
    assert out["accuracy"] == s["test"]["accuracy"] and out["threshold"] == 0
    m = np.array(s["confusion"]["test"])  # rows: true labels
    assert out["at_threshold"]["accuracy"] == pytest.approx(m[1].sum() / m.sum())  # everything "pos"
    own = evaluate_run(lstm_run)  # the run's own threshold reproduces summary's test_at_threshold
    assert own["at_threshold"]["macro_f1"] == pytest.approx(s["test_at_threshold"]["macro_f1"])


def test_threshold_rule_and_class_weight_are_checked_before_training(tiny_csv, tmp_path):
    cfg = tiny_cfg(tiny_csv, epochs=1, threshold_for="recall=0.9")
    with pytest.raises(SlimtextError, match="unknown threshold rule"):
        train(cfg, out=tmp_path / "a", quiet=True)
    with pytest.raises(UnknownNameError):
        train(tiny_cfg(tiny_csv, epochs=1, class_weight="inverse"), out=tmp_path / "b", quiet=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_tfidf_run_loads_through_load_predictor(tiny_csv, tmp_path):
    cfg = tiny_cfg(tiny_csv)
    s = train_baseline(cfg, tmp_path / "tfidf", quiet=True)
    p = load_predictor(tmp_path / "tfidf")
    assert p.backend == "tfidf" and p.labels == ["neg", "pos"] and p.threshold == s["calibration"]["threshold"]
    fresh = evaluate_run(tmp_path / "tfidf")  # rebuilt from the saved arrays, no pickle
    assert fresh["accuracy"] == s["test"]["accuracy"] and fresh["macro_f1"] == s["test"]["macro_f1"]
    assert fresh["loss"] == pytest.approx(s["test"]["loss"], abs=1e-4)
    assert p.predict(["a good movie", "an awful film"]) == ["pos", "neg"]
    with pytest.raises(SlimtextError, match="TF-IDF run"):
        load_predictor(tmp_path / "tfidf", backend="onnx")


def test_report_shows_calibration_reliability_and_warnings(lstm_run, tiny_csv, tmp_path):
    from fake_runs import write_run
    from slimtext.experiments.report import write_report

    train_baseline(tiny_cfg(tiny_csv), tmp_path / "tfidf", quiet=True)
    constant = write_run(tmp_path / "const-s0", f1=0.4, mcc=0.0, confusion=((40, 0), (10, 0)))
    md, html = write_report([lstm_run, tmp_path / "tfidf", constant], tmp_path / "report")
    text = md.read_text()
    section = text[text.index("## Calibration"):text.index("## Runs")]
    assert "| lstm | 1 |" in section and "| tfidf | 1 |" in section and "const" not in section
    assert "figures/reliability.png" in section and (tmp_path / "report/figures/reliability.png").exists()
    assert "warning: const-s0: all 50 test predictions are 'not toxic'" in text
    assert "<h2>Calibration</h2>" in html.read_text() and "warning: const-s0" in html.read_text()


def test_kd_class_weights_weigh_its_label_term():
    from slimtext.train.losses import KDLoss

    logits, labels = torch.randn(4, 2), torch.tensor([0, 0, 0, 1])
    w = class_weights(labels, 2, "balanced")
    batch = {"labels": labels, "index": torch.arange(4)}
    kd = KDLoss(torch.randn(4, 2), alpha=0.0, weight=w)  # alpha 0: the label term alone
    torch.testing.assert_close(kd(logits, batch), CrossEntropy(w)(logits, batch))


def test_export_folder_keeps_calibration_and_onnx_applies_it(lstm_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from slimtext.inference.export import export

    folder = export(lstm_run, onnx=True, out=tmp_path / "exported")
    assert (folder / "calibration.json").read_text() == (lstm_run / "calibration.json").read_text()
    texts = ["a really good movie", "an awful plot", "the film"]
    eager, onnx = load_predictor(lstm_run), load_predictor(folder, backend="onnx")
    assert onnx.temperature == eager.temperature != 1.0 and onnx.threshold == eager.threshold
    np.testing.assert_allclose(onnx.predict_proba(texts), eager.predict_proba(texts), atol=1e-4)
    assert onnx.predict(texts, threshold=0.0) == ["pos"] * 3


def test_calibrate_command_reproduces_training_and_takes_another_rule(lstm_run, tmp_path):
    """`slimtext calibrate` on a run whose calibration.json is gone (as for runs made before it
    existed) fits the same temperature and threshold as training did; another rule moves the
    threshold; a run trained on other split ids is refused."""
    import shutil

    from slimtext.recipes.calibrate import recalibrate

    run = RunDir(lstm_run)
    trained = run.read_json("calibration.json")
    (run.path / "calibration.json").unlink()
    s = recalibrate(run.path)
    again = run.read_json("calibration.json")
    assert again["temperature"] == pytest.approx(trained["temperature"], rel=1e-4)
    assert again["threshold"] == pytest.approx(trained["threshold"], abs=1e-6)
    assert s["calibration"]["threshold"] == again["threshold"] and "test_at_threshold" in s
    r = CliRunner().invoke(app, ["calibrate", str(run.path), "--threshold-for", "precision=0.5"])
    assert r.exit_code == 0 and "threshold" in r.output, r.output
    assert run.read_json("calibration.json")["threshold_rule"] == "precision=0.5"
    other = tmp_path / "other"
    shutil.copytree(run.path, other)
    ids = RunDir(other).read_json("splits.json")
    ids["dev"] = ids["dev"][::-1]
    RunDir(other).write_json("splits.json", ids)
    with pytest.raises(SlimtextError, match="is not the one"):
        recalibrate(other)
