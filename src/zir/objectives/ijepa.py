"""I-JEPA: predicting target blocks in latent space (Assran et al., 2023, "Self-Supervised Learning from
Images with a Joint-Embedding Predictive Architecture").

Two masks on one view (`zir.data.masking`): the targets, `target_blocks` rectangles whose union hides
`target_ratio` of the patches (`jepa_targets`), and the context, one large square block with every target
patch removed from it (`jepa_context`, `context_ratio` of the patches hidden). The context encoder (the
student tower) encodes the context patches only (`forward_tokens(x, keep)`, as MAE's encoder); the EMA target
encoder (the model's `<tower>_teacher`) encodes the whole view without gradients. A narrow predictor
transformer (`JEPAPredictor`) takes the context tokens with their positions, appends a learned mask token
with the position of every target patch, and predicts the target encoder's features there, layer-normalised
(`zir.losses.ijepa`). No pixels are predicted and no augmentation is needed beyond a crop.

One difference from the paper, chosen for cost: the paper runs the predictor once per target block (the
context repeated for each); here the predictor sees the union of the blocks at once, as the data pipeline
hides them as one mask, so the mask tokens of different blocks attend to each other (they carry positions
only, no content of their targets). The model owns the teacher and moves it on DINO's cosine schedule
(`TeacherSpec`), not the paper's linear one; it is shared with DINO, BYOL or masked_dino when the momenta agree.

Published defaults (ViT-H/14 at 224 px, ImageNet, 300 epochs, batch 2048): 4 target blocks of scale 0.15-0.2
each with aspect 0.75-1.5, a context block of scale 0.85-1.0 (aspect 1), predictor 12 blocks of width 384,
EMA momentum 0.996 -> 1.0, smooth L1 against layer-normalised targets, crops of 0.3-1 and no other
augmentation, AdamW (lr 1e-3, weight decay 0.04 -> 0.4). Scaled for 32-pixel images (an 8x8 patch grid) and
CPU-scale towers: 4 target blocks hiding 40% of the patches in all (10% each: on 64 patches, four blocks of
15-20% would leave little context), the context 45% hidden (the targets, and what lies outside its block),
predictor 2 blocks of half the tower's width (at least 64) with 4 heads, EMA 0.996 -> 1.0, the `light` crops
(0.5-1 and flips). The data pipeline needs the same count of patches hidden in every image, so both masks
hide a fixed fraction, where the paper's vary with the blocks drawn.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.ijepa import LOSS_KINDS, ijepa_loss
from zir.models.tower import require
from zir.models.vit import gather_tokens
from zir.nn import Block, sincos_2d
from zir.objectives.base import Forward, Loss, MaskSpec, Objective, register_objective, views_needed
from zir.objectives.dino import embedding_std
from zir.objectives.teacher import EMATeacher, TeacherSpec


class JEPAPredictor(nn.Module):
    """The narrow predictor: context tokens and target mask tokens, each with its patch's sin-cos position,
    through a few transformer blocks; out come predictions in the tower's width at the target positions."""

    def __init__(self, embed_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float) -> None:
        """A predictor from and back to the tower's width `embed_dim`, `depth` blocks of width `dim`."""
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, embed_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """Context tokens (B, K, D) at patches context_idx (B, K) -> predictions (B, M, D) at target_idx (B, M)."""
        pos = sincos_2d(grid, self.dim).to(device=context.device, dtype=context.dtype)
        x = self.embed(context) + pos[context_idx]
        queries = self.mask_token.to(x.dtype) + pos[target_idx]
        x = torch.cat([x, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, context.shape[1]:]))


