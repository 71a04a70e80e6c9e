"""The MLP activations released checkpoints were trained with, chosen by name in a tower's config.

OpenAI's CLIP (and open_clip's `-quickgelu` models) used QuickGELU, x * sigmoid(1.702 x), a cheap
approximation of GELU; their weights only reproduce their outputs with it. Everything else uses exact GELU.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x) (Hendrycks & Gimpel's sigmoid approximation of GELU, as OpenAI CLIP uses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def activation(name: str) -> type[nn.Module]:
    """The activation class for a config name ('gelu' or 'quick_gelu')."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"act={name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
