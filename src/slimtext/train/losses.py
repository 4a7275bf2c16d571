"""Losses as small modules. Each training loss is called as `loss(logits, batch) -> scalar`, where
`batch` is the dict from `slimtext.data.batches.collate` (`labels`, `index`, ...).

Intermediate-layer distillation for layer-selected students (`LayerKD`) adds three terms, each
its own module that reads what `models.encoder.Taps` recorded:
- `HiddenMSE`: MSE between student layer i's output and its source teacher layer's (TinyBERT),
  through a learned linear projection where the widths differ.
- `AttentionKL`: KL(teacher || student) between the attention distributions of each head (TinyBERT
  uses MSE on the scores; the KL on distributions is MiniLM's form).
- `RelationKL`: MiniLM-v2's last-layer self-attention relations: softmax(Q Q^T / sqrt(d)), K-K and
  V-V, over the same number of relation heads for both models, matched by KL.

References:
- Hinton, Vinyals & Dean 2015, arXiv:1503.02531 (KD)
- Jiao et al. 2020, TinyBERT, arXiv:1909.10351 (hidden-state and attention losses)
- Wang et al. 2020, MiniLM, arXiv:2002.10957; Wang et al. 2021, MiniLMv2, arXiv:2012.15828
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.models.encoder import Taps

CLASS_WEIGHTS = ("none", "balanced")
UNLABELLED = -100  # label of a transfer-set example (PyTorch's ignore_index): no hard-label term


def class_weights(labels: torch.Tensor, num_labels: int, mode: str = "none") -> torch.Tensor | None:
    """Per-class weights for the cross-entropy from the train split's labels (N,): `none` gives
    None (every example counts once); `balanced` gives N / (C * n_c), inverse to each class's
    frequency (scikit-learn's `class_weight="balanced"`), so every class weighs the same in total.
    A class absent from train gets weight 0 (no example of it is ever weighted)."""
    if mode not in CLASS_WEIGHTS:
        raise UnknownNameError("class_weight", mode, list(CLASS_WEIGHTS))
    if mode == "none":
        return None
    counts = torch.bincount(labels.long(), minlength=num_labels).double()  # (C,)
    w = torch.where(counts > 0, len(labels) / (num_labels * counts.clamp(min=1)), 0.0)
    return w.float()


class CrossEntropy(nn.Module):
    """Cross-entropy on the batch's labels, optionally with per-class weights (`class_weights`);
    with weights the mean is over the weights of the batch's targets (PyTorch's convention)."""

    def __init__(self, weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits, batch["labels"], weight=self.weight)


class KDLoss(nn.Module):
    """Soft-target knowledge distillation (Hinton, Vinyals & Dean 2015):

        alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

    Why T^2: the gradient of the softened KL term with respect to the student's logits scales as
    1/T^2 (each softmax divides the logits by T, and the soft targets flatten as T grows), so
    multiplying by T^2 keeps the soft term's gradient magnitude comparable to the hard-label term's
    whatever T is chosen, and alpha keeps its meaning as a mixing weight.

    `teacher_logits` (N, C) are the teacher's cached logits for the whole training split; the batch's
    `index` picks its rows, so the teacher never runs during student training. Rows labelled
    `UNLABELLED` (a transfer set, `recipes.transfer`) take the soft term only; the hard-label term
    is the mean over the batch's labelled rows (0 when it has none).
    """

    def __init__(self, teacher_logits: torch.Tensor, alpha: float = 0.5, temperature: float = 2.0,
                 weight: torch.Tensor | None = None):
        super().__init__()
        check_kd(alpha, temperature)
        self.register_buffer("teacher_logits", teacher_logits.float(), persistent=False)
        self.register_buffer("weight", weight, persistent=False)  # class weights of the CE term
        self.alpha, self.T = alpha, temperature

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        labelled = batch["labels"] != UNLABELLED
        if labelled.all():
            ce = F.cross_entropy(logits, batch["labels"], weight=self.weight)
        elif labelled.any():
            ce = F.cross_entropy(logits[labelled], batch["labels"][labelled], weight=self.weight)
        else:
            ce = logits.sum() * 0.0
        if self.alpha == 0.0:
            return ce
        t = self.teacher_logits[batch["index"].to(self.teacher_logits.device)].to(logits.device)
        kl = F.kl_div(F.log_softmax(logits / self.T, -1), F.log_softmax(t / self.T, -1),
                      reduction="batchmean", log_target=True)
        return self.alpha * self.T**2 * kl + (1 - self.alpha) * ce


def check_kd(alpha: float, temperature: float) -> None:
    """KD settings a user can get wrong (`--kd-alpha`, `--temperature`)."""
    if not 0.0 <= alpha <= 1.0:
        raise SlimtextError(f"kd_alpha must be in [0, 1] (the soft-target weight), got {alpha}")
    if temperature <= 0:
        raise SlimtextError(f"temperature must be > 0, got {temperature}")


# --- intermediate layers (layer-selected students) ------------------------------------------------


def _real_tokens(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.float32)  # (B, T): 1 on real tokens, 0 on padding


def _kl_rows(p_teacher: torch.Tensor, p_student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of distributions over the last axis (B, h, T, T), averaged over the
    heads and the real query positions of `mask` (B, T)."""
    eps = 1e-12
    kl = (p_teacher * ((p_teacher + eps).log() - (p_student + eps).log())).sum(-1)  # (B, h, T)
    m = _real_tokens(mask)[:, None, :]  # (B, 1, T)
    return (kl * m).sum() / (m.sum() * kl.shape[1]).clamp(min=1.0)


