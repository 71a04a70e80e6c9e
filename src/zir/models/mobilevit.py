"""MobileViT v2 (Mehta and Rastegari, 2022, "Separable Self-attention for Mobile Vision Transformers"):
the `mobilevitv2_050` ... `mobilevitv2_200` family.

A stride-2 convolutional stem and five stages of MobileNet v2 inverted residual blocks; the last three
stages end in a MobileViT v2 block: a depthwise 3x3 and a 1x1 convolution, then the feature map unfolded
into 2x2 patches and transformer layers whose separable self-attention (linear in the number of patches)
runs across patches, separately for each of the 4 pixel positions of a patch; then folded back and
projected. The width multiplier scales every channel count.

Token layout for the tower interface: no prefix tokens; `forward_tokens` returns the last stage's map
(stride 32) as (B, N, D) tokens. The tower is convolutional and cannot drop or mask tokens.
"""

from __future__ import annotations

import math
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError, ShapeError
from zir.nn.drop import DropPath
from zir.nn.patch_embed import to_2tuple
from zir.models.pooled import MeanPooledHead, check_mean_pool
from zir.models.tower import refuse_masking


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never more than 10% below the value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormAct(nn.Module):
    """Convolution without bias, BatchNorm, then SiLU (or no activation)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        return self.act(self.bn(self.conv(x)))


class InvertedResidual(nn.Module):
    """MobileNet v2 block: 1x1 expand, depthwise 3x3 (strided), linear 1x1 project; residual when shapes match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expansion)
        self.conv1_1x1 = ConvNormAct(in_chs, mid)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, act=False)
        self.residual = in_chs == out_chs and stride == 1
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        out = self.drop_path(self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x))))
        return x + out if self.residual else out


class ConvSeparableAttention(nn.Module):
    """Separable self-attention on unfolded maps (B, C, P, N): softmax over the N patches for each of the
    P pixel positions. The same computation as `zir.nn.linear_attention.SeparableSelfAttention` on
    (B * P, N, C) tokens, written with 1x1 convolutions so the channels stay first."""

    def __init__(self, dim: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out_proj = nn.Conv2d(dim, dim, 1)
        self.out_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, P, N) -> (B, C, P, N)."""
        query, key, value = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        weights = self.attn_drop(query.softmax(dim=-1))  # (B, 1, P, N)
        context = (key * weights).sum(dim=-1, keepdim=True)  # (B, C, P, 1)
        return self.out_drop(self.out_proj(F.relu(value) * context))


class ConvMlp(nn.Module):
    """1x1 conv, SiLU, 1x1 conv on (B, C, P, N)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, P, N) -> (B, C, P, N)."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def group_norm1(dim: int) -> nn.GroupNorm:
    """MobileViT v2's layer norm: one group, normalising channels and positions of each sample together."""
    return nn.GroupNorm(1, dim)


