"""DINOv2's own checkpoints (facebookresearch/dinov2 `dinov2_vit*14*_pretrain.pth`) as a zir ViT.

Recognised by `cls_token`, `pos_embed`, `mask_token` and LayerScale (`blocks.0.ls1.gamma`). Sizes come
from the shapes; the number of heads from DINOv2's 64 channels per head (every released size has them);
the native image side from the position table (37 x 37 patches of 14 px: 518). Registers (`register_tokens`,
the `_reg4` models) have no position embedding. Outputs equal DINOv2's at the native side; at another side
zir resamples the position table its own way (DINOv2 interpolates bicubically with an offset), so set
`img_size` by loading at the side you use. The SwiGLU MLP of the giant model (`mlp.w12`) is not read.
DINOv2's training checkpoints chunk the blocks (`block_chunks`: `blocks.C.N.`, N the block's own index, as
each chunk pads the earlier blocks with identities); the released files are flat (`blocks.N.`): both are read.
"""

from __future__ import annotations

import math
import re

import torch

from zir.errors import WeightsError

MARKERS = ("cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight")
CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")
HEAD_WIDTH = 64


def is_dinov2(state: dict) -> bool:
    """Whether a state dict is in DINOv2's own layout (flat or chunked blocks, LayerScale)."""
    return all(k in state for k in MARKERS) and any(k.endswith(".ls1.gamma") for k in state)


def unchunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`blocks.C.N.x` (DINOv2's block chunks) -> `blocks.N.x`; flat state dicts come back as they are."""
    return {CHUNKED.sub(r"blocks.\1.", k): v for k, v in state.items()}


def from_dinov2(state: dict[str, torch.Tensor], where: str) -> tuple[dict, dict]:
    """(spec, state) in `PretrainedModel`'s layout from a DINOv2 state dict."""
    state = unchunk(state)
    if "blocks.0.mlp.w12.weight" in state:
        raise WeightsError(f"{where}: DINOv2's SwiGLU MLP (the giant model) is not supported")
    conv = state["patch_embed.proj.weight"]
    width, patch = conv.shape[0], conv.shape[-1]
    pos = state["pos_embed"]
    side = math.isqrt(pos.shape[1] - 1)
    if side * side != pos.shape[1] - 1:
        raise WeightsError(f"{where}: pos_embed has {pos.shape[1]} rows, not 1 + a square grid")
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    if width % HEAD_WIDTH:
        raise WeightsError(f"{where}: width {width} does not split into DINOv2's heads of {HEAD_WIDTH} channels")
    options = dict(embed_dim=width, depth=depth, num_heads=width // HEAD_WIDTH, img_size=side * patch, patch_size=patch,
                   mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / width, init_values=1.0, mask_token=True,
                   reg_tokens=registers, layer_norm_eps=1e-6, num_classes=0)
    out = {k: v for k, v in state.items() if k.startswith(("blocks.", "patch_embed.", "norm."))}
    out["cls_token"] = state["cls_token"]
    out["mask_token"] = state["mask_token"].reshape(1, 1, -1)
    prefix = pos[:, :1]
    if registers:
        out["register_tokens"] = state["register_tokens"]
        prefix = torch.cat([prefix, torch.zeros(1, registers, width, dtype=pos.dtype)], dim=1)
    out["prefix_pos_embed"], out["pos_embed"] = prefix, pos[:, 1:]
    return {"image": options}, {f"towers.image.{k}": v for k, v in out.items()}
