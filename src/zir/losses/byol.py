"""BYOL's regression loss (Grill et al., 2020, "Bootstrap Your Own Latent").

Eq. 2: with q the online network's prediction for one view and z' the target network's projection of the
other, L = ||q/||q|| - z'/||z'|| ||^2 = 2 - 2 <q, z'> / (||q|| ||z'||), the target under a stop-gradient.
The loss is symmetrised (L + L~, Section 3.1) by swapping the views. Each sample is its own term: no
negatives, so each rank's batch mean averages, across ranks, to the global batch's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||p/||p|| - z/||z|| ||^2 = 2 - 2 cos(p, z) for (B, D) pairs; no gradient to z."""
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2 - 2 * (p * z).sum(dim=-1)).mean()


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetric BYOL loss: view 1's prediction against view 2's target projection, plus the swap.

    `p1`, `p2`: online predictions (B, D) of views 1 and 2; `z1`, `z2`: target projections (B, D) of the same
    views. Ranges over [0, 8]: 0 when every prediction points along its target.
    """
    return normalized_mse(p1, z2) + normalized_mse(p2, z1)
