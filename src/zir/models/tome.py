"""Token merging for the ViT tower at inference: a switch that merges r tokens per block (ToMe).

`set_token_merging(model, r)` makes the tower's `forward_tokens` (and so `forward`) merge r patch tokens
in every block, or `r[i]` in block i; `r=0` switches back to the plain forward. No retraining: merging
happens between each block's attention and MLP, with proportional attention. Prefix tokens (CLS,
distillation, registers) are never merged and stay first; the output has P + N - sum(r) tokens, and the
patch tokens no longer sit on a grid, so use it where pooled features are what matters.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from zir.errors import ConfigError
from zir.models.vit import VisionTransformer
from zir.nn.attention import Attention, attend
from zir.nn.token_merging import bipartite_soft_matching, merge_schedule, merge_tokens


def set_token_merging(model: VisionTransformer, r: int | list[int] | tuple[int, ...]) -> VisionTransformer:
    """Switch token merging on (r > 0 tokens per block, or one count per block) or off (r = 0); returns model."""
    if not isinstance(model, VisionTransformer):
        raise ConfigError(f"token merging works on the ViT tower; got {type(model).__name__}")
    if not all(type(block.attn) is Attention for block in model.blocks):
        raise ConfigError("token merging needs softmax attention (zir.nn.Attention) in every block")
    counts = merge_schedule(r, len(model.blocks))
    if "forward_tokens" in vars(model):
        del model.forward_tokens  # back to the class's plain forward
    model.tome_r = counts
    if any(counts):
        model.forward_tokens = types.MethodType(merged_forward_tokens, model)
    return model


def merged_forward_tokens(
    model: VisionTransformer, x: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Images (B, C, H, W) -> token features (B, P + K - merged, D), merging `model.tome_r[i]` in block i."""
    tokens = model.embed(x, keep)
    size = None  # tokens' patch counts; None while nothing has merged (then attention is plain)
    for block, r in zip(model.blocks, model.tome_r):
        tokens, size = merging_block(block, tokens, size, r, model.num_prefix_tokens)
    return model.norm(tokens)


def merging_block(
    block: nn.Module, x: torch.Tensor, size: torch.Tensor | None, r: int, num_prefix: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pre-norm `zir.nn.Block` with proportional attention and r merges between attention and MLP.

    x (B, T, D) with sizes (B, T, 1) or None (all ones) -> the merged tokens and their sizes.
    """
    attn = block.attn
    B, T, D = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    # Proportional attention: a token standing for s patches counts s times as a key.
    bias = None if size is None else size.log().transpose(1, 2)[:, None].to(q.dtype)  # (B, 1, 1, T)
    out, _ = attend(q, k, v, bias, attn.attn_drop if attn.training else 0.0, attn.impl)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(B, T, D)))
    x = x + block.drop_path1(block.ls1(out))

    r = min(r, (T - num_prefix) // 2)
    if r > 0:
        if size is None:
            size = x.new_ones(B, T, 1)
        prefix, patches = x[:, :num_prefix], x[:, num_prefix:]
        prefix_size, patch_size = size[:, :num_prefix], size[:, num_prefix:]
        metric = k.mean(dim=1)[:, num_prefix:]  # keys averaged over heads (B, T - P, d)
        patches, patch_size = merge_tokens(patches, patch_size, *bipartite_soft_matching(metric, r))
        x = torch.cat([prefix, patches], dim=1)
        size = torch.cat([prefix_size, patch_size], dim=1)
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x)))), size
