"""DINO's cross-entropy against a centred, sharpened teacher (Caron et al., 2021, "Emerging Properties in
Self-Supervised Vision Transformers").

Follows the paper's Algorithm 1: H(t, s) = -(softmax((t - C) / tau_t) * log softmax(s / tau_s)).sum(dim=1).mean(),
the teacher's logits centred by a running mean C (C <- m C + (1 - m) mean(t)) and sharpened by a low tau_t;
with multi-crop the loss averages H over every pair of a teacher global crop and a different student crop.
iBOT's patch loss and masked self-distillation reuse these pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.errors import ConfigError
from zir.losses.distributed import all_mean


def teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, temperature: float) -> torch.Tensor:
    """DINO's centring and sharpening: softmax((t - c) / tau_t) over the last dimension."""
    return F.softmax((teacher_logits.float() - center) / temperature, dim=-1)


def student_log_probs(student_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's log softmax(s / tau_s) over the last dimension, in float32."""
    return F.log_softmax(student_logits.float() / temperature, dim=-1)


def soft_cross_entropy(target_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """H(t, s) of Algorithm 1: -sum p_t log p_s over the last dimension, averaged over the rows."""
    return (-target_probs * log_probs).sum(dim=-1).mean()


def dino_loss(student_logits: list[torch.Tensor], teacher_logits: list[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Mean over (teacher global q, student crop v != q) of -sum p_t(q) log p_s(v), each averaged over the batch.

    `student_logits`: one (B, K) tensor per crop, globals first in the teacher's order; `teacher_logits`:
    one (B, K) tensor per global crop.
    """
    targets = [teacher_probs(t, center, teacher_temp) for t in teacher_logits]
    logps = [student_log_probs(s, student_temp) for s in student_logits]
    total, terms = 0.0, 0
    for q, p_t in enumerate(targets):
        for v, logp in enumerate(logps):
            if v == q:
                continue  # the same crop seen by both: no signal
            total = total + soft_cross_entropy(p_t, logp)
            terms += 1
    if terms == 0:
        raise ConfigError("dino loss needs at least two crops (two globals, or a global and a local)")
    return total / terms


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor, momentum: float) -> None:
    """In place: c <- m * c + (1 - m) * mean of the teacher logits (over every leading dim and rank)."""
    batch_center = all_mean(teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1]).mean(dim=0))
    center.mul_(momentum).add_(batch_center, alpha=1.0 - momentum)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of probability rows (..., K): the teacher's, watched for collapse."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
