"""The one exponential-moving-average step: EMA teachers, their heads and the trainer's weight EMA all use it."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def ema_update_(averages: Sequence[torch.Tensor], values: Sequence[torch.Tensor], momentum: float) -> None:
    """In place, pairwise: average <- momentum * average + (1 - momentum) * value (value cast to the average's dtype).

    One multiply and one add over the whole list (`torch._foreach_*`: a few kernel launches, not two per
    tensor); the values are read without gradients.
    """
    averages = list(averages)
    values = [v.detach().to(a.dtype) for a, v in zip(averages, values, strict=True)]
    torch._foreach_mul_(averages, momentum)
    torch._foreach_add_(averages, values, alpha=1.0 - momentum)
