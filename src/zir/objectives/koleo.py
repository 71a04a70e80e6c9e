"""KoLeo: the Kozachenko-Leonenko entropy regulariser (Sablayrolles et al., 2019), as used by DINOv2.

It spreads L2-normalised embeddings over the sphere by maximising the log distance of each one to its
nearest neighbour in the batch: loss = -mean_i log(min_{j != i} ||z_i - z_j|| + eps), in `zir.losses.koleo`.
DINOv2 applies it to the student's CLS embedding of each global crop with weight 0.1 (its published default).
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.koleo import koleo_loss
from zir.objectives.base import DEFAULT_MASK, Forward, Loss, Objective, register_objective


class KoLeo(Objective):
    """KoLeo regulariser on the pooled embeddings of the global crops, each crop's batch separately."""

    name = "koleo"

    def __init__(self, towers: dict[str, nn.Module], tower: str = "image", global_views: int = 2, eps: float = 1e-8,
                 fill: str = "", mask_name: str = DEFAULT_MASK) -> None:
        """KoLeo on `global_views` global crops; `fill='ibot'` reads iBOT's masked globals, as DINOv2 does."""
        super().__init__(towers, tower)
        if global_views < 1:
            raise ConfigError(f"koleo global_views={global_views}: expected >= 1")
        self.global_views, self.eps, self.fill = int(global_views), float(eps), fill
        self.fill_mask = mask_name if fill else ""

    def view_plan(self) -> dict:
        """Global crops (any augmentation)."""
        return {"global": self.global_views, "pipeline": "dino"}

    def forwards(self) -> list[Forward]:
        """The tower on each global crop (masked and filled when `fill` names an objective)."""
        return [Forward(self.tower_name, f"global_{i}", self.fill_mask, self.fill) for i in range(self.global_views)]

    def forward(self, batch, features) -> Loss:
        """Mean KoLeo loss over the global crops."""
        losses = [koleo_loss(self.tower.pool(features[f]), self.eps) for f in self.forwards()]
        return Loss(torch.stack(losses).mean())


register_objective("koleo", KoLeo)
