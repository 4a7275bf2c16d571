"""Losses as small modules. Each is called as `loss(logits, batch) -> scalar`, where `batch` is
the dict from `slimtext.data.batches.collate` (`labels`, `index`, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimtext.errors import SlimtextError, UnknownNameError

CLASS_WEIGHTS = ("none", "balanced")


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
    `index` picks its rows, so the teacher never runs during student training.
    """

    def __init__(self, teacher_logits: torch.Tensor, alpha: float = 0.5, temperature: float = 2.0,
                 weight: torch.Tensor | None = None):
        super().__init__()
        check_kd(alpha, temperature)
        self.register_buffer("teacher_logits", teacher_logits.float(), persistent=False)
        self.register_buffer("weight", weight, persistent=False)  # class weights of the CE term
        self.alpha, self.T = alpha, temperature

    def forward(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        ce = F.cross_entropy(logits, batch["labels"], weight=self.weight)
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
