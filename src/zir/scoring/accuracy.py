"""Top-k accuracy from a score matrix, in percent, shared by the classification protocols."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Percent of rows of `scores` (N, C) whose target column (N,) is among the k highest, per k.

    k larger than C counts as C (every class is among the top C), which is what papers report for top-5
    on datasets with fewer than five classes. A target outside [0, C) is never counted correct.
    """
    ks = list(ks)
    n, c = scores.shape
    kmax = min(max(ks), c)
    top = scores.topk(kmax, dim=1).indices  # (N, kmax)
    hit = top == targets.view(-1, 1)  # (N, kmax)
    return {k: 100.0 * int(hit[:, : min(k, c)].any(dim=1).sum()) / n for k in ks}


def label_columns(classes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Column of each label (N,) in the sorted class list (C,), or -1 for a label not in it."""
    pos = torch.searchsorted(classes, labels).clamp(max=classes.numel() - 1)
    return torch.where(classes[pos] == labels, pos, torch.full_like(pos, -1))
