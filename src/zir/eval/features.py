"""Extract one embedding per sample from a frozen encoder, once per run, with an on-disk cache.

Every protocol in `zir.eval` works on the (N, D) features this returns, so the dearest step (running
the tower over a dataset) happens once and k-NN, linear probe and zero-shot all reuse it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zir.eval._frozen import frozen
from zir.errors import ConfigError, ShapeError, ZirError

__all__ = ["FeatureCacheError", "extract_features", "cache_path"]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class FeatureCacheError(ZirError, ValueError):
    """A feature cache file that cannot be read or does not hold features (delete it to re-extract)."""


def cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    """Where the features for `key` live inside `cache_dir` (a `.safetensors` file)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ConfigError(
            f"feature cache key {key!r} must be letters, digits, '.', '_' or '-' and start with a letter or digit"
        )
    return Path(cache_dir) / f"{key}.safetensors"


def _split_batch(batch: Any, input_key: str, label_key: str) -> tuple[Any, Any]:
    """Split one batch into (inputs, labels or None)."""
    if isinstance(batch, Mapping):
        if input_key not in batch:
            raise ShapeError(f"batch has no {input_key!r} entry (keys: {sorted(map(str, batch))})")
        return batch[input_key], batch.get(label_key)
    if isinstance(batch, (tuple, list)):
        # A list of strings is one batch of captions; any other sequence is (inputs, labels, ...).
        if len(batch) > 0 and all(isinstance(s, str) for s in batch):
            return batch, None
        if len(batch) == 0:
            raise ShapeError("got an empty batch")
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None


def _run(encode_fn, batches, device, input_key, label_key) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run `encode_fn` over every batch without gradients; features (N, D) float32 and labels (N,) or None."""
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    with_labels: bool | None = None
    for i, batch in enumerate(batches):
        x, y = _split_batch(batch, input_key, label_key)
        if device is not None and isinstance(x, torch.Tensor):
            x = x.to(device, non_blocking=True)
        z = encode_fn(x)
        if not isinstance(z, torch.Tensor) or z.ndim != 2:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ShapeError(f"encode_fn must return one embedding per sample, shape (B, D); batch {i} gave {shape}")
        if feats and z.shape[1] != feats[0].shape[1]:
            raise ShapeError(f"encode_fn gave width {z.shape[1]} on batch {i} but {feats[0].shape[1]} before")
        if with_labels is None:
            with_labels = y is not None
        elif with_labels != (y is not None):
            raise ShapeError(f"batch {i} {'has' if y is not None else 'lacks'} labels unlike the batches before it")
        if y is not None:
            y = y.detach() if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
            if y.ndim != 1 or y.shape[0] != z.shape[0]:
                raise ShapeError(f"batch {i}: labels of shape {tuple(y.shape)} do not match {z.shape[0]} features")
            labels.append(y.to("cpu", torch.int64))
        feats.append(z.detach().to("cpu", torch.float32))
    if not feats:
        raise ShapeError("no batches to extract features from")
    return torch.cat(feats), (torch.cat(labels) if with_labels else None)


def _load(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read cached (features, labels) from `path`."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FeatureCacheError(f"feature cache {path} cannot be read ({e}); delete it to re-extract") from None
    if "features" not in tensors or tensors["features"].ndim != 2:
        raise FeatureCacheError(f"feature cache {path} holds no (N, D) 'features' tensor; delete it to re-extract")
    return tensors["features"], tensors.get("labels")


def _save(path: Path, features: torch.Tensor, labels: torch.Tensor | None) -> None:
    """Write (features, labels) to `path` atomically, so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"features": features.contiguous()}
    if labels is not None:
        tensors["labels"] = labels.contiguous()
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": "zir-features"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def extract_features(
    encode_fn: Callable[[Any], torch.Tensor],
    batches: Iterable[Any],
    *,
    normalize: bool = False,
    cache_dir: str | os.PathLike | None = None,
    key: str | None = None,
    refresh: bool = False,
    device: str | torch.device | None = None,
    input_key: str = "image",
    label_key: str = "label",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode every batch with `encode_fn` and return features (N, D) float32 and labels (N,) or None.

    A batch is an input tensor, an `(inputs, labels, ...)` pair, a list of strings (captions), or a
    mapping read at `input_key`/`label_key`. `encode_fn` maps inputs (B, ...) to embeddings (B, D); when it
    is a module or a module's bound method the module runs in eval mode and gets its mode back after.
    With `cache_dir` and `key`, the raw features are saved to `cache_dir/key.safetensors` and read from
    there on the next call without running `encode_fn` (`refresh=True` re-extracts). The key is the
    caller's to choose and must change when the weights or data do, e.g. `"step1000-cifar10-test"`.
    `normalize` L2-normalises the returned rows; the cache always keeps the raw features.
    """
    if (cache_dir is None) != (key is None):
        raise ConfigError("the feature cache needs both cache_dir and key (or neither)")
    path = cache_path(cache_dir, key) if cache_dir is not None else None

    if path is not None and path.exists() and not refresh:
        features, labels = _load(path)
    else:
        with frozen(encode_fn):
            features, labels = _run(encode_fn, batches, device, input_key, label_key)
        if path is not None:
            _save(path, features, labels)

    if normalize:
        features = F.normalize(features, dim=1)
    return features, labels
