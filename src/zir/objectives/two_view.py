"""What the objectives with neither negatives nor a teacher share (VICReg, Barlow Twins, SimSiam).

Each reads two named views of one tower, augmented by BYOL's pipeline (the three papers use BYOL's
augmentations), pools each view and passes it through its own projector call: batch norm in the projector sees
one view at a time, as in the three official implementations (SimCLR's objective projects both views together).
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.objectives.base import Forward, Objective, views_needed
from zir.objectives.heads import MLPHead
from zir.objectives.simclr import ProjectionHead


class TwoViews(Objective):
    """Two different named views of `tower`, unmasked, with BYOL's augmentation; a projector builder."""

    pipeline = "byol"

    def __init__(self, towers: dict[str, nn.Module], tower: str, views) -> None:
        """Check the view names: two, different, known."""
        super().__init__(towers, tower)
        if isinstance(views, str) or len(views) != 2 or views[0] == views[1]:
            raise ConfigError(f"{self.name} views={views!r}: expected two different view names")
        views_needed(views)  # known view names
        self.views = tuple(views)

    def projector_head(self, hidden_dim: int, out_dim: int, layers: int, last_norm: bool) -> MLPHead:
        """A `layers`-deep MLP with batch norm from the tower's width; checks the sizes."""
        for key, val in (("hidden_dim", hidden_dim), ("out_dim", out_dim), ("layers", layers)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"{self.name} {key}={val!r}: expected an integer >= 1")
        return ProjectionHead(self.tower.embed_dim, hidden_dim, out_dim, layers, last_norm)

    def view_plan(self) -> dict:
        """The two named views with BYOL's augmentation."""
        return {**views_needed(self.views), "pipeline": self.pipeline}

    def forwards(self) -> list[Forward]:
        """The tower on each of the two views, unmasked."""
        return [Forward(self.tower_name, v) for v in self.views]

    def pooled(self, features) -> tuple[torch.Tensor, torch.Tensor]:
        """The tower's pooled features (B, D) of the two views."""
        f1, f2 = self.forwards()
        return self.tower.pool(features[f1]), self.tower.pool(features[f2])


def check_non_negative(name: str, **values: float) -> None:
    """A one-line ConfigError for the first setting that is not a number >= 0."""
    for key, val in values.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
            raise ConfigError(f"{name} {key}={val!r}: expected a number >= 0")


def check_positive(name: str, **values: float) -> None:
    """A one-line ConfigError for the first setting that is not a number > 0."""
    for key, val in values.items():
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not val > 0:
            raise ConfigError(f"{name} {key}={val!r}: expected a number > 0")
