"""Recognise foreign ViT checkpoints by their keys and convert them to zir's layout.

timm's layout (also DeiT's, MAE's and DINO's, which were built on it) differs from zir's in two places:
timm keeps one `pos_embed` for prefix and patch tokens together (unless `no_embed_class`), and calls the
registers `reg_token`. MAE pre-training checkpoints also carry a decoder and DINO's a projection head,
which a tower does not use.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from zir.errors import WeightsError
from zir.nn import resample_pos_embed

if TYPE_CHECKING:
    from zir.models.vit import VisionTransformer

_CLASSIFIER_KEYS = {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}


def _square_side(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n and n > 0 else None


def _split_pos_embed(
    model: VisionTransformer, pos: torch.Tensor, num_prefix: int
) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
    """Split a timm pos_embed (1, P? + N, D) into prefix and patch parts and infer the patch grid."""
    length = pos.shape[1]
    native = model.patch_embed.num_patches
    candidates = [length - num_prefix, length] if num_prefix else [length]
    for n_patches in candidates:  # the exact native grid first, whichever split gives it
        if n_patches == native:
            prefix = pos[:, : length - n_patches] if n_patches != length else None
            return prefix, pos[:, length - n_patches:], tuple(model.grid_size)
    for n_patches in candidates:  # otherwise a square grid at another resolution
        side = _square_side(n_patches)
        if side:
            prefix = pos[:, : length - n_patches] if n_patches != length else None
            return prefix, pos[:, length - n_patches:], (side, side)
    raise WeightsError(
        f"pos_embed holds {length} positions, which fit neither the model's {native} patches "
        f"(+{num_prefix} prefix tokens) nor any square grid"
    )


def adapt_vit_state_dict(
    model: VisionTransformer, state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return `state` in zir's ViT layout and notes on what was converted, resampled or dropped."""
    state = dict(state)
    notes: list[str] = []

    dropped = sorted(k for k in state if k.startswith("decoder") or (k == "mask_token" and model.mask_token is None))
    if "mask_token" in state and model.mask_token is not None:  # DINOv2 stores it as (1, D)
        state["mask_token"] = state["mask_token"].reshape(model.mask_token.shape)
    if dropped:
        notes.append(f"dropped {len(dropped)} MAE decoder keys (the tower is the encoder)")
    projection = sorted(k for k in state if k.startswith("head.") and k not in _CLASSIFIER_KEYS)
    if projection:
        notes.append(f"dropped {len(projection)} projection-head keys (e.g. DINO's head)")
    for key in dropped + projection:
        del state[key]

    if "reg_token" in state:
        state["register_tokens"] = state.pop("reg_token")

    if "pos_embed" in state and "prefix_pos_embed" not in state and model.pos_embed_type == "learn":
        num_prefix = sum(k in state for k in ("cls_token", "dist_token"))
        if "register_tokens" in state:
            num_prefix += state["register_tokens"].shape[1]
        prefix, patches, grid = _split_pos_embed(model, state["pos_embed"], num_prefix)
        state["pos_embed"] = patches
        if prefix is not None:
            state["prefix_pos_embed"] = prefix
        if grid != tuple(model.grid_size):
            state["pos_embed"] = resample_pos_embed(patches, grid, model.grid_size)
            notes.append(f"resampled pos_embed from a {grid[0]}x{grid[1]} to a "
                         f"{model.grid_size[0]}x{model.grid_size[1]} patch grid")
    elif "pos_embed" in state and model.pos_embed_type == "learn":
        pos = state["pos_embed"]
        side = _square_side(pos.shape[1])
        if pos.shape[1] != model.patch_embed.num_patches and side:
            state["pos_embed"] = resample_pos_embed(pos, (side, side), model.grid_size)
            notes.append(f"resampled pos_embed from a {side}x{side} grid")
    _reuse_values(model, state, notes)
    return state, notes


def _reuse_values(model: VisionTransformer, state: dict[str, torch.Tensor], notes: list[str]) -> None:
    """Less-attention blocks of the model keep a checkpoint's value rows of `qkv` and drop its queries and
    keys; their score transformations start at the model's (identity)."""
    reused = [i for i, block in enumerate(model.blocks) if getattr(block, "reuse", False)]
    converted = 0
    for i in reused:
        attn, prefix = model.blocks[i].attn, f"blocks.{i}.attn."
        if prefix + "qkv.weight" not in state or prefix + "v.weight" in state:
            continue
        dim = state[prefix + "qkv.weight"].shape[1]
        for kind in ("weight", "bias"):
            qkv = state.pop(prefix + f"qkv.{kind}", None)
            if qkv is not None:
                state[prefix + f"v.{kind}"] = qkv[2 * dim:]
        for key in [k for k in state if k.startswith((prefix + "q_norm.", prefix + "k_norm."))]:
            del state[key]
        for name, param in attn.named_parameters():
            if not name.startswith(("v.", "proj.")):
                state[prefix + name] = param.detach().clone()
        converted += 1
    if converted:
        notes.append(f"{converted} less-attention blocks take only the values of the checkpoint's qkv; "
                     "their score transformations start at identity")
