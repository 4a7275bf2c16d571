import json
import math

import pytest
import torch
from typer.testing import CliRunner

from slimtext.cli_lm import app
from slimtext.errors import SlimtextError
from slimtext.models.charlm import CharLM, CharLMConfig, CharLMVocab, UnknownCharError
from slimtext.recipes.lm import (
    LMTrainConfig,
    ThreadTuner,
    load_charlm,
    make_streams,
    train_lm,
    windows,
)
from slimtext.rundir import RunDir

CORPUS = "the cat sat on the mat. " * 40


def tiny_lm(seed: int = 0, **kw) -> CharLM:
    torch.manual_seed(seed)
    vocab = CharLMVocab.from_text(CORPUS)
    cfg = CharLMConfig(
        vocab.vocab_size, **{"embed_dim": 8, "hidden_dim": 16, "num_layers": 2, **kw}
    )
    return CharLM(cfg, vocab).eval()


def tiny_train_config(tmp_path, **kw) -> LMTrainConfig:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    base = dict(
        data=str(corpus),
        out=str(tmp_path / "run"),
        model=CharLMConfig(embed_dim=16, hidden_dim=32, num_layers=1, dropout=0.0),
        batch_size=4,
        bptt=16,
        lr=1e-2,
        max_minutes=0,
        max_steps=40,
        eval_every=10,
        threads=1,
    )
    return LMTrainConfig(**{**base, **kw})


def test_vocab_round_trip_and_unknown_char(tmp_path):
    vocab = CharLMVocab.from_text(CORPUS)
    assert vocab.decode(vocab.encode("the mat")) == "the mat"
    vocab.save(tmp_path / "vocab.json")
    assert CharLMVocab.load(tmp_path / "vocab.json").chars == vocab.chars
    with pytest.raises(UnknownCharError, match=r"'Z'.*not in the vocabulary"):
        vocab.encode("the Zebra")
    with pytest.raises(UnknownCharError):
        tiny_lm().sequence_log_prob("cat!")


