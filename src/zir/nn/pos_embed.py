"""Position embeddings for a 2-D patch grid: fixed sin-cos tables and resampling of learned ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.errors import ConfigError


def sincos_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(N,) positions -> (N, dim) embedding: sines of dim/2 frequencies, then cosines."""
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos table (rows * cols, dim) as in MAE: half the channels encode the row, half the column."""
    if dim % 4 != 0:
        raise ConfigError(f"sin-cos position embedding needs embed_dim divisible by 4; got {dim}")
    rows, cols = grid
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb_rows = sincos_1d(row_idx.reshape(-1), dim // 2, temperature)
    emb_cols = sincos_1d(col_idx.reshape(-1), dim // 2, temperature)
    return torch.cat([emb_rows, emb_cols], dim=1)


def resample_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], mode: str = "bicubic"
) -> torch.Tensor:
    """Interpolate a learned (1, rows * cols, D) table to another grid, e.g. for a new input resolution."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    D = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_grid[0], old_grid[1], D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode=mode, align_corners=False, antialias=mode != "nearest")
    return grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], D).to(pos_embed.dtype)