class HiddenMSE(nn.Module):
    """Mean squared error between student hidden states (B, T, Hs) and their teacher layers'
    (B, T, Ht), over real tokens and the matched layer pairs. Where Hs != Ht a learned linear
    projection `proj` (Hs -> Ht) maps the student's states first (TinyBERT's W_h); else identity."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim) if student_dim != teacher_dim else nn.Identity()

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        m = _real_tokens(mask)[:, :, None]  # (B, T, 1)
        total = 0.0
        for s, t in zip(student, teacher, strict=True):
            err = (self.proj(s) - t.detach()) ** 2 * m  # (B, T, Ht)
            total = total + err.sum() / (m.sum() * t.shape[-1]).clamp(min=1.0)
        return total / len(student)


class AttentionKL(nn.Module):
    """KL(teacher || student) between the attention distributions of every head (B, nh, T, T),
    averaged over heads, real query tokens and matched layer pairs. Both must have as many heads."""

    def forward(self, student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for s, t in zip(student, teacher, strict=True):
            if s.shape[1] != t.shape[1]:
                raise SlimtextError(f"attention KL needs as many heads in student and teacher ({s.shape[1]} vs {t.shape[1]})")
            total = total + _kl_rows(t.detach(), s, mask)
        return total / len(student)


class RelationKL(nn.Module):
    """MiniLM-v2 self-attention relations of one layer: for each of Q, K, V (B, nh, T, hs), joined
    back to (B, T, H) and split into `heads` relation heads of H / heads, the relation
    softmax(X X^T / sqrt(d_r)) (B, heads, T, T); the loss sums KL(teacher || student) over Q-Q, K-K,
    V-V. Student and teacher widths may differ: the relations are T x T either way."""

    def __init__(self, heads: int = 12):
        super().__init__()
        self.heads = heads

    def relation(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = x.shape
        H = nh * hs
        if H % self.heads:
            raise SlimtextError(f"relation heads {self.heads} must divide the hidden size {H}")
        r = x.transpose(1, 2).reshape(B, T, self.heads, H // self.heads).transpose(1, 2)  # (B, heads, T, dr)
        scores = r @ r.transpose(-2, -1) / math.sqrt(H // self.heads)  # (B, heads, T, T)
        keep = mask[:, None, None, :].bool()  # (B, 1, 1, T)
        return torch.softmax(scores.masked_fill(~keep, torch.finfo(scores.dtype).min), dim=-1)

    def forward(self, student: dict, teacher: dict, mask: torch.Tensor) -> torch.Tensor:
        return sum(_kl_rows(self.relation(teacher[k].detach(), mask), self.relation(student[k], mask), mask)
                   for k in ("q", "k", "v"))


class LayerKD(nn.Module):
    """`KDLoss` plus intermediate-layer terms for a layer-selected student:

        kd(logits, batch) + w_h * HiddenMSE + w_a * AttentionKL + w_r * RelationKL(last layers)

    Student layer j is matched with teacher layer `source[j]` (0-based). The frozen teacher runs
    on each batch (no gradient; `Taps(in_eval=True)`); the student's states come from its own
    `Taps`, recorded during the training forward whose logits this loss receives. The projection of
    `HiddenMSE` (where widths differ) is a parameter of this module, not of the student."""

    def __init__(self, kd: nn.Module, teacher_encoder: nn.Module, student_encoder: nn.Module, source: list[int],
                 hidden_weight: float = 0.0, attention_weight: float = 0.0, relation_weight: float = 0.0,
                 relation_heads: int = 12):
        super().__init__()
        if len(source) != len(student_encoder.layers):
            raise SlimtextError(f"{len(student_encoder.layers)} student layers but {len(source)} source layers")
        self.kd, self.source = kd, list(source)
        self.weights = {"hidden": hidden_weight, "attention": attention_weight, "relation": relation_weight}
        attention = attention_weight > 0 or relation_weight > 0
        self.teacher = teacher_encoder.eval().requires_grad_(False)
        self.teacher.taps = Taps(attention=attention, in_eval=True)
        student_encoder.taps = Taps(attention=attention)
        self._student = [student_encoder]  # a plain list: not a submodule of the loss
        self.hidden = HiddenMSE(student_encoder.config.hidden_size, teacher_encoder.config.hidden_size)
        self.attention = AttentionKL()
        self.relation = RelationKL(relation_heads)
        self.last_terms: dict[str, float] = {}

    def train(self, mode: bool = True):  # the teacher stays in eval mode (no dropout)
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = self.kd(logits, batch)
        s = self._student[0].taps
        if not s.hidden:  # an evaluation forward: nothing was recorded
            return loss
        mask = batch["attention_mask"]
        with torch.no_grad():
            self.teacher(batch["input_ids"], mask)
        t = self.teacher.taps
        terms = {}
        if self.weights["hidden"]:
            terms["hidden"] = self.hidden(s.hidden, [t.hidden[i] for i in self.source], mask)
        if self.weights["attention"]:
            terms["attention"] = self.attention([r["attention"] for r in s.layers],
                                                [t.layers[i]["attention"] for i in self.source], mask)
        if self.weights["relation"]:
            terms["relation"] = self.relation(s.layers[-1], t.layers[-1], mask)
        self.last_terms = {k: float(v.detach()) for k, v in terms.items()}
        s.clear()
        t.clear()
        return loss + sum(self.weights[k] * v for k, v in terms.items())
