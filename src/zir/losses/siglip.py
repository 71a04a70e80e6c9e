"""SigLIP's pairwise sigmoid loss with a learnable temperature and bias (Zhai et al., 2023).

Every image-text pair is an independent binary question: label +1 on the diagonal, -1 elsewhere, logit
exp(t) * cos + b with t = log(10) and b = -10 at the start, as published. The loss sums over texts and
averages over images. With `gather_distributed`, each rank scores its local images against the texts of
all ranks (gathered with gradients); the mean over ranks is the global-batch loss. Temperature and bias
are stored with shape (1,) so that FSDP can shard them (see zir.losses.clip).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zir.losses.clip import accept_0d_checkpoints, check_pairs
from zir.losses.distributed import gather_with_grad, rank_and_world


class SigLipLoss(nn.Module):
    """Sigmoid loss over all image-text pairs with learnable temperature and bias; (B, D), (B, D) -> scalar."""

    def __init__(
        self,
        temperature: float = 0.1,
        bias: float = -10.0,
        learn: bool = True,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        scale, shift = torch.tensor([math.log(1 / temperature)]), torch.tensor([float(bias)])  # (1,), as in ClipLoss
        if learn:
            self.logit_scale, self.logit_bias = nn.Parameter(scale), nn.Parameter(shift)
        else:
            self.register_buffer("logit_scale", scale)
            self.register_buffer("logit_bias", shift)
        accept_0d_checkpoints(self, "logit_scale", "logit_bias")
        self.gather_distributed = gather_distributed

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """(B, D) images, (M, D) texts -> (B, M) pair logits exp(t) * cos + b."""
        img, txt = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
        return self.logit_scale.exp() * img @ txt.T + self.logit_bias

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """-sum_j log sigmoid(z_ij * logit_ij), averaged over images i; z = +1 for i == j, else -1."""
        check_pairs(image_features, text_features)
        offset = 0
        if self.gather_distributed and rank_and_world()[1] > 1:
            offset = rank_and_world()[0] * text_features.shape[0]
            text_features = gather_with_grad(text_features)
        logits = self.logits(image_features, text_features).float()
        b = image_features.shape[0]
        signs = -torch.ones_like(logits)
        signs[torch.arange(b), torch.arange(b) + offset] = 1.0
        return -F.logsigmoid(signs * logits).sum(dim=1).mean()
