"""VICReg (Bardes, Ponce, LeCun, 2022, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning").

Two views of each image are pooled by the tower and mapped by an "expander" MLP; the loss (`zir.losses.vicreg`)
pulls the paired embeddings together (invariance) while a hinge keeps each dimension's standard deviation over
the batch at 1 (variance) and the dimensions decorrelated (covariance). Neither negatives nor a teacher: the
variance term alone prevents collapse. Under torch.distributed the statistics are over the global batch.

Published defaults (ResNet-50, 2048-wide features): expander Linear-BN-ReLU, Linear-BN-ReLU, Linear to
8192-8192-8192 (four times the backbone width); coefficients 25 / 25 / 1, std target 1, eps 1e-4; LARS, batch
2048, base lr 0.2 x batch / 256, weight decay 1e-6, 1000 epochs. Scaled for CPU-scale towers: 512-512-512
(four times a 128-wide tower), the published coefficients.
"""

from __future__ import annotations

from torch import nn

from zir.losses.vicreg import vicreg_loss
from zir.objectives.base import Loss, register_objective
from zir.objectives.dino import embedding_std
from zir.objectives.two_view import TwoViews, check_non_negative, check_positive


class VICReg(TwoViews):
    """Invariance between two views' embeddings, with variance and covariance regularisation per view."""

    name = "vicreg"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        views: tuple[str, str] | list[str] = ("global_0", "global_1"),
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        std_target: float = 1.0,
        eps: float = 1e-4,
        hidden_dim: int = 512,
        out_dim: int = 512,
        layers: int = 3,
    ) -> None:
        """VICReg on two named views of `tower`; coefficients lambda (`sim_coeff`), mu (`std_coeff`), nu (`cov_coeff`)."""
        super().__init__(towers, tower, views)
        check_non_negative(self.name, sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff)
        check_positive(self.name, std_target=std_target, eps=eps)
        self.coeffs = dict(sim_coeff=float(sim_coeff), std_coeff=float(std_coeff), cov_coeff=float(cov_coeff),
                           std_target=float(std_target), eps=float(eps))
        self.projector = self.projector_head(hidden_dim, out_dim, layers, last_norm=False)

    def forward(self, batch, features) -> Loss:
        """VICReg's loss between the two views' expanded embeddings; the unweighted terms and `emb_std` as metrics."""
        h1, h2 = self.pooled(features)
        z1, z2 = self.projector(h1), self.projector(h2)
        loss, terms = vicreg_loss(z1, z2, **self.coeffs)
        return Loss(loss, {**{k: float(v) for k, v in terms.items()}, "emb_std": embedding_std(z1)})


register_objective("vicreg", VICReg)
