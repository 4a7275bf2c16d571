"""The transfer set of `slimtext distill --transfer`: Tang et al.'s augmentation (seeded,
deterministic, its probabilities respected), close words from the teacher's embeddings, labels
kept out, the KD loss on unlabelled rows, and the teacher's transfer logits cached and reused."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from slimtext.config import DistillConfig
from slimtext.data.registry import Example
from slimtext.errors import SlimtextError
from slimtext.recipes import distill as D
from slimtext.recipes.transfer import (
    augment,
    augment_words,
    close_words,
    parse_transfer,
    transfer_examples,
    transfer_texts,
)
from slimtext.train.losses import UNLABELLED, KDLoss
from test_distill import n_train, student_cfg, teacher_passes, teacher_run  # noqa: F401  (fixtures)

TEXTS = ["the quick brown fox jumps over the lazy dog", "a b c d e f g h", "hello world"]


def cfg(**kw) -> DistillConfig:
    return DistillConfig(**kw)


def test_augmentation_is_seeded_and_deterministic():
    d = cfg(transfer_seed=3)
    close = {"quick": ["fast"], "dog": ["cat"]}
    one = augment(TEXTS, 4, d, close, "[MASK]")
    assert one == augment(TEXTS, 4, d, close, "[MASK]") and len(one) == 12
    assert one != augment(TEXTS, 4, cfg(transfer_seed=4), close, "[MASK]")


def test_augmentation_respects_its_probabilities():
    words = [f"w{i}" for i in range(20)]
    close = {w: ["near"] for w in words}
    rng = random.Random(0)
    none = cfg(transfer_p_mask=0.0, transfer_p_replace=0.0, transfer_p_ngram=0.0)
    assert augment_words(words, rng, none, close, "[MASK]") == words
    assert augment_words(words, rng, cfg(transfer_p_mask=1.0, transfer_p_replace=0.0, transfer_p_ngram=0.0),
                         close, "[MASK]") == ["[MASK]"] * 20
    assert augment_words(words, rng, cfg(transfer_p_mask=0.0, transfer_p_replace=1.0, transfer_p_ngram=0.0),
                         close, "[MASK]") == ["near"] * 20
    assert augment_words(words, rng, cfg(transfer_p_mask=0.0, transfer_p_replace=1.0, transfer_p_ngram=0.0),
                         {}, "[MASK]") == words, "a word without a close word is kept"
    for _ in range(50):
        gram = augment_words(words, rng, cfg(transfer_p_mask=0.0, transfer_p_replace=0.0, transfer_p_ngram=1.0),
                             close, "[MASK]")
        assert 1 <= len(gram) <= 5 and " ".join(gram) in " ".join(words)
    d = cfg(transfer_p_mask=0.3, transfer_p_replace=0.2, transfer_p_ngram=0.0)
    out = [w for _ in range(200) for w in augment_words(words, rng, d, close, "[MASK]")]
    assert abs(out.count("[MASK]") / len(out) - 0.3) < 0.02
    assert abs(out.count("near") / len(out) - 0.2) < 0.02


def test_close_words_are_nearest_teacher_embeddings():
    class Tok:  # the part of `tokenizers.Tokenizer` close_words reads
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return dict(self.vocab)

    class WordPieceLike:
        def __init__(self, vocab):
            self.tok, self.vocab_size = Tok(vocab), len(vocab)

    vocab = {"[PAD]": 0, "good": 1, "great": 2, "bad": 3, "awful": 4, "##ly": 5, "fine": 6}
    emb = nn.Embedding(7, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[0, 0], [1, 0.1], [1, 0.2], [-1, 0.1], [-1, 0.2], [1, 0.15], [0.2, 1]]))
    out = close_words(["good bad", "Great"], nn.Sequential(emb), WordPieceLike(vocab), k=1)
    assert out == {"good": ["great"], "bad": ["awful"], "great": ["good"]}  # ##ly is never a candidate


def test_transfer_examples_keep_labels_out():
    ex = transfer_examples(["x y", "z"])
    assert [e.label for e in ex] == [UNLABELLED, UNLABELLED]
    assert ex[0].id.startswith("transfer/") and ex[0].id != ex[1].id
    assert transfer_examples(["x y"])[0].id == ex[0].id, "ids follow the text"


def test_transfer_specs_and_texts(tmp_path):
    assert parse_transfer("") is None and parse_transfer("none") is None
    assert parse_transfer("augment:20").n == 20
    with pytest.raises(SlimtextError, match="augment:N"):
        parse_transfer("augment:x")
    with pytest.raises(SlimtextError, match="neither augment:N"):
        parse_transfer(str(tmp_path / "missing.txt"))
    f = tmp_path / "unlabelled.txt"
    f.write_text("first tweet\n\nsecond tweet\nfirst tweet\nhello world\n")
    train = [Example("1", "hello world", 0)]
    # blank lines, repeats and texts of the train split are left out
    assert transfer_texts(cfg(transfer=str(f)), train) == ["first tweet", "second tweet"]
    with pytest.raises(SlimtextError, match="no text left"):
        transfer_texts(cfg(transfer=str(f)), [Example(str(i), t, 0) for i, t in
                                               enumerate(["first tweet", "second tweet", "hello world"])])


def test_kd_loss_leaves_unlabelled_rows_out_of_the_hard_term():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    loss = KDLoss(teacher, alpha=0.5, temperature=2.0)
    mixed = {"labels": torch.tensor([0, UNLABELLED, 1]), "index": torch.arange(3)}
    kl = KDLoss(teacher, alpha=1.0, temperature=2.0)(student, mixed)
    ce = nn.functional.cross_entropy(student[[0, 2]], torch.tensor([0, 1]))
    torch.testing.assert_close(loss(student, mixed), 0.5 * kl + 0.5 * ce)
    only = {"labels": torch.full((3,), UNLABELLED), "index": torch.arange(3)}
    torch.testing.assert_close(loss(student, only), 0.5 * kl)


def test_transfer_logits_are_cached_and_reused(teacher_run, tmp_path, teacher_passes):  # noqa: F811
    n = n_train(teacher_run)
    first_cfg = student_cfg(teacher_run, "lstm")
    first_cfg.distill.transfer = "augment:3"
    first = D.distill(first_cfg, out=tmp_path / "a", quiet=True)
    m = first["transfer_size"]
    assert 0 < m <= 3 * n and first["transfer_cache_hit"] is False and first["transfer_teacher_seconds"] > 0
    assert teacher_passes == [n, m]
    again = student_cfg(teacher_run, "lstm")
    again.distill.transfer, again.train.seed = "augment:3", 7  # another student seed: same transfer set
    second = D.distill(again, out=tmp_path / "b", quiet=True)
    assert teacher_passes == [n, m], "the teacher ran again"
    assert second["transfer_cache_hit"] is True and second["transfer_size"] == m
    assert second["transfer_teacher_seconds"] == 0.0 and (tmp_path / "b" / "test_predictions.json").is_file()
    balanced = student_cfg(teacher_run, "lstm")
    balanced.distill.transfer, balanced.train.class_weight = "augment:3", "balanced"
    with pytest.raises(SlimtextError, match="not supported"):
        D.distill(balanced, out=tmp_path / "c", quiet=True)
    assert not (tmp_path / "c").exists()


def test_layer_student_with_intermediate_losses_trains(teacher_run, tmp_path):  # noqa: F811
    c = student_cfg(teacher_run)
    c.distill.hidden_weight, c.distill.attention_weight, c.distill.relation_weight = 1.0, 1.0, 0.5
    s = D.distill(c, out=tmp_path / "mid", quiet=True)
    assert s["intermediate_weights"] == {"hidden": 1.0, "attention": 1.0, "relation": 0.5}
    assert s["test"]["macro_f1"] is not None and s["transfer_size"] == 0
    rnn = student_cfg(teacher_run, "lstm")
    rnn.distill.hidden_weight = 1.0
    with pytest.raises(SlimtextError, match="need a layer student"):
        D.distill(rnn, out=tmp_path / "bad", quiet=True)


def test_study_preset_passes_its_transfer_set_to_distilrnn_only(tmp_path):
    from dataclasses import replace  # noqa: PLC0415

    from slimtext.experiments.study import PRESETS, plan_study  # noqa: PLC0415

    assert PRESETS["quick"].transfer == ""
    plain = plan_study(PRESETS["quick"], "davidson", (0,), tmp_path)
    assert not any("--transfer" in r.argv for r in plain)
    runs = plan_study(replace(PRESETS["quick"], transfer="augment:20"), "davidson", (0,), tmp_path)
    with_transfer = {r.group for r in runs if "--transfer" in r.argv}
    assert with_transfer == {"distilrnn"}
    argv = next(r.argv for r in runs if r.group == "distilrnn")
    assert argv[argv.index("--transfer") + 1] == "augment:20"
