"""iBOT's masked-patch loss (Zhou et al., 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer").

Follows the L_MIM line of the paper's Algorithm 1: on the patches hidden from the student, the cross-entropy
of the student's patch distribution against the teacher's centred, sharpened one (DINO's H, `zir.losses.dino`),
summed over an image's hidden patches and divided by their count, then averaged over the images.
"""

from __future__ import annotations

import torch

from zir.losses.dino import student_log_probs, teacher_probs


def ibot_patch_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, center: torch.Tensor,
                    student_temp: float, teacher_temp: float) -> torch.Tensor:
    """Per image, the mean over its hidden patches of -sum p_t log p_s; then the mean over images with a mask.

    Shapes: student_logits, teacher_logits (B, N, K); mask (B, N) True = hidden.
    """
    p_t = teacher_probs(teacher_logits, center, teacher_temp)
    logp_s = student_log_probs(student_logits, student_temp)
    per_patch = (-p_t * logp_s).sum(dim=-1)  # (B, N)
    m = mask.to(per_patch.dtype)
    per_image = (per_patch * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    has_mask = (m.sum(dim=1) > 0).to(per_image.dtype)
    return (per_image * has_mask).sum() / has_mask.sum().clamp_min(1.0)
