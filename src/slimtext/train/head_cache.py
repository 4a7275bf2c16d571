"""Head-only training on cached features: the frozen encoder runs once per split, not per epoch.

With `--method head` only the `classifier` trains, so every epoch would push the same texts
through the same frozen encoder again. Instead the pooled sentence vectors (`model.features`) of
each split are computed once (eval mode, inference mode, length-sorted batches) and the head
trains on those. The encoder's dropout is therefore off, which is right for a frozen feature
extractor; the head's own dropout (`model.head`) still applies. The unchanged `fit` loop consumes
the cache through two small adapters:

- `CachedSplit`: an `EncodedSplit` whose "tokens" are one feature-row index per example, so
  `collate` gives `input_ids` (B, 1) = row ids, and `index` is still the position in the split
  (cached teacher logits still join). `lengths` are the real token counts, so the length-bucketed
  batches are exactly those the uncached path would draw.
- `HeadOnly`: `forward(rows, mask) -> model.head(features[rows])`. Its only parameters are the
  model's own `classifier` module, so weights save and load under the same `classifier.*` names
  and `load_predictor` reads a cached-head run like any other head-only run.

The feature tables also persist in `$SLIMTEXT_CACHE/features/<key>.safetensors`, so a sweep's
points and seeds (same checkpoint, data and pooling; only the head's lr or seed differ) encode
each split once in all. The key hashes everything the features depend on: the model's class and
pooling, the precision, every frozen tensor (not the head, whose seed-dependent init never
reaches `features`) and the split's token ids. `SLIMTEXT_FEATURE_CACHE=0` turns it off.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from slimtext.data.batches import EncodedSplit
from slimtext.data.sources import cache_dir
from slimtext.rundir import atomic_save_safetensors, load_safetensors
from slimtext.train.loop import TrainConfig, map_batches, resolve_device
from slimtext.train.precision import resolve


def supports(model: nn.Module) -> bool:
    """True when `model` has `features()`/`head()` and only its `classifier` trains."""
    if not all(hasattr(model, a) for a in ("features", "head", "classifier")):
        return False
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return bool(trainable) and all(n.startswith("classifier.") for n in trainable)


def pooled_features(model: nn.Module, split: EncodedSplit, batch_size: int = 128,
                    device: torch.device | str = "cpu", precision: str = "fp32",
                    desc: str | None = None) -> torch.Tensor:
    """`model.features` of every example (N, H), fp32, in the split's order (eval mode). A
    progress bar titled `desc` shows on a terminal."""
    return map_batches(model, model.features, split, batch_size, device, precision, desc)


class CachedSplit(EncodedSplit):
    """A split whose examples are rows `offset .. offset + N - 1` of a feature table."""

    def __init__(self, split: EncodedSplit, offset: int):
        super().__init__([[offset + i] for i in range(len(split))], split.labels, pad_id=0)
        self.real_lengths = split.lengths

    @property
    def lengths(self) -> torch.Tensor:  # the real token counts: the same batches as uncached
        return self.real_lengths


class HeadOnly(nn.Module):
    """`forward(rows (B, 1), mask) -> model.head(features[rows[:, 0]])` (B, C)."""

    def __init__(self, model: nn.Module, features: torch.Tensor):
        super().__init__()
        self.classifier = model.classifier  # the same module: saved as classifier.*
        self.features = features  # (N, H) plain tensor on the device: no parameter, no buffer
        self._model = (model,)  # a tuple, so the frozen encoder is not a submodule of this one

    def train(self, mode: bool = True) -> HeadOnly:
        super().train(mode)
        self._model[0].train(mode)  # the head's dropout follows this module's mode
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._model[0].head(self.features[input_ids[:, 0]])


def model_digest(model: nn.Module, precision: str) -> hashlib._Hash:
    """A running sha256 of what `model.features` computes with: class, pooling, precision and every
    frozen tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256(f"{type(model).__qualname__}|{getattr(model, 'pooling', '')}|{precision}".encode())
    for name, t in model.state_dict().items():
        if name.startswith("classifier."):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


def split_key(model_hash: hashlib._Hash, split: EncodedSplit) -> str:
    h = model_hash.copy()
    for ids in split.input_ids:
        h.update(len(ids).to_bytes(4, "little"))
        h.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def feature_cache_dir() -> Path | None:
    return None if os.environ.get("SLIMTEXT_FEATURE_CACHE") == "0" else cache_dir() / "features"


def cache(model: nn.Module, splits: dict[str, EncodedSplit], cfg: TrainConfig,
          quiet: bool = True) -> tuple[HeadOnly, dict[str, CachedSplit]]:
    """Run the frozen encoder once over every split (or read its features from the disk cache);
    the head-only model and the cached splits."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    precision, _ = resolve(cfg.precision, model, device)
    model.to(device)
    folder = feature_cache_dir()
    digest = model_digest(model, precision) if folder else None
    tables, cached, offset = [], {}, 0
    for name, split in splits.items():
        path = folder / f"{split_key(digest, split)}.safetensors" if folder else None
        if path is not None and path.is_file():
            table = load_safetensors(path)["features"].to(device)
        else:
            desc = None if quiet else f"features {name}"
            table = pooled_features(model, split, cfg.eval_batch_size, device, precision, desc)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_save_safetensors(path, {"features": table.cpu()})
        tables.append(table)
        cached[name] = CachedSplit(split, offset)
        offset += len(split)
    return HeadOnly(model, torch.cat(tables)), cached
