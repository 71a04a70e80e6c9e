"""SimCLR / InfoNCE (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two augmented views of each image are pooled by the tower, mapped by a projection head and compared by
the normalised-temperature cross-entropy (NT-Xent, `zir.losses.simclr`): each of the 2B embeddings must pick its partner among
the 2B - 1 others (and, under torch.distributed, among every rank's embeddings, gathered with gradients
flowing back to each rank's shard, so that DDP's averaged gradient is the global batch's).

Published defaults: projection MLP 2048 -> 128 with batch norm, temperature 0.1 (the official code's
default; 0.5 in the paper's CIFAR-10 runs), batch 4096 with LARS. Scaled for CPU-scale towers: hidden
width 512, output 128, temperature 0.2 for batches of 32-256.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.simclr import nt_xent
from zir.objectives.base import Forward, Loss, Objective, register_objective, views_needed
from zir.objectives.heads import MLPHead


def ProjectionHead(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, last_norm: bool = True) -> MLPHead:  # noqa: N802
    """SimCLR's projection head: linears without bias, batch norm after each, the last without affine parameters."""
    return MLPHead(in_dim, hidden_dim, out_dim, layers, bias=False, last_bn=last_norm)


class SimCLR(Objective):
    """Contrastive learning between two views of each image with a projection head and NT-Xent."""

    name = "simclr"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        views: tuple[str, str] | list[str] = ("global_0", "global_1"),
        temperature: float = 0.2,
        hidden_dim: int = 512,
        out_dim: int = 128,
        layers: int = 2,
    ) -> None:
        """SimCLR on two named views of `tower`."""
        super().__init__(towers, tower)
        if len(views) != 2 or views[0] == views[1]:
            raise ConfigError(f"simclr views={list(views)}: expected two different view names")
        if temperature <= 0:
            raise ConfigError(f"simclr temperature={temperature}: expected > 0")
        if layers < 1:
            raise ConfigError(f"simclr layers={layers}: expected >= 1")
        views_needed(views)  # known view names
        self.views, self.temperature = tuple(views), float(temperature)
        self.head = ProjectionHead(self.tower.embed_dim, hidden_dim, out_dim, layers)

    def view_plan(self) -> dict:
        """The two named views with SimCLR's augmentation."""
        return {**views_needed(self.views), "pipeline": "simclr"}

    def forwards(self) -> list[Forward]:
        """The tower on each of the two views, unmasked."""
        return [Forward(self.tower_name, v) for v in self.views]

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token features (B, T, D) -> projections (B, out)."""
        return self.head(self.tower.pool(tokens))

    def forward(self, batch, features) -> Loss:
        """NT-Xent between the projections of the two views."""
        f1, f2 = self.forwards()
        b = features[f1].shape[0]
        # both views through the head together, so its batch norm sees 2B samples (as SimCLR)
        z = self.head(torch.cat([self.tower.pool(features[f1]), self.tower.pool(features[f2])], dim=0))
        z1, z2 = z[:b], z[b:]
        loss, acc = nt_xent(z1, z2, self.temperature)
        return Loss(loss, {"acc": float(acc)})


register_objective("simclr", SimCLR)
