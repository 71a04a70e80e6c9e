"""Projection and prediction heads shared by the two-view objectives (SimCLR, BYOL, MoCo v3, VICReg, Barlow
Twins, SimSiam): one MLP with batch norm, its depth, biases and last norm set by each paper's design."""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError


class MLPHead(nn.Module):
    """Linear-BN-ReLU (`layers` - 1 times), then Linear, optionally a BatchNorm without affine: (B, in) -> (B, out).

    BYOL: 2 layers with biases, no last BN; MoCo v3: linears without bias (the BN follows), last BN in the
    projector (SimCLR's design) and, for ViTs, in the predictor too.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, bias: bool = True,
                 last_bn: bool = False) -> None:
        """A `layers`-deep MLP in_dim -> hidden_dim ... -> out_dim."""
        super().__init__()
        if layers < 1 or hidden_dim < 1 or out_dim < 1:
            raise ConfigError(f"MLP head layers={layers}, hidden_dim={hidden_dim}, out_dim={out_dim}: expected >= 1 each")
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(dim, hidden_dim, bias=bias), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            dim = hidden_dim
        mods.append(nn.Linear(dim, out_dim, bias=bias))
        if last_bn:
            mods.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim)."""
        return self.net(x)
