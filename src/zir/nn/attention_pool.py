"""Multi-head attention pooling (MAP, Lee et al. 2019; the pooling head of SigLIP's image tower).

A learned probe query attends over all tokens; the result goes through a residual MLP. The weights are laid
out as `torch.nn.MultiheadAttention`'s (`in_proj_weight` packs the query, key and value projections), which
is how SigLIP checkpoints store them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.nn.mlp import Mlp


class AttentionPool(nn.Module):
    """(B, T, D) tokens -> (B, D): probe attention, then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU,
                 norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)
        nn.init.trunc_normal_(self.probe, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool (B, T, D) tokens to (B, D)."""
        batch, length, dim = tokens.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        q = F.linear(self.probe.expand(batch, -1, -1), w_q, b_q).view(batch, 1, heads, head_dim).transpose(1, 2)
        k = F.linear(tokens, w_k, b_k).view(batch, length, heads, head_dim).transpose(1, 2)
        v = F.linear(tokens, w_v, b_v).view(batch, length, heads, head_dim).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, 1, dim)
        x = self.attn.out_proj(x)
        return (x + self.mlp(self.norm(x)))[:, 0]
