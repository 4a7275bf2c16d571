import pytest
from typer.testing import CliRunner

from slimtext.cli_lm import app
from slimtext.data.chartask import CharTaskConfig, make_char_task, next_is_vowel
from slimtext.data.registry import text_corpus
from slimtext.errors import UnknownNameError
from slimtext.rundir import RunDir

CORPUS = "banana bread is nice. apples are sweet. " * 30


def test_next_is_vowel_hand_example():
    # next chars: 'c' (consonant), ' ' (skipped), 'd' (consonant), 'E' (vowel), '!' (skipped), 'y'
    assert next_is_vowel("abc dE!y", 2) == [("ab", 0), ("c ", 0), (" d", 1), ("E!", 0)]
    assert next_is_vowel("xAxixOxu", 1) == [
        ("x", 1),
        ("A", 0),
        ("x", 1),
        ("i", 0),
        ("x", 1),
        ("O", 0),
        ("x", 1),
    ]


def test_splits_are_contiguous_held_out_and_capped():
    text = "xa" * 40 + "yo" * 5 + "zu" * 5  # train region 0..80, dev 80..90, test 90..100
    splits = make_char_task(text, CharTaskConfig(window=3, max_train=0, max_eval=0))
    assert {c for t, _ in splits["train"] for c in t} == {"x", "a"}
    assert {c for t, _ in splits["dev"] for c in t} == {"y", "o"}
    assert {c for t, _ in splits["test"] for c in t} == {"z", "u"}
    assert len(splits["train"]) == 80 - 3 and len(splits["dev"]) == 10 - 3
    capped = make_char_task(text, CharTaskConfig(window=3, max_train=20, max_eval=2, seed=1))
    again = make_char_task(text, CharTaskConfig(window=3, max_train=20, max_eval=2, seed=1))
    assert capped == again and len(capped["train"]) == 20 and len(capped["test"]) == 2
    assert all(ex in splits["train"] for ex in capped["train"])


def test_unknown_task_and_missing_corpus(tmp_path):
    with pytest.raises(UnknownNameError, match="next-is-vowel"):
        make_char_task(CORPUS, CharTaskConfig(task="next-is-vowl"))
    with pytest.raises(UnknownNameError, match="tinyshakespeare"):
        text_corpus(str(tmp_path / "nope.txt"))


def test_tinyshakespeare_comes_from_slimtext_data(tmp_path, monkeypatch):
    (tmp_path / "tinyshakespeare").mkdir()
    (tmp_path / "tinyshakespeare" / "input.txt").write_text("First Citizen:\n", encoding="utf-8")
    monkeypatch.setenv("SLIMTEXT_DATA", str(tmp_path))
    assert text_corpus("tinyshakespeare") == "First Citizen:\n"


def test_char_task_trains_through_the_shared_loop_and_predicts(tmp_path):
    from slimtext.config import RunConfig
    from slimtext.inference.predictor import load_predictor
    from slimtext.recipes.finetune import train

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    cfg = RunConfig()
    cfg.data.data = f"chartask:next-is-vowel:6:{corpus}"
    cfg.model.model, cfg.model.tokenizer = "lstm", "char"
    cfg.rnn.embed_dim, cfg.rnn.hidden_dim = 8, 24
    cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.threads = 3, 16, 1e-2, 1
    s = train(cfg, out=tmp_path / "run", quiet=True)
    majority = max(map(sum, s["confusion"]["test"])) / sum(map(sum, s["confusion"]["test"]))  # rows: true labels
    assert s["test"]["accuracy"] > majority  # repetitive text: learnable
    p = load_predictor(tmp_path / "run")
    assert p.labels == ["consonant", "vowel"]
    assert p.predict("bread ") in ("consonant", "vowel")
    proba = p.predict_proba(["nice. ", "is", "banana"])  # varied lengths are padded
    assert proba.shape == (3, 2) and abs(proba.sum(1) - 1).max() < 1e-5
    assert abs(proba[1] - p.predict_proba(["is"])[0]).max() < 1e-5
    assert len(RunDir(tmp_path / "run").read_metrics()) == 3


def test_cli_chartask(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    args = ["chartask", "--task", "next-is-vowel", "--window", "5", "--data", str(corpus),
            "--out", str(tmp_path / "run"), "--epochs", "1", "--rnn-hidden-dim", "8", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and "predict(" in result.output
    result = CliRunner().invoke(app, ["chartask", "--task", "nope", "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "unknown task" in result.output
