"""Word explanations: occlusion on any predictor (one batched call), integrated gradients on the
torch backend, and the two agreeing on the cue word of a tiny LSTM trained on the tiny CSV."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import write_tiny_csv
from slimtext.errors import SlimtextError
from slimtext.inference.explain import ExplainLimitError, ExplainLimits, explain, token_spans
from slimtext.inference.predictor import load_predictor

CUES = {"pos": {"good", "great", "fine"}, "neg": {"bad", "awful", "poor"}}


class CountingKeyword:
    """'toxic' probability 0.9 when 'hate' appears, else 0.2; counts predict_proba calls."""

    labels = ["not toxic", "toxic"]
    backend = "fake"

    def __init__(self):
        self.calls, self.seen = 0, []

    def predict_proba(self, texts):
        self.calls += 1
        self.seen.append(list(texts))
        return np.array([[0.1, 0.9] if "hate" in t else [0.8, 0.2] for t in texts])  # (N, 2)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """A tiny LSTM on the tiny CSV: one cue word (good/bad/...) decides the label."""
    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train

    folder = tmp_path_factory.mktemp("lstm")
    cfg = RunConfig()
    cfg.data.data = str(write_tiny_csv(folder / "tiny.csv", n=400))
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 16, 16
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 4, 16, 0.02, 1
    summary = train(cfg, out=folder / "run", quiet=True)
    assert summary["test"]["accuracy"] > 0.9
    # the tiny data is separable on dev, so the fitted temperature is tiny and the calibrated
    # probabilities saturate at 0/1, where leaving one word out changes nothing: the attribution
    # methods are tested on the plain softmax (temperature 1)
    (folder / "run" / "calibration.json").unlink()
    return folder / "run"


def test_occlusion_is_one_batched_call_and_scores_the_rude_word():
    p = CountingKeyword()
    e = explain(p, "I really hate you!", method="occlusion")
    assert p.calls == 1
    assert p.seen[0][0] == "I really hate you!" and len(p.seen[0]) == 1 + 5  # text + one variant per word
    assert [w.word for w in e.words] == ["I", "really", "hate", "you", "!"]
    assert all(e.text[w.start:w.end] == w.word for w in e.words)
    hate = e.words[2]
    assert hate.scores["toxic"] == pytest.approx(0.7) and hate.scores["not toxic"] == pytest.approx(-0.7)
    assert all(w.scores["toxic"] == 0 for w in e.words if w.word != "hate")
    assert e.top("toxic").word == "hate"
    assert e.probabilities == pytest.approx({"not toxic": 0.1, "toxic": 0.9})


def test_auto_uses_occlusion_without_torch_and_ig_refuses_it():
    assert explain(CountingKeyword(), "hate it").method == "occlusion"
    with pytest.raises(SlimtextError, match="torch backend"):
        explain(CountingKeyword(), "hate it", method="integrated-gradients")
    with pytest.raises(SlimtextError, match="occlusion"):
        explain(CountingKeyword(), "hate it", method="shap")


def test_limits_are_checked_before_the_model_runs():
    p = CountingKeyword()
    with pytest.raises(ExplainLimitError, match="20 characters"):
        explain(p, "x" * 30, limits=ExplainLimits(max_chars=20))
    with pytest.raises(ExplainLimitError, match="limited to 3"):
        explain(p, "one two three four", limits=ExplainLimits(max_words=3))
    with pytest.raises(ExplainLimitError, match="empty"):
        explain(p, "   ")
    assert p.calls == 0


def test_wordpiece_spans_merge_back_into_words(tiny_bert):
    from slimtext.data.tokenize import WordPiece

    tok = WordPiece(tiny_bert)
    ids, spans = token_spans(tok, "the movie, really good")
    assert spans[0] is None and spans[-1] is None  # [CLS] ... [SEP]
    assert ["the movie, really good"[a:b] for a, b in spans[1:-1]] == ["the", "movie", ",", "really", "good"]
    assert len(ids) == len(spans)


def test_ig_and_occlusion_agree_on_the_cue_word(lstm_run):
    p = load_predictor(lstm_run)
    texts = ["the movie was really good", "a bad plot and the actor", "quite a fine film", "very awful scene"]
    for text in texts:
        label = p.predict(text)
        occ, ig = explain(p, text, "occlusion"), explain(p, text, "integrated-gradients")
        assert occ.top(label).word in CUES[label], (text, occ.words)
        assert ig.top(label).word == occ.top(label).word, (text, ig.words)
        assert ig.probabilities == pytest.approx(occ.probabilities, abs=1e-5)


def test_ig_is_complete(lstm_run):
    """Attributions sum to p(text) - p(baseline) (the completeness axiom), up to the midpoint rule."""
    import torch

    p = load_predictor(lstm_run)
    text = "the plot was really bad"
    e = explain(p, text, "integrated-gradients", steps=256)
    ids, _ = token_spans(p.tokenizer, text)
    hook = p.model.embed.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            base = p.model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).softmax(-1)[0]
    finally:
        hook.remove()
    for c, label in enumerate(p.labels):
        total = sum(w.scores[label] for w in e.words)
        assert total == pytest.approx(e.probabilities[label] - float(base[c]), abs=0.02)


def test_cli_explain_prints_words_with_scores(lstm_run):
    r = subprocess.run([sys.executable, "-m", "slimtext", "explain", str(lstm_run), "a really awful film"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("neg")
    rows = [line.split() for line in lines if line.startswith("  ")]
    assert [row[0] for row in rows[1:]] == ["a", "really", "awful", "film"]
    awful = rows[3]
    assert float(awful[1]) > 0 and awful[1] == max((row[1] for row in rows[1:]), key=float)


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """A tiny BERT fine-tuned on the tiny CSV (the transformer encoder path)."""
    from conftest import write_tiny_bert
    from slimtext.config import RunConfig
    from slimtext.recipes.finetune import train

    folder = tmp_path_factory.mktemp("bert")
    cfg = RunConfig()
    cfg.data.data = str(write_tiny_csv(folder / "tiny.csv", n=400))
    cfg.model.model, cfg.model.max_length = str(write_tiny_bert(folder / "bert")), 32
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 4, 16, 1e-3, 1
    assert train(cfg, out=folder / "run", quiet=True)["test"]["accuracy"] > 0.9
    # the tiny data is separable on dev, so the fitted temperature is tiny and the calibrated
    # probabilities saturate at 0/1, where leaving one word out changes nothing: the attribution
    # methods are tested on the plain softmax (temperature 1)
    (folder / "run" / "calibration.json").unlink()
    return folder / "run"


def test_ig_on_a_tiny_bert_finds_the_cue_word(bert_run):
    """Word-pieces merged into words, [CLS]/[SEP] left out."""
    p = load_predictor(bert_run)
    for text in ["the movie was really good", "a bad plot and the actor"]:
        label = p.predict(text)
        ig, occ = explain(p, text, "integrated-gradients"), explain(p, text, "occlusion")
        assert ig.top(label).word in CUES[label], (text, ig.words)
        assert ig.top(label).word == occ.top(label).word


def test_occlusion_on_the_onnx_int8_backend(bert_run):
    from slimtext.inference.export import export

    export(bert_run, onnx=True, int8=True)
    onnx = load_predictor(bert_run, backend="onnx-int8")
    torch_p = load_predictor(bert_run)
    for text in ["the movie was really good", "a bad plot and the actor"]:
        e = explain(onnx, text)  # auto: occlusion, the only method without gradients
        label = onnx.predict(text)
        assert e.method == "occlusion" and e.top(label).word in CUES[label]
        assert e.top(label).word == explain(torch_p, text, "occlusion").top(label).word
