"""Models slimtext implements itself. Every classifier is called as
`model(input_ids, attention_mask) -> logits (B, num_labels)`."""

from __future__ import annotations

from torch import nn

from slimtext.errors import SlimtextError


def param_report(model: nn.Module) -> dict:
    """Total and trainable parameter counts (shared tensors counted once) and the reduction."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    reduction = 100.0 * (1 - trainable / total) if total else 0.0
    return {"total_params": total, "trainable_params": trainable, "reduction_pct": round(reduction, 2)}


def format_param_report(r: dict) -> str:
    return (
        f"total {r['total_params'] / 1e6:.2f}M, trainable {r['trainable_params'] / 1e6:.2f}M, "
        f"reduction {r['reduction_pct']:.1f}%"
    )


def trainable_state_dict(model: nn.Module) -> dict:
    """Only the parameters that train (head-only and LoRA runs save just these)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state_dict(model: nn.Module, sd: dict) -> None:
    """Load a `trainable_state_dict` onto a model built the same way; name missing/unexpected keys."""
    want = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(want - set(sd)), sorted(set(sd) - want)
    if missing or unexpected:
        raise SlimtextError(f"weights do not fit the model: missing {missing[:10]}, unexpected {unexpected[:10]}")
    model.load_state_dict(sd, strict=False)
