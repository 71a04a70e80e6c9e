"""Convolutional stem for a ViT: stride-2 3x3 convolutions instead of one patch-sized projection.

Xiao et al. (2021, "Early convolutions help transformers see better") replace ViT's patchify layer with a
few stride-2 3x3 convolutions (BatchNorm, ReLU) and a final 1x1 projection, for about the cost of one
transformer block, and report faster, steadier optimisation. On zir's built-in `shapes` the small towers
learn an object's shape somewhat faster with it (docs/models.md has the figures). The token grid is the
same as the patch embedding's, so everything downstream (position embeddings, `keep`, pooling) is unchanged.
A token sees 3 pixels into the patch before it (patch 4), so the pixels of hidden patches are blanked
before the convolutions when MAE, FLIP or iBOT hide some: otherwise visible tokens would show the encoder
part of what it has to reconstruct.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zir.errors import ConfigError, ShapeError
from zir.nn.patch_embed import PatchEmbed


class ConvStem(PatchEmbed):
    """(B, C, H, W) images -> (B, N, D) tokens through log2(patch) stride-2 convolutions and a 1x1 projection.

    The widths double from D / 2**k to D / 2 over the k strided convolutions (at least 16 channels); the
    patch size must be a power of two, the same along both sides.
    """

    overlapping = True

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D); the pixels of `hidden` (B, N) patches are set to 0 (the mean) first."""
        self.check_input(x)
        if hidden is not None:
            ph, pw = self.patch_size
            rows, cols = self.grid_for(x.shape[-2], x.shape[-1])
            if hidden.shape != (x.shape[0], rows * cols):
                raise ShapeError(f"hidden mask of shape {tuple(hidden.shape)} does not fit {x.shape[0]} images of "
                                 f"{rows}x{cols} patches")
            grid = hidden.view(-1, 1, rows, cols).repeat_interleave(ph, dim=2).repeat_interleave(pw, dim=3)
            x = x.masked_fill(grid, 0.0)
        return super().forward(x)

    def build_projection(self, in_chans: int, embed_dim: int, bias: bool) -> nn.Module:
        """Stride-2 3x3 convolutions (BatchNorm, ReLU), one per halving, then a 1x1 convolution to embed_dim."""
        ph, pw = self.patch_size
        if ph != pw or ph < 2 or ph & (ph - 1):
            raise ConfigError(f"stem='conv' needs a square power-of-two patch size (2, 4, 8, 16, ...); got {ph}x{pw}")
        depth = int(math.log2(ph))
        layers: list[nn.Module] = []
        width_in = in_chans
        for i in range(depth):
            width = max(embed_dim // 2 ** (depth - i), 16)
            layers += [nn.Conv2d(width_in, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            width_in = width
        layers.append(nn.Conv2d(width_in, embed_dim, 1, bias=bias))
        return nn.Sequential(*layers)
