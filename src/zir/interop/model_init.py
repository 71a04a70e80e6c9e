"""`model.init` from a released checkpoint (a transformers folder, an open_clip file): continue its pre-training.

A released CLIP's towers are not the recipe's (other widths, depths, vocabulary), so before the model is
built each tower the checkpoint provides replaces the recipe's (keeping the recipe's `drop_path_rate`,
`drop_rate`, `attn_drop_rate` and `locked`: LiT locks a pretrained image tower), and its tokenizer.json
becomes `data.tokenizer`. The run's config.yaml
records the result, so a resumed run rebuilds the same towers. After building, `init_from` copies the towers,
and into an image-text objective reading both (CLIP, SigLIP, ...), CLIP's image projection (the identity for
SigLIP, which has none) and the logit scale (and SigLIP's bias).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zir.errors import ConfigError

KEPT_FROM_RECIPE = ("drop_path_rate", "drop_rate", "attn_drop_rate", "locked")


def released(value) -> Path | None:
    """The path of `model.init` when it names a released checkpoint zir.load reads, else None."""
    from zir.interop import is_foreign
    from zir.train.init_weights import parse_init

    spec = parse_init(value)
    return spec.path if spec is not None and spec.path.exists() and is_foreign(spec.path) else None


def _load(path: Path):
    from zir.interop import load_pretrained

    try:
        model = load_pretrained(path)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - WeightsError and friends: name the field
        raise ConfigError(f"model.init={path}: {err}") from None
    if model is None:
        raise ConfigError(f"model.init={path}: not a checkpoint zir reads (docs/interop.md lists the formats)")
    return model


def adopt_released_towers(cfg) -> None:
    """Rewrite `cfg.model.towers` (and `cfg.data.tokenizer`) in place for a released `model.init`."""
    from zir.interop.pretrained import tower_section
    from zir.train.init_weights import parse_init

    path = released((cfg.model or {}).get("init"))
    if path is None:
        return
    model = _load(path)
    mapping = parse_init(cfg.model["init"]).towers
    offered = tower_section(model.spec)
    towers = cfg.model.setdefault("towers", {})
    mapping = mapping if mapping is not None else {t: t for t in towers if t in offered}
    for dest, src in mapping.items():
        if src not in offered:
            raise ConfigError(f"model.init.towers: {src!r} is not in {path} (it has {', '.join(offered)})")
        recipe = towers.get(dest) if isinstance(towers.get(dest), dict) else {}
        towers[dest] = {**offered[src], **{k: recipe[k] for k in KEPT_FROM_RECIPE if k in recipe}}
    if "text" in mapping.values() and model.tokenizer is not None:
        cfg.data.tokenizer = str(path / "tokenizer.json" if path.is_dir() else path.parent / "tokenizer.json")


def released_init(model: nn.Module, path: Path, mapping: dict[str, str] | None) -> dict[str, str]:
    """Copy a released checkpoint's towers into `model` (built by `adopt_released_towers`'s config); returns
    {tower: source}. CLIP's image projection and logit scale go into an objective that reads both towers."""
    source = _load(path)
    mapping = mapping if mapping is not None else {t: t for t in model.towers if t in source.towers}
    if not mapping:
        raise ConfigError(f"model.init={path}: no tower in common (this model: {', '.join(model.towers)}; "
                          f"checkpoint: {', '.join(source.towers)})")
    for dest, src in mapping.items():
        if dest not in model.towers or src not in source.towers:
            raise ConfigError(f"model.init.towers: {dest} <- {src}: not a tower of both this model and {path}")
        try:
            model.towers[dest].load_state_dict(source.towers[src].state_dict())
        except RuntimeError as err:
            raise ConfigError(f"model.init: tower {dest!r} does not fit {src!r} of {path}: "
                              f"{' '.join(str(err).split())[:300]}") from None
    from zir.objectives.clip import ImageText

    for obj in getattr(model, "objectives", {}).values():
        if not isinstance(obj, ImageText) or mapping.get(obj.tower_name) != "image" \
                or mapping.get(obj.text_tower_name) != "text":
            continue
        _copy_joint_space(obj, source)
    for teacher, spec in getattr(model, "teacher_specs", {}).items():
        if spec.tower in mapping:
            model.teachers[teacher].module.load_state_dict(model.towers[spec.tower].state_dict())
    return dict(mapping)


@torch.no_grad()
def _copy_joint_space(obj, source) -> None:
    """CLIP's image projection (SigLIP has none: the identity), temperature and SigLIP's bias, where they fit."""
    weight = obj.image_proj.weight
    if source.image_proj is not None and weight.shape == source.image_proj.weight.shape:
        weight.copy_(source.image_proj.weight)
    elif source.image_proj is None and weight.shape[0] == weight.shape[1]:
        weight.copy_(torch.eye(weight.shape[0]))
    for name in ("logit_scale", "logit_bias"):
        ours, theirs = getattr(obj.loss, name, None), getattr(source, name, None)
        if isinstance(ours, torch.Tensor) and theirs is not None:
            ours.fill_(float(theirs))
