"""The transfer set of `slimtext distill --transfer`: more text on which the student learns the
teacher's soft labels than the labelled train split holds (Tang et al. 2019, §3.3).

`--transfer` takes one of:
- `augment:N`: N augmented copies of every train text (Tang et al.'s rules). Each word of a text is
  masked with probability `transfer_p_mask`, else replaced with probability `transfer_p_replace`
  by a *close word*, else kept; then, with probability `transfer_p_ngram`, only a random n-gram of
  the result (n uniform in 1..5) is kept. Tang et al. replace a word by another of the same part
  of speech (a tagger); slimtext has no tagger and uses instead **one of the 5 nearest whole-word
  tokens of the teacher's input-embedding matrix** (cosine similarity; the word must be a single
  token of the teacher's vocabulary, else it is kept). Augmented texts equal to a train text or to
  another augmented text are dropped. The draw is seeded by `transfer_seed` alone (not the run's
  seed), so every student seed sees the same transfer set and the teacher's logits for it are
  computed once.
- `data:NAME`: the train texts of another dataset (its labels are never read), e.g.
  `data:tweeteval-offensive` for a Davidson teacher.
- `FILE`: a UTF-8 text file, one text a line (blank lines skipped).

Transfer examples carry label `UNLABELLED` (-100): the teacher labels them (its logits, cached in
`recipes.teacher_cache` like the train split's, keyed by the texts) and `KDLoss` leaves them out of
the hard-label term. Their ids are `transfer/<sha1 of the text>`.

Reference: Tang, Lu, Liu, Mou, Vechtomova & Lin 2019, Distilling Task-Specific Knowledge from BERT
into Simple Neural Networks, arXiv:1903.12136 (p_mask = p_pos = 0.1, p_ng = 0.25, n_iter = 20).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtext.config import DistillConfig
from slimtext.data.registry import DataConfig, Example, load_dataset
from slimtext.errors import SlimtextError
from slimtext.train.losses import UNLABELLED

MAX_NGRAM = 5
NEIGHBOURS = 5


@dataclass(frozen=True)
class TransferSpec:
    kind: str  # "augment", "data" or "file"
    n: int = 0  # augment: copies per train text
    source: str = ""  # data: dataset name; file: path


def parse_transfer(spec: str | None) -> TransferSpec | None:
    """`augment:N`, `data:NAME` or an existing FILE; None for an empty spec or `none`."""
    if not spec or spec == "none":
        return None
    if spec.startswith("augment:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise SlimtextError(f"--transfer {spec}: N of augment:N must be a whole number >= 1")
        return TransferSpec("augment", n=int(n))
    if spec.startswith("data:"):
        return TransferSpec("data", source=spec[5:])
    if not Path(spec).is_file():
        raise SlimtextError(
            f"--transfer {spec}: neither augment:N, data:NAME nor an existing text file (one text a line)"
        )
    return TransferSpec("file", source=spec)


def needs_teacher_model(spec: TransferSpec | None) -> bool:
    """augment reads the teacher's embeddings (close words); the other kinds need only its logits."""
    return spec is not None and spec.kind == "augment"


def transfer_texts(d: DistillConfig, train: list[Example], data_dir: str | None = None,
                   teacher=None) -> list[str]:
    """The transfer set's texts for `d.transfer` (empty when unset); `teacher` = (model, tokenizer),
    needed by augment:N."""
    spec = parse_transfer(d.transfer)
    if spec is None:
        return []
    if spec.kind == "file":
        lines = Path(spec.source).read_text(encoding="utf-8").splitlines()
        texts = [t.strip() for t in lines if t.strip()]
    elif spec.kind == "data":
        other = load_dataset(DataConfig(data=spec.source, data_dir=data_dir))
        texts = [e.text for e in other.splits["train"]]
    else:
        if teacher is None:
            raise SlimtextError("augment:N needs the teacher model (its embeddings choose close words)")
        close = close_words([e.text for e in train], *teacher)
        texts = augment([e.text for e in train], spec.n, d, close, mask_token(teacher[1]))
    seen = {e.text for e in train}
    out = [t for t in dict.fromkeys(texts) if t not in seen]
    if not out:
        raise SlimtextError(f"--transfer {d.transfer}: no text left once the train split's texts are removed")
    return out


