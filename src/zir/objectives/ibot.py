"""iBOT: masked image modelling with an online tokenizer (Zhou et al., 2022, "iBOT").

The student sees each global crop with a block-wise mask: hidden patches are replaced by the tower's
learned mask token (BEiT-style, so the student still outputs a token at every position; the tower owns
the token, as DINOv2's does, and `build_model` builds it with one). The teacher (the same EMA
teacher as DINO's, shared when both objectives are in one model) sees the unmasked crop. On the hidden
patches the student's patch logits are trained to match the teacher's centred and sharpened patch
distribution, with a head and a centre of its own. The heads run on the hidden patches only (DINOv2's
saving), and the patch centre is the running mean of the teacher's logits there. The loss is
`zir.losses.ibot`.

Published defaults (ViT-S/16): patch head to 8192 outputs, teacher patch temperature 0.04 warmed up to
0.07 over 30 epochs, student temperature 0.1, centre momentum 0.9, block masks hiding 10-50% of the
patches of half the images, loss weight 1. Scaled for CPU-scale towers: head 512 -> 128 -> 2048 outputs,
a fixed 30% block mask on every global crop (the data pipeline draws one ratio per view).
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.dino import entropy, teacher_probs, update_center
from zir.losses.ibot import ibot_patch_loss
from zir.models.tower import require
from zir.models.vit import gather_tokens
from zir.objectives.base import DEFAULT_MASK, Forward, Loss, MaskSpec, register_objective
from zir.objectives.dino import CenteredDistillation
from zir.objectives.heads import DINOHead


class IBOT(CenteredDistillation):
    """iBOT masked patch prediction against the EMA teacher's patch tokens; fills hidden patches with a mask token.

    Its teacher is DINO's `image_teacher` when both are in one model (the model builds it once)."""

    name = "ibot"
    needs_mask_token = True

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        global_views: int = 2,
        mask_ratio: float = 0.3,
        out_dim: int = 2048,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        head_layers: int = 3,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_frac: float = 0.3,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        mask_name: str = DEFAULT_MASK,
    ) -> None:
        """iBOT on `global_views` block-masked global crops of `tower`."""
        super().__init__(towers, tower, (1, 1, out_dim), student_temp, teacher_temp, warmup_teacher_temp, warmup_frac,
                         center_momentum, momentum, final_momentum)
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"ibot mask_ratio={mask_ratio}: expected 0 < mask_ratio < 1")
        if global_views < 1:
            raise ConfigError(f"ibot global_views={global_views}: expected >= 1")
        t = self.tower
        require("ibot", tower, t, "image")
        require("ibot", tower, t, "has_mask_token", "(ViT and Swin towers have one unless built with mask_token: false)")
        if tuple(t.feature_stride) != tuple(t.patch_size):
            raise ConfigError(f"ibot: the {type(t).__name__} tower {tower!r} outputs one token per "
                              f"{t.feature_stride[0]}x{t.feature_stride[1]} pixels, not one per patch (feature_stride != "
                              "patch_size), which iBOT's patch targets need; use simmim for masked image modelling")
        self.global_views, self.mask_ratio = int(global_views), float(mask_ratio)
        self.mask_spec = MaskSpec(mask_name, self.mask_ratio, "block")
        self.distil_head(DINOHead(self.tower.embed_dim, out_dim, hidden_dim, bottleneck_dim, head_layers))
        self.prefix = self.tower.num_prefix_tokens

    def view_plan(self) -> dict:
        """Block-masked global crops with DINO's augmentation."""
        return {"global": self.global_views, "pipeline": "dino",
                "masks": {f"global_{i}": (self.mask_spec,) for i in range(self.global_views)}}

    def student_forwards(self) -> list[Forward]:
        """The student on each masked global crop, hidden patches filled with the mask token."""
        return [Forward(self.tower_name, f"global_{i}", self.mask_spec.name, self.name) for i in range(self.global_views)]

    def teacher_forwards(self) -> list[Forward]:
        """The teacher on each unmasked global crop."""
        return [Forward(self.teacher_name, f"global_{i}") for i in range(self.global_views)]

    def forwards(self) -> list[Forward]:
        """Student (masked, filled) then teacher (unmasked) forwards on the global crops."""
        return self.student_forwards() + self.teacher_forwards()

    def forward(self, batch, features) -> Loss:
        """Masked patch prediction loss averaged over the global crops."""
        p = self.prefix
        losses, t_all = [], []
        for fs, ft in zip(self.student_forwards(), self.teacher_forwards()):
            # heads only on the hidden patches (as DINOv2): every sample hides the same count, (B, M)
            hidden = batch.mask(fs.view, fs.mask).hidden.to(features[fs].device)
            s_logits = self.head(gather_tokens(features[fs][:, p:], hidden))
            with torch.no_grad():
                t_logits = self.teacher_head(gather_tokens(features[ft][:, p:], hidden))
            every = torch.ones(hidden.shape, dtype=torch.bool, device=hidden.device)
            losses.append(ibot_patch_loss(s_logits, t_logits, every, self.center, self.student_temp, self.teacher_temp_now))
            t_all.append(t_logits)
        loss = torch.stack(losses).mean()
        with torch.no_grad():
            h = entropy(teacher_probs(torch.cat(t_all), self.center, self.teacher_temp_now))
        if self.training:
            update_center(self.center, torch.cat(t_all), self.center_momentum)
        return Loss(loss, {"teacher_entropy": float(h), "teacher_temp": self.teacher_temp_now})


register_objective("ibot", IBOT)
