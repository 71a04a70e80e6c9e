"""Run an encoder frozen: no gradients, its module in eval mode, and its old mode given back after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


def module_of(fn: Callable) -> torch.nn.Module | None:
    """The module behind `fn` (itself, or the owner of a bound method), if any."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


@contextmanager
def frozen(fn: Callable) -> Iterator[None]:
    """Within the block, gradients are off and the module behind `fn` (if any) is in eval mode."""
    module = module_of(fn)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if module is not None:
            module.train(was_training)
