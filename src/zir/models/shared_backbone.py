"""VATT's modality-agnostic backbone (Akbari et al., 2021): one transformer whose weights every listed tower uses.

`model.share_transformer: [image, audio]` keeps each tower's own tokenizer (its patch embedding, position
embeddings and prefix tokens: modality-specific, as VATT's) and gives all of them the first tower's blocks
and final norm, the very same modules, so the model holds ONE set of transformer weights and every
modality's gradients update it. The towers must be ViTs (the image ViT or the audio tower) of the same
width, depth and heads.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from zir.errors import ConfigError

FIELD = "model.share_transformer"


def _shape(tower: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The names and shapes of a tower's transformer weights (blocks and final norm)."""
    return [(f"blocks.{k}", tuple(p.shape)) for k, p in tower.blocks.named_parameters()] + \
           [(f"norm.{k}", tuple(p.shape)) for k, p in tower.norm.named_parameters()]


def share_transformer(towers: dict[str, nn.Module], names: Sequence[str]) -> None:
    """Make every tower in `names` run the first one's blocks and final norm (in place); a ConfigError naming
    the field when a name is unknown, a tower is not a ViT, or the transformers differ in shape."""
    from zir.models.vit import VisionTransformer

    if isinstance(names, str) or not isinstance(names, (list, tuple)) or len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"{FIELD}={names!r}: expected a list of two or more distinct tower names, such as [image, audio]")
    for name in names:
        if name not in towers:
            raise ConfigError(f"{FIELD}: no tower {name!r} (towers: {', '.join(towers)})")
        tower = towers[name]
        if not isinstance(tower, VisionTransformer) or tower.less_attention:
            raise ConfigError(f"{FIELD}: tower {name!r} is a {type(tower).__name__}; only plain ViT towers "
                              "(image or audio) can share one transformer")
    first = towers[names[0]]
    for name in names[1:]:
        tower = towers[name]
        if _shape(tower) != _shape(first):
            raise ConfigError(f"{FIELD}: tower {name!r} ({tower.embed_dim} wide, {len(tower.blocks)} blocks) does not fit the "
                              f"transformer of {names[0]!r} ({first.embed_dim} wide, {len(first.blocks)} blocks); "
                              "give them the same width, depth and heads")
        if tower.num_heads != first.num_heads:
            raise ConfigError(f"{FIELD}: tower {name!r} has {tower.num_heads} heads, {names[0]!r} {first.num_heads}")
        tower.blocks, tower.norm = first.blocks, first.norm


def transformer_parameters(tower: nn.Module) -> int:
    """Number of weights in a ViT tower's transformer (its blocks and final norm)."""
    return sum(p.numel() for p in tower.blocks.parameters()) + sum(p.numel() for p in tower.norm.parameters())
