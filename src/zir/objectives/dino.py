"""DINO: self-distillation with no labels (Caron et al., 2021, "Emerging Properties in Self-Supervised ViTs").

A student tower and head see every crop (global and local); a teacher (an EMA of the student: tower and
head) sees the global crops only. The teacher's outputs are centred (a running mean of its logits is
subtracted) and sharpened (a low temperature), and the student's softmax is trained to match them on every
pair of different crops. Centring prevents one dimension from dominating, sharpening prevents the uniform
output; together they avoid collapse. The loss and its parts are in `zir.losses.dino`; this file holds
the teacher's centre and schedules (the head, `DINOHead`, is in `zir.objectives.heads`).

Published defaults (ViT-S/16, 100 epochs): head MLP 384 -> 2048 -> 2048 -> bottleneck 256, L2-normalised,
weight-normalised last layer to 65536 outputs with its norm fixed; student temperature 0.1; teacher
temperature 0.04 warmed up to 0.04-0.07 over the first 30 epochs; centre momentum 0.9; teacher momentum
0.996 -> 1 by a cosine schedule; 2 global crops of 224 and 8 local crops of 96. Scaled for 32-pixel images
and CPU-scale towers: head 512 -> bottleneck 128 -> 4096 outputs, teacher temperature warmed up over the
first 30% of steps when `teacher_temp` is raised (0.04 -> 0.04 by default, as published), 6 local crops
of 12 pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.losses.dino import dino_loss, entropy, soft_cross_entropy, student_log_probs, teacher_probs, update_center
from zir.objectives.base import DEFAULT_MASK, Forward, Loss, register_objective
from zir.objectives.heads import DINOHead
from zir.objectives.self_distillation import SelfDistillation


def teacher_temp_at(step: int, total_steps: int, warmup_temp: float, temp: float, warmup_frac: float) -> float:
    """DINO's teacher temperature: linear from `warmup_temp` to `temp` over the first `warmup_frac` of steps."""
    warm = int(round(warmup_frac * total_steps))
    if step >= warm or warm <= 0:
        return temp
    return warmup_temp + (temp - warmup_temp) * step / warm


def embedding_std(x: torch.Tensor) -> float:
    """Per-dimension std over the batch of L2-normalised embeddings (B, D), times sqrt(D): ~1 healthy, 0 collapsed."""
    z = F.normalize(x.detach().float(), dim=-1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[-1])) if z.shape[0] > 1 else 0.0


class CenteredDistillation(SelfDistillation):
    """What DINO, iBOT and masked_dino share beyond the EMA teacher and head (`SelfDistillation`): the teacher's
    logits centred by a running mean (`center`, of shape `center_shape`) and sharpened by a temperature warmed
    up from `warmup_teacher_temp` to `teacher_temp` over the first `warmup_frac` of the steps."""

    def __init__(self, towers: dict[str, nn.Module], tower: str, center_shape: tuple[int, ...], student_temp: float,
                 teacher_temp: float, warmup_teacher_temp: float, warmup_frac: float, center_momentum: float,
                 momentum: float, final_momentum: float) -> None:
        """Check and keep the temperatures and the centre's momentum; declare the teacher (SelfDistillation)."""
        super().__init__(towers, tower, momentum, final_momentum)
        temps = {"student_temp": student_temp, "teacher_temp": teacher_temp, "warmup_teacher_temp": warmup_teacher_temp}
        for key, val in temps.items():
            if val <= 0:
                raise ConfigError(f"{self.name} {key}={val}: expected > 0")
        if not 0 <= center_momentum < 1:
            raise ConfigError(f"{self.name} center_momentum={center_momentum}: expected 0 <= m < 1")
        self.student_temp, self.teacher_temp, self.warmup_teacher_temp = student_temp, teacher_temp, warmup_teacher_temp
        self.warmup_frac, self.center_momentum = warmup_frac, center_momentum
        self.teacher_temp_now = warmup_teacher_temp if warmup_frac > 0 else teacher_temp
        self.register_buffer("center", torch.zeros(*center_shape))

    def after_step(self, step: int, total_steps: int) -> None:
        """The head's EMA (SelfDistillation); the teacher temperature for the next step."""
        super().after_step(step, total_steps)
        self.teacher_temp_now = teacher_temp_at(step + 1, total_steps, self.warmup_teacher_temp, self.teacher_temp,
                                                self.warmup_frac)


