"""SimMIM: masked image modelling by raw-pixel regression (Xie et al., 2022, "SimMIM").

Random squares of the image (mask patches, larger than the tower's patches) are hidden, and the tower
sees every position: hidden patches enter as a learned mask token, unlike MAE, which drops them, so a
windowed tower such as Swin keeps its full grid. A one-layer head (a 1x1 convolution to stride^2 x 3
values per output token, then a pixel shuffle) predicts the raw (normalised) pixels from the last feature
map: the last stage's for Swin (stride = patch x 2^(stages - 1)), the patch tokens for a plain ViT
(stride = patch). The loss is the L1 distance on hidden pixels only (`zir.losses.simmim`).

Where the mask token lives: the tower owns it (`forward_tokens(x, mask=m)`; `build_model` builds a ViT
or Swin tower with `mask_token: true` for SimMIM, as SimMIM's released checkpoints have it). A freshly
built (all-zero) token gets SimMIM's initialisation, a truncated normal of std 0.02; a loaded one is kept.

Published defaults (Swin-B at 192 px, ViT-B at 224 px): mask ratio 0.6, mask patches of 32 px (1/6 of
a 192 px side), AdamW lr 8e-4 (batch 2048), weight decay 0.05, crops of 0.67-1 of the image with flips.
Scaled for 32-pixel images: mask patches of 32/192 of the side rounded to the nearest multiple of the
tower's patch size that divides the side (4 px at 32 px), mild crops (the `light` pipeline, 0.5-1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.simmim import masked_l1
from zir.objectives.base import DEFAULT_MASK, Forward, Loss, MaskSpec, Objective, mask_plan, register_objective, views_needed
from zir.models.tower import require

HINT = "(ViT and Swin towers take it)"
# SimMIM's 32-pixel mask patches on 192-pixel images: the fraction of the side one mask patch spans.
MASK_PATCH_FRACTION = 32 / 192


def default_mask_patch_size(side: int, patch: int) -> int:
    """SimMIM's mask patch scaled to an image `side`: a multiple of `patch` dividing `side`, nearest in ratio."""
    target = side * MASK_PATCH_FRACTION
    options = [m for m in range(patch, side + 1, patch) if side % m == 0]
    return min(options, key=lambda m: (abs(math.log(m / target)), -m))


def pixel_mask(mask: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """A (B, N) patch mask over a (rows, cols) grid -> a (B, 1, rows * patch, cols * patch) float pixel mask."""
    m = mask.reshape(mask.shape[0], *grid).to(torch.float32)
    return m.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2).unsqueeze(1)


class SimMIM(Objective):
    """Masked image modelling: hidden patches as a mask token in the tower, a linear head regresses their pixels."""

    name = "simmim"
    needs_mask_token = True

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        view: str = "global_0",
        mask_ratio: float = 0.6,
        mask_patch_size: int | None = None,
        mask_name: str = DEFAULT_MASK,
    ) -> None:
        """SimMIM on `view` of `tower` (Swin or ViT); `mask_patch_size` in pixels, scaled from SimMIM's by default."""
        super().__init__(towers, tower)
        views_needed([view])  # a known view name
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"simmim mask_ratio={mask_ratio}: expected 0 < mask_ratio < 1")
        t = self.tower
        require("simmim", tower, t, "image")
        require("simmim", tower, t, "has_mask_token", f"set model.towers.{tower}.mask_token: true {HINT}")
        fresh = t.mask_token.device.type != "meta" and not t.mask_token.detach().any()
        if fresh:  # freshly built (all zeros): SimMIM's init; a loaded token is kept
            with torch.no_grad():
                nn.init.trunc_normal_(t.mask_token, std=0.02)
        stride = tuple(t.feature_stride)
        patch = t.patch_size[0]
        side = t.img_size[0]
        if stride[0] != stride[1] or t.patch_size[0] != t.patch_size[1]:
            raise ConfigError(f"simmim: tower {tower!r} has a non-square stride {stride}; expected square patches")
        if mask_patch_size is None:
            mask_patch_size = default_mask_patch_size(side, patch)
        elif isinstance(mask_patch_size, bool) or not isinstance(mask_patch_size, int) or mask_patch_size % patch:
            raise ConfigError(f"simmim mask_patch_size={mask_patch_size!r}: expected a multiple of the tower's "
                              f"patch size {patch}")
        self.view, self.mask_ratio, self.mask_patch_size = view, float(mask_ratio), int(mask_patch_size)
        self.mask_spec = MaskSpec(mask_name, self.mask_ratio, "random", self.mask_patch_size)
        self.patch, self.stride, self.prefix = patch, stride[0], t.num_prefix_tokens
        # SimMIM's head: one 1x1 convolution to every pixel a token covers, laid out by a pixel shuffle
        self.head = nn.Sequential(nn.Conv2d(t.embed_dim, self.stride**2 * 3, kernel_size=1),
                                  nn.PixelShuffle(self.stride))

    def view_plan(self) -> dict:
        """The masked view with mild crops and flips (SimMIM's 0.67-1 crops are closest to `light`)."""
        return {**views_needed([self.view]), **mask_plan(self.view, self.mask_spec), "pipeline": "light"}

    def forwards(self) -> list[Forward]:
        """The tower on the masked view, every position encoded, hidden ones as the mask token."""
        return [Forward(self.tower_name, self.view, self.mask_spec.name, fill=self.name)]

    def predict(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Tower tokens (B, P + N', D) of an image of `size` (H, W) -> predicted pixels (B, 3, H, W)."""
        rows, cols = size[0] // self.stride, size[1] // self.stride
        feats = tokens[:, self.prefix:]
        if feats.shape[1] != rows * cols:
            raise ConfigError(f"simmim: {feats.shape[1]} output tokens do not form the {rows}x{cols} grid of a "
                              f"{size[0]}x{size[1]} image at stride {self.stride}")
        fmap = feats.transpose(1, 2).reshape(feats.shape[0], feats.shape[2], rows, cols)
        return self.head(fmap)

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1 on hidden pixels: images, pred (B, 3, H, W); mask (B, N) over the tower's patches, True = hidden."""
        grid = (images.shape[-2] // self.patch, images.shape[-1] // self.patch)
        return masked_l1(pred, images, pixel_mask(mask.to(images.device), grid, self.patch))

    def forward(self, batch, features) -> Loss:
        """Reconstruction loss of the masked view's hidden pixels from the cached tower features."""
        images = batch.views[self.view]
        m = batch.mask(self.view, self.mask_spec.name)
        pred = self.predict(features[self.forwards()[0]], images.shape[-2:])
        return Loss(self.loss(images, pred, m.mask), {"mask_ratio": m.ratio})


register_objective("simmim", SimMIM)
