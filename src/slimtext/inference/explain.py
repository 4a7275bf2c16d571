"""Which words pushed a text towards each label: a score per word and label.

Two methods, both scored on the predictor's calibrated probabilities (logits / temperature):

  occlusion             leave one word out: score[word][label] = p(label | text) -
                        p(label | text without that word). Works with every backend (torch,
                        torch-int8, ONNX, ONNX int8): the text and its N one-word-shorter variants
                        go through `predict_proba` in one call.
  integrated-gradients  Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks"
                        (https://arxiv.org/abs/1703.01365): the token embeddings move from a zero
                        baseline to their values in `steps` midpoint-rule steps (one batch);
                        attribution = (x - baseline) . mean gradient of p(label), summed over the
                        embedding dimension. Needs gradients, so only the eager torch backend
                        (transformer encoders, decoders and RNNs: any model whose token embedding
                        is an `nn.Embedding`). Special tokens ([CLS], [SEP]) keep their embedding.

Words are runs of word characters (with inner apostrophes, dots, slashes..., so a URL or a
@mention is one word) or of punctuation; a word's score is the sum over the tokens (word-pieces,
characters) that lie inside it. A positive score for a label
means the word pushed the text towards that label.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from slimtext.errors import SlimtextError
from slimtext.inference.base import is_blank

# A word: an optional @ or # (mentions, hashtags), then word characters, with inner ' . : / @ & = ?
# % + - allowed (don't, e-mail, http://t.co/x stay one word); or a run of punctuation.
WORD = re.compile(r"[@#]?\w(?:[\w'’.:/@&=?%+-]*\w)?|[^\w\s]+")
METHODS = ("auto", "occlusion", "integrated-gradients")


class ExplainLimitError(SlimtextError):
    """A text too long to explain (characters or words)."""


@dataclass
class WordScore:
    word: str
    start: int  # character offsets into the text: text[start:end] == word
    end: int
    scores: dict[str, float]  # label -> how much this word pushed towards it


@dataclass
class Explanation:
    text: str
    method: str
    probabilities: dict[str, float]  # calibrated, of the whole text
    words: list[WordScore]

    def top(self, label: str) -> WordScore | None:
        """The word that pushed hardest towards `label` (None for a text without words)."""
        return max(self.words, key=lambda w: w.scores[label], default=None)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExplainLimits:
    max_chars: int = 1000
    max_words: int = 128

    def check(self, text: str, words: list[re.Match]) -> None:
        if is_blank(text):
            raise ExplainLimitError("text is empty: send some text to explain")
        if len(text) > self.max_chars:
            raise ExplainLimitError(f"text has {len(text)} characters; explanations are limited to {self.max_chars} characters")
        if len(words) > self.max_words:
            raise ExplainLimitError(f"text has {len(words)} words; explanations are limited to {self.max_words} words")


def methods_for(predictor) -> list[str]:
    """The explanation methods this predictor supports (integrated gradients: eager torch only)."""
    can_ig = getattr(predictor, "backend", None) == "torch" and hasattr(predictor, "model")
    return [m for m in METHODS if m != "integrated-gradients" or can_ig]


def explain(predictor, text: str, method: str = "auto", limits: ExplainLimits | None = None,
            steps: int = 32) -> Explanation:
    """Explain one text. `auto`: integrated gradients on the eager torch backend, else occlusion."""
    if method not in METHODS:
        from slimtext.errors import UnknownNameError  # noqa: PLC0415

        raise UnknownNameError("explanation method", method, list(METHODS))
    words = list(WORD.finditer(text))
    (limits or ExplainLimits()).check(text, words)
    can_ig = "integrated-gradients" in methods_for(predictor)
    if method == "integrated-gradients" and not can_ig:
        raise SlimtextError("integrated gradients need the eager torch backend (--backend torch); "
                            "use --method occlusion for int8 or ONNX predictors")
    if method == "occlusion" or (method == "auto" and not can_ig):
        return occlusion(predictor, text, words)
    return integrated_gradients(predictor, text, words, steps)


def occlusion(predictor, text: str, words: list[re.Match]) -> Explanation:
    """Leave-one-word-out on the calibrated probabilities, all variants in one predict_proba call."""
    labels = list(predictor.labels)
    variants = [text] + [text[: w.start()] + text[w.end():] for w in words]
    probs = np.asarray(predictor.predict_proba(variants), dtype=np.float64)  # (1 + W, C)
    deltas = probs[0][None, :] - probs[1:]  # (W, C): how much each word added to each label
    return Explanation(text, "occlusion", _named(labels, probs[0]), [
        WordScore(w.group(), w.start(), w.end(), _named(labels, d)) for w, d in zip(words, deltas)])


def integrated_gradients(predictor, text: str, words: list[re.Match], steps: int = 32) -> Explanation:
    """Integrated gradients of each label's calibrated probability w.r.t. the token embeddings."""
    import torch  # noqa: PLC0415

    model, labels = predictor.model.eval(), list(predictor.labels)
    temperature = float(getattr(predictor, "temperature", None) or 1.0)
    ids, spans = token_spans(predictor.tokenizer, text)
    embedding = _token_embedding(model, predictor.tokenizer.vocab_size)
    input_ids = torch.tensor([ids])  # (1, T)
    with torch.no_grad():
        x = embedding(input_ids)  # (1, T, E)
    keep = torch.tensor([s is None for s in spans])  # (T,): special tokens are not attributed
    baseline = torch.where(keep[None, :, None], x, torch.zeros_like(x))  # (1, T, E)
    alphas = (torch.arange(steps, dtype=x.dtype) + 0.5) / steps  # (S,) midpoint rule
    path = (baseline + alphas.view(-1, 1, 1) * (x - baseline)).detach().requires_grad_(True)  # (S, T, E)
    handle = embedding.register_forward_hook(lambda module, inputs, output: path)
    try:
        with torch.enable_grad():
            logits = model(input_ids.expand(steps, -1), torch.ones(steps, len(ids), dtype=torch.long))  # (S, C)
            probs = (logits / temperature).softmax(-1)  # (S, C)
            grads = [torch.autograd.grad(probs[:, c].sum(), path, retain_graph=c < len(labels) - 1)[0]
                     for c in range(len(labels))]  # C x (S, T, E)
    finally:
        handle.remove()
    with torch.no_grad():
        full = (model(input_ids, torch.ones_like(input_ids)) / temperature).softmax(-1)[0]  # (C,)
    attr = torch.stack([((x[0] - baseline[0]) * g.mean(0)).sum(-1) for g in grads], -1)  # (T, C)
    per_word = np.zeros((len(words), len(labels)))
    starts = np.array([w.start() for w in words])
    for (span, row) in zip(spans, attr.detach().numpy()):
        if span is not None and len(words):
            i = int(np.searchsorted(starts, span[0], side="right")) - 1  # the word holding the token
            if i >= 0 and span[0] < words[i].end():
                per_word[i] += row
    return Explanation(text, "integrated-gradients", _named(labels, full.numpy()), [
        WordScore(w.group(), w.start(), w.end(), _named(labels, s)) for w, s in zip(words, per_word)])


