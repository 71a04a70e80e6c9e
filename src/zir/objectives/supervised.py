"""Supervised cross-entropy: a classifier head on the pooled image features, trained on the samples' labels.

This is the objective of fine-tuning (MAE, BEiT, DINO all report it beside the linear probe): start the
tower from a pretrained run (`model.init`), put a fresh linear head on its pooled features and train
both on labelled images, usually with layer-wise lr decay (`optim.layer_decay`) and label smoothing.

The head is `Linear(D, classes)`, optionally behind a norm (`head_norm: layer` as timm's `fc_norm`, or
`batch` as MAE's linear probe, a BatchNorm without affine parameters). MAE initialises the head with a
small std (2e-5) so that the first steps do not wreck the pretrained features; so does this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.objectives.base import Forward, Loss, Objective, register_objective, views_needed
from zir.objectives.heads import ClassifierHead

class Supervised(Objective):
    """Cross-entropy of a classifier head on the tower's pooled features against `batch.labels`."""

    name = "supervised"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        num_classes: int | None = None,
        tower: str = "image",
        view: str = "global_0",
        label_smoothing: float = 0.0,
        head_norm: str = "none",
        head_init_std: float = 2e-5,
        pipeline: str = "light",
    ) -> None:
        """A `num_classes`-way head on `tower`'s pooled features of `view`, augmented by `pipeline`."""
        super().__init__(towers, tower)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"supervised num_classes={num_classes!r}: expected a whole number >= 2 "
                              "(the classes of data.options.label, e.g. 5 for shapes' shape)")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"supervised label_smoothing={label_smoothing}: expected 0 <= label_smoothing < 1")
        if head_init_std <= 0:
            raise ConfigError(f"supervised head_init_std={head_init_std}: expected > 0")
        views_needed([view])  # a known view name
        self.view, self.num_classes = view, num_classes
        self.label_smoothing, self.pipeline = float(label_smoothing), pipeline
        self.head = ClassifierHead(self.tower.embed_dim, num_classes, head_norm, head_init_std)

    def view_plan(self) -> dict:
        """The one view the head reads, with this objective's augmentation (a mild crop and flip by default)."""
        return {**views_needed([self.view]), "pipeline": self.pipeline}

    def forwards(self) -> list[Forward]:
        """The tower on the view, unmasked."""
        return [Forward(self.tower_name, self.view)]

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token features (B, T, D) -> class logits (B, classes)."""
        return self.head(self.tower.pool(tokens))

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D), e.g. extracted once for evaluation -> class logits (N, classes), in the head's dtype."""
        return self.head(pooled.to(self.head.fc.weight.dtype))

    def forward(self, batch, features) -> Loss:
        """Cross-entropy (with label smoothing) and the batch's top-1 accuracy in percent."""
        labels = batch.labels
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ConfigError(f"supervised: labels in {int(labels.min())}..{int(labels.max())} do not fit "
                              f"num_classes={self.num_classes}; unlabelled data (label -1) cannot train a classifier")
        logits = self.logits(features[self.forwards()[0]]).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        top1 = 100.0 * (logits.argmax(dim=-1) == labels).float().mean()
        return Loss(loss, {"top1": float(top1)})


register_objective("supervised", Supervised)
