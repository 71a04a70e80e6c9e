"""The Vision Transformer tower (ViT, DeiT, registers) with the tower interface of zir's design.

Token layout: prefix tokens first (CLS, then the DeiT distillation token, then registers), then patch
tokens in row-major order. `forward_tokens(x, keep)` encodes only the patch tokens listed in `keep`, so
masked-image and FLIP-style training never pay for dropped tokens; built with `mask_token=True` the tower
owns a mask token (as DINOv2's does) and `forward_tokens(x, mask=m)` encodes every position with the
masked patches replaced by it (iBOT, SimMIM). See `zir.models.tower` for the protocol.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zir.errors import ConfigError
from zir.nn import Block, PatchEmbed, activation, check_attention_impl, resample_pos_embed, sincos_2d
from zir.nn.attention_pool import AttentionPool
from zir.nn.conv_stem import ConvStem
from zir.nn.less_attention import (
    ScoreSharingBlock, check_score_transform, less_attention_schedule, run_score_sharing, token_positions,
)
from zir.models.tower import check_keep, check_mask

GLOBAL_POOLS = ("token", "avg", "map")
POS_EMBEDS = ("learn", "sincos")
STEMS = {"patch": PatchEmbed, "conv": ConvStem}


def gather_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Select (B, K) indices from (B, N, D) tokens along N."""
    return torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al., 2021) with optional CLS, register (Darcet et al., 2024) and DeiT tokens."""

    modality = "image"
    can_drop_tokens = True
    can_return_attention = True

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        distilled: bool = False,
        pos_embed: str = "learn",
        embed_prefix: bool = True,
        fc_norm: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_eps: float = 1e-6,
        less_attention: int = 0,
        less_attention_stages: int = 1,
        less_attention_transform: str = "heads",
        stem: str = "patch",
        mask_token: bool = False,
        act: str = "gelu",
        pre_norm: bool = False,
        locked: bool = False,
    ) -> None:
        """Build the tower.

        `embed_prefix`: the prefix tokens get position embeddings of their own (original ViT); registers
        usually come with `embed_prefix=False`. `fc_norm`: normalise after pooling instead of normalising
        tokens (MAE fine-tuning style; `forward_tokens` then returns un-normalised tokens).
        `less_attention` K > 0: LaViT's less attention (`zir.nn.less_attention`): the blocks form
        `less_attention_stages` equal groups, the first K blocks of each compute attention and the others
        reuse the previous block's scores through `less_attention_transform` ('heads' or 'tokens').
        `stem`: 'patch' (one patch-sized projection, as published) or 'conv' (stride-2 3x3 convolutions,
        Xiao et al. 2021: `zir.nn.conv_stem`), with which small towers learn somewhat faster on small data.
        `mask_token`: own a learned mask token (zeros at build, as DINOv2 and iBOT), which
        `forward_tokens(x, mask=m)` puts in place of masked patches; `build_model` turns it on for a tower
        that iBOT or SimMIM reads. Off by default: an unused parameter would stall DDP.
        `act`: the MLP activation, 'gelu', 'quick_gelu' (OpenAI CLIP's) or 'gelu_tanh' (SigLIP's);
        `global_pool='map'`: SigLIP's multi-head attention pooling (`zir.nn.attention_pool`). `pre_norm`: a LayerNorm on the
        input tokens before the blocks (CLIP's `ln_pre`); with `fc_norm=True` this is CLIP's image tower.
        `locked`: frozen (no gradients, eval mode), as LiT locks a pretrained image tower.
        """
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}; got {global_pool!r}")
        if pos_embed not in POS_EMBEDS:
            raise ConfigError(f"pos_embed must be one of {', '.join(POS_EMBEDS)}; got {pos_embed!r}")
        if global_pool == "token" and not class_token:
            raise ConfigError("global_pool='token' needs class_token=True; use global_pool='avg' without one")
        if distilled and not class_token:
            raise ConfigError("distilled=True needs class_token=True (DeiT pairs the two tokens)")
        if stem not in STEMS:
            raise ConfigError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if reg_tokens < 0:
            raise ConfigError(f"reg_tokens must be >= 0; got {reg_tokens}")
        norm_layer = _layer_norm(layer_norm_eps)

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.num_heads = num_heads
        self.distilled = distilled
        self.num_reg_tokens = reg_tokens
        self.num_prefix_tokens = int(class_token) + int(distilled) + reg_tokens
        self.pos_embed_type = pos_embed
        self.grad_checkpointing = False

        self.stem_type = stem
        self.patch_embed = STEMS[stem](img_size, patch_size, in_chans, embed_dim)
        self.grid_size = self.token_grid = self.patch_embed.grid_size
        self.patch_size = self.patch_embed.patch_size
        self.img_size = self.patch_embed.img_size
        self.feature_stride = self.patch_size  # one output token per patch
        self.in_chans = in_chans
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.register_tokens = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if mask_token else None
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        else:
            self.register_buffer("pos_embed", sincos_2d(self.grid_size, embed_dim)[None], persistent=False)
        has_prefix_pos = embed_prefix and self.num_prefix_tokens > 0
        self.prefix_pos_embed = (
            nn.Parameter(torch.zeros(1, self.num_prefix_tokens, embed_dim)) if has_prefix_pos else None
        )
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()

        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear stochastic-depth rule
        block_args = (embed_dim, num_heads, mlp_ratio, qkv_bias, qk_norm, init_values, drop_rate, attn_drop_rate)
        self.less_attention = less_attention
        if less_attention:
            reuse = less_attention_schedule(depth, less_attention, less_attention_stages)
            transform = check_score_transform(less_attention_transform)
            native_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
            self.blocks = nn.ModuleList(
                ScoreSharingBlock(*block_args, rates[i], norm_layer=norm_layer, reuse=reuse[i], transform=transform,
                                  num_tokens=native_tokens)
                for i in range(depth)
            )
        else:
            act_layer = activation(act)
            self.blocks = nn.ModuleList(Block(*block_args, rates[i], act_layer=act_layer, norm_layer=norm_layer)
                                        for i in range(depth))
        self.norm = nn.Identity() if fc_norm else norm_layer(embed_dim)
        self.fc_norm = norm_layer(embed_dim) if fc_norm else nn.Identity()
        # SigLIP's multi-head attention pooling over every token (built only for global_pool='map')
        self.attn_pool = AttentionPool(embed_dim, num_heads, mlp_ratio, activation(act), norm_layer) \
            if global_pool == "map" else None
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()) if distilled else None
        self.init_weights()
        self.locked = False
        if locked:
            self.lock()

    # -- initialisation -------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Truncated-normal linears, xavier patch projection (as MAE), small tokens; a conv stem keeps torch's init."""
        if self.pos_embed_type == "learn":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.prefix_pos_embed is not None:
            nn.init.trunc_normal_(self.prefix_pos_embed, std=0.02)
        for token in (self.cls_token, self.dist_token, self.register_tokens):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        if self.stem_type == "patch":
            proj = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # -- the tower interface --------------------------------------------------------------------------
    @property
    def has_class_token(self) -> bool:
        """Whether token 0 is a CLS token."""
        return self.cls_token is not None

    @property
    def has_mask_token(self) -> bool:
        """Whether `forward_tokens(x, mask=m)` can fill masked patches (built with `mask_token=True`)."""
        return self.mask_token is not None

    def check_size(self, height: int, width: int) -> None:
        """Raise a ShapeError unless the patch size divides both sides."""
        self.patch_embed.check_input(torch.empty(1, self.patch_embed.in_chans, height, width, device="meta"))

    def patch_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, rows * cols, D) position table for a patch grid, resampled or recomputed if it differs."""
        if tuple(grid) == tuple(self.grid_size):
            return self.pos_embed
        if self.pos_embed_type == "sincos":
            return sincos_2d(grid, self.embed_dim)[None].to(self.pos_embed)
        return resample_pos_embed(self.pos_embed, self.grid_size, grid)

    def prefix_tokens(self, batch_size: int) -> torch.Tensor | None:
        """(B, P, D) prefix tokens with their position embeddings, or None if the tower has none."""
        parts = [t for t in (self.cls_token, self.dist_token, self.register_tokens) if t is not None]
        if not parts:
            return None
        prefix = torch.cat(parts, dim=1)
        if self.prefix_pos_embed is not None:
            prefix = prefix + self.prefix_pos_embed
        return prefix.expand(batch_size, -1, -1)

    def embed(self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> input tokens (B, P + K, D): prefix tokens and the kept patch tokens.

        With `mask` (B, N) every patch is kept and the masked ones are the mask token (before positions).
        """
        grid = self.patch_embed.grid_for(x.shape[-2], x.shape[-1])
        hidden = None
        if keep is not None and mask is not None:
            raise ConfigError("pass either keep (patches to encode) or mask (patches to mask), not both")
        if keep is not None:
            keep = check_keep(keep, x.shape[0], grid[0] * grid[1])
            if self.patch_embed.overlapping:  # dropped patches must not show through the stem
                hidden = torch.ones(x.shape[0], grid[0] * grid[1], dtype=torch.bool, device=x.device)
                hidden.scatter_(1, keep, False)
        if mask is not None:
            if self.mask_token is None:
                raise ConfigError("this ViT has no mask token; build it with mask_token=True to mask patches")
            hidden = check_mask(mask, x.shape[0], grid[0] * grid[1])  # a conv stem must not show them either
        patches = self.patch_embed(x, hidden)
        if mask is not None:
            patches = torch.where(hidden.unsqueeze(-1), self.mask_token.to(patches.dtype), patches)
        patches = patches + self.patch_pos_embed(grid)
        if keep is not None:
            patches = gather_tokens(patches, keep)
        prefix = self.prefix_tokens(patches.shape[0])
        tokens = patches if prefix is None else torch.cat([prefix.to(patches.dtype), patches], dim=1)
        return self.norm_pre(self.pos_drop(tokens))

    def forward_tokens(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B, C, H, W) -> token features (B, P + K, D); `keep` (B, K) picks the patches to encode,
        or `mask` (B, N) (True = masked) replaces patches by the mask token and keeps all N."""
        return self.norm(self.forward_blocks(self.embed(x, keep, mask), keep))

    def forward_blocks(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Run the blocks on (B, P + K, D) input tokens; `keep`: the patches they hold (less attention's token maps)."""
        if self.less_attention:
            positions = token_positions(self.num_prefix_tokens, keep)
            return run_score_sharing(self.blocks, tokens, positions, checkpointing=self.grad_checkpointing)[0]
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        return tokens

    def forward_with_attention(
        self, x: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Like `forward_tokens`, also returning each block's (B, H, T, T) attention weights, in one pass."""
        tokens = self.embed(x, keep)
        if self.less_attention:
            positions = token_positions(self.num_prefix_tokens, keep)
            tokens, weights = run_score_sharing(self.blocks, tokens, positions, need_weights=True)
            return self.norm(tokens), weights
        weights = []
        for block in self.blocks:
            tokens, attn = block(tokens, need_weights=True)
            weights.append(attn)
        return self.norm(tokens), weights

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> all token features (B, P + N, D) (timm's name for `forward_tokens` without masking)."""
        return self.forward_tokens(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, D) token features -> (B, D): the CLS token, the mean of the patch tokens, or attention pooling."""
        if self.global_pool == "token":
            pooled = tokens[:, 0]
        elif self.global_pool == "map":
            pooled = self.attn_pool(tokens)
        else:
            pooled = tokens[:, self.num_prefix_tokens:].mean(dim=1)
        return self.fc_norm(pooled)

    def forward_head(
        self, tokens: torch.Tensor, pre_logits: bool = False, distilled: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Token features -> logits (B, classes), or the pooled embedding when `pre_logits`.

        A DeiT-distilled tower returns the mean of its class and distillation heads (the DeiT inference
        rule), or both logits as a pair when `distilled=True` (what the distillation objective trains).
        """
        pooled = self.head_drop(self.pool(tokens))
        if pre_logits:
            return pooled
        logits = self.head(pooled)
        if self.head_dist is None:
            return logits
        dist_logits = self.head_dist(self.head_drop(tokens[:, 1]))
        return (logits, dist_logits) if distilled else (logits + dist_logits) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> logits (B, classes), or embeddings (B, D) without a head."""
        return self.forward_head(self.forward_tokens(x))

    # -- LiT ------------------------------------------------------------------------------------------
    def lock(self) -> None:
        """Freeze the tower (LiT with a pretrained image tower): no gradients and eval mode from now on."""
        self.locked = True
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VisionTransformer":
        """A locked tower stays in eval mode (no dropout or drop path)."""
        return super().train(mode and not self.locked)

    # -- housekeeping ---------------------------------------------------------------------------------
    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head(s) with fresh ones for `num_classes` (0 removes them), optionally re-pool."""
        if global_pool is not None:
            if global_pool not in GLOBAL_POOLS:
                raise ConfigError(f"global_pool must be one of {', '.join(GLOBAL_POOLS)}; got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ConfigError("global_pool='token' needs a class token, and this tower has none")
            if global_pool == "map" and self.attn_pool is None:
                raise ConfigError("global_pool='map' needs the attention-pooling head; build the tower with it")
            self.global_pool = global_pool
        self.num_classes = num_classes
        device = next(self.parameters()).device
        make = lambda: nn.Linear(self.embed_dim, num_classes, device=device) if num_classes > 0 else nn.Identity()  # noqa: E731
        self.head = make()
        if self.head_dist is not None:
            self.head_dist = make()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def set_attention_impl(self, impl: str) -> None:
        """Choose the attention kernel of every block: 'auto', 'sdpa' or 'math'."""
        check_attention_impl(impl)
        for block in self.blocks:
            block.attn.impl = impl

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay should skip (tokens and position embeddings)."""
        names = {"cls_token", "dist_token", "register_tokens", "mask_token", "pos_embed", "prefix_pos_embed"}
        return {name for name, _ in self.named_parameters() if name in names}

    def layer_index(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay: 0 embeddings, i+1 block i, depth+1 rest."""
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        if param_name.startswith(("patch_embed.", "pos_embed", "prefix_pos_embed", "cls_token", "dist_token", "norm_pre.",
                                  "register_tokens", "mask_token")):
            return 0
        return len(self.blocks) + 1

    # -- foreign checkpoints --------------------------------------------------------------------------
    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Convert a timm/DeiT/MAE/DINO-layout ViT state dict to zir's layout; returns it and notes."""
        from zir.models.vit_convert import adapt_vit_state_dict

        return adapt_vit_state_dict(self, state)


def _layer_norm(eps: float) -> Any:
    """A LayerNorm constructor with a fixed epsilon (timm and the published ViTs use 1e-6)."""
    return partial(nn.LayerNorm, eps=eps)

