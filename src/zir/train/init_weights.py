"""`model.init`: start a run's towers from another run's weights (fine-tuning, continued pre-training).

The recipe field takes a path, or a mapping with the path and which towers to copy::

    model:
      init: runs/mae                                  # every tower both models have
      init: {path: runs/dino, towers: [image]}         # only these towers
      init: {path: runs/dino, towers: {image: image_teacher}}   # tower <- the DINO/iBOT EMA teacher

The path is a run folder (its newest readable checkpoint), one checkpoint folder (`RUN/checkpoints/step_N`),
a zir safetensors file or folder (`zir export` output), or a released checkpoint that `zir.load` reads (a
transformers folder, an open_clip file: `zir.interop.model_init`). Only tower weights are copied: heads and
objectives of the new recipe start fresh, and an EMA teacher of an initialised tower starts as its copy.
A resumed run never re-initialises (its checkpoint already holds the trained weights). The LoRA updates of a
source run (`model.adapt.lora`) are folded into its weights first, and a tower with LoRA of its own keeps its
fresh updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zir.errors import ConfigError, ZirError
from zir.nn.lora import is_lora_key, merge_lora_state

FIELD = "model.init"


@dataclass
class InitSpec:
    """Where the weights come from and which towers to fill: {tower in this model: name in the checkpoint}."""

    path: Path
    towers: dict[str, str] | None = None  # None: every tower of this model that the checkpoint has


def parse_init(value) -> InitSpec | None:
    """The `model.init` field as an InitSpec (None when unset); a one-line ConfigError when malformed."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return InitSpec(Path(value))
    if not isinstance(value, dict):
        raise ConfigError(f"{FIELD}={value!r}: expected a run folder, checkpoint or .safetensors path, "
                          "or {path: ..., towers: [...]}")
    unknown = sorted(set(value) - {"path", "towers"})
    if unknown:
        raise ConfigError(f"{FIELD}.{unknown[0]}: no such field; expected path and towers")
    path = value.get("path")
    if not isinstance(path, (str, Path)) or not str(path):
        raise ConfigError(f"{FIELD}.path={path!r}: expected a run folder, checkpoint or .safetensors path")
    towers = value.get("towers")
    if towers is None:
        mapping = None
    elif isinstance(towers, str):
        mapping = {towers: towers}
    elif isinstance(towers, list) and towers and all(isinstance(t, str) for t in towers):
        mapping = {t: t for t in towers}
    elif isinstance(towers, dict) and towers and all(isinstance(k, str) and isinstance(v, str) for k, v in towers.items()):
        mapping = dict(towers)
    else:
        raise ConfigError(f"{FIELD}.towers={towers!r}: expected a list of tower names such as [image], "
                          "or a mapping {tower: source} such as {image: image_teacher}")
    return InitSpec(Path(path), mapping)


def weights_file(path: Path) -> Path:
    """The safetensors file `path` stands for: a run's newest checkpoint, a checkpoint folder, an export."""
    from zir.train import checkpoint as ckpt

    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"{FIELD}={path}: does not exist; expected a run folder, a checkpoint folder or a .safetensors file")
    if (path / ckpt.MODEL_FILE).is_file():  # a checkpoint folder, or an export folder
        return path / ckpt.MODEL_FILE
    found = ckpt.list_checkpoints(path / "checkpoints")
    if found:
        return found[-1] / ckpt.MODEL_FILE
    if (path / "export" / ckpt.MODEL_FILE).is_file():
        return path / "export" / ckpt.MODEL_FILE
    raise ConfigError(f"{FIELD}={path}: holds no checkpoint (checkpoints/step_N) and no model.safetensors; train it first")


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The model state dict behind `path` and where it came from, read by `run_weights()` (a run folder: its
    newest checkpoint that reads, a newer half-broken one skipped as on resume)."""
    from zir.run_loading import run_weights

    weights_file(path)  # this field's own one-line errors for a path that names no weights
    try:
        weights = run_weights(path)
    except ZirError as err:
        raise ConfigError(f"{FIELD}={path}: {err}") from None
    return merge_lora_state(weights.state), str(weights.source)  # a LoRA run's towers start others merged


def _source_prefixes(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{name: key prefix} of every tower and teacher tower in a ZirModel state dict."""
    out: dict[str, str] = {}
    for key in state:
        parts = key.split(".")
        if parts[0] == "towers" and len(parts) > 2:
            out.setdefault(parts[1], f"towers.{parts[1]}.")
        elif parts[0] == "teachers" and len(parts) > 3 and parts[2] == "module":
            out.setdefault(parts[1], f"teachers.{parts[1]}.module.")
    return out


def init_from(model: nn.Module, value) -> dict[str, str]:
    """Copy tower weights into `model` (a ZirModel) as `model.init` says; returns {tower: source} copied."""
    from zir.interop.model_init import released, released_init

    spec = parse_init(value)
    if spec is None:
        return {}
    if not isinstance(getattr(model, "towers", None), nn.ModuleDict):
        raise ConfigError(f"{FIELD}: needs a model built from towers and objectives, not a model.factory model")
    if released(value) is not None:  # a transformers folder or an open_clip file (docs/interop.md)
        return released_init(model, spec.path, spec.towers)
    state, where = _read_state(spec.path)
    sources = _source_prefixes(state)
    towers = model.towers
    if not sources:
        raise ConfigError(f"{FIELD}={spec.path}: {where} holds no zir towers (keys towers.NAME.*); "
                          "for timm/MAE/DINO checkpoints use the tower's `weights:` field")
    mapping = spec.towers if spec.towers is not None else {t: t for t in towers if t in sources}
    if not mapping:
        raise ConfigError(f"{FIELD}={spec.path}: no tower in common (this model: {', '.join(towers)}; "
                          f"checkpoint: {', '.join(sources)}); name them with {FIELD}.towers")
    for dest, src in mapping.items():
        if dest not in towers:
            raise ConfigError(f"{FIELD}.towers: {dest!r} is not a tower of this model ({', '.join(towers)})")
        if src not in sources:
            raise ConfigError(f"{FIELD}.towers: {src!r} is not in {where} (it has {', '.join(sources)})")
    for dest, src in mapping.items():
        prefix = sources[src]
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        # a tower with LoRA (model.adapt) keeps its fresh updates: the checkpoint holds the base weights only
        sub.update({k: v for k, v in towers[dest].state_dict().items() if is_lora_key(k) and k not in sub})
        try:
            towers[dest].load_state_dict(sub, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise ConfigError(f"{FIELD}: tower {dest!r} does not fit {src!r} of {where}: {detail}") from None
        # an EMA teacher of this tower (DINO, iBOT) starts where its student starts
        for teacher, spec in getattr(model, "teacher_specs", {}).items():
            if spec.tower == dest:
                model.teachers[teacher].module.load_state_dict(towers[dest].state_dict())
    return dict(mapping)


def check_init(model_section: dict) -> None:
    """Fail early, before a run folder is made, when `model.init` is malformed or names no weights."""
    from zir.interop.model_init import released

    spec = parse_init((model_section or {}).get("init")) if isinstance(model_section, dict) else None
    if spec is not None and released(spec.path) is None:
        weights_file(spec.path)
