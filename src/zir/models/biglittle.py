"""big.LITTLE ViT (Guo et al. 2023/24): a little block updates every token, a big block only the important ones.

Every block of the tower is a pair over one shared token stream of width D:

1. the LITTLE block (narrow, width `little_dim`) updates all tokens: x <- x + up(little(down(x))); `up` starts
   at zero, so an untrained little path adds nothing;
2. a learned importance score, softmax over the patch tokens of a linear read of norm(x), picks the top
   ceil(keep_ratio * N) patches; prefix tokens (CLS, registers) always take the big path;
3. the big block (a plain ViT block, same parameter names as `VisionTransformer.blocks`) updates only the
   selected tokens, with the paper's semi-cross attention: queries from the selected tokens, keys and values
   from every token, so the selected tokens still read the whole image; then its MLP on the selected tokens.
   The big update is gated by the score with a straight-through gate (value 1, gradient of the score), so the
   score learns from the loss while the forward value of the big block is unchanged.

The equality this design implies: with keep_ratio 1.0 every token is selected, semi-cross attention is
self-attention and the gate is 1, so each block is the big ViT block applied after the little update. When
the little path's output projections are zero (as built), the tower's output equals a `VisionTransformer`
holding the same big weights (to float rounding). zir trains it with the paper's supervised objective or
any other (the paper's feature distillation from a plain ViT is zir's `distill` objective's job).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError
from zir.models.vit import VisionTransformer
from zir.nn import Block
from zir.nn.attention import attend


def check_keep_ratio(keep_ratio: Any) -> float:
    """A keep ratio in (0, 1], or a one-line ConfigError naming the field."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0 < keep_ratio <= 1:
        raise ConfigError(f"keep_ratio must be a number in (0, 1] (the share of patches the big blocks see); "
                          f"got {keep_ratio!r}")
    return float(keep_ratio)


