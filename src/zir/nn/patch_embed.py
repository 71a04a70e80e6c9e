"""Patch embedding: cut an image into non-overlapping patches and project each to a token."""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError, ShapeError


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int becomes (int, int); a pair stays a pair."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ConfigError(f"expected an int or a pair (height, width); got {value!r}")
    return pair  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """(B, C, H, W) images -> (B, N, D) tokens, N = (H / ph) * (W / pw), in row-major patch order.

    Any image size divisible by the patch size is accepted (the tower resamples position embeddings);
    `img_size` is the native size that sets the position-embedding grid.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        for side, (size, patch) in zip(("height", "width"), zip(self.img_size, self.patch_size)):
            if size % patch != 0:
                raise ConfigError(f"img_size {side} {size} is not divisible by patch_size {patch}")
        self.grid_size = self.grid_for(*self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = self.build_projection(in_chans, embed_dim, bias)

    overlapping = False  # whether a token sees pixels outside its own patch

    def build_projection(self, in_chans: int, embed_dim: int, bias: bool) -> nn.Module:
        """The (B, C, H, W) -> (B, D, rows, cols) map: one patch-sized convolution (subclasses change it)."""
        return nn.Conv2d(in_chans, embed_dim, self.patch_size, self.patch_size, bias=bias)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The (rows, cols) patch grid of an image of this size."""
        return height // self.patch_size[0], width // self.patch_size[1]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ShapeError naming what is wrong with an image batch."""
        if x.ndim != 4:
            raise ShapeError(f"expected images of shape (B, C, H, W); got a tensor of shape {tuple(x.shape)}")
        _, C, H, W = x.shape
        if C != self.in_chans:
            raise ShapeError(f"expected {self.in_chans} image channels; got {C} (input shape {tuple(x.shape)})")
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ShapeError(f"image size {H}x{W} is not divisible by the patch size {ph}x{pw}")

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D).

        `hidden` (B, N) bool marks patches whose pixels no token may see (MAE's dropped or iBOT's masked
        patches). Each token here sees only its own patch, so nothing needs doing; a stem whose tokens see
        their neighbours (`overlapping`) blanks those pixels first.
        """
        self.check_input(x)
        return self.proj(x).flatten(2).transpose(1, 2)
