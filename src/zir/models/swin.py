"""The Swin Transformer tower (Liu et al., 2021): shifted-window attention in a hierarchy of stages.

Token layout: Swin has no prefix tokens; `forward_tokens` returns the last stage's tokens (B, N, D) in
row-major order, N = (H / s) * (W / s) for the total stride s = patch * 2 ** (stages - 1), and `pool`
averages them. Windowed attention needs the full grid, so masking works SimMIM-style: masked patches are
replaced by a learned mask token (build with `mask_token=True`) instead of being dropped, and the output
keeps all N tokens (`can_drop_tokens` is False).

Any input size works whose patch grid halves evenly at every merge and whose stage grids the window
divides; a stage grid no larger than the window becomes a single window without a shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError, ShapeError
from zir.models.pooled import MeanPooledHead, check_mean_pool
from zir.nn import DropPath, Mlp, PatchEmbed, to_2tuple
from zir.nn.attention import check_attention_impl
from zir.nn.window import (
    PatchMerging, WindowAttention, relative_position_index, shifted_window_mask, window_and_shift, window_partition,
    window_reverse,
)


class SwinPatchEmbed(PatchEmbed):
    """Patch embedding followed by a LayerNorm (Swin's `patch_norm`): (B, C, H, W) -> (B, N, D)."""

    def __init__(
        self,
        img_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        in_chans: int,
        embed_dim: int,
        norm: bool = True,
    ) -> None:
        super().__init__(img_size, patch_size, in_chans, embed_dim)
        self.norm = nn.LayerNorm(embed_dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised (B, N, D) patch tokens."""
        return self.norm(super().forward(x))


class SwinBlock(nn.Module):
    """Pre-norm block: (shifted) window attention, then an MLP, each on a residual branch."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        shifted: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        # Shifted blocks move the windows by half a window, so information crosses window borders.
        self.shift_size = (window_size[0] // 2, window_size[1] // 2) if shifted else (0, 0)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        grid = (x.shape[1], x.shape[2])
        window, shift = window_and_shift(grid, self.window_size, self.shift_size)
        y = self.norm1(x)
        if any(shift):
            y = torch.roll(y, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = shifted_window_mask(grid, window, shift, x.device)
        y = window_reverse(self.attn(window_partition(y, window), window, mask), window, grid)
        if any(shift):
            y = torch.roll(y, shifts=shift, dims=(1, 2))
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Optional 2x2 patch merging, then `depth` blocks alternating plain and shifted windows."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: tuple[int, int],
        downsample: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        drop: float,
        attn_drop: float,
        drop_paths: Sequence[float],
    ) -> None:
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, i % 2 == 1, mlp_ratio, qkv_bias, drop, attn_drop, drop_paths[i])
            for i in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C_in) -> (B, H', W', C), H' = H / 2 with merging."""
        x = self.downsample(x)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


class SwinTransformer(MeanPooledHead, nn.Module):
    """Swin Transformer: hierarchical stages of shifted-window attention joined by patch merging."""

    can_drop_tokens = False  # `keep` masks patches with the mask token; the output keeps the full grid

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | tuple[int, int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        patch_norm: bool = True,
        mask_token: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        """Build the tower.

        `embed_dim` is the first stage's width; each later stage doubles it. `mask_token=True` adds the
        learned token that masked patches become (SimMIM); without it, `keep`/`mask` raise a ConfigError.
        """
        super().__init__()
        check_mean_pool(global_pool)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ConfigError(f"depths {depths} and num_heads {num_heads} must be non-empty and of equal length")
        dims = [embed_dim * 2**i for i in range(len(depths))]
        for dim, heads in zip(dims, num_heads):
            if heads <= 0 or dim % heads:
                raise ConfigError(f"stage width {dim} must be divisible by its num_heads {heads}")
        self.num_classes = num_classes
        self.depths = depths
        self.embed_dims = dims
        # `embed_dim`/`num_features` name the width of the tokens the tower outputs, as for every tower.
        self.embed_dim = self.num_features = dims[-1]
        self.num_prefix_tokens = 0
        self.window_size = to_2tuple(window_size)
        self.grad_checkpointing = False

        self.patch_embed = SwinPatchEmbed(img_size, patch_size, in_chans, embed_dim, norm=patch_norm)
        self.patch_size = self.patch_embed.patch_size
        self.grid_size = self.patch_embed.grid_size
        self.img_size = self.patch_embed.img_size
        self.in_chans = in_chans
        self.token_grid = self.grid_size  # the patch grid `keep` and `mask` index (outputs: `feature_stride`)
        self.feature_stride = (self.patch_size[0] * 2 ** (len(depths) - 1), self.patch_size[1] * 2 ** (len(depths) - 1))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None

        total = sum(depths)
        # Stochastic depth grows linearly over all blocks (plain floats: the meta device has no data).
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            self.layers.append(
                SwinStage(dims[max(i - 1, 0)], dims[i], depth, heads, self.window_size, i > 0, mlp_ratio, qkv_bias,
                          drop_rate, attn_drop_rate, rates[start:start + depth])
            )
            start += depth
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        try:
            self.stage_grids(*self.img_size)
        except ShapeError as err:
            raise ConfigError(str(err)) from None
        self.init_weights()

    # -- initialisation -------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Truncated-normal linears and bias tables (std 0.02), zero biases, small mask token."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, WindowAttention):
                nn.init.trunc_normal_(module.relative_position_bias_table, std=0.02)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    # -- sizes ----------------------------------------------------------------------------------------
    def stage_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (rows, cols) token grid of every stage for an image size; ShapeError if it does not fit."""
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ShapeError(f"image size {height}x{width} is not divisible by the patch size {ph}x{pw}")
        grid = (height // ph, width // pw)
        grids = []
        for i in range(len(self.depths)):
            if i > 0:
                if grid[0] % 2 or grid[1] % 2:
                    raise ShapeError(
                        f"image size {height}x{width} does not fit this Swin: the {grid[0]}x{grid[1]} grid before "
                        f"stage {i + 1} cannot be halved by patch merging; use sides divisible by "
                        f"{self.feature_stride[0]}x{self.feature_stride[1]} (e.g. {self.img_size[0]}x{self.img_size[1]})"
                    )
                grid = (grid[0] // 2, grid[1] // 2)
            window, _ = window_and_shift(grid, self.window_size, (0, 0))
            if grid[0] % window[0] or grid[1] % window[1]:
                raise ShapeError(
                    f"image size {height}x{width} does not fit this Swin: the stage {i + 1} grid {grid[0]}x{grid[1]} is "
                    f"not divisible by the {window[0]}x{window[1]} window; use sides whose stage grids the window "
                    f"divides (e.g. {self.img_size[0]}x{self.img_size[1]}) or another window_size"
                )
            grids.append(grid)
        return grids

    def check_size(self, height: int, width: int) -> None:
        """Raise a ShapeError unless every stage grid of this side halves evenly and fits the windows."""
        self.stage_grids(height, width)

    @property
    def has_mask_token(self) -> bool:
        """Whether masked patches can become the mask token (built with `mask_token=True`)."""
        return self.mask_token is not None

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ShapeError naming what is wrong with an image batch."""
        self.patch_embed.check_input(x)
        self.stage_grids(x.shape[-2], x.shape[-1])

    # -- the tower interface --------------------------------------------------------------------------
    def token_mask(
        self, keep: torch.Tensor | None, mask: torch.Tensor | None, batch: int, num_patches: int
    ) -> torch.Tensor | None:
        """A (B, N) boolean mask (True = replace by the mask token) from `keep` indices or a `mask`."""
        if keep is None and mask is None:
            return None
        if keep is not None and mask is not None:
            raise ConfigError("pass either keep (patches to encode) or mask (patches to mask), not both")
        if self.mask_token is None:
            raise ConfigError("this Swin tower has no mask token; build it with mask_token=True to mask patches")
        if mask is not None:
            if mask.shape != (batch, num_patches):
                raise ShapeError(f"mask must have shape (B={batch}, N={num_patches}); got {tuple(mask.shape)}")
            return mask.bool()
        if keep.dtype not in (torch.int64, torch.int32) or keep.ndim != 2 or keep.shape[0] != batch:
            raise ShapeError(
                f"keep must be a (B={batch}, K) integer tensor of patch indices; got {keep.dtype} {tuple(keep.shape)}"
            )
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= num_patches):
            raise ShapeError(f"keep indices must lie in [0, {num_patches}); got [{int(keep.min())}, {int(keep.max())}]")
        masked = torch.ones(batch, num_patches, dtype=torch.bool, device=keep.device)
        return masked.scatter(1, keep.long(), False)

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> the first stage's input map (B, H/p, W/p, D), masked patches replaced."""
        self.check_input(x)
        tokens = self.patch_embed(x)
        B, N, D = tokens.shape
        masked = self.token_mask(keep, mask, B, N)
        if masked is not None:
            tokens = torch.where(masked.to(tokens.device)[..., None], self.mask_token.to(tokens.dtype), tokens)
        rows, cols = self.patch_embed.grid_for(x.shape[-2], x.shape[-1])
        return tokens.reshape(B, rows, cols, D)

    def forward_stages(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Images -> every stage's output map (B, C_i, H_i, W_i), finest first (for dense heads, SimMIM)."""
        feats = self.embed(x, keep, mask)
        outs = []
        for stage in self.layers:
            feats = stage(feats)
            outs.append(feats.permute(0, 3, 1, 2))
        return outs

    def forward_tokens(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B, C, H, W) -> last-stage token features (B, N, D).

        `keep` (B, K) lists the patches (of the H/p x W/p grid) left visible, or `mask` (B, H/p * W/p) marks
        the masked ones; masked patches enter as the mask token and all N output tokens are returned.
        """
        feats = self.embed(x, keep, mask)
        for stage in self.layers:
            feats = stage(feats)
        return self.norm(feats.flatten(1, 2))

    # -- housekeeping ---------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def set_attention_impl(self, impl: str) -> None:
        """Choose the attention kernel of every block: 'auto', 'sdpa' or 'math'."""
        check_attention_impl(impl)
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.impl = impl

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay should skip (relative position bias tables, mask token)."""
        return {
            name for name, _ in self.named_parameters()
            if name == "mask_token" or name.endswith("relative_position_bias_table")
        }

    def layer_index(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay: 0 embeddings, blocks 1..L, L+1 the rest.

        Patch merging before stage i counts with the last block of stage i - 1 (as in SimMIM).
        """
        if param_name.startswith(("patch_embed.", "mask_token")):
            return 0
        if param_name.startswith("layers."):
            parts = param_name.split(".")
            stage = int(parts[1])
            offset = sum(self.depths[:stage])
            if parts[2] == "blocks":
                return offset + int(parts[3]) + 1
            return offset
        return sum(self.depths) + 1

    # -- foreign checkpoints --------------------------------------------------------------------------
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Convert a timm or original (Microsoft, SimMIM) Swin state dict to zir's layout; returns it and notes.

        The original code merges patches at the end of stages 0..S-2 (`layers.0.downsample` exists), timm
        and zir at the start of stages 1..S-1; derived buffers (`relative_position_index`, `attn_mask`) are
        recomputed, and a bias table built for a smaller window (a stage grid smaller than the window) is
        placed inside the full-size table.
        """
        notes: list[str] = []
        if not any(k.startswith("layers.") and ".blocks." in k for k in state):
            return state, notes  # not a Swin checkpoint; the loader will say what does not fit
        original = "layers.0.downsample.reduction.weight" in state
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.endswith(("relative_position_index", "attn_mask")):
                continue
            if original and key.startswith("layers.") and ".downsample." in key:
                parts = key.split(".")
                parts[1] = str(int(parts[1]) + 1)
                key = ".".join(parts)
            if key.startswith("head.fc."):
                key = "head." + key[len("head.fc."):]
            out[key] = value
        if original:
            notes.append("moved patch merging from the end of each stage (original Swin layout) to the next stage's start")
        if "mask_token" in out and self.mask_token is None:
            del out["mask_token"]
            notes.append("dropped the checkpoint's mask token (build with mask_token=True to keep it)")
        own = dict(self.named_parameters())
        # Other code shrinks a stage's window (and its bias table) to the stage grid at the native size.
        native_windows = [window_and_shift(g, self.window_size, (0, 0))[0] for g in self.stage_grids(*self.img_size)]
        for key, value in list(out.items()):
            if key.endswith("relative_position_bias_table") and key in own and value.shape != own[key].shape:
                small = native_windows[int(key.split(".")[1])]
                out[key] = _embed_bias_table(value, own[key], small, self.window_size)
        return out, notes


def _embed_bias_table(
    table: torch.Tensor, target: torch.Tensor, small: tuple[int, int], window: tuple[int, int]
) -> torch.Tensor:
    """Place a bias table built for the `small` window into a zeroed table of `target`'s shape for `window`."""
    rows = (2 * small[0] - 1) * (2 * small[1] - 1)
    if table.ndim != 2 or table.shape != (rows, target.shape[1]):
        return table  # leave it misshaped: the loader reports it
    full = torch.zeros(target.shape, dtype=table.dtype)
    full[relative_position_index(small, window).reshape(-1)] = table[relative_position_index(small).reshape(-1)]
    return full
