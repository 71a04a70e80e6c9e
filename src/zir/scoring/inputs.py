"""Turn the arrays users hand to the scoring and evaluation protocols into checked float/long CPU tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zir.errors import ConfigError, ShapeError


def as_features(x: Any, name: str) -> torch.Tensor:
    """Return `x` (a tensor, array or nested list) as a float32 CPU tensor of shape (N, D)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ShapeError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ShapeError(f"{name} is empty: shape {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise ShapeError(f"{name} contains NaN or infinite values")
    return t


def as_labels(y: Any, n: int, name: str) -> torch.Tensor:
    """Return `y` as an int64 CPU tensor of shape (N,), checking it has `n` entries."""
    t = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.ndim != 1 or t.shape[0] != n:
        raise ShapeError(f"{name} must have shape ({n},) to match the features, got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ShapeError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t.to(device="cpu", dtype=torch.int64)


def same_width(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Raise if two (N, D) feature matrices differ in D."""
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{name_a} has width {a.shape[1]} but {name_b} has width {b.shape[1]}")


def positive_int(value: Any, name: str) -> int:
    """Return `value` as an int, raising if it is not a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def chunk_rows(chunk_size: int | None, n_columns: int, budget: int = 1 << 24) -> int:
    """Rows per chunk so that a (rows, n_columns) similarity block stays under `budget` entries."""
    if chunk_size is not None:
        return positive_int(chunk_size, "chunk_size")
    return max(1, budget // max(1, n_columns))
