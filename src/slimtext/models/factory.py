"""Build a classifier and its tokenizer from a run config (name -> model): RNNs here, transformers
via `hub`. Also applies the fine-tuning method (full / head / lora) by freezing or injecting adapters."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from slimtext.data.tokenize import CharVocab, WordPiece, WordVocab, load_tokenizer
from slimtext.errors import UnknownNameError
from slimtext.models import hub
from slimtext.models.hub import RNN_MODELS  # "rnn", "lstm", "gru"
from slimtext.models.lora import inject
from slimtext.models.rnn import RNNClassifier, RNNConfig


def is_rnn(name: str) -> bool:
    return name in RNN_MODELS


def build_tokenizer(cfg, train_texts: list[str] | None = None, saved: Path | None = None):
    """The run's tokenizer: reloaded from `saved` when given, else built (RNN) or loaded (checkpoint)."""
    if saved is not None and (saved / "tokenizer_meta.json").exists():
        return load_tokenizer(saved)
    m = cfg.model
    if is_rnn(m.model):
        if m.tokenizer not in ("word", "char"):
            raise UnknownNameError("tokenizer", m.tokenizer, ["word", "char"])
        cls = WordVocab if m.tokenizer == "word" else CharVocab
        return cls.build(train_texts, min_freq=m.min_freq, max_size=m.max_vocab, max_length=m.max_length)
    return WordPiece(hub.resolve(m.model), max_length=m.max_length)


def build_classifier(cfg, num_labels: int, tokenizer) -> nn.Module:
    """An untrained-head classifier: random RNN, or a pretrained transformer plus a new head.
    (A finished layer-selected student is rebuilt by `slimtext.checkpoint.build_model`.)"""
    m = cfg.model
    if is_rnn(m.model):
        rc = RNNConfig(**{**cfg.rnn.__dict__, "cell": m.model, "vocab_size": tokenizer.vocab_size,
                          "num_labels": num_labels, "pad_id": tokenizer.pad_id})
        return RNNClassifier(rc)
    model, _ = hub.load_classifier(m.model, num_labels, dropout=m.head_dropout, pooling=m.pooling)
    return model


def apply_method(model: nn.Module, cfg) -> list[str]:
    """Freeze / wrap for the method; returns the names of LoRA-wrapped layers (empty otherwise)."""
    method = cfg.model.method
    if method == "full":
        return []
    if method == "head":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("classifier.")
        return []
    if method == "lora":
        return inject(model, cfg.lora)
    raise UnknownNameError("method", method, ["full", "head", "lora"])