class DINO(CenteredDistillation):
    """DINO self-distillation: student (all crops) vs EMA teacher (global crops), centred and sharpened."""

    name = "dino"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        global_views: int = 2,
        local_views: int = 6,
        out_dim: int = 4096,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        head_layers: int = 3,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_frac: float = 0.3,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        freeze_last_layer: float = 0.01,
        fill: str = "",
        mask_name: str = DEFAULT_MASK,
    ) -> None:
        """DINO on `global_views` global and `local_views` local crops; `fill='ibot'` reads iBOT's masked globals
        (its mask `mask_name`).

        `freeze_last_layer`: the fraction of steps at the start during which the head's last layer gets no
        gradient (DINO: the first epoch of 100), which steadies the start.
        """
        super().__init__(towers, tower, (1, out_dim), student_temp, teacher_temp, warmup_teacher_temp, warmup_frac,
                         center_momentum, momentum, final_momentum)
        if global_views < 1 or local_views < 0 or global_views + local_views < 2:
            raise ConfigError(f"dino global_views={global_views}, local_views={local_views}: expected >= 1 global and >= 2 crops")
        self.global_views, self.local_views = int(global_views), int(local_views)
        self.fill, self.fill_mask = fill, (mask_name if fill else "")
        if not 0.0 <= freeze_last_layer < 1.0:
            raise ConfigError(f"dino freeze_last_layer={freeze_last_layer}: expected a fraction of the steps, 0 <= f < 1")
        self.freeze_last_layer = float(freeze_last_layer)
        self.distil_head(DINOHead(self.tower.embed_dim, out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer))
        self.head.last_layer.frozen = self.freeze_last_layer > 0  # until after_step knows the run's length

    def view_plan(self) -> dict:
        """Global and local crops with DINO's multi-crop augmentation."""
        return {"global": self.global_views, "local": self.local_views, "pipeline": "dino"}

    def student_forwards(self) -> list[Forward]:
        """The student on every crop, globals first (masked with the filler's token when `fill` is set)."""
        g = [Forward(self.tower_name, f"global_{i}", self.fill_mask, self.fill) for i in range(self.global_views)]
        return g + [Forward(self.tower_name, f"local_{i}") for i in range(self.local_views)]

    def teacher_forwards(self) -> list[Forward]:
        """The teacher on the global crops only."""
        return [Forward(self.teacher_name, f"global_{i}") for i in range(self.global_views)]

    def forwards(self) -> list[Forward]:
        """Student forwards on every crop, then teacher forwards on the globals."""
        return self.student_forwards() + self.teacher_forwards()

    def forward(self, batch, features) -> Loss:
        """The DINO loss over all (teacher global, student crop) pairs, with collapse monitors as metrics."""
        student_emb = [self.tower.pool(features[f]) for f in self.student_forwards()]
        teacher_tower = self.teacher.module
        with torch.no_grad():
            t_logits = [self.teacher_head(teacher_tower.pool(features[f])) for f in self.teacher_forwards()]
        s_logits = [self.head(e) for e in student_emb]
        loss = dino_loss(s_logits, t_logits, self.center, self.student_temp, self.teacher_temp_now)
        with torch.no_grad():
            p_t = teacher_probs(torch.cat(t_logits), self.center, self.teacher_temp_now)
            h_t = entropy(p_t)
            h_mean = entropy(p_t.mean(dim=0))  # entropy of the batch's average: ~0 when every image picks one prototype
            logp_s = student_log_probs(torch.cat(s_logits[: self.global_views]), self.student_temp)
            kl = (soft_cross_entropy(p_t, logp_s) - h_t) if self.global_views > 0 else torch.tensor(0.0)
            metrics = {
                "teacher_entropy": float(h_t),
                "teacher_batch_entropy": float(h_mean),
                "max_entropy": math.log(p_t.shape[-1]),
                "kl": float(kl),
                "emb_std": embedding_std(student_emb[0]),
                "teacher_temp": self.teacher_temp_now,
                "momentum": self.momentum_now,
            }
        if self.training:
            update_center(self.center, torch.cat(t_logits), self.center_momentum)
        return Loss(loss, metrics)

    def after_step(self, step: int, total_steps: int) -> None:
        """The head's EMA and the temperature (CenteredDistillation); the head's last layer frozen at first."""
        super().after_step(step, total_steps)
        self.head.last_layer.frozen = step + 1 < self.freeze_last_layer * total_steps


register_objective("dino", DINO)
