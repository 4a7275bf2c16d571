"""Tiny random BERT, MPNet and GPT-2 checkpoints (hidden 32) with word-level tokenizers covering the
tiny CSV, for the Hugging Face export and import tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = "the a movie film plot actor scene really quite very good great fine bad awful poor".split()
SPECIALS = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            "mpnet": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            "gpt2": ["<|endoftext|>", "<unk>"]}


def _tokenizer(folder: Path, family: str) -> None:
    """A word-level tokenizer.json; encoders wrap texts in their [CLS]/[SEP] (<s>/</s>) tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = SPECIALS[family]
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    unk = "[UNK]" if family == "bert" else "<unk>"
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    if family != "gpt2":
        cls, sep = ("[CLS]", "[SEP]") if family == "bert" else ("<s>", "</s>")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tok.save(str(folder / "tokenizer.json"))


def tiny_checkpoint(folder: Path, family: str, layers: int = 2, seed: int = 0) -> Path:
    """A random `family` model saved in Hugging Face format, every tensor perturbed so that
    layers, LayerNorms and biases differ (HF initialises them to 1 / 0)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    n = len(SPECIALS[family]) + len(WORDS)
    torch.manual_seed(seed)
    if family == "gpt2":
        model = transformers.GPT2Model(transformers.GPT2Config(
            vocab_size=n, n_embd=32, n_layer=layers, n_head=4, n_positions=64, bos_token_id=0,
            eos_token_id=0))
    else:
        klass = {"bert": (transformers.BertConfig, transformers.BertModel),
                 "mpnet": (transformers.MPNetConfig, transformers.MPNetModel)}[family]
        model = klass[1](klass[0](vocab_size=n, hidden_size=32, num_hidden_layers=layers,
                                  num_attention_heads=4, intermediate_size=37,
                                  max_position_embeddings=64))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    _tokenizer(folder, family)
    return folder


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())
