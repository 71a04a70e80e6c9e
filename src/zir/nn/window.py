"""Windowed self-attention (Swin): window partition and reverse, the shifted-window mask, relative
position bias, and patch merging.

Feature maps are channels-last `(B, H, W, C)`. Windows are kept as `(B, nW, N, C)` (nW windows of N tokens
each) so the batch never mixes with the window index; every shape is computed from the input, so any
grid that the window divides works.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError, ShapeError
from zir.nn.attention import attend
from zir.nn.patch_embed import to_2tuple


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) map -> (B, nW, wh * ww, C) windows, windows and tokens in row-major order."""
    B, H, W, C = x.shape
    wh, ww = window
    if H % wh or W % ww:
        raise ShapeError(f"a {H}x{W} feature map is not divisible into {wh}x{ww} windows")
    x = x.reshape(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // wh) * (W // ww), wh * ww, C)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """(B, nW, wh * ww, C) windows -> (B, H, W, C) map; the inverse of `window_partition`."""
    B, nW, N, C = windows.shape
    wh, ww = window
    H, W = grid
    if H % wh or W % ww or nW != (H // wh) * (W // ww) or N != wh * ww:
        raise ShapeError(
            f"{nW} windows of {N} tokens do not tile a {H}x{W} map with {wh}x{ww} windows"
        )
    x = windows.reshape(B, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def window_and_shift(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window and shift used on a grid: a side no larger than the window gets one window, no shift."""
    win = tuple(min(w, g) for w, g in zip(window, grid))
    sft = tuple(0 if g <= w else s for w, g, s in zip(window, grid, shift))
    return win, sft  # type: ignore[return-value]


def shifted_window_regions(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """(H, W) integer labels of the regions of the rolled map whose tokens were neighbours before the roll.

    After rolling the map by -shift, the last `shift` rows (and columns) hold tokens from the opposite
    border; each window may mix up to three row bands and three column bands, labelled apart here.
    """
    bands = []
    for size, win, sft in zip(grid, window, shift):
        band = torch.zeros(size, dtype=torch.long)
        if sft > 0:
            band[size - win: size - sft] = 1
            band[size - sft:] = 2
        bands.append(band)
    return bands[0][:, None] * 3 + bands[1][None, :]


def shifted_window_mask(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor | None:
    """(nW, N, N) boolean mask (True = may attend) for attention in the rolled map, or None without a shift."""
    if not any(shift):
        return None
    labels = shifted_window_regions(grid, window, shift)
    windows = window_partition(labels[None, :, :, None], window)[0, :, :, 0]  # (nW, N)
    return (windows[:, :, None] == windows[:, None, :]).to(device)


def relative_position_index(window: tuple[int, int], table_window: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, N) indices into a ((2 Th - 1) * (2 Tw - 1))-row bias table for the token pairs of a window.

    `table_window` (Th, Tw) is the window the table was built for; a smaller window (a grid smaller than
    the window) uses the part of the same table that covers its offsets.
    """
    wh, ww = window
    th, tw = table_window or window
    if wh > th or ww > tw:
        raise ConfigError(f"window {wh}x{ww} is larger than the {th}x{tw} window of the bias table")
    rows, cols = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    coords = torch.stack([rows.reshape(-1), cols.reshape(-1)])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N), offsets in [-(w-1), w-1]
    return (rel[0] + th - 1) * (2 * tw - 1) + (rel[1] + tw - 1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias (Swin).

    Parameter names follow the Swin papers' code (`qkv`, `proj`, `relative_position_bias_table`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int | tuple[int, int],
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(f"width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = to_2tuple(window_size)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.impl = "auto"
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """(H, N, N) relative position bias for a window no larger than the native one."""
        if tuple(window) == self.window_size:
            index = self.relative_position_index
        else:
            index = relative_position_index(window, self.window_size).to(self.relative_position_bias_table.device)
        N = window[0] * window[1]
        return self.relative_position_bias_table[index.reshape(-1)].view(N, N, -1).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, window: tuple[int, int] | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, nW, N, C) windows -> (B, nW, N, C); `mask` (nW, N, N) boolean, True = may attend."""
        B, nW, N, C = x.shape
        window = tuple(window or self.window_size)
        if window[0] * window[1] != N:
            raise ShapeError(f"windows of {N} tokens do not match the window {window[0]}x{window[1]}")
        H, d = self.num_heads, self.head_dim
        qkv = self.qkv(x).view(B, nW, N, 3, H, d)
        bias = self.position_bias(window)  # (H, N, N)
        if mask is None:
            # Every window shares the bias: fold windows into the batch and broadcast it.
            q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, B * nW, H, N, d).unbind(0)
            attn_bias = bias[None]
        else:
            # Windows differ in their mask: fold windows into the heads so one (1, nW*H, N, N) bias
            # broadcasts over the batch without copying it B times.
            q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, B, nW * H, N, d).unbind(0)
            blocked = torch.zeros(mask.shape, dtype=bias.dtype, device=bias.device).masked_fill_(
                ~mask.to(bias.device), float("-inf")
            )
            attn_bias = (bias[None] + blocked[:, None]).reshape(1, nW * H, N, N)
        out, _ = attend(q, k, v, attn_bias.to(q.dtype), self.attn_drop if self.training else 0.0, self.impl)
        out = out.reshape(B, nW, H, N, d).transpose(2, 3).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(out))


class PatchMerging(nn.Module):
    """Halve a (B, H, W, C) map's resolution: concatenate each 2x2 neighbourhood, normalise, project to 2C.

    The 4C channels are ordered (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1), the
    order of the Swin papers, so their checkpoints load unchanged.
    """

    def __init__(self, dim: int, out_dim: int | None = None, norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H/2, W/2, out_dim)."""
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ShapeError(f"patch merging needs an even feature map; got {H}x{W}")
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))