class LittleBlock(nn.Module):
    """The efficiency path: project to `little_dim`, one narrow pre-norm block, project back (zero-initialised)."""

    def __init__(self, dim: int, little_dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, little_dim)
        self.block = Block(little_dim, num_heads, mlp_ratio)
        self.up = nn.Linear(little_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> the little update (B, T, D), to be added to x."""
        return self.up(self.block(self.down(x)))


def semi_cross_block(block: Block, x: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """The big block on the selected tokens: queries from them, keys/values from all of x; returns (B, K, D).

    `selected` (B, K) indexes x's tokens. With every token selected this is exactly `block(x)`.
    """
    attn = block.attn
    B, T, D = x.shape
    K = selected.shape[1]
    h = block.norm1(x)
    h_sel = torch.gather(h, 1, selected[..., None].expand(-1, -1, D))
    x_sel = torch.gather(x, 1, selected[..., None].expand(-1, -1, D))
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(h_sel, w[:D], None if b is None else b[:D])
    kv = F.linear(h, w[D:], None if b is None else b[D:])
    q = q.reshape(B, K, attn.num_heads, attn.head_dim).transpose(1, 2)
    k, v = kv.reshape(B, T, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    out, _ = attend(q, k, v, None, attn.attn_drop if attn.training else 0.0, attn.impl)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(B, K, D)))
    x_sel = x_sel + block.drop_path1(block.ls1(out))
    return x_sel + block.drop_path2(block.ls2(block.mlp(block.norm2(x_sel))))


class BigLittleViT(VisionTransformer):
    """A ViT whose blocks are big.LITTLE pairs: see the module docstring. The big blocks are `self.blocks`."""

    can_return_attention = False  # the big blocks attend from a subset of tokens: no square maps

    def __init__(self, keep_ratio: float = 0.5, little_dim: int = 32, little_heads: int = 1,
                 little_mlp_ratio: float = 4.0, **kwargs: Any) -> None:
        """`keep_ratio`: share of patch tokens the big blocks update; `little_dim`, `little_heads`,
        `little_mlp_ratio`: the little blocks' width, heads and MLP ratio. Other arguments are `VisionTransformer`'s."""
        self.keep_ratio = check_keep_ratio(keep_ratio)
        if kwargs.get("less_attention"):
            raise ConfigError("less_attention shares square attention maps; big.LITTLE's big blocks attend from a "
                              "subset of tokens, so the two do not combine")
        super().__init__(**kwargs)
        self.little = nn.ModuleList(LittleBlock(self.embed_dim, little_dim, little_heads, little_mlp_ratio)
                                    for _ in self.blocks)
        self.score_norm = nn.ModuleList(nn.LayerNorm(self.embed_dim) for _ in self.blocks)
        self.score = nn.ModuleList(nn.Linear(self.embed_dim, 1) for _ in self.blocks)
        for little in self.little:
            nn.init.trunc_normal_(little.down.weight, std=0.02)
            nn.init.zeros_(little.up.weight)
            nn.init.zeros_(little.up.bias)

    def big_tokens(self, num_patches: int) -> int:
        """How many patch tokens the big blocks update out of `num_patches`."""
        return min(num_patches, max(1, math.ceil(self.keep_ratio * num_patches)))

    def forward_blocks(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Run the big.LITTLE pairs on (B, P + K, D) input tokens (each pair recomputed in backward when
        gradient checkpointing is on)."""
        for index in range(len(self.blocks)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(self.forward_pair, index, tokens, use_reentrant=False)
            else:
                tokens = self.forward_pair(index, tokens)
        return tokens

    def forward_pair(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Pair `index`: the little update on every token, then the big block on the top-scored ones."""
        P = self.num_prefix_tokens
        B, T, D = tokens.shape
        chosen = self.big_tokens(T - P)
        block, little = self.blocks[index], self.little[index]
        tokens = tokens + little(tokens)
        weights = self.score[index](self.score_norm[index](tokens[:, P:])).squeeze(-1).softmax(dim=-1)  # (B, N)
        if chosen == T - P:  # every token is selected: semi-cross attention is the plain block
            gate = torch.cat([weights.new_ones(B, P), 1 + weights - weights.detach()], dim=1)[..., None]
            return tokens + gate * (block(tokens) - tokens)
        top = weights.topk(chosen, dim=-1).indices  # (B, K) among the patches
        prefix_index = torch.arange(P, device=tokens.device).expand(B, P)
        selected = torch.cat([prefix_index, top + P], dim=1)
        updated = semi_cross_block(block, tokens, selected)
        where = selected[..., None].expand(-1, -1, D)
        old = torch.gather(tokens, 1, where)
        gate = torch.gather(weights, 1, top)
        gate = torch.cat([weights.new_ones(B, P), 1 + gate - gate.detach()], dim=1)[..., None]  # value 1
        return tokens.scatter(1, where, old + gate * (updated - old))

    def forward_with_attention(self, x: torch.Tensor, keep: torch.Tensor | None = None):
        """Not available: the big blocks attend from the selected tokens only (no square attention maps)."""
        raise ConfigError("BigLittleViT cannot return attention maps (can_return_attention is False)")

    def layer_index(self, param_name: str) -> int:
        """Depth for layer-wise lr decay: a pair's little block and score share its big block's depth."""
        for prefix in ("little.", "score_norm.", "score."):
            if param_name.startswith(prefix):
                return int(param_name.split(".")[1]) + 1
        return super().layer_index(param_name)


def _merged_signature() -> inspect.Signature:
    """Own options plus every `VisionTransformer` option, so the zoo's override check sees them all."""
    own = inspect.signature(BigLittleViT.__init__).parameters
    base = inspect.signature(VisionTransformer.__init__).parameters
    params = [p for n, p in own.items() if n != "kwargs"] + [p for n, p in base.items() if n != "self"]
    return inspect.Signature(params)


BigLittleViT.__init__.__signature__ = _merged_signature()  # type: ignore[attr-defined]
