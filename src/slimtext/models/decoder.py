"""A GPT-2-style causal decoder and a classifier reading the last real token.

Pre-LN layers (x + attn(norm(x)); x + ffn(norm(x))), learned absolute positions, GELU with the
tanh approximation ("gelu_new"), a final LayerNorm. GPT-2 stores its linears as `Conv1D`
(in, out) and fuses query/key/value into `c_attn`; the key map in `hf_keys` transposes and splits
them so every family has `attention.query/key/value/output` and `ffn.intermediate/output`.
Positions count real tokens only (cumsum of the mask), so left and right padding give the same
outputs; with right padding they equal GPT-2's 0..T-1.

References:
- Radford et al. 2019, GPT-2: https://openai.com/research/better-language-models
- nanoGPT `model.py` (layout); Hugging Face `modeling_gpt2.py` (weights and numerics matched)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from slimtext.errors import SlimtextError
from slimtext.models import hf_keys
from slimtext.models.dropout import Dropout
from slimtext.models.encoder import ACTIVATIONS, FeedForward  # same block in both families


class CausalSelfAttention(nn.Module):
    """Causal multi-head attention through `F.scaled_dot_product_attention`."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        H = config.hidden_size
        assert H % config.num_heads == 0, "hidden_size must be a multiple of num_heads"
        self.num_heads, self.dropout = config.num_heads, config.attention_dropout
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.output = nn.Linear(H, H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """mask: additive (B, 1, T, T) combining causality and padding, or None for causal only."""
        B, T, H = x.shape
        nh, hs = self.num_heads, H // self.num_heads
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        return self.output(y)


class DecoderLayer(nn.Module):
    """Pre-LN block: x = x + attn(norm(x)); x = x + ffn(norm(x))."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = CausalSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


@dataclass
class DecoderConfig:
    vocab_size: int = field(default=50257, metadata={"help": "token vocabulary size"})
    hidden_size: int = field(default=768, metadata={"help": "model width H"})
    num_layers: int = field(default=12, metadata={"help": "number of decoder layers"})
    num_heads: int = field(default=12, metadata={"help": "attention heads per layer"})
    intermediate_size: int = field(default=3072, metadata={"help": "feed-forward width"})
    max_position_embeddings: int = field(default=1024, metadata={"help": "longest input"})
    layer_norm_eps: float = field(default=1e-5, metadata={"help": "LayerNorm epsilon"})
    pad_token_id: int | None = field(default=None, metadata={"help": "padding token id"})
    hidden_dropout: float = field(default=0.1, metadata={"help": "residual dropout"})
    embedding_dropout: float = field(default=0.1, metadata={"help": "dropout on embeddings"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention"})
    hidden_act: str = field(default="gelu_new", metadata={"help": "gelu_new (tanh) or gelu"})

    @classmethod
    def from_hf(cls, config_json: dict) -> DecoderConfig:
        """Read a Hugging Face GPT-2 `config.json` dict."""
        c = config_json
        if c.get("model_type") != "gpt2":
            raise SlimtextError(f"model_type {c.get('model_type')!r} is not a decoder slimtext knows (gpt2)")
        if c.get("scale_attn_by_inverse_layer_idx") or not c.get("scale_attn_weights", True):
            raise SlimtextError("only GPT-2's default attention scaling (1/sqrt(head size)) is supported")
        if c.get("activation_function", "gelu_new") not in ACTIVATIONS:
            raise SlimtextError(f"activation_function {c['activation_function']!r}: use {list(ACTIVATIONS)}")
        return cls(
            vocab_size=c["vocab_size"],
            hidden_size=c["n_embd"],
            num_layers=c["n_layer"],
            num_heads=c["n_head"],
            intermediate_size=c.get("n_inner") or 4 * c["n_embd"],
            max_position_embeddings=c["n_positions"],
            layer_norm_eps=c.get("layer_norm_epsilon", 1e-5),
            pad_token_id=c.get("pad_token_id"),
            hidden_dropout=c.get("resid_pdrop", 0.1),
            embedding_dropout=c.get("embd_pdrop", 0.1),
            attention_dropout=c.get("attn_pdrop", 0.1),
            hidden_act=c.get("activation_function", "gelu_new"),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DecoderConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Decoder(nn.Module):
    """`forward(input_ids (B, T), attention_mask (B, T)) -> hidden states (B, T, H)`."""

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T = input_ids.shape
        if attention_mask is None or bool(attention_mask.all()):
            positions = torch.arange(T, device=input_ids.device)[None]  # (1, T)
            mask = None  # SDPA's is_causal fast path
        else:
            positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
            allowed = causal[None, None] & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
            dtype = self.word_embeddings.weight.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device)
            mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)  # (B, 1, T, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, H)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x)


def load_decoder(folder: str | Path) -> Decoder:
    """Build a `Decoder` from a Hugging Face GPT-2 folder (config.json + weights) via the key map."""
    folder = Path(folder)
    config = DecoderConfig.from_hf(json.loads((folder / "config.json").read_text()))
    state = hf_keys.strip_prefix(hf_keys.read_checkpoint(folder), "gpt2")
    with torch.device("meta"):  # shapes only; weights come from the checkpoint
        model = Decoder(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    mapping = hf_keys.key_map("gpt2", config.num_layers)
    ours = hf_keys.convert_state(state, "gpt2", mapping, expected, source=str(folder))
    model.load_state_dict(ours, assign=True)
    return model.eval()


class DecoderClassifier(nn.Module):
    """Decoder -> hidden state of the last real token (B, H) -> dropout -> `classifier` -> (B, C).

    The last real token is the last position where attention_mask is 1, so right and left padding
    both work. `pooling` is accepted for symmetry with `EncoderClassifier` ("auto" or "last").
    """

    def __init__(self, decoder: Decoder, num_labels: int, dropout: float = 0.1, pooling: str = "auto"):
        super().__init__()
        if pooling not in ("auto", "last"):
            raise SlimtextError(f"pooling {pooling!r}: a decoder reads its last real token; use auto or last")
        self.decoder = decoder
        self.dropout = Dropout(dropout)
        self.classifier = nn.Linear(decoder.config.hidden_size, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden state of each row's last real token (B, H)."""
        hidden = self.decoder(input_ids, attention_mask)  # (B, T, H)
        T = input_ids.shape[1]
        index = (attention_mask.long() * torch.arange(T, device=input_ids.device)).argmax(1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))
