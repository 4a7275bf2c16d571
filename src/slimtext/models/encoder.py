"""A bidirectional Transformer encoder for the BERT family and MPNet, plus a classification head.

Post-LN layers (attention -> add & norm -> feed-forward -> add & norm) with exact-erf GELU.
BERT adds word, learned position and token-type (always type 0) embeddings. MPNet has no token
types, numbers positions from padding_idx + 1 skipping pad tokens, and adds a relative position
bias (T5-style buckets, shared by all layers) to the attention scores.

References:
- Devlin et al. 2019, BERT: https://arxiv.org/abs/1810.04805
- Song et al. 2020, MPNet: https://arxiv.org/abs/2004.09297
- Hugging Face `modeling_bert.py` / `modeling_mpnet.py` (weights and numerics this file matches)
- nanoGPT `model.py` (layout), CMU minbert `bert.py`
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimtext.errors import SlimtextError
from slimtext.models import hf_keys
from slimtext.models.dropout import Dropout, dropout

ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class Embeddings(nn.Module):
    """Token + position (+ token type 0 for BERT) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.family, self.pad_token_id = config.family, config.pad_token_id
        pad = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=pad)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings,
            config.hidden_size,
            padding_idx=pad if config.family == "mpnet" else None,
        )
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.family == "bert" else None
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)  # (B, T, H)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        if self.family == "mpnet":  # HF create_position_ids_from_input_ids
            not_pad = input_ids.ne(self.pad_token_id).long()
            positions = torch.cumsum(not_pad, dim=1) * not_pad + self.pad_token_id  # (B, T)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]  # (1, T)
        return self.dropout(self.norm(x + self.position_embeddings(positions)))


@dataclass
class Taps:
    """An opt-in record of a training-mode forward pass, for intermediate-layer distillation
    (`train.losses.LayerKD`): set `encoder.taps = Taps(attention=...)`. While the encoder is in
    train mode it appends every layer's output to `hidden` (B, T, H) and, with `attention`, a dict
    per layer to `layers`: `attention` probabilities (B, nh, T, T) and `q`, `k`, `v` (B, nh, T, hs)
    (computed by an explicit softmax instead of the fused kernel); with `in_eval` in eval mode too
    (a frozen teacher). With `taps` None (the default), or in eval mode without `in_eval`, the
    forward is the plain one: same outputs, same speed."""

    attention: bool = False
    in_eval: bool = False
    hidden: list = field(default_factory=list)
    layers: list = field(default_factory=list)

    def clear(self) -> None:
        self.hidden.clear()
        self.layers.clear()


