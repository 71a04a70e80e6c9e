"""Layer scale: a learned per-channel gain on a residual branch, initialised small (CaiT)."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply (..., D) features by a learned (D,) vector `gamma` initialised to `init_values`."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale the last dimension."""
        return x * self.gamma
