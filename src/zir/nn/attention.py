"""Multi-head self-attention, with the attention kernel chosen per device and dtype.

`scaled_dot_product_attention` (SDPA) is the fast path on GPUs. On CPU its fused backward is slow, above
all under bf16 autocast, so there an explicit matmul-softmax-matmul ("math") path trains faster. The math
path also yields the attention weights, which is how `need_weights=True` returns them without a second
forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError

ATTENTION_IMPLS = ("auto", "sdpa", "math")


def choose_attention_impl(device_type: str, dtype: torch.dtype, training: bool) -> str:
    """Pick the kernel `auto` resolves to for a device type, compute dtype and training flag."""
    if device_type == "cpu" and training and dtype in (torch.bfloat16, torch.float16):
        # On CPUs with native half-precision matmuls (AVX512-BF16, AMX) torch's fused attention backward
        # costs about a third of a bf16 training step, so explicit matmuls train faster there. Without
        # them (AVX2-only CPUs) half-precision matmuls take a slow path and the explicit path's attention
        # is 2.5-3x slower than SDPA's (measured in docs/benchmarks.md), so SDPA stays.
        try:
            ops = torch.ops.mkldnn
            native = ops._is_mkldnn_bf16_supported() if dtype == torch.bfloat16 else ops._is_mkldnn_fp16_supported()
        except (AttributeError, RuntimeError):  # private probe; without an answer assume no native kernels
            native = False
        return "math" if native else "sdpa"
    return "sdpa"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype matmuls will run in: the autocast dtype when autocast is on for x's device."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def check_attention_impl(impl: str) -> str:
    """Validate an attention implementation name."""
    if impl not in ATTENTION_IMPLS:
        raise ConfigError(f"attention impl must be one of {', '.join(ATTENTION_IMPLS)}; got {impl!r}")
    return impl


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    impl: str = "auto",
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over (B, H, N, d) queries/keys/values; returns (out (B, H, N, d), weights or None).

    `attn_mask` is boolean (True = may attend) or additive float, broadcastable to (B, H, N, M).
    """
    if impl == "auto":
        impl = choose_attention_impl(q.device.type, _compute_dtype(q), torch.is_grad_enabled())
    if impl == "sdpa" and not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return out, None
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, (weights if need_weights else None)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, D) tokens with optional QK-normalisation (ViT-22B)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ConfigError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.impl = "auto"

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, need_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D) -> (B, N, D); with `need_weights`, also the (B, H, N, N) attention weights."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        out, weights = attend(
            q, k, v, attn_mask, self.attn_drop if self.training else 0.0, self.impl, need_weights
        )
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, D)))
        return (out, weights) if need_weights else out
