"""What BYOL and MoCo v3 share: an online network predicts what a momentum network makes of the other view.

Online: the tower, a projector (`head`) and a predictor, trained. Target (BYOL) or momentum encoder (MoCo v3):
the EMA teacher tower and an EMA copy of the projector (`teacher_head`), run without gradients on the same
two global views; the model runs each of the four tower forwards once. The two methods differ only in the
loss on (predictions, targets) (`zir.losses.byol`, `zir.losses.moco`) and their MLPs' published shapes.

The target projector normalises with batch statistics, as BYOL's target and MoCo v3's momentum encoder do
(they run in training mode); its running statistics are its own, from the batches it sees.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.models.tower import require
from zir.objectives.base import Forward
from zir.objectives.dino import embedding_std
from zir.objectives.heads import MLPHead  # noqa: F401  (BYOL and MoCo v3 import it from here too)
from zir.objectives.self_distillation import SelfDistillation


class MomentumSiamese(SelfDistillation):
    """Two global views through the online tower, projector and predictor and through the EMA teacher tower and
    projector. A subclass calls `super().__init__()`, then `distil_head(projector)` and sets `self.predictor`;
    its `forward()` computes the loss from `predictions_and_targets()`."""

    def __init__(self, towers: dict[str, nn.Module], tower: str, momentum: float, final_momentum: float) -> None:
        """Declare the teacher `<tower>_teacher` at `momentum` -> `final_momentum` (cosine); the tower must be an image tower."""
        super().__init__(towers, tower, momentum, final_momentum)
        require(self.name, tower, self.tower, "image")

    def view_plan(self) -> dict:
        """Two global views with BYOL's asymmetric augmentation (MoCo v3 uses it too)."""
        return {"global": 2, "pipeline": "byol"}

    def student_forwards(self) -> list[Forward]:
        """The online tower on both global views."""
        return [Forward(self.tower_name, f"global_{i}") for i in range(2)]

    def teacher_forwards(self) -> list[Forward]:
        """The teacher tower on both global views (run without gradients by the model)."""
        return [Forward(self.teacher_name, f"global_{i}") for i in range(2)]

    def forwards(self) -> list[Forward]:
        """Online forwards, then the teacher's."""
        return self.student_forwards() + self.teacher_forwards()

    def predictions_and_targets(self, features) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, float]]:
        """([prediction of view 1, of view 2], [target projection of view 1, of view 2], collapse metrics).

        Each view goes through the MLPs alone, so their batch norms see one view's batch (as both papers do).
        """
        pooled = [self.tower.pool(features[f]) for f in self.student_forwards()]
        predictions = [self.predictor(self.head(x)) for x in pooled]
        with torch.no_grad():
            targets = [self.teacher_head(self.teacher.module.pool(features[f])) for f in self.teacher_forwards()]
        metrics = {"emb_std": embedding_std(pooled[0]), "target_std": embedding_std(targets[0]),
                   "momentum": self.momentum_now}
        return predictions, targets, metrics

    def train(self, mode: bool = True) -> "MomentumSiamese":
        """Train the online MLPs; the target projector follows the mode too, so it normalises with batch statistics."""
        super().train(mode)
        self.teacher_head.train(mode)
        return self
