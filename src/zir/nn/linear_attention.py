"""Attention whose cost is linear in the number of tokens, and attention that splits heads in a cascade.

`SeparableSelfAttention` is MobileViT v2's (Mehta and Rastegari, 2022): one score per token, a softmax
over tokens, one context vector, no N x N matrix. `CascadedGroupAttention` is EfficientViT's (Liu et al.,
2023): each head sees its own slice of the channels plus the previous head's output, with a narrow key
width, so heads differ and the query-key products are cheap. Both take and return (B, N, D) tokens with
the call signature of `zir.nn.Attention`, so a transformer block can use either in its place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.nn.attention import attend


class SeparableSelfAttention(nn.Module):
    """MobileViT v2 separable self-attention over (B, N, D) tokens, O(N D) time and memory.

    Each token gets one query score; a softmax over the tokens turns the scores into weights; the weighted
    sum of the keys is a single context vector, which gates every token's ReLU'd value; a linear layer
    projects the result.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        """`num_heads`, `qk_norm` and `norm_layer` are accepted for a drop-in signature; the method has one head."""
        super().__init__()
        if qk_norm:
            raise ConfigError("separable self-attention has no query-key product to normalise; use qk_norm=False")
        self.dim = dim
        self.qkv = nn.Linear(dim, 1 + 2 * dim, bias=qkv_bias)  # one query score, then keys and values
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.impl = "auto"  # no kernel to choose; kept so towers can set it on every block alike

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) -> (B, N, D); with `need_weights`, also the (B, 1, N, N) weights (the same for every query).

        `attn_mask`, if given, is an additive float or boolean (True = may attend) mask over the keys,
        broadcastable to (B, 1, 1, N); it acts on the token weights.
        """
        query, key, value = self.qkv(x).split([1, self.dim, self.dim], dim=-1)
        scores = query.transpose(1, 2)  # (B, 1, N)
        if attn_mask is not None:
            if attn_mask.ndim != 4 or attn_mask.shape[1] != 1 or attn_mask.shape[2] != 1:
                raise ConfigError(
                    f"separable self-attention takes only a key mask of shape (B, 1, 1, N); got {tuple(attn_mask.shape)}"
                )
            mask = attn_mask[:, 0]  # (B or 1, 1, N)
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = scores.softmax(dim=-1)  # (B, 1, N)
        context = self.attn_drop(weights) @ key  # (B, 1, D)
        out = self.proj_drop(self.proj(F.relu(value) * context))
        if need_weights:
            return out, weights[:, :, None, :].expand(-1, 1, x.shape[1], -1)
        return out


class CascadedGroupAttention(nn.Module):
    """EfficientViT cascaded group attention over (B, N, D) tokens.

    The channels are split into `num_heads` groups; head i attends over group i plus head i-1's output
    (the cascade), with queries and keys `key_dim` wide and values D / num_heads wide. The heads' outputs
    are concatenated and projected after a ReLU, as in the paper.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        key_dim: int = 16,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.head_dim = dim // num_heads
        self.qkvs = nn.ModuleList(
            nn.Linear(self.head_dim, 2 * key_dim + self.head_dim, bias=qkv_bias) for _ in range(num_heads)
        )
        self.q_norm = norm_layer(key_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(key_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.impl = "auto"

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) -> (B, N, D); with `need_weights`, also the (B, heads, N, N) attention weights."""
        groups = x.chunk(self.num_heads, dim=-1)
        outs, maps = [], []
        feat = groups[0]
        for i, qkv in enumerate(self.qkvs):
            if i > 0:
                feat = groups[i] + outs[-1]  # the cascade: head i refines head i-1's output
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.head_dim], dim=-1)
            q, k = self.q_norm(q), self.k_norm(k)
            out, weights = attend(
                q[:, None], k[:, None], v[:, None], attn_mask, self.attn_drop if self.training else 0.0,
                self.impl, need_weights,
            )
            outs.append(out[:, 0])
            if need_weights:
                maps.append(weights)
        out = self.proj_drop(self.proj(F.relu(torch.cat(outs, dim=-1))))
        return (out, torch.cat(maps, dim=1)) if need_weights else out