def transfer_examples(texts: list[str]) -> list[Example]:
    return [Example(f"transfer/{hashlib.sha1(t.encode()).hexdigest()}", t, UNLABELLED) for t in texts]


# --- Tang et al.'s augmentation --------------------------------------------------------------------


def augment(texts: list[str], n: int, d: DistillConfig, close: dict[str, list[str]], mask: str) -> list[str]:
    """`n` augmented versions of every text (seeded by `d.transfer_seed`; same inputs, same output)."""
    rng = random.Random(d.transfer_seed)
    out = []
    for text in texts:
        words = text.split()
        if not words:
            continue
        for _ in range(n):
            out.append(" ".join(augment_words(words, rng, d, close, mask)))
    return out


def augment_words(words: list[str], rng: random.Random, d: DistillConfig, close: dict[str, list[str]],
                  mask: str) -> list[str]:
    """One augmentation: per word, mask (p_mask) / close word (p_replace) / keep; then maybe an n-gram."""
    out = []
    for w in words:
        u = rng.random()
        if u < d.transfer_p_mask:
            out.append(mask)
        elif u < d.transfer_p_mask + d.transfer_p_replace and close.get(w.lower()):
            out.append(rng.choice(close[w.lower()]))
        else:
            out.append(w)
    if rng.random() < d.transfer_p_ngram and len(out) > 1:
        k = rng.randint(1, min(MAX_NGRAM, len(out)))
        start = rng.randint(0, len(out) - k)
        out = out[start : start + k]
    return out


def mask_token(tokenizer) -> str:
    """The teacher tokenizer's mask token ([MASK] or <mask>), else `[MASK]` (an unknown word)."""
    tok = getattr(tokenizer, "tok", None)
    for name in ("[MASK]", "<mask>"):
        if tok is not None and tok.token_to_id(name) is not None:
            return name
    return "[MASK]"


def close_words(texts: list[str], model: nn.Module, tokenizer, k: int = NEIGHBOURS,
                chunk: int = 1024) -> dict[str, list[str]]:
    """For every lowercased word of `texts` that is one token of the teacher's vocabulary, its `k`
    nearest whole-word tokens (alphabetic, not itself) by cosine similarity of the teacher's input
    embeddings. Empty when the teacher has no word-piece vocabulary (e.g. an RNN teacher)."""
    tok = getattr(tokenizer, "tok", None)
    emb = next((m for m in model.modules() if isinstance(m, nn.Embedding)
                and m.num_embeddings == getattr(tokenizer, "vocab_size", -1)), None)
    if tok is None or emb is None:
        return {}
    vocab = tok.get_vocab()  # token -> id
    words = sorted({w.lower() for t in texts for w in t.split() if w.lower() in vocab and w.isalpha()})
    cand = sorted((i, s) for s, i in vocab.items() if s.isalpha() and s.isascii())
    if not words or len(cand) <= k:
        return {}
    cand_ids = torch.tensor([i for i, _ in cand])
    table = nn.functional.normalize(emb.weight.detach().float(), dim=-1)  # (V, H)
    keys = table[cand_ids]  # (V', H)
    out = {}
    for start in range(0, len(words), chunk):
        part = words[start : start + chunk]
        ids = torch.tensor([vocab[w] for w in part])
        sim = table[ids] @ keys.T  # (b, V')
        sim[cand_ids.unsqueeze(0) == ids.unsqueeze(1)] = -2.0  # never the word itself
        top = sim.topk(k, dim=-1).indices  # (b, k)
        for w, row in zip(part, top.tolist(), strict=True):
            out[w] = [cand[j][1] for j in row]
    return out
