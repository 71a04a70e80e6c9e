"""MoCo v3 (Chen, Xie, He, 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

The online network (the tower, a projector and a predictor) embeds two views; a momentum encoder (an EMA of
the tower and the projector, no gradient) embeds them too. Each online prediction q must pick the momentum
key k of the other view of its own image among the keys of the whole batch (gathered from every rank under
torch.distributed): InfoNCE at temperature tau, scaled by 2 tau, symmetric over the views (Algorithm 1; the
loss is in `zir.losses.moco`, the online/momentum plumbing, shared with BYOL, in `zir.objectives.siamese`).
There is no memory queue: the batch supplies the negatives.

ViT training is unstable in the paper's large runs (sudden dips in accuracy, traced to the first layer);
freezing the patch projection at its random initialisation cures it (Section 4.1). `freeze_patch_embed:
true` does that for a ViT tower with the patch stem: the tower's `patch_embed` gets no gradient (and, with
the rest of the model, a teacher copy that stays equal to it). Every objective training that tower sees
it frozen.

Published defaults (ViT-B/16, 300 epochs, batch 4096): projector 3-layer MLP D -> 4096 -> 4096 -> 256,
predictor 2-layer MLP 256 -> 4096 -> 256, batch norm in every hidden layer and after the last (without
affine), linears without bias; temperature 0.2; momentum 0.99 -> 1 by a cosine schedule; AdamW (lr 1.5e-4 x
batch/256, weight decay 0.1, 40 warm-up epochs); BYOL's augmentations; the patch projection frozen.
Scaled for CPU-scale towers: hidden widths 512, projection 128; the recipe freezes the patch projection.
"""

from __future__ import annotations

from torch import nn

from zir.errors import ConfigError
from zir.losses.moco import moco_v3_loss
from zir.models.vit import VisionTransformer
from zir.objectives.base import Loss, register_objective
from zir.objectives.siamese import MLPHead, MomentumSiamese


def freeze_patch_projection(objective: str, tower_name: str, tower: nn.Module) -> None:
    """Freeze a ViT tower's patch projection where it is (MoCo v3's random patch projection), or refuse in one line."""
    if not isinstance(tower, VisionTransformer) or tower.stem_type != "patch":
        kind = f"ViT with stem {tower.stem_type!r}" if isinstance(tower, VisionTransformer) else type(tower).__name__
        raise ConfigError(f"{objective} freeze_patch_embed: the {kind} tower {tower_name!r} has no patch projection "
                          "to freeze; expected a ViT tower with the patch stem (stem: patch)")
    tower.patch_embed.requires_grad_(False)


class MoCoV3(MomentumSiamese):
    """MoCo v3: symmetric InfoNCE between online predictions and momentum keys of the other view."""

    name = "moco_v3"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        hidden_dim: int = 512,
        out_dim: int = 128,
        pred_hidden_dim: int = 512,
        projector_layers: int = 3,
        temperature: float = 0.2,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        freeze_patch_embed: bool = False,
    ) -> None:
        """Projector D -> `hidden_dim` (x `projector_layers` - 1) -> `out_dim`, predictor `out_dim` -> `pred_hidden_dim`
        -> `out_dim`, both with a last batch norm (MoCo v3's ViT MLPs)."""
        super().__init__(towers, tower, momentum, final_momentum)
        if temperature <= 0:
            raise ConfigError(f"moco_v3 temperature={temperature}: expected > 0")
        if not isinstance(freeze_patch_embed, bool):
            raise ConfigError(f"moco_v3 freeze_patch_embed={freeze_patch_embed!r}: expected true or false")
        self.temperature = float(temperature)
        self.distil_head(MLPHead(self.tower.embed_dim, hidden_dim, out_dim, projector_layers, bias=False, last_bn=True))
        self.predictor = MLPHead(out_dim, pred_hidden_dim, out_dim, 2, bias=False, last_bn=True)
        if freeze_patch_embed:
            freeze_patch_projection(self.name, self.tower_name, self.tower)

    def forward(self, batch, features) -> Loss:
        """ctr(q1, k2) + ctr(q2, k1), each 2 tau x the cross-entropy against the batch's keys."""
        (q1, q2), (k1, k2), metrics = self.predictions_and_targets(features)
        loss, acc = moco_v3_loss(q1, q2, k1, k2, self.temperature)
        return Loss(loss, {**metrics, "acc": float(acc)})


register_objective("moco_v3", MoCoV3)
