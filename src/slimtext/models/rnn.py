"""Recurrent text classifiers: vanilla RNN (Elman 1990), LSTM (Hochreiter & Schmidhuber 1997),
GRU (Cho et al. 2014), uni- or bidirectional, over word or character ids.

embedding -> dropout -> (packed) recurrent stack -> pooling over time -> dropout -> classifier
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from slimtext.errors import UnknownNameError

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLING = ("last", "mean", "max")


@dataclass
class RNNConfig:
    cell: str = field(default="lstm", metadata={"help": "recurrent cell: rnn, lstm or gru"})
    embed_dim: int = field(default=128, metadata={"help": "embedding size"})
    hidden_dim: int = field(default=128, metadata={"help": "hidden size per direction"})
    num_layers: int = field(default=1, metadata={"help": "stacked recurrent layers"})
    bidirectional: bool = field(default=True, metadata={"help": "run a second RNN right-to-left"})
    pooling: str = field(default="max", metadata={"help": "pool hidden states over time: last, mean or max"})
    dropout: float = field(default=0.3, metadata={"help": "dropout on embeddings, between layers and before the head"})
    vocab_size: int = field(default=0, metadata={"help": "set from the tokenizer", "cli": False})
    num_labels: int = field(default=2, metadata={"help": "set from the dataset", "cli": False})
    pad_id: int = field(default=0, metadata={"help": "set from the tokenizer", "cli": False})

    def to_dict(self) -> dict:
        return asdict(self)


class RNNClassifier(nn.Module):
    def __init__(self, cfg: RNNConfig):
        super().__init__()
        if cfg.cell not in CELLS:
            raise UnknownNameError("rnn cell", cfg.cell, list(CELLS))
        if cfg.pooling not in POOLING:
            raise UnknownNameError("pooling", cfg.pooling, list(POOLING))
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=cfg.pad_id)
        self.rnn = CELLS[cfg.cell](
            cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, batch_first=True,
            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(cfg.dropout)
        out_dim = cfg.hidden_dim * (2 if cfg.bidirectional else 1)
        self.classifier = nn.Linear(out_dim, cfg.num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp(min=1)  # (B,)
        x = self.drop(self.embed(input_ids))  # (B, T, E)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not _cpu_has_bf16_rnn():
            x = x.float()  # oneDNN has no bf16 recurrent kernel without native bf16: run it in fp32
            with torch.autocast("cpu", enabled=False):
                return self._recur(x, lengths, attention_mask, input_ids.shape[1])
        return self._recur(x, lengths, attention_mask, input_ids.shape[1])

    def _recur(self, x: torch.Tensor, lengths: torch.Tensor, attention_mask: torch.Tensor,
               total_length: int) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=total_length)  # (B, T, D*H)
        if self.cfg.pooling == "last":
            h = h[0] if isinstance(h, tuple) else h  # LSTM returns (h, c); h: (L*D, B, H)
            D = 2 if self.cfg.bidirectional else 1
            last = h.view(self.cfg.num_layers, D, h.shape[1], h.shape[2])[-1]  # (D, B, H)
            return last.transpose(0, 1).reshape(h.shape[1], -1)  # (B, D*H)
        mask = attention_mask[:, : out.shape[1]].unsqueeze(-1).to(out.dtype)  # (B, T, 1)
        if self.cfg.pooling == "mean":
            return (out * mask).sum(1) / mask.sum(1).clamp(min=1)
        return out.masked_fill(mask == 0, float("-inf")).max(1).values  # (B, D*H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.features(input_ids, attention_mask)))


def _cpu_has_bf16_rnn() -> bool:
    """Whether oneDNN can run a recurrent layer in bf16 here (a CPU with native bf16, AVX-512 BF16
    or AMX); without it, an LSTM under bf16 autocast fails to create its oneDNN primitive."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
