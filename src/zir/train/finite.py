"""Non-finite weights are never saved: a checkpoint (and so an export) always holds numbers a run can go on from.

A step whose loss or gradient is NaN or infinite is skipped before it touches the weights, but an update
can still overflow (a huge learning rate), and a few bad steps near the end do not stop a run. So every
checkpoint is checked first: model weights and buffers, the optimizer's moments and the weight EMA.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from zir.errors import ZirError
from zir.train import distributed


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}" if prefix else str(i))


def first_nonfinite(**states: Any) -> str | None:
    """'model head.weight' for the first floating-point tensor holding NaN or inf in these named states, or None."""
    for what, state in states.items():
        for key, t in _tensors(state, ""):
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                return f"{what} {key}" if key else what
    return None


def where_nonfinite(d: distributed.Dist, **states: Any) -> str | None:
    """first_nonfinite as rank 0 sees the (whole) states, on every rank, so all of them stop together."""
    return distributed.broadcast_object(first_nonfinite(**states) if d.main else None, d)


class TrainingDiverged(ZirError):
    """Too many non-finite steps in a row, or non-finite weights at a save; the last good checkpoint is left as it was."""