class IJEPA(Objective):
    """I-JEPA: predict the EMA target encoder's features of the target blocks from the context block."""

    name = "ijepa"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        view: str = "image",
        target_ratio: float = 0.4,
        target_blocks: int = 4,
        context_ratio: float = 0.45,
        predictor_dim: int | None = None,
        predictor_depth: int = 2,
        predictor_heads: int = 4,
        mlp_ratio: float = 4.0,
        loss: str = "smooth_l1",
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        target_mask: str = "jepa_targets",
        context_mask: str = "jepa_context",
    ) -> None:
        """I-JEPA on `view` of `tower`; the predictor's width defaults to half the tower's, at least 64."""
        super().__init__(towers, tower)
        views_needed([view])  # a known view name
        t = self.tower
        require("ijepa", tower, t, "image")
        require("ijepa", tower, t, "can_drop_tokens", "its context encoder sees the context patches alone")
        if tuple(t.feature_stride) != tuple(t.patch_size):
            stride = f"{t.feature_stride[0]}x{t.feature_stride[1]}"
            raise ConfigError(f"ijepa: the {type(t).__name__} tower {tower!r} outputs one token per {stride} pixels, "
                              "not one per patch (feature_stride != patch_size), which I-JEPA's patch targets need")
        for key, val in (("target_ratio", target_ratio), ("context_ratio", context_ratio)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0.0 < val < 1.0:
                raise ConfigError(f"ijepa {key}={val!r}: expected a fraction 0 < {key} < 1 of the patches hidden")
        if context_ratio < target_ratio:
            raise ConfigError(f"ijepa context_ratio={context_ratio}: expected at least target_ratio={target_ratio} "
                              "(the context hides every target patch)")
        for key, val in (("target_blocks", target_blocks), ("predictor_depth", predictor_depth),
                         ("predictor_heads", predictor_heads)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"ijepa {key}={val!r}: expected an integer >= 1")
        if loss not in LOSS_KINDS:
            raise ConfigError(f"ijepa loss={loss!r}: expected one of {', '.join(LOSS_KINDS)}")
        if target_mask == context_mask:
            raise ConfigError(f"ijepa target_mask={target_mask!r} and context_mask: expected two different mask names")
        dim = predictor_dim or max(64, t.embed_dim // 2)
        if dim % predictor_heads or dim % 4:
            raise ConfigError(f"ijepa predictor_dim={dim}: expected a multiple of predictor_heads={predictor_heads} "
                              "and of 4")
        self.view, self.loss_kind = view, loss
        self.target_spec = MaskSpec(target_mask, float(target_ratio), "jepa_targets", blocks=target_blocks)
        self.context_spec = MaskSpec(context_mask, float(context_ratio), "jepa_context", outside=target_mask)
        self.teacher_name = f"{self.tower_name}_teacher"
        self.teacher_spec = TeacherSpec(self.tower_name, momentum, final_momentum)
        self.momentum_now = self.teacher_spec.momentum
        self.prefix = t.num_prefix_tokens
        self.predictor = JEPAPredictor(t.embed_dim, dim, predictor_depth, predictor_heads, mlp_ratio)

    def view_plan(self) -> dict:
        """The view with the target and context masks, lightly augmented (a crop and a flip)."""
        return {**views_needed([self.view]), "masks": {self.view: (self.target_spec, self.context_spec)},
                "pipeline": "light"}

    def forwards(self) -> list[Forward]:
        """The student on the context patches only, the teacher on the whole view."""
        return [Forward(self.tower_name, self.view, self.context_spec.name), Forward(self.teacher_name, self.view)]

    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """The target encoder, run by the model as tower `<tower>_teacher`."""
        return {self.teacher_name: self.teacher_spec}

    @property
    def teacher(self) -> EMATeacher:
        """The EMA target encoder (the model's; built here when used without a model)."""
        return self.teacher_for(self.teacher_name)

    def no_weight_decay(self) -> set[str]:
        """The predictor's mask token."""
        return {"predictor.mask_token"}

    def after_step(self, step: int, total_steps: int) -> None:
        """The momentum the teacher moved with at this step, for the log (the model moves the teacher)."""
        super().after_step(step, total_steps)
        self.momentum_now = self.teacher_spec.momentum_at(step, total_steps)

    def predict(self, context_tokens: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """The student's context features (B, P + K, D) -> predicted target features (B, M, D)."""
        return self.predictor(context_tokens[:, self.prefix:], context_idx, target_idx, grid)

    def forward(self, batch, features) -> Loss:
        """The loss between the predictions and the teacher's layer-normalised features at the target patches.

        Metrics: `emb_std` and `target_std`, the spread over the batch of the student's mean context token and
        of the teacher's mean target token (`embedding_std`: about 1 spread, 0 collapsed), and `momentum`."""
        student, teacher = self.forwards()
        context = batch.mask(self.view, self.context_spec.name)
        targets = batch.mask(self.view, self.target_spec.name)
        tokens = features[student]
        context_idx, target_idx = context.keep.to(tokens.device), targets.hidden.to(tokens.device)
        pred = self.predict(tokens, context_idx, target_idx, context.grid)
        with torch.no_grad():
            target = gather_tokens(features[teacher][:, self.prefix:], target_idx)
        loss = ijepa_loss(pred, target, self.loss_kind)
        with torch.no_grad():
            metrics = {"emb_std": embedding_std(tokens[:, self.prefix:].mean(dim=1)),
                       "target_std": embedding_std(target.mean(dim=1)), "momentum": self.momentum_now}
        return Loss(loss, metrics)


register_objective("ijepa", IJEPA)
