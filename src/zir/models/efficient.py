"""Efficient attention choices for the ViT tower: MobileViT v2 separable (linear) and EfficientViT
cascaded group attention.

`EfficientAttentionViT` is the ViT tower with every block's attention replaced by the chosen kind; it
keeps the whole tower interface (`keep` token dropping, prefix tokens, pooling, heads, checkpointing), so
any recipe can use it where it uses a ViT. The attention kinds live in `zir.nn.linear_attention`.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from zir.errors import ConfigError
from zir.models.vit import VisionTransformer
from zir.nn.linear_attention import CascadedGroupAttention, SeparableSelfAttention

ATTENTION_KINDS = ("softmax", "separable", "cascaded_group")


def make_attention(kind: str, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, attn_drop: float,
                   proj_drop: float, key_dim: int = 16) -> nn.Module:
    """Build an attention module of `kind` with the call signature of `zir.nn.Attention`."""
    if kind == "separable":
        return SeparableSelfAttention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop)
    if kind == "cascaded_group":
        return CascadedGroupAttention(dim, num_heads, qkv_bias, qk_norm, attn_drop, proj_drop, key_dim=key_dim)
    raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KINDS)}; got {kind!r}")


class EfficientAttentionViT(VisionTransformer):
    """A ViT whose blocks use separable (linear) or cascaded group attention instead of softmax attention."""

    def __init__(self, attention: str = "separable", key_dim: int = 16, **kwargs: Any) -> None:
        """`attention`: 'separable', 'cascaded_group' or 'softmax' (the plain ViT); `key_dim`: the query/key
        width of each cascaded group head. Other arguments are `VisionTransformer`'s."""
        if attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KINDS)}; got {attention!r}")
        if attention != "softmax" and kwargs.get("less_attention"):
            raise ConfigError(
                f"less_attention reuses softmax attention scores; it does not combine with attention={attention!r}"
            )
        super().__init__(**kwargs)
        self.attention = attention
        if attention == "softmax":
            return
        for block in self.blocks:
            old = block.attn
            block.attn = make_attention(
                attention, self.embed_dim, self.num_heads, old.qkv.bias is not None,
                not isinstance(old.q_norm, nn.Identity), old.attn_drop, old.proj_drop.p, key_dim,
            ).to(old.qkv.weight.device)
        self.init_weights()


def _merged_signature() -> inspect.Signature:
    """`EfficientAttentionViT.__init__`'s signature: its own options plus every `VisionTransformer` option,
    so the zoo's override check and config readers see them all."""
    own = inspect.signature(EfficientAttentionViT.__init__).parameters
    base = inspect.signature(VisionTransformer.__init__).parameters
    params = [own["self"], own["attention"], own["key_dim"]] + [p for n, p in base.items() if n != "self"]
    return inspect.Signature(params)


EfficientAttentionViT.__init__.__signature__ = _merged_signature()  # type: ignore[attr-defined]
