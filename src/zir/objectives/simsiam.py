"""SimSiam (Chen, He, 2021, "Exploring Simple Siamese Representation Learning").

Two views of each image are pooled by the tower and mapped by a projector (z) and a bottleneck predictor (p);
each view's prediction is pulled towards the other view's projection, which gets no gradient (stop-gradient),
by a negative cosine (`zir.losses.simsiam`). Neither negatives, nor large batches, nor a momentum teacher: the
stop-gradient and the predictor prevent collapse. Metric `emb_std`, the paper's collapse monitor: the standard
deviation of the L2-normalised projections, times sqrt(D) (about 1 healthy, 0 collapsed).

Published defaults (ResNet-50, 2048-wide features): projector 3 layers Linear-BN-ReLU, Linear-BN-ReLU,
Linear-BN to 2048-2048-2048 (2 layers on CIFAR); predictor Linear-BN-ReLU to a 512 bottleneck, then Linear to
2048 (a quarter of the width); SGD with momentum 0.9, lr 0.05 x batch / 256, weight decay 1e-4, batch 512,
cosine decay, the predictor's lr not decayed, 100 epochs. Scaled for CPU-scale towers: projector 512-512-512,
predictor bottleneck 128 (the published quarter).
"""

from __future__ import annotations

from torch import nn

from zir.errors import ConfigError
from zir.losses.simsiam import simsiam_loss
from zir.objectives.base import Loss, register_objective
from zir.objectives.dino import embedding_std
from zir.objectives.heads import SimSiamPredictor
from zir.objectives.two_view import TwoViews


class SimSiam(TwoViews):
    """Each view's prediction against the other view's stopped projection, symmetric."""

    name = "simsiam"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        views: tuple[str, str] | list[str] = ("global_0", "global_1"),
        hidden_dim: int = 512,
        out_dim: int = 512,
        pred_dim: int = 128,
        layers: int = 3,
    ) -> None:
        """SimSiam on two named views of `tower`: a `layers`-deep projector and a `pred_dim` predictor bottleneck."""
        super().__init__(towers, tower, views)
        if isinstance(pred_dim, bool) or not isinstance(pred_dim, int) or pred_dim < 1:
            raise ConfigError(f"simsiam pred_dim={pred_dim!r}: expected an integer >= 1")
        self.projector = self.projector_head(hidden_dim, out_dim, layers, last_norm=True)
        self.predictor = SimSiamPredictor(out_dim, pred_dim)

    def forward(self, batch, features) -> Loss:
        """SimSiam's symmetric negative cosine; `emb_std` of the first view's projections as the collapse monitor."""
        h1, h2 = self.pooled(features)
        z1, z2 = self.projector(h1), self.projector(h2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return Loss(simsiam_loss(p1, p2, z1, z2), {"emb_std": embedding_std(z1)})


register_objective("simsiam", SimSiam)
