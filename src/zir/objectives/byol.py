"""BYOL: Bootstrap Your Own Latent (Grill et al., 2020).

An online network (the tower, a projector and a predictor) learns to predict the target network's projection
of another view of the same image; the target is an exponential moving average of the online tower and
projector and gets no gradient. There are no negatives: the predictor and the slowly moving target keep the
representation from collapsing (watch `byol_emb_std`: about 1 when healthy, 0 when collapsed). The loss,
2 - 2 cos(prediction, target) symmetrised over the two views, is in `zir.losses.byol`; the online/target
plumbing, shared with MoCo v3, in `zir.objectives.siamese`.

Published defaults (ResNet-50, 1000 epochs, batch 4096): projector MLP 2048 -> 4096 -> 256 with batch norm,
predictor 256 -> 4096 -> 256, target momentum 0.996 -> 1 by a cosine schedule, LARS (lr 0.2 x batch/256,
weight decay 1.5e-6), BYOL's asymmetric augmentations. Scaled for CPU-scale towers: hidden widths 512,
projection 128, AdamW (in the recipe).
"""

from __future__ import annotations

from torch import nn

from zir.losses.byol import byol_loss
from zir.objectives.base import Loss, register_objective
from zir.objectives.siamese import MLPHead, MomentumSiamese


class BYOL(MomentumSiamese):
    """BYOL: online prediction of the EMA target's projection of the other view, normalised MSE."""

    name = "byol"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        hidden_dim: int = 512,
        out_dim: int = 128,
        pred_hidden_dim: int = 512,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
    ) -> None:
        """Projector D -> `hidden_dim` -> `out_dim`, predictor `out_dim` -> `pred_hidden_dim` -> `out_dim` (BYOL's MLPs)."""
        super().__init__(towers, tower, momentum, final_momentum)
        self.distil_head(MLPHead(self.tower.embed_dim, hidden_dim, out_dim))
        self.predictor = MLPHead(out_dim, pred_hidden_dim, out_dim)

    def forward(self, batch, features) -> Loss:
        """BYOL's symmetric loss between the online predictions and the target projections of the other view."""
        (p1, p2), (z1, z2), metrics = self.predictions_and_targets(features)
        return Loss(byol_loss(p1, p2, z1, z2), metrics)


register_objective("byol", BYOL)
