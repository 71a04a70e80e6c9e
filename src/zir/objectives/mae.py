"""MAE: masked autoencoding (He et al., 2022, "Masked Autoencoders Are Scalable Vision Learners").

The encoder sees only the visible patches (`forward_tokens(x, keep)`); a light decoder takes the encoded
visible tokens, puts a shared learned mask token at every hidden position, adds its own fixed sin-cos
position table and predicts each hidden patch's pixels. The loss is the mean squared error on hidden
patches only, against per-patch normalised pixels by default (`norm_pix_loss`, the paper's better setting),
computed by `zir.losses.mae`.

On an audio tower's spectrogram view (`audio_0`) this is Audio-MAE (Huang et al., 2022): patches of log-mel
bins x frames, unstructured random masking (the paper's best for pretraining; it masks 80%).

Published defaults (ViT-B/16 at 224): mask ratio 0.75, decoder 8 blocks of width 512 with 16 heads,
normalised-pixel targets. Scaled for 32-pixel images and CPU-scale towers: decoder 2 blocks of half the
encoder width (at least 64); the paper's Table 1 shows even a 1-block decoder trains a good encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.losses.mae import masked_mse, normalize_patches
from zir.models.tower import require
from zir.nn import Block, sincos_2d
from zir.objectives.base import DEFAULT_MASK, Forward, Loss, MaskSpec, Objective, mask_plan, register_objective, views_needed


def _pair(patch: int | tuple[int, int]) -> tuple[int, int]:
    return (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))


def patchify(images: torch.Tensor, patch: int | tuple[int, int]) -> torch.Tensor:
    """Images (B, C, H, W) -> patches (B, N, ph * pw * C), row-major patches, pixels (row, col, channel).
    A spectrogram (B, 1, n_mels, frames) is cut the same way, its patches (bins, frames) in size."""
    b, c, h, w = images.shape
    ph, pw = _pair(patch)
    if h % ph or w % pw:
        raise ConfigError(f"image size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    x = images.reshape(b, c, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: torch.Tensor, patch: int | tuple[int, int], grid: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """Patches (B, N, ph * pw * C) -> images (B, C, H, W); the inverse of `patchify`."""
    b = patches.shape[0]
    gh, gw = grid
    ph, pw = _pair(patch)
    x = patches.reshape(b, gh, gw, ph, pw, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, gh * ph, gw * pw)


class MAEDecoder(nn.Module):
    """The light MAE decoder: embed, mask tokens at hidden positions, sin-cos positions, blocks, pixel head."""

    def __init__(self, embed_dim: int, patch: int | tuple[int, int], channels: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float) -> None:
        """A decoder from encoder width `embed_dim` to `ph * pw * channels` pixels per patch."""
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        ph, pw = _pair(patch)
        self.pred = nn.Linear(dim, ph * pw * channels)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int], prefix: int) -> torch.Tensor:
        """Encoder tokens (B, P + K, D) with visible indices keep (B, K) -> pixel predictions (B, N, L) for all N patches."""
        x = self.embed(tokens)
        b, n = x.shape[0], grid[0] * grid[1]
        full = self.mask_token.to(x.dtype).expand(b, n, -1).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.dim), x[:, prefix:])
        full = full + sincos_2d(grid, self.dim).to(full)[None]
        x = torch.cat([x[:, :prefix], full], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, prefix:]


class MAE(Objective):
    """Masked autoencoder: reconstruct hidden patches from the visible ones; the encoder sees only visible tokens."""

    name = "mae"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        view: str | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int | None = None,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mlp_ratio: float = 4.0,
        mask_name: str = DEFAULT_MASK,
    ) -> None:
        """MAE over `view` of `tower` (global_0, or audio_0 for an audio tower: Audio-MAE); decoder width defaults
        to half the encoder's, at least 64. Objectives naming the same `mask_name` on the same view read one
        masked encoding of it."""
        super().__init__(towers, tower)
        t = self.tower
        require("mae", tower, t, "patches")
        view = view or ("audio_0" if t.modality == "audio" else "global_0")
        views_needed([view])  # a known view name
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(f"mae mask_ratio={mask_ratio}: expected 0 < mask_ratio < 1")
        require("mae", tower, t, "can_drop_tokens", "its decoder needs the visible tokens alone; use simmim "
                "for masked image modelling on it where the tower has a mask token")
        self.view, self.mask_ratio, self.norm_pix_loss = view, float(mask_ratio), bool(norm_pix_loss)
        self.mask_spec = MaskSpec(mask_name, self.mask_ratio, "random")
        self.patch = t.patch_size[0] if t.patch_size[0] == t.patch_size[1] else tuple(t.patch_size)
        self.prefix = t.num_prefix_tokens
        dim = decoder_dim or max(64, t.embed_dim // 2)
        if dim % decoder_heads or dim % 4:
            raise ConfigError(f"mae decoder_dim={dim}: expected a multiple of decoder_heads={decoder_heads} and of 4")
        self.decoder = MAEDecoder(t.embed_dim, self.patch, t.in_chans, dim, decoder_depth, decoder_heads, mlp_ratio)

    def view_plan(self) -> dict:
        """The masked view (global_0 by default) with MAE's light augmentation (random resized crop and flip); an
        audio view with time crops (the audio views' default)."""
        pipeline = {"pipeline": "none"} if self.tower.modality == "audio" else {"pipeline": "mae"}
        return {**views_needed([self.view]), **mask_plan(self.view, self.mask_spec), **pipeline}

    def forwards(self) -> list[Forward]:
        """The tower on the masked view, visible patches only."""
        return [Forward(self.tower_name, self.view, self.mask_spec.name)]

    def _grid(self, images: torch.Tensor) -> tuple[int, int]:
        """The patch grid of a view (B, C, H, W)."""
        ph, pw = _pair(self.patch)
        return images.shape[-2] // ph, images.shape[-1] // pw

    def no_weight_decay(self) -> set[str]:
        """The decoder's mask token."""
        return {"decoder.mask_token"}

    def predict(self, tokens: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Encoder tokens (B, P + K, D) -> predicted patches (B, N, ph * pw * C) (normalised if `norm_pix_loss`)."""
        return self.decoder(tokens, keep, grid, self.prefix)

    def loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE on hidden patches: images (B, C, H, W), pred (B, N, L), mask (B, N) True = hidden."""
        target = patchify(images, self.patch)
        if self.norm_pix_loss:
            target = normalize_patches(target)
        return masked_mse(pred.float(), target.float(), mask)

    def forward(self, batch, features) -> Loss:
        """Reconstruction loss of the masked view from the cached visible-token features."""
        images = batch.views[self.view]
        m = batch.mask(self.view, self.mask_spec.name)
        grid = self._grid(images)
        pred = self.predict(features[self.forwards()[0]], m.keep.to(images.device), grid)
        value = self.loss(images, pred, m.mask.to(images.device))
        return Loss(value, {"mask_ratio": m.ratio})

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) with the patches not in keep (B, K) replaced by predictions, for visual checks.

        With normalised-pixel targets the predictions are mapped back with each true patch's mean and
        standard deviation (as MAE's visualisation does), so only the patch's structure is predicted.
        """
        grid = self._grid(images)
        tokens = self.tower.forward_tokens(images, keep)
        pred = self.predict(tokens, keep, grid).float()
        target = patchify(images, self.patch).float()
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mean
        visible = torch.zeros(target.shape[:2], dtype=torch.bool, device=images.device).scatter(1, keep, True)
        out = torch.where(visible.unsqueeze(-1), target, pred)
        return unpatchify(out, self.patch, grid, images.shape[1]).to(images.dtype)


register_objective("mae", MAE)
