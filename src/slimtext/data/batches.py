"""Encoded splits and length-bucketed batches with dynamic padding.

Training batches: shuffle, cut into pools of `pool` batches, sort each pool by length, cut it into
batches and shuffle the batch order, so a batch holds examples of similar length (little padding)
while the order still changes every epoch. The shuffle is drawn from `seed + epoch` alone, so a
resumed run sees exactly the batches an uninterrupted one would. Evaluation batches are sorted by
length over the whole split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    labels: torch.Tensor  # (N,) long
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def from_texts(cls, tokenizer, texts: list[str]) -> EncodedSplit:
        """Unlabelled texts to predict on (labels are zeros)."""
        return cls(tokenizer.encode(list(texts)), torch.zeros(len(texts), dtype=torch.long), tokenizer.pad_id)

    @property
    def lengths(self) -> torch.Tensor:
        return torch.tensor([len(x) for x in self.input_ids])


EVAL_MAX_TOKENS = 16_384  # an evaluation batch's padded size: 128 tweets, but 32 reviews of 512 tokens


BUCKET_FROM = 64  # shorter batches keep their exact length (tweets: no extra tokens)


def bucket_length(n: int) -> int:
    """n from BUCKET_FROM up rounded up to a multiple of 2**(bits(n) - 4): 8 padded lengths per
    octave, at most 1/8 more tokens. Training pads its batches to these lengths so that the
    allocator sees few sizes of the big tensors: with every length possible, the heap fragments and
    a run's memory keeps growing (`bench/train_memory.py`, docs/results.md, issue 21)."""
    if n < BUCKET_FROM:
        return n
    m = 1 << (n.bit_length() - 4)
    return -(-n // m) * m


def collate(split: EncodedSplit, index: list[int] | torch.Tensor, bucket: bool = False) -> dict[str, torch.Tensor]:
    """Pad to the batch's longest sequence (`bucket`: rounded up by `bucket_length`)."""
    index = torch.as_tensor(index, dtype=torch.long)
    seqs = [split.input_ids[i] for i in index.tolist()]
    T = max(len(s) for s in seqs)
    T = bucket_length(T) if bucket else T
    ids = torch.full((len(seqs), T), split.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": split.labels[index], "index": index}


def train_batches(lengths: torch.Tensor, batch_size: int, seed: int, epoch: int, pool: int = 50,
                  rank: int = 0, world: int = 1) -> list[torch.Tensor]:
    """Length-bucketed, shuffled batches of indices for one epoch. With `world > 1` (DDP) every
    rank draws the same batches and takes its 1/world share of each (same global batch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g)
    batches = []
    span = batch_size * pool
    for start in range(0, len(perm), span):
        chunk = perm[start : start + span]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=g)
    batches = [batches[i] for i in order]
    if world > 1:
        batches = [b[rank::world] for b in batches if len(b) >= world]
    return batches


def eval_batches(lengths: torch.Tensor, batch_size: int, max_tokens: int = EVAL_MAX_TOKENS) -> list[torch.Tensor]:
    """Indices sorted by length, cut into batches of at most `batch_size` examples and at most
    `max_tokens` padded tokens (a batch of one may exceed it)."""
    batches, start, order = [], 0, torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order].tolist()
    for end in range(1, len(order) + 1):  # close [start, end) before the example that overflows it
        if end == len(order) or end - start == batch_size or (end - start + 1) * sorted_lengths[end] > max_tokens:
            batches.append(order[start:end])
            start = end
    return batches


def cheapest_batches(lengths: torch.Tensor, max_size: int, call_tokens: float,
                     max_tokens: int = EVAL_MAX_TOKENS) -> list[torch.Tensor]:
    """Indices sorted by length, cut where it is cheapest to run them: each call is charged
    `call_tokens` (its fixed cost, in padded-token units) plus its padded tokens (size x its longest
    length), and the cuts minimising the total are found exactly (dynamic programming over the
    sorted lengths, O(N x max_size)). At most `max_size` examples and `max_tokens` padded tokens
    per batch (a batch of one may exceed it). Mixed lengths then split where padding would cost
    more than another call: eight tweets of 5-31 tokens as one padded call take 1.5x the time of
    eight calls with ONNX Runtime int8 (docs/results.md, issue 20)."""
    order = torch.argsort(lengths, stable=True)
    L = lengths[order].tolist()
    n = len(L)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)  # best[end]: cheapest cost of L[:end]
    for end in range(1, n + 1):
        for start in range(max(0, end - max(1, max_size)), end):
            size = end - start
            if size > 1 and size * L[end - 1] > max_tokens:
                continue
            cost = best[start] + call_tokens + size * L[end - 1]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], n
    while end > 0:
        batches.append(order[cut[end]:end])
        end = cut[end]
    return batches[::-1]