def test_next_char_log_probs_sum_to_one():
    lp = tiny_lm().next_char_log_probs("the c")
    assert lp.shape == (len(CharLMVocab.from_text(CORPUS)),)
    torch.testing.assert_close(torch.logsumexp(lp, 0), torch.tensor(0.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("context", ["", "the "])
def test_sequence_log_prob_is_sum_of_next_char_log_probs(context):
    model, text = tiny_lm(), "cat sat"
    if context:
        steps = [(context + text[:i], text[i]) for i in range(len(text))]
    else:  # the first character is the context; text[1:] is scored
        steps = [(text[:i], text[i]) for i in range(1, len(text))]
    expected = sum(float(model.next_char_log_probs(c)[model.vocab.index[ch]]) for c, ch in steps)
    assert model.sequence_log_prob(text, context) == pytest.approx(expected, abs=1e-4)
    # chunked scoring carries the state across chunks and gives the same sum
    assert model.sequence_log_prob(text, context, chunk=3) == pytest.approx(expected, abs=1e-4)


def test_perplexity_is_exp_mean_nll():
    model, text = tiny_lm(), "the cat sat on"
    nll = -model.sequence_log_prob(text) / (len(text) - 1)
    assert model.perplexity(text) == pytest.approx(math.exp(nll), rel=1e-6)
    assert model.sequence_log_prob("t") == 0.0  # nothing left to score
    with pytest.raises(SlimtextError):
        model.perplexity("t")


def test_sample_length_vocab_and_seed():
    model = tiny_lm()
    a = model.sample("the ", 30, generator=torch.Generator().manual_seed(1))
    b = model.sample("the ", 30, generator=torch.Generator().manual_seed(1))
    assert a == b and len(a) == 30 and set(a) <= set(model.vocab.chars)
    assert model.sample("the ", 10, temperature=0) == model.sample("the ", 10, temperature=0)


def test_state_carry_equals_one_long_pass():
    model = tiny_lm()
    x = torch.tensor([model.vocab.encode("the cat sat on the mat")])  # (1, T)
    full, _ = model(x)
    first, state = model(x[:, :9])
    second, _ = model(x[:, 9:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full)


def test_tie_weights():
    model = tiny_lm(embed_dim=16, tie_weights=True)
    assert model.head.weight is model.embedding.weight
    with pytest.raises(SlimtextError, match="embed_dim == hidden_dim"):
        CharLMConfig(10, embed_dim=8, hidden_dim=16, tie_weights=True)


def test_streams_and_windows_are_contiguous():
    ids = torch.arange(23)
    streams = make_streams(ids, 2)  # (2, 11)
    assert streams.tolist()[1][:3] == [11, 12, 13]
    got = list(windows(streams, 4))
    assert [p for p, _, _ in got] == [0, 4, 8]
    x = torch.cat([x for _, x, _ in got], 1)  # (2, 10)
    y = torch.cat([y for _, _, y in got], 1)  # (2, 10)
    assert torch.equal(x, streams[:, :10]) and torch.equal(y, streams[:, 1:])


def test_tbptt_training_reduces_loss_and_writes_run(tmp_path):
    cfg = tiny_train_config(tmp_path)
    summary = train_lm(cfg, argv=["test"])
    run = RunDir(cfg.out)
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.5
    assert rows[-1]["val_bpc"] == pytest.approx(rows[-1]["val_loss"] / math.log(2), abs=1e-4)
    assert summary["stopped"] == "max_steps" and run.is_finished()
    for name in (
        "config.yaml",
        "command.txt",
        "model.safetensors",
        "vocab.json",
        "model_config.json",
    ):
        assert (run.path / name).exists(), name
    model = load_charlm(cfg.out)
    assert model.perplexity("the cat sat on the mat. ") < 4.0  # learned the repetitive corpus
    with pytest.raises(SlimtextError, match="--resume"):
        train_lm(cfg)


def test_resume_continues_from_checkpoint(tmp_path):
    train_lm(tiny_train_config(tmp_path, max_steps=20), argv=["first"])
    summary = train_lm(tiny_train_config(tmp_path, max_steps=30, resume=True), argv=["again"])
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and summary["steps"] == 30
    assert "# resumed: again" in (tmp_path / "run" / "command.txt").read_text()
    run = RunDir(tmp_path / "run")  # committed like the classifier loop's epochs: checkpoint-N + pointer
    assert run.committed_checkpoint().name == "checkpoint-3"
    assert [p.name for p in run.path.glob("checkpoint-*")] == ["checkpoint-3"]
    with run.lock(), pytest.raises(SlimtextError, match="is being written by PID"):
        train_lm(tiny_train_config(tmp_path, max_steps=40, resume=True))  # a second writer


def test_cli_train_sample_score(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = str(tmp_path / "run")
    runner = CliRunner()
    args = [
        "train",
        "--data",
        str(corpus),
        "--out",
        run,
        "--embed-dim",
        "8",
        "--hidden-dim",
        "16",
        "--num-layers",
        "1",
        "--batch-size",
        "4",
        "--bptt",
        "16",
        "--max-steps",
        "10",
        "--max-minutes",
        "0",
        "--eval-every",
        "5",
        "--threads",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best val" in result.output
    saved = json.loads((tmp_path / "run" / "model_config.json").read_text())  # nested options
    assert (saved["embed_dim"], saved["hidden_dim"], saved["num_layers"]) == (8, 16, 1)
    result = runner.invoke(app, ["sample", run, "--prompt", "the ", "--n", "20", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("the ") and len(result.output.rstrip("\n")) >= 20
    result = runner.invoke(app, ["score", run, str(corpus)])
    assert result.exit_code == 0, result.output
    assert "bits per character:" in result.output and "perplexity:" in result.output
    bad = tmp_path / "bad.txt"
    bad.write_text("the Zoo", encoding="utf-8")
    result = runner.invoke(app, ["score", run, str(bad)])
    assert result.exit_code == 2 and "not in the vocabulary" in result.output


def test_thread_tuner_keeps_the_faster_count():
    cost = {2: 5.0, 1: 1.0}  # seconds per step: two threads fighting other processes for 2 cores
    now = [0.0]

    def clock():  # advances by the cost of the current thread count on every second call
        now.append(now[-1] + (cost[torch.get_num_threads()] if len(now) % 2 == 0 else 0.0))
        return now[-1]

    before = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, probe=2, every=4, clock=clock)
        seen = []
        for _ in range(12):
            tuner.before_step()
            seen.append(torch.get_num_threads())
            tuner.after_step()
        # probe 2, 2, 1, 1 -> keep 1 for `every` steps -> probe again
        assert seen[:10] == [2, 2, 1, 1, 1, 1, 1, 1, 2, 2]
        assert ThreadTuner(2, enabled=False).counts == [2]
    finally:
        torch.set_num_threads(before)
