"""SimSiam's loss (Chen, He, 2021, "Exploring Simple Siamese Representation Learning").

Follows the paper's Algorithm 1: D(p, z) = -cos(p, stopgrad(z)), averaged over the batch, and the symmetric
L = D(p1, z2) / 2 + D(p2, z1) / 2, where z are the projector's outputs and p the predictor's. The stop-gradient
on z is what keeps SimSiam from collapsing without negatives or a momentum encoder (the paper's Sec. 4.1).
The loss is a mean over samples, so under torch.distributed each rank's loss is its own shard's and the mean
over ranks (DDP's averaged gradient) is the global batch's: no gather needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z): minus the mean cosine similarity of p and z (B, D), no gradient through z."""
    p, z = F.normalize(p.float(), dim=-1), F.normalize(z.detach().float(), dim=-1)
    return -(p * z).sum(dim=-1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The symmetric SimSiam loss: each view's prediction against the other view's (stopped) projection; in [-1, 1]."""
    return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