def token_spans(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int] | None]]:
    """Token ids of `text` as the model sees them, and each token's character span (None for
    special tokens such as [CLS]); for WordPiece, word-level and character vocabularies."""
    kind = getattr(tokenizer, "kind", "")
    if kind == "wordpiece":
        enc = tokenizer.tok.encode(text)
        return list(enc.ids), [None if special else tuple(off)
                               for off, special in zip(enc.offsets, enc.special_tokens_mask)]
    ids = tokenizer.encode([text])[0]
    if kind == "word":
        spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)][: len(ids)]
    elif kind == "char":
        spans = [(i, i + 1) for i in range(len(text))][: len(ids)]
    else:
        raise SlimtextError(f"cannot map tokens of a {type(tokenizer).__name__} back to words")
    if len(spans) != len(ids):  # an empty text encodes as one <unk>
        spans = (spans + [None] * len(ids))[: len(ids)]
    return ids, spans


def _token_embedding(model, vocab_size: int):
    """The model's token embedding: the first nn.Embedding with one row per vocabulary entry."""
    from torch import nn  # noqa: PLC0415

    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.num_embeddings == vocab_size \
                and "position" not in name:
            return module
    raise SlimtextError(f"{type(model).__name__} has no token embedding of {vocab_size} rows; "
                        "use --method occlusion")


def _named(labels: list[str], row) -> dict[str, float]:
    return {label: float(v) for label, v in zip(labels, row)}
