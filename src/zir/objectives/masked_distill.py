"""Masked self-distillation: the student sees a view with patches dropped, the EMA teacher the whole view.

DINO's loss (a centred, sharpened teacher softmax as the target of the student's) between the teacher on the
full view and the student on the *same* view with only `keep` of its patches (Masked Siamese Networks, Assran
et al. 2022, without their second augmentation; the masked-prediction term of SigLIP 2 and TIPS at the image
level). Why it is here: it reads the one masked encoding that MAE, FLIP-style CLIP and CoCa read in the unified
recipe, so self-distillation adds only a teacher forward without gradients and a small head, not DINO's two
global and several local student forwards.

`distill_fraction` < 1 computes the term on the first ceil(fraction x B) rows of each (shuffled) batch: the
teacher encodes only those, the student's shared masked encoding is read for them (MAE still reads every
row). The teacher's forward is the largest part of the term where the towers' arithmetic dominates (about
0.3x a CLIP step with a ViT-Ti-wide tower, docs/benchmarks.md), so a quarter of the batch saves most of it.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.dino import entropy, soft_cross_entropy, student_log_probs, teacher_probs, update_center
from zir.models.tower import require
from zir.objectives.base import (DEFAULT_MASK, Forward, Loss, MaskSpec, batch_fraction, mask_plan, register_objective,
                                 views_needed)
from zir.objectives.dino import CenteredDistillation, embedding_std
from zir.objectives.heads import DINOHead


class MaskedDistillation(CenteredDistillation):
    """Student on `view` with a random `keep` fraction of its patches, EMA teacher on all of them; DINO's loss."""

    name = "masked_dino"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        view: str = "image",
        keep: float = 0.5,
        out_dim: int = 1024,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        head_layers: int = 3,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_frac: float = 0.3,
        center_momentum: float = 0.9,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        mask_name: str = DEFAULT_MASK,
        distill_fraction: float = 1.0,
    ) -> None:
        """Distil the teacher's view of `view` into the student's masked view (keep < 1: the mask is the signal),
        on the first `distill_fraction` of each batch."""
        super().__init__(towers, tower, (1, out_dim), student_temp, teacher_temp, warmup_teacher_temp, warmup_frac,
                         center_momentum, momentum, final_momentum)
        if not 0.0 < keep < 1.0:
            raise ConfigError(f"masked_dino keep={keep}: expected 0 < keep < 1 (the student must see fewer patches)")
        require("masked_dino", tower, self.tower, "can_drop_tokens", "the student encodes the kept patches alone")
        views_needed([view])  # a known view name, checked at build
        self.view, self.keep = view, float(keep)
        self.distill_fraction = batch_fraction(distill_fraction, "distill_fraction")
        self.mask_spec = MaskSpec(mask_name, 1.0 - self.keep, "random")
        self.distil_head(DINOHead(self.tower.embed_dim, out_dim, hidden_dim, bottleneck_dim, head_layers))

    def view_plan(self) -> dict:
        """The view (lightly augmented when it is `image`) with a random mask of 1 - keep of its patches."""
        plan = {**views_needed([self.view]), **mask_plan(self.view, self.mask_spec)}
        return {**plan, "pipeline": "light"} if self.view == "image" else plan

    def forwards(self) -> list[Forward]:
        """The student on the masked view (visible patches only, every row: the encoding MAE shares), the teacher
        on the whole view (the rows the term reads)."""
        return [Forward(self.tower_name, self.view, self.mask_spec.name),
                Forward(self.teacher_name, self.view, rows=self.distill_fraction)]

    def forward(self, batch, features) -> Loss:
        """Cross-entropy of the student's softmax against the teacher's centred, sharpened one."""
        student, teacher = self.forwards()
        rows = len(features[teacher])
        s_emb = self.tower.pool(features[student][:rows])
        with torch.no_grad():
            t_logits = self.teacher_head(self.teacher.module.pool(features[teacher]))
            p_t = teacher_probs(t_logits, self.center, self.teacher_temp_now)
        loss = soft_cross_entropy(p_t, student_log_probs(self.head(s_emb), self.student_temp))
        with torch.no_grad():
            h_t = entropy(p_t)
            metrics = {"teacher_entropy": float(h_t), "teacher_batch_entropy": float(entropy(p_t.mean(dim=0))),
                       "kl": float(loss.detach() - h_t), "emb_std": embedding_std(s_emb),
                       "teacher_temp": self.teacher_temp_now, "momentum": self.momentum_now}
        if self.training:
            update_center(self.center, t_logits, self.center_momentum)
        return Loss(loss, metrics)


register_objective("masked_dino", MaskedDistillation)