class LinearTransformerLayer(nn.Module):
    """Pre-norm transformer layer with separable self-attention on (B, C, P, N)."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm1(dim)
        self.attn = ConvSeparableAttention(dim, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = group_norm1(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, P, N) -> (B, C, P, N)."""
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MobileViTv2Block(nn.Module):
    """Local convs, unfold into patches, separable-attention transformer across patches, fold, project."""

    def __init__(self, dim: int, depth: int, patch_size: int = 2, transformer_ratio: float = 0.5,
                 mlp_ratio: float = 2.0, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        width = make_divisible(dim * transformer_ratio)
        self.patch_size = to_2tuple(patch_size)
        self.conv_kxk = ConvNormAct(dim, dim, 3, groups=dim)
        self.conv_1x1 = nn.Conv2d(dim, width, 1, bias=False)
        self.transformer = nn.Sequential(
            *[LinearTransformerLayer(width, mlp_ratio, drop, attn_drop, drop_path) for _ in range(depth)]
        )
        self.norm = group_norm1(width)
        self.conv_proj = ConvNormAct(width, dim, act=False)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H', W'); a side the patch does not divide is resized up to a multiple first."""
        B, _, H, W = x.shape
        ph, pw = self.patch_size
        rows, cols = math.ceil(H / ph), math.ceil(W / pw)
        if (rows * ph, cols * pw) != (H, W):
            x = F.interpolate(x, size=(rows * ph, cols * pw), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        C = x.shape[1]
        # Unfold: (B, C, rows*ph, cols*pw) -> (B, C, P = ph*pw pixel positions, N = rows*cols patches).
        x = x.reshape(B, C, rows, ph, cols, pw).permute(0, 1, 3, 5, 2, 4).reshape(B, C, ph * pw, rows * cols)
        for layer in self.transformer:
            x = checkpoint(layer, x, use_reentrant=False) if self.grad_checkpointing and torch.is_grad_enabled() else layer(x)
        x = self.norm(x)
        x = x.reshape(B, C, ph, pw, rows, cols).permute(0, 1, 4, 2, 5, 3).reshape(B, C, rows * ph, cols * pw)
        return self.conv_proj(x)


class MobileViTv2(MeanPooledHead, nn.Module):
    """MobileViT v2: conv stem, inverted-residual stages, three of them ending in separable-attention blocks."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 256,
        in_chans: int = 3,
        num_classes: int = 1000,
        width_multiplier: float = 1.0,
        transformer_depths: tuple[int, int, int] = (2, 4, 3),
        patch_size: int = 2,
        expansion: float = 2.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        """Build the tower; `width_multiplier` scales the widths 32 (stem), 64, 128, 256, 384, 512."""
        super().__init__()
        check_mean_pool(global_pool)
        if width_multiplier <= 0:
            raise ConfigError(f"width_multiplier must be positive; got {width_multiplier}")
        if len(transformer_depths) != 3:
            raise ConfigError(f"transformer_depths needs 3 entries (stages 3-5); got {tuple(transformer_depths)}")
        widths = [int(c * width_multiplier) for c in (64, 128, 256, 384, 512)]
        stem = int(32 * width_multiplier)
        self.img_size = to_2tuple(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dims = widths
        self.embed_dim = self.num_features = widths[-1]
        self.num_prefix_tokens = 0
        self.feature_stride = self.patch_size = (32, 32)  # one output token per 32x32 pixels
        self.token_grid = (math.ceil(self.img_size[0] / 32), math.ceil(self.img_size[1] / 32))
        self.grad_checkpointing = False
        self.stem = ConvNormAct(in_chans, stem, 3, 2)
        blocks_per_stage = [1, 2, 1, 1, 1]
        strides = [1, 2, 2, 2, 2]
        self.stages = nn.ModuleList()
        prev = stem
        for i, (width, count, stride) in enumerate(zip(widths, blocks_per_stage, strides)):
            stage = nn.Sequential(
                *[InvertedResidual(prev if j == 0 else width, width, stride if j == 0 else 1, expansion)
                  for j in range(count)]
            )
            if i >= 2:
                stage.append(MobileViTv2Block(width, transformer_depths[i - 2], patch_size, drop=drop_rate,
                                              attn_drop=attn_drop_rate, drop_path=drop_path_rate))
            self.stages.append(stage)
            prev = width
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Kaiming-normal convolutions, truncated-normal linear head, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    # -- the tower interface --------------------------------------------------------------------------
    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> every stage's output map (B, C_i, H_i, W_i), strides 2 to 32."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ShapeError(f"expected images of shape (B, {self.in_chans}, H, W); got {tuple(x.shape)}")
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_tokens(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B, C, H, W) -> the last stage's features as tokens (B, N, D); no `keep` or `mask`."""
        refuse_masking(self, keep, mask)
        return self.forward_maps(x)[-1].flatten(2).transpose(1, 2)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each transformer layer in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable
        for module in self.modules():
            if isinstance(module, MobileViTv2Block):
                module.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """No parameters are exempt from weight decay by name (norms are handled by the optimizer's groups)."""
        return set()

    # -- foreign checkpoints --------------------------------------------------------------------------
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Convert a timm `mobilevitv2_*` state dict (`head.fc.*`, `final_conv`) to zir's layout."""
        out = {}
        for key, value in state.items():
            if key.startswith("head.fc."):
                key = "head." + key[len("head.fc."):]
            out[key] = value
        return out, []
