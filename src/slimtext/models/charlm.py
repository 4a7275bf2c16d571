"""The character-level LSTM language model.

It reads characters one at a time and predicts the next one; it is trained with truncated
backpropagation through time (`slimtext.recipes.lm`). Character *classifiers* are the RNN
classifiers of `slimtext.models.rnn` over a character vocabulary (`--tokenizer char`).

References:
  Karpathy, "The Unreasonable Effectiveness of Recurrent Neural Networks" (2015) and char-rnn,
    https://github.com/karpathy/char-rnn (Tiny Shakespeare, 2-layer LSTM, TBPTT over contiguous
    batches with the hidden state carried between windows).
  Zaremba, Sutskever, Vinyals, "Recurrent Neural Network Regularization" (2014),
    arXiv:1409.2329 (dropout on the non-recurrent connections only, as nn.LSTM's `dropout` does).
  Press & Wolf, "Using the Output Embedding to Improve Language Models" (2017), arXiv:1608.05859
    (`tie_weights`).

Scoring convention: `sequence_log_prob(text)` with no context uses `text[0]` as the context and
scores `text[1:]` (the model has no distribution for a first character without any input), so a
text of n characters has n - 1 scored characters. `perplexity` follows the same convention.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from slimtext.errors import SlimtextError
from slimtext.rundir import atomic_write_json

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, H)


class UnknownCharError(SlimtextError, ValueError):
    """A character the vocabulary (built from the training text) has never seen."""


class CharLMVocab:
    """A fixed list of characters; id i is `chars[i]`. Saved as JSON `{"chars": [...]}`."""

    def __init__(self, chars: list[str]):
        assert all(len(c) == 1 for c in chars) and len(set(chars)) == len(chars), "bad char list"
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharLMVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            unknown = sorted({c for c in text if c not in self.index})
            raise UnknownCharError(
                f"character(s) {', '.join(map(repr, unknown))} not in the vocabulary; the model "
                f"knows {len(self.chars)} characters: {''.join(self.chars)!r}"
            ) from e

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), {"chars": self.chars})

    @classmethod
    def load(cls, path: str | Path) -> CharLMVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])


@dataclass
class CharLMConfig:
    vocab_size: int = field(default=0, metadata={"help": "number of distinct characters (set from the corpus)", "cli": False})
    embed_dim: int = field(default=128, metadata={"help": "character embedding size"})
    hidden_dim: int = field(default=384, metadata={"help": "LSTM hidden size"})
    num_layers: int = field(default=2, metadata={"help": "stacked LSTM layers"})
    dropout: float = field(
        default=0.1, metadata={"help": "dropout on embeddings, between layers, before the output"}
    )
    tie_weights: bool = field(
        default=False,
        metadata={
            "help": "share input embedding and output weights (needs embed_dim == hidden_dim)"
        },
    )

    def __post_init__(self):
        if self.tie_weights and self.embed_dim != self.hidden_dim:
            raise SlimtextError(
                "tie_weights needs embed_dim == hidden_dim "
                f"(got {self.embed_dim} and {self.hidden_dim})"
            )


class CharLM(nn.Module):
    """Embedding -> dropout -> LSTM (batch_first) -> dropout -> linear over the vocabulary."""

    def __init__(self, config: CharLMConfig, vocab: CharLMVocab | None = None):
        super().__init__()
        if vocab is not None:
            assert len(vocab) == config.vocab_size, (len(vocab), config.vocab_size)
        self.config, self.vocab = config, vocab
        c = config
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        self.lstm = nn.LSTM(
            c.embed_dim,
            c.hidden_dim,
            c.num_layers,
            batch_first=True,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_dim, c.vocab_size)
        if c.tie_weights:
            self.head.weight = self.embedding.weight  # (V, H) == (V, E)

    def forward(
        self, x: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """x (B, T) character ids -> logits (B, T, V) and the final (h, c) state."""
        out, state = self.lstm(self.drop(self.embedding(x)), state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)

    # --- string-level helpers (eval mode, no gradients)
    def _ids(self, text: str) -> torch.Tensor:
        if self.vocab is None:
            raise SlimtextError(
                "this CharLM has no vocabulary; build it with CharLM(config, vocab)"
            )
        device = self.embedding.weight.device
        return torch.tensor(self.vocab.encode(text), dtype=torch.long, device=device)

    @torch.no_grad()
    def next_char_log_probs(self, context: str) -> torch.Tensor:
        """log p(next char | context) over the vocabulary, shape (V,); `exp` sums to 1."""
        if not context:
            raise SlimtextError("next_char_log_probs needs a non-empty context")
        was_training = self.training
        self.eval()
        logits, _ = self(self._ids(context)[None])  # (1, T, V)
        self.train(was_training)
        return F.log_softmax(logits[0, -1].float(), dim=-1)

    @torch.no_grad()
    def sequence_log_prob(self, text: str, context: str = "", chunk: int = 4096) -> float:
        """Sum over the characters of `text` of log p(char | context + previous chars), in nats.

        With an empty context, `text[0]` becomes the context and only `text[1:]` is scored.
        Long texts are processed in chunks of `chunk` characters with the state carried over.
        """
        total, _ = self._score(text, context, chunk)
        return total

    def perplexity(self, text: str, context: str = "") -> float:
        """exp(mean negative log-likelihood per scored character)."""
        total, n = self._score(text, context)
        if n == 0:
            raise SlimtextError(
                "perplexity needs at least one scored character (text of length >= 2)"
            )
        return math.exp(-total / n)

    @torch.no_grad()
    def _score(self, text: str, context: str = "", chunk: int = 4096) -> tuple[float, int]:
        if not context:
            context, text = text[:1], text[1:]
        if not text:
            return 0.0, 0
        ids = self._ids(context + text)
        first = len(context)  # ids[first:] are the scored targets
        was_training = self.training
        self.eval()
        total, state = torch.zeros((), dtype=torch.float64), None
        for start in range(0, len(ids) - 1, chunk):
            x = ids[start : start + chunk]
            y = ids[start + 1 : start + chunk + 1]
            logits, state = self(x[None], state)  # (1, t, V)
            logp = F.log_softmax(logits[0, : len(y)].float(), dim=-1)  # (t', V)
            picked = logp.gather(1, y[:, None])[:, 0]  # (t',)
            skip = max(0, first - 1 - start)  # positions whose target is still context
            total += picked[skip:].double().sum().cpu()
        self.train(was_training)
        return float(total), len(text)

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> str:
        """Return `n` new characters following `prompt` (temperature 0 = greedy)."""
        if not prompt:
            raise SlimtextError("sample needs a non-empty prompt (e.g. a newline)")
        was_training = self.training
        self.eval()
        logits, state = self(self._ids(prompt)[None])  # (1, T, V)
        last, out = logits[0, -1], []
        for _ in range(n):
            if temperature <= 0:
                nxt = int(last.argmax())
            else:
                probs = F.softmax(last.float().cpu() / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            out.append(nxt)
            x = torch.tensor([[nxt]], device=last.device)  # (1, 1)
            logits, state = self(x, state)
            last = logits[0, -1]
        self.train(was_training)
        return self.vocab.decode(out)
