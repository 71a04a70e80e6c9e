"""Reading, checking, loading and saving tower weights (safetensors or PyTorch checkpoints).

A checkpoint may come from zir or from elsewhere: wrapped in a container (`{"model": ...}`,
`{"state_dict": ...}`, DINO's `{"teacher": ...}`), prefixed (`module.` from DDP, `backbone.` from DINO),
and in another library's layout, which the tower's `adapt_state_dict` converts. What does not fit after
that is reported in one line naming the missing, unexpected and misshaped keys.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zir.models.tower import Tower
from zir.errors import WeightsError

_CONTAINER_KEYS = ("state_dict", "model", "teacher", "module", "model_ema")
_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")
_HEAD_PREFIXES = ("head.", "head_dist.")
StateSource = str | os.PathLike | Mapping[str, torch.Tensor]


def read_state_dict(source: StateSource) -> dict[str, torch.Tensor]:
    """Load a flat {name: tensor} dict from a path (safetensors, .pt/.pth/.bin) or pass a mapping through."""
    if isinstance(source, Mapping):
        state = source
        origin = "state dict"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        state = _read_file(path)
    state = _unwrap(state, origin)
    return _strip_prefixes(state)


def _read_file(path: Path) -> Mapping[str, Any]:
    """Read a checkpoint file without unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path} is not a readable safetensors file: {err}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign pickles
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {first_line}") from None


def _unwrap(state: Any, origin: str) -> dict[str, torch.Tensor]:
    """Descend into the usual checkpoint containers until a flat dict of tensors is found."""
    for _ in range(3):
        if not isinstance(state, Mapping):
            break
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return dict(state)
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if isinstance(state, Mapping) and state:
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightsError(f"{origin} holds no tensors (looked inside {', '.join(_CONTAINER_KEYS)})")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes; where only some keys carry `backbone.`, keep just the backbone."""
    for prefix in _PREFIXES:
        carrying = [k for k in state if k.startswith(prefix)]
        if carrying and (len(carrying) == len(state) or prefix == "backbone."):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _model_name(model: nn.Module) -> str:
    return getattr(model, "zir_config", {}).get("model", type(model).__name__)


def _sample(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(model: nn.Module, source: StateSource) -> list[str]:
    """Load weights into `model` strictly, after converting foreign layouts; returns notes on conversions.

    A classifier head whose shape differs (other number of classes), or one the model does not have
    (`num_classes=0`), is skipped with a warning, as fine-tuning expects; any other mismatch is an error.
    """
    state = read_state_dict(source)
    notes: list[str] = []
    if isinstance(model, Tower):  # a zir tower converts foreign layouts; another module loads as is
        state, notes = model.adapt_state_dict(state)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    misshaped = sorted(k for k in state if k in expected and state[k].shape != expected[k].shape)

    skipped = [k for k in misshaped + unexpected if k.startswith(_HEAD_PREFIXES)]
    if skipped:
        notes.append(f"skipped the checkpoint's classifier head ({_sample(skipped)}): it does not fit this model's")
        misshaped = [k for k in misshaped if k not in skipped]
        unexpected = [k for k in unexpected if k not in skipped]
        for key in skipped:
            del state[key]

    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {_sample(missing)}")
        if unexpected:
            parts.append(f"unexpected {_sample(unexpected)}")
        if misshaped:
            parts.append("misshaped " + _sample(
                [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in misshaped]))
        hint = ""
        if any(k.startswith("head.") for k in missing):
            hint = " (the checkpoint has no classifier head: create the model with num_classes=0)"
        elif any(k.startswith("fc_norm.") for k in unexpected):
            hint = " (the checkpoint normalises after pooling: create the model with fc_norm=True)"
        raise WeightsError(f"weights do not fit {_model_name(model)}: {'; '.join(parts)}{hint}")

    model.load_state_dict(state, strict=not skipped)
    for note in notes:
        warnings.warn(f"{_model_name(model)}: {note}", stacklevel=2)
    return notes


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's weights to a safetensors file atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "zir"}
    if hasattr(model, "zir_config"):
        meta["zir_config"] = json.dumps(model.zir_config, sort_keys=True)
    meta.update(metadata or {})
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (zir stores the model config there)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
