"""LoRA: low-rank adapters on frozen linear layers.

A frozen `nn.Linear` with weight W (out, in) gets a trainable update ΔW = B @ A * scaling, with
A (r, in) random and B (out, r) zero, so the wrapped model starts out exactly equal to the base
model. scaling = alpha / r (Hu et al. 2021), or alpha / sqrt(r) with rsLoRA, which keeps the update's
size stable as the rank grows (Kalajdzievski 2023). After training, `merge()` folds ΔW into W so
inference costs nothing extra.

References:
- Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685
- Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
  arXiv:2312.03732
- Behaviour (init, scaling, dropout placement) matches peft `tuners/lora/layer.py`.

Targets match the last component of a module's name (`query` matches
`encoder.layer.0.attention.query`), or "all-linear". The head, an attribute named `classifier`,
is never wrapped and always trains fully.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from slimtext.errors import SlimtextError

HEAD = "classifier"


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable low-rank update: y = base(x) + B(A(dropout(x))) * s."""

    def __init__(
        self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, rslora: bool = False
    ):
        super().__init__()
        if rank < 1:
            raise SlimtextError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as peft (and nn.Linear) do
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    # Read-only views so code that inspects `layer.weight` / `layer.in_features` keeps working.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """ΔW = B @ A * scaling, shape (out, in), in the base weight's dtype."""
        return (self.lora_B @ self.lora_A * self.scaling).to(self.base.weight.dtype)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        h = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)  # (..., r)
        return y + F.linear(h, self.lora_B) * self.scaling  # (..., out)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight; forward then uses the base layer only. No-op if merged."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take ΔW back out of the base weight. No-op if not merged."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


@dataclass
class LoRAConfig:
    rank: int = field(default=8, metadata={"help": "rank r of the update B @ A"})
    alpha: float = field(
        default=16, metadata={"help": "update scale: alpha / r (alpha / sqrt(r) with rslora)"}
    )
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA path's input"})
    targets: str = field(
        default="query,value",
        metadata={"help": "comma list of linear-layer names (last name component) to adapt, "
                          "or 'all-linear'; the classifier head is never wrapped"},
    )
    rslora: bool = field(default=False, metadata={"help": "rank-stabilised scaling alpha/sqrt(r)"})

    def __post_init__(self):
        if self.rank < 1:
            raise SlimtextError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise SlimtextError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    def target_names(self) -> list[str] | None:
        """The target names, or None for every linear layer ("all-linear")."""
        if self.targets.strip() == "all-linear":
            return None
        names = [t.strip() for t in self.targets.split(",") if t.strip()]
        if not names:
            raise SlimtextError("LoRA targets is empty; give e.g. 'query,value' or 'all-linear'")
        return names


def _in_head(name: str) -> bool:
    return HEAD in name.split(".")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def inject(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    """Wrap the targeted linear layers of `model` in place; freeze everything but LoRA and head.

    Returns the names of the wrapped modules. Raises SlimtextError when a target matches no
    linear layer (the message lists the valid names) or when the model already has adapters.
    """
    if _lora_layers(model):
        raise SlimtextError("model already has LoRA adapters; inject into a fresh model")
    linears = [  # the root itself cannot be replaced in place, so it is never a target
        n for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and not _in_head(n)
    ]
    targets = cfg.target_names()
    if targets is None:
        chosen = linears
    else:
        chosen = [n for n in linears if n.rpartition(".")[2] in targets]
        found = {n.rpartition(".")[2] for n in chosen}
        missing = [t for t in targets if t not in found]
        if missing:
            valid = sorted({n.rpartition(".")[2] for n in linears})
            close = [c for t in missing for c in difflib.get_close_matches(t, valid, n=1)]
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            shown = ", ".join(linears[:12]) + (f", ... ({len(linears) - 12} more)"
                                                if len(linears) > 12 else "")
            raise SlimtextError(
                f"LoRA target(s) {', '.join(map(repr, missing))} match no linear layer of "
                f"{type(model).__name__} (the '{HEAD}' head is never wrapped). Valid targets: "
                f"{', '.join(valid) or '(none)'}, or 'all-linear'.{hint} Linear layers: "
                f"{shown or '(none)'}"
            )
    if not chosen:
        raise SlimtextError(f"{type(model).__name__} has no linear layer outside the "
                            f"'{HEAD}' head to adapt")
    model.requires_grad_(False)
    for name in chosen:
        base = model.get_submodule(name)
        _set_submodule(model, name, LoRALinear(base, cfg.rank, cfg.alpha, cfg.dropout, cfg.rslora))
    for name, p in model.named_parameters():
        if _in_head(name) or name.rpartition(".")[2] in ("lora_A", "lora_B"):
            p.requires_grad_(True)
    return chosen


def merge_all(model: nn.Module) -> None:
    """Fold every adapter into its base weight (inference without the LoRA path)."""
    for _, m in _lora_layers(model):
        m.merge()


def unmerge_all(model: nn.Module) -> None:
    """Undo `merge_all` (to continue training)."""
    for _, m in _lora_layers(model):
        m.unmerge()


def merged_copy(model: nn.Module) -> nn.Module:
    """A deep copy in which every LoRALinear is a plain nn.Linear with the merged weight (export)."""
    out = copy.deepcopy(model)
    for name, m in _lora_layers(out):
        m.merge()
        _set_submodule(out, name, m.base)
    return out


def _adapter_keys(model: nn.Module, include: tuple[str, ...]) -> list[str]:
    """Parameter names an adapter file holds: LoRA A/B, anything under `include`, and any other
    parameter that trains (requires_grad)."""
    lora = {f"{n}.{p}" for n, _ in _lora_layers(model) for p in ("lora_A", "lora_B")}
    keys = []
    for name, p in model.named_parameters():
        if name in lora or p.requires_grad or set(name.split(".")) & set(include):
            keys.append(name)
    return keys


def lora_state_dict(
    model: nn.Module, include: tuple[str, ...] = (HEAD,)
) -> dict[str, torch.Tensor]:
    """Adapter weights plus the trained head (every trainable parameter), keyed by the model's
    parameter names. Tensors are detached copies, ready for `safetensors.torch.save_file`."""
    params = dict(model.named_parameters())
    return {k: params[k].detach().clone() for k in _adapter_keys(model, include)}


@torch.no_grad()
def load_lora_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], include: tuple[str, ...] = (HEAD,)
) -> None:
    """Load `lora_state_dict` output into a model that went through `inject` with the same config.

    Strict: the keys must be exactly those `lora_state_dict(model, include)` would write, with
    the same shapes; otherwise SlimtextError names the missing, unexpected or mis-shaped keys.
    """
    if any(m.merged for _, m in _lora_layers(model)):
        raise SlimtextError("unmerge the model (unmerge_all) before loading adapter weights")
    params = dict(model.named_parameters())
    expected = _adapter_keys(model, include)
    missing = [k for k in expected if k not in sd]
    unexpected = sorted(set(sd) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    bad = [f"{k} {tuple(sd[k].shape)} vs model {tuple(params[k].shape)}"
           for k in expected if k in sd and sd[k].shape != params[k].shape]
    if bad:
        problems.append(f"shape mismatch: {'; '.join(bad)}")
    if problems:
        raise SlimtextError(
            "adapter weights do not fit this model (inject with the same LoRA config and the "
            f"same base model first): {'. '.join(problems)}"
        )
    for k in expected:
        params[k].copy_(sd[k])
