"""The MLP activations released checkpoints were trained with, chosen by name in a tower's config.

OpenAI's CLIP (and open_clip's `-quickgelu` models) used QuickGELU, x * sigmoid(1.702 x), a cheap
approximation of GELU; their weights only reproduce their outputs with it. SigLIP uses GELU's tanh
approximation ('gelu_tanh'); everything else exact GELU.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x) (Hendrycks & Gimpel's sigmoid approximation of GELU, as OpenAI CLIP uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class TanhGELU(nn.GELU):
    """GELU's tanh approximation (SigLIP's `gelu_pytorch_tanh`)."""

    def __init__(self) -> None:
        super().__init__(approximate="tanh")


ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU, "gelu_tanh": TanhGELU}


def activation(name: str) -> type[nn.Module]:
    """The activation class for a config name ('gelu', 'quick_gelu' or 'gelu_tanh')."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"act={name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
