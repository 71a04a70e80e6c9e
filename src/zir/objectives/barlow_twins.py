"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction").

Two views of each image are pooled by the tower and mapped by a projector MLP; the loss
(`zir.losses.barlow_twins`) pushes the cross-correlation matrix of the batch-standardised embeddings towards the
identity: matching dimensions agree across views, different dimensions carry different information. Neither
negatives nor a teacher. Under torch.distributed the standardisation and the correlation are over the global batch.

Published defaults (ResNet-50, 2048-wide features): projector Linear-BN-ReLU, Linear-BN-ReLU, Linear to
8192-8192-8192; lambda 5e-3 (0.0051 in the code); LARS, batch 2048, lr 0.2 for weights and 0.0048 for biases
and batch norm, weight decay 1.5e-6, 1000 epochs. Scaled for CPU-scale towers: 512-512-512 (four times a
128-wide tower), lambda 5e-3.
"""

from __future__ import annotations

from torch import nn

from zir.losses.barlow_twins import barlow_twins_loss
from zir.objectives.base import Loss, register_objective
from zir.objectives.dino import embedding_std
from zir.objectives.two_view import TwoViews, check_non_negative, check_positive


class BarlowTwins(TwoViews):
    """The two views' cross-correlation pushed towards the identity."""

    name = "barlow_twins"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        views: tuple[str, str] | list[str] = ("global_0", "global_1"),
        lambd: float = 5e-3,
        eps: float = 1e-5,
        hidden_dim: int = 512,
        out_dim: int = 512,
        layers: int = 3,
    ) -> None:
        """Barlow Twins on two named views of `tower`; `lambd` weighs the off-diagonal (redundancy) term."""
        super().__init__(towers, tower, views)
        check_non_negative(self.name, lambd=lambd)
        check_positive(self.name, eps=eps)
        self.lambd, self.eps = float(lambd), float(eps)
        self.projector = self.projector_head(hidden_dim, out_dim, layers, last_norm=False)

    def forward(self, batch, features) -> Loss:
        """Barlow Twins' loss of the two views' projections; `on_diag`, `off_diag` and `emb_std` as metrics."""
        h1, h2 = self.pooled(features)
        z1, z2 = self.projector(h1), self.projector(h2)
        loss, terms = barlow_twins_loss(z1, z2, self.lambd, self.eps)
        return Loss(loss, {**{k: float(v) for k, v in terms.items()}, "emb_std": embedding_std(z1)})


register_objective("barlow_twins", BarlowTwins)
