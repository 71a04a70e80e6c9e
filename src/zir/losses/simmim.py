"""SimMIM's reconstruction loss (Xie et al., 2022, "SimMIM: A Simple Framework for Masked Image Modeling").

Follows the paper's Eq. 1, L = ||y_M - x_M||_1 / Omega(x_M): the L1 distance between predicted and raw pixels
on the hidden pixels only, divided by their number (times the channels, as the reference implementation does).
"""

from __future__ import annotations

import torch


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the hidden pixels: pred, target (B, C, H, W), mask (B, 1, H, W) 1 = hidden."""
    per_pixel = (pred.float() - target.float()).abs() * mask
    return per_pixel.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)