def _attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                            p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + mask) with dropout, then @ v, all in q's dtype. Under bf16 autocast
    the scores' sum with the fp32 mask and the softmax would otherwise run in fp32, doubling the
    (B, nh, Tq, T) tensors kept for backward: an `mpnet-base` step at 8 x 512 tokens peaked at
    7.9 GB that way, 7.0 GB this way (`bench/train_memory.py`, docs/results.md, issue 21). The
    softmax accumulates in fp32."""
    with torch.autocast(q.device.type, enabled=False):
        low = torch.finfo(q.dtype).min  # fp32's min would round to -inf in bf16
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, Tq, T)
        probs = torch.softmax(scores + mask.clamp(min=low).to(q.dtype), dim=-1)  # (B, nh, Tq, T)
        return dropout(probs, p, True) @ v  # (B, nh, Tq, hs)


class SelfAttention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention` with an additive mask."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        H = config.hidden_size
        assert H % config.num_heads == 0, "hidden_size must be a multiple of num_heads"
        self.num_heads, self.dropout = config.num_heads, config.attention_dropout
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.output = nn.Linear(H, H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, queries: torch.Tensor | None = None,
                record: dict | None = None) -> torch.Tensor:
        """Keys and values from x (B, T, H); queries from `queries` (B, Tq, H), default x.
        `record` (a dict) receives the attention probabilities and q, k, v (see `Taps`)."""
        B, T, H = x.shape
        nh, hs = self.num_heads, H // self.num_heads
        xq = x if queries is None else queries
        Tq = xq.shape[1]
        q = self.query(xq).view(B, Tq, nh, hs).transpose(1, 2)  # (B, nh, Tq, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if mask.shape[-2] > Tq:  # MPNet's (., nh, T, T) bias: the queries' rows only
            mask = mask[:, :, :Tq]  # (., nh, Tq, T)
        p = self.dropout if self.training else 0.0
        if record is None and (p == 0.0 or q.device.type != "cpu"):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, Tq, hs)
        elif record is None:  # training with dropout on the CPU: the same attention spelled out, to
            # drop probabilities with the cheaper 16-bit mask (SDPA with dropout runs a math path anyway)
            y = _attention_with_dropout(q, k, v, mask, p)  # (B, nh, Tq, hs)
        else:  # spelled out to keep the probabilities (see `Taps`)
            probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hs) + mask, dim=-1)  # (B, nh, Tq, T)
            record.update(attention=probs, q=q, k=k, v=v)
            y = dropout(probs, p, self.training) @ v  # (B, nh, Tq, hs)
        y = y.transpose(1, 2).reshape(B, Tq, H)  # (B, Tq, H)
        return self.output(y)


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.approximate = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(F.gelu(self.intermediate(x), approximate=self.approximate))


class EncoderLayer(nn.Module):
    """Post-LN block: x = norm(x + attn(x)); x = norm(x + ffn(x)).

    With `first_only` every position still serves as key and value, but only the first token's
    output is computed (B, 1, H): all a [CLS]-pooled classifier reads from the last layer.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, first_only: bool = False,
                record: dict | None = None) -> torch.Tensor:
        h = x[:, :1] if first_only else x  # (B, 1, H) or (B, T, H)
        h = self.attention_norm(h + self.dropout(self.attention(x, mask, queries=h, record=record)))
        return self.ffn_norm(h + self.dropout(self.ffn(h)))


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first ([CLS]) token."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """Bidirectional T5/MPNet buckets: half per direction, exact up to num_buckets/4, then log."""
    num_buckets //= 2
    n = -relative_position
    ret = (n < 0).long() * num_buckets
    n = n.abs()
    max_exact = num_buckets // 2
    is_small = n < max_exact
    scaled = torch.log(n.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + scaled * (num_buckets - max_exact)).long().clamp(max=num_buckets - 1)
    return ret + torch.where(is_small, n, large)


@dataclass
class EncoderConfig:
    family: str = field(default="bert", metadata={"help": "bert or mpnet"})
    vocab_size: int = field(default=30522, metadata={"help": "token vocabulary size"})
    hidden_size: int = field(default=768, metadata={"help": "model width H"})
    num_layers: int = field(default=12, metadata={"help": "number of encoder layers"})
    num_heads: int = field(default=12, metadata={"help": "attention heads per layer"})
    intermediate_size: int = field(default=3072, metadata={"help": "feed-forward width"})
    max_position_embeddings: int = field(default=512, metadata={"help": "longest input"})
    type_vocab_size: int = field(default=2, metadata={"help": "token types (BERT only)"})
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "LayerNorm epsilon"})
    pad_token_id: int = field(default=0, metadata={"help": "padding token id"})
    relative_attention_num_buckets: int = field(default=32, metadata={"help": "MPNet buckets"})
    hidden_dropout: float = field(default=0.1, metadata={"help": "dropout on hidden states"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention"})
    has_pooler: bool = field(default=False, metadata={"help": "checkpoint has a [CLS] pooler"})
    hidden_act: str = field(default="gelu", metadata={"help": "gelu (exact) or gelu_new (tanh)"})

    @classmethod
    def from_hf(cls, config_json: dict, has_pooler: bool = False) -> EncoderConfig:
        """Read a Hugging Face `config.json` dict (model_type bert or mpnet)."""
        family = config_json.get("model_type")
        if family not in ("bert", "mpnet"):
            raise SlimtextError(f"model_type {family!r} is not an encoder slimtext knows (bert, mpnet)")
        if config_json.get("position_embedding_type", "absolute") != "absolute":
            raise SlimtextError("only absolute position embeddings are supported for bert")
        if config_json.get("hidden_act", "gelu") not in ACTIVATIONS:
            raise SlimtextError(f"hidden_act {config_json['hidden_act']!r}: use one of {list(ACTIVATIONS)}")
        c = config_json
        return cls(
            family=family,
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"],
            intermediate_size=c["intermediate_size"],
            max_position_embeddings=c["max_position_embeddings"],
            type_vocab_size=c.get("type_vocab_size", 2),
            layer_norm_eps=c.get("layer_norm_eps", 1e-12),
            pad_token_id=c.get("pad_token_id", 0 if family == "bert" else 1),
            relative_attention_num_buckets=c.get("relative_attention_num_buckets", 32),
            hidden_dropout=c.get("hidden_dropout_prob", 0.1),
            attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
            has_pooler=has_pooler,
            hidden_act=c.get("hidden_act", "gelu"),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Encoder(nn.Module):
    """`forward(input_ids (B, T), attention_mask (B, T)) -> last hidden state (B, T, H)`.

    `first_token_only=True` returns (B, 1, H): the last layer computes the first ([CLS]) position
    only (the same numbers; its queries, output projection and feed-forward skip T - 1 tokens).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.relative_attention_bias = (
            nn.Embedding(config.relative_attention_num_buckets, config.num_heads)
            if config.family == "mpnet"
            else None
        )
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.pooler = Pooler(config) if config.has_pooler else None
        self.taps: Taps | None = None  # opt-in record of training forwards (distillation)

    def position_bias(self, T: int, device: torch.device) -> torch.Tensor:
        """MPNet's relative position bias, computed once per forward, shared by all layers."""
        pos = torch.arange(T, device=device)
        buckets = relative_position_bucket(
            pos[None, :] - pos[:, None], self.config.relative_attention_num_buckets
        )  # (T, T)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)[None]  # (1, nh, T, T)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                first_token_only: bool = False) -> torch.Tensor:
        x = self.embeddings(input_ids)  # (B, T, H)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
        mask = (1.0 - keep) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        if self.relative_attention_bias is not None:
            mask = mask + self.position_bias(input_ids.shape[1], x.device)  # (B, nh, T, T)
        if self.taps is not None and (self.training or self.taps.in_eval):
            return self._recorded(x, mask, self.taps)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, first_only=first_token_only and i == last)
        return x

    def _recorded(self, x: torch.Tensor, mask: torch.Tensor, taps: Taps) -> torch.Tensor:
        """The forward with every layer's output (and attention) kept in `taps`; all T positions
        are computed in every layer (the first one's numbers are those of `first_token_only`)."""
        taps.clear()
        for layer in self.layers:
            record = {} if taps.attention else None
            x = layer(x, mask, record=record)  # (B, T, H)
            taps.hidden.append(x)
            if record is not None:
                taps.layers.append(record)
        return x

    @classmethod
    def from_layers(cls, teacher: Encoder, layer_ids_0based: list[int]) -> Encoder:
        """A shallower copy: embeddings, relative bias, pooler and the listed layers, in order."""
        n = len(teacher.layers)
        bad = [i for i in layer_ids_0based if not 0 <= i < n]
        if not layer_ids_0based or bad:
            raise SlimtextError(f"layer ids must be 0-based indices in 0..{n - 1}; got {layer_ids_0based}")
        config = replace(teacher.config, num_layers=len(layer_ids_0based))
        with torch.device("meta"):  # every parameter is replaced by a copy below
            student = cls(config)
        student.embeddings = copy.deepcopy(teacher.embeddings)
        student.relative_attention_bias = copy.deepcopy(teacher.relative_attention_bias)
        student.pooler = copy.deepcopy(teacher.pooler)
        student.layers = nn.ModuleList(copy.deepcopy(teacher.layers[i]) for i in layer_ids_0based)
        return student


