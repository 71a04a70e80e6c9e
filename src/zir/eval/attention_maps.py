"""What a ViT looks at: per-head CLS attention, attention rollout, and PCA of patch features as colours.

All maps come from one forward pass (`forward_with_attention`) and are laid out on the patch grid,
(B, rows, cols) or (B, heads, rows, cols), so they can be upsampled over the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from zir.errors import ShapeError


@contextmanager
def _eval_mode(tower: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put the tower in eval mode for a picture and give the caller's mode back afterwards."""
    was_training = tower.training
    tower.eval()
    try:
        yield tower
    finally:
        tower.train(was_training)


def _grid(tower: torch.nn.Module, images: torch.Tensor) -> tuple[int, int]:
    return images.shape[-2] // tower.patch_size[0], images.shape[-1] // tower.patch_size[1]


@torch.no_grad()
def cls_attention(tower: torch.nn.Module, images: torch.Tensor, block: int = -1) -> torch.Tensor:
    """Attention of the CLS token to every patch in one block, per head: (B, heads, rows, cols).

    Each head's map sums to 1 minus what the CLS token gives to prefix tokens (itself, registers).
    """
    if not tower.has_class_token:
        raise ShapeError("cls_attention needs a tower with a class token; use attention_rollout or patch_pca")
    with _eval_mode(tower):
        _, weights = tower.forward_with_attention(images)
    rows, cols = _grid(tower, images)
    attn = weights[block][:, :, 0, tower.num_prefix_tokens:]  # (B, H, N)
    return attn.reshape(attn.shape[0], attn.shape[1], rows, cols)


def rollout(weights: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): (B, T, T) flow of attention through all blocks.

    Each block's head-averaged attention is mixed with the identity for the residual connection,
    `residual * I + (1 - residual) * A`, rows renormalised, and the blocks multiplied in order.
    """
    if not weights:
        raise ShapeError("rollout needs the attention weights of at least one block")
    flow = None
    for attn in weights:
        mean = attn.mean(dim=1)  # (B, T, T)
        eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
        mixed = residual * eye + (1 - residual) * mean
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        flow = mixed if flow is None else mixed @ flow
    return flow


@torch.no_grad()
def attention_rollout(tower: torch.nn.Module, images: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """How much each patch flows into the pooled output through all blocks: (B, rows, cols), rows sum to 1.

    Read from the CLS token's row when the tower has one, else averaged over the patch tokens' rows.
    """
    with _eval_mode(tower):
        _, weights = tower.forward_with_attention(images)
    flow = rollout(weights, residual)
    prefix = tower.num_prefix_tokens
    source = flow[:, 0] if tower.has_class_token else flow[:, prefix:].mean(dim=1)
    patches = source[:, prefix:]
    patches = patches / patches.sum(dim=-1, keepdim=True)
    rows, cols = _grid(tower, images)
    return patches.reshape(-1, rows, cols)


@torch.no_grad()
def patch_pca(tower: torch.nn.Module, images: torch.Tensor, components: int = 3) -> torch.Tensor:
    """First principal components of the patch features over the batch, scaled to [0, 1]: (B, rows, cols, 3).

    As DINOv2 shows them: patches of the same part of an object get the same colour across images.
    """
    with _eval_mode(tower):
        tokens = tower.forward_tokens(images)
    patches = tokens[:, tower.num_prefix_tokens:].float()  # (B, N, D)
    B, N, D = patches.shape
    flat = patches.reshape(B * N, D)
    flat = flat - flat.mean(dim=0, keepdim=True)
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    projected = flat @ v[:components].T  # (B * N, components)
    low, high = projected.min(dim=0).values, projected.max(dim=0).values
    scaled = (projected - low) / (high - low).clamp_min(1e-12)
    rows, cols = _grid(tower, images)
    return scaled.reshape(B, rows, cols, components)
