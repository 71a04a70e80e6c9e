"""MAE's reconstruction loss (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners").

The paper gives its loss in words, not pseudo-code (Sec. 3, "Reconstruction target": the mean squared error
in pixel space, on the masked patches only, per-patch normalised pixels being the better target); this follows
it as the reference implementation's `forward_loss` writes it: each patch's mean squared error, averaged over
the hidden patches, with the target normalised by each patch's mean and unbiased variance.
"""

from __future__ import annotations

import torch


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalised pixels (B, N, p * p * C): zero mean, unit variance within each patch (MAE)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased, as the MAE reference implementation
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over hidden patches of each patch's mean squared error; pred, target (B, N, L), mask (B, N) True = hidden."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
