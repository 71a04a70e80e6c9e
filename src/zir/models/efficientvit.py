"""EfficientViT (Liu et al., CVPR 2023, "Memory Efficient Vision Transformer with Cascaded Group
Attention"): the `efficientvit_m0` ... `m5` family.

A convolutional stem (stride 16), then three stages of "sandwich" blocks: depthwise convolution and a
feed-forward layer on either side of one cascaded group attention layer, which runs inside local windows.
Stages are joined by a subsampling block (inverted-residual patch merging with squeeze-excitation).
Convolutions carry BatchNorm; every attention head has a bias per absolute (row, column) offset.

Token layout for the tower interface: no prefix tokens; `forward_tokens` returns the last stage's map as
(B, H/64 * W/64 rounded up, D) tokens. The tower is convolutional and cannot drop or mask tokens, so
`keep` raises a ConfigError.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError, ShapeError
from zir.nn.patch_embed import to_2tuple
from zir.models.pooled import MeanPooledHead, check_mean_pool
from zir.models.tower import refuse_masking


class ConvNorm(nn.Sequential):
    """Convolution without bias, then BatchNorm with its weight initialised to `bn_weight_init`."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class Residual(nn.Module):
    """x + m(x), with the branch dropped for whole samples at rate `drop` in training."""

    def __init__(self, m: nn.Module, drop: float = 0.0) -> None:
        super().__init__()
        self.m = m
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        if self.training and self.drop > 0:
            keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.drop
            return x + self.m(x) * keep / (1 - self.drop)
        return x + self.m(x)