def load_encoder(folder: str | Path) -> Encoder:
    """Build an `Encoder` from a Hugging Face folder (config.json + weights) via the key map."""
    folder = Path(folder)
    hf_config = json.loads((folder / "config.json").read_text())
    family = hf_config.get("model_type")
    if family not in ("bert", "mpnet"):
        raise SlimtextError(f"{folder}: model_type {family!r} is not an encoder (bert, mpnet)")
    state = hf_keys.strip_prefix(hf_keys.read_checkpoint(folder), family)
    config = EncoderConfig.from_hf(hf_config, has_pooler="pooler.dense.weight" in state)
    with torch.device("meta"):  # shapes only; weights come from the checkpoint
        model = Encoder(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mapping = hf_keys.key_map(family, config.num_layers, pooler=config.has_pooler)
    ours = hf_keys.convert_state(state, family, mapping, expected, source=str(folder))
    model.load_state_dict(ours, assign=True)
    return model.eval()


class EncoderClassifier(nn.Module):
    """Encoder -> pooled (B, H) -> dropout -> `classifier` Linear -> logits (B, C).

    pooling: "pooler" (the checkpoint's dense+tanh on [CLS]), "cls", "mean" (over real tokens),
    or "auto" (pooler when the encoder has one, else cls). An unused pooler is frozen.
    """

    def __init__(self, encoder: Encoder, num_labels: int, dropout: float = 0.1, pooling: str = "auto"):
        super().__init__()
        if pooling == "auto":
            pooling = "pooler" if encoder.pooler is not None else "cls"
        if pooling not in ("pooler", "cls", "mean"):
            raise SlimtextError(f"pooling {pooling!r}: use auto, pooler, cls or mean")
        if pooling == "pooler" and encoder.pooler is None:
            raise SlimtextError("this checkpoint has no pooler; use pooling cls or mean")
        if pooling != "pooler" and encoder.pooler is not None:
            encoder.pooler.requires_grad_(False)
        self.encoder, self.pooling = encoder, pooling
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    @property
    def pooler(self) -> Pooler | None:
        return self.encoder.pooler if self.pooling == "pooler" else None

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence vectors (B, H), what the head sees (cacheable for head-only training)."""
        first = self.pooling in ("pooler", "cls")  # then the last layer computes [CLS] only
        hidden = self.encoder(input_ids, attention_mask, first_token_only=first)  # (B, T or 1, H)
        if self.pooling == "pooler":
            return self.encoder.pooler(hidden)
        if self.pooling == "cls":
            return hidden[:, 0]
        keep = attention_mask[:, :, None].to(hidden.dtype)  # (B, T, 1)
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))