class ConvFFN(nn.Module):
    """Pointwise feed-forward layer: 1x1 conv-BN, ReLU, 1x1 conv-BN (zero-initialised gain)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.pw2(self.act(self.pw1(x)))


def _round_channels(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor` (at least `divisor`), as squeeze-excitation widths are."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class SqueezeExcite(nn.Module):
    """Channel gating from the global mean: 1x1 conv, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        reduced = _round_channels(channels * ratio)
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class SubsampleMerging(nn.Module):
    """Halve the resolution: 1x1 expand x4, stride-2 depthwise 3x3, squeeze-excitation, 1x1 project."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = 4 * dim
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = ConvNorm(hidden, hidden, 3, 2, groups=hidden)
        self.se = SqueezeExcite(hidden)
        self.conv3 = ConvNorm(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_dim, ceil(H/2), ceil(W/2))."""
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def abs_offset_index(window: int) -> tuple[torch.Tensor, int]:
    """(N, N) indices of the absolute (row, col) offset of every token pair in a window, and their count."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    d_row = (rows[:, None] - rows[None, :]).abs()
    d_col = (cols[:, None] - cols[None, :]).abs()
    return d_row * window + d_col, window * window


class ConvCascadedGroupAttention(nn.Module):
    """Cascaded group attention on a (B, C, w, w) window: per-head channel groups fed the previous head's
    output, a depthwise convolution on each query, and a learned bias per head and absolute offset."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int, kernels: Sequence[int]) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"EfficientViT width {dim} must be divisible by num_heads {num_heads}")
        if len(kernels) < num_heads:
            raise ConfigError(f"need a query kernel size per head: {num_heads} heads, kernels {tuple(kernels)}")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = dim // num_heads
        self.window = window
        self.qkvs = nn.ModuleList(ConvNorm(self.val_dim, 2 * key_dim + self.val_dim) for _ in range(num_heads))
        self.dws = nn.ModuleList(ConvNorm(key_dim, key_dim, kernels[i], groups=key_dim) for i in range(num_heads))
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(self.val_dim * num_heads, dim, bn_weight_init=0.0))
        index, offsets = abs_offset_index(window)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, offsets))
        self.register_buffer("attention_bias_idxs", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, w, w) -> (B, C, w, w)."""
        B, C, H, W = x.shape
        groups = x.chunk(self.num_heads, dim=1)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, N, N)
        outs = []
        feat = groups[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = outs[-1] + groups[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            q = dw(q)
            q, k, v = q.flatten(2).transpose(1, 2), k.flatten(2).transpose(1, 2), v.flatten(2).transpose(1, 2)
            scores = (q * self.key_dim**-0.5) @ k.transpose(1, 2) + bias[i]
            feat = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, self.val_dim, H, W)
            outs.append(feat)
        return self.proj(torch.cat(outs, dim=1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping w x w windows, zero-padding the map to fit."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int, kernels: Sequence[int]) -> None:
        super().__init__()
        self.window = window
        self.attn = ConvCascadedGroupAttention(dim, key_dim, num_heads, window, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        w = self.window
        if H == w and W == w:
            return self.attn(x)
        pad_h, pad_w = (-H) % w, (-W) % w
        x = F.pad(x, (0, pad_w, 0, pad_h))
        nh, nw = (H + pad_h) // w, (W + pad_w) // w
        windows = x.view(B, C, nh, w, nw, w).permute(0, 2, 4, 1, 3, 5).reshape(B * nh * nw, C, w, w)
        out = self.attn(windows).view(B, nh, nw, C, w, w).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(B, C, nh * w, nw * w)[:, :, :H, :W]


class EfficientViTBlock(nn.Module):
    """The sandwich: depthwise conv, FFN, local window attention, depthwise conv, FFN (all residual)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, window: int, kernels: Sequence[int],
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.dw0 = Residual(ConvNorm(dim, dim, 3, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn0 = Residual(ConvFFN(dim, 2 * dim), drop_path)
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, num_heads, window, kernels), drop_path)
        self.dw1 = Residual(ConvNorm(dim, dim, 3, groups=dim, bn_weight_init=0.0), drop_path)
        self.ffn1 = Residual(ConvFFN(dim, 2 * dim), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _local_block(dim: int) -> nn.Sequential:
    """Depthwise conv and FFN, both residual: the convolutional blocks around a subsampling."""
    return nn.Sequential(Residual(ConvNorm(dim, dim, 3, groups=dim)), Residual(ConvFFN(dim, 2 * dim)))


class EfficientViTStage(nn.Module):
    """Optional subsampling (local block, merging, local block), then `depth` sandwich blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, key_dim: int, num_heads: int, window: int,
                 kernels: Sequence[int], subsample: bool, drop_paths: Sequence[float]) -> None:
        super().__init__()
        if subsample:
            self.downsample = nn.Sequential()
            self.downsample.add_module("res1", _local_block(in_dim))
            self.downsample.add_module("patchmerge", SubsampleMerging(in_dim, dim))
            self.downsample.add_module("res2", _local_block(dim))
        elif in_dim != dim:
            raise ConfigError(f"a stage without subsampling keeps its width; got {in_dim} -> {dim}")
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.ModuleList(
            EfficientViTBlock(dim, key_dim, num_heads, window, kernels, drop_paths[i]) for i in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C, H', W')."""
        x = self.downsample(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and torch.is_grad_enabled() else block(x)
        return x


class ConvStem(nn.Sequential):
    """Four stride-2 3x3 conv-BN layers with ReLUs: (B, C, H, W) -> (B, D, H/16, W/16), rounded up."""

    def __init__(self, img_size: int | tuple[int, int], in_chans: int, dim: int) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.in_chans = in_chans
        self.patch_size = (16, 16)
        widths = [in_chans, dim // 8, dim // 4, dim // 2, dim]
        for i in range(4):
            self.add_module(f"conv{i + 1}", ConvNorm(widths[i], widths[i + 1], 3, 2))
            if i < 3:
                self.add_module(f"relu{i + 1}", nn.ReLU())


def _halve(size: int) -> int:
    """The output side of a stride-2, padding-1, 3x3 convolution."""
    return (size - 1) // 2 + 1


class EfficientViT(MeanPooledHead, nn.Module):
    """EfficientViT (MSRA): conv stem, three stages of sandwich blocks with cascaded group attention."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (64, 128, 192),
        key_dim: Sequence[int] = (16, 16, 16),
        depth: Sequence[int] = (1, 2, 3),
        num_heads: Sequence[int] = (4, 4, 4),
        window_size: Sequence[int] = (7, 7, 7),
        kernels: Sequence[int] = (5, 5, 5, 5),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        """Build the tower. A stage whose grid at `img_size` is smaller than its window gets a window (and
        bias table) the size of that grid, as the published models do."""
        super().__init__()
        check_mean_pool(global_pool)
        sizes = {len(embed_dim), len(key_dim), len(depth), len(num_heads), len(window_size)}
        if len(sizes) != 1:
            raise ConfigError("embed_dim, key_dim, depth, num_heads and window_size need one entry per stage")
        self.num_classes = num_classes
        self.embed_dims = list(embed_dim)
        self.embed_dim = self.num_features = embed_dim[-1]
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.patch_embed = ConvStem(img_size, in_chans, embed_dim[0])
        self.img_size = self.patch_embed.img_size
        self.in_chans = in_chans
        resolution = min(_halve(_halve(_halve(_halve(s)))) for s in self.img_size)
        total = sum(depth)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        start, prev = 0, embed_dim[0]
        for i, (dim, kd, d, heads, win) in enumerate(zip(embed_dim, key_dim, depth, num_heads, window_size)):
            if i > 0:
                resolution = _halve(resolution)
            self.stages.append(EfficientViTStage(prev, dim, d, kd, heads, min(win, resolution), kernels, i > 0,
                                                 rates[start:start + d]))
            start, prev = start + d, dim
        stride = 16 * 2 ** (len(embed_dim) - 1)  # one output token per stride x stride pixels
        self.feature_stride = (stride, stride)
        self.patch_size = (16, 16)  # the stem's stride: the image is cut into 16 x 16 patches first
        self.token_grid = tuple(_halve(_halve(_halve(_halve(s)))) for s in self.img_size)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)

    def _make_head(self, num_classes: int) -> nn.Module:
        """BatchNorm then a linear classifier on the pooled features (the published head), or Identity."""
        if num_classes <= 0:
            return nn.Identity()
        head = nn.Sequential()
        head.add_module("bn", nn.BatchNorm1d(self.num_features))
        head.add_module("linear", nn.Linear(self.num_features, num_classes))
        nn.init.trunc_normal_(head.linear.weight, std=0.02)
        nn.init.zeros_(head.linear.bias)
        return head

    # -- the tower interface --------------------------------------------------------------------------
    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> every stage's output map (B, C_i, H_i, W_i)."""
        if x.ndim != 4 or x.shape[1] != self.patch_embed.in_chans:
            raise ShapeError(
                f"expected images of shape (B, {self.patch_embed.in_chans}, H, W); got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
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

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for `num_classes` (0 removes it)."""
        self.num_classes = num_classes
        self.head = self._make_head(num_classes).to(next(self.parameters()).device)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each sandwich block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay should skip (the attention biases)."""
        return {name for name, _ in self.named_parameters() if name.endswith("attention_biases")}

