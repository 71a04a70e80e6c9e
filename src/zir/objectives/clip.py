"""CLIP (Radford et al., 2021) on zir's encode-once model, with FLIP-style image token masking and LiT.

The "image" side may be an audio tower (`tower: audio`): audio-text contrastive learning as CLAP (Elizalde et
al., 2023) does it, on the spectrogram view `audio_0`, with the same loss, projections and masking.

The objective owns the projections into the joint space: a linear map of the image tower's pooled feature
and, when the text tower's output width differs from `embed_dim`, one of the text tower's. `keep < 1` asks
the data for a random patch mask on the image view and encodes only the kept patches (FLIP, Li et al.,
2023: 2-4x cheaper steps); `encode_image` always encodes whole images, which is what evaluation uses. A
locked text tower (`all_minilm_l6_v2` with `locked: true`) gives LiT (Zhai et al., 2022).

Published defaults: temperature 0.07 learnable and clamped at a logit scale of 100, embed width 512 for
ViT-B; FLIP keeps 50% (or 25%) of the patches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError
from zir.losses import ClipLoss
from zir.objectives.base import (
    DEFAULT_MASK, Forward, Loss, MaskSpec, Objective, View, mask_plan, register_objective, view_counts,
)


def _is_text_view(name) -> bool:
    """Whether `name` is a caption view (text_0, text_1, ...): read by `View.parse`, the one reader of view names."""
    try:
        return View.parse(name).kind == "text"
    except ConfigError:
        return False


def tower_width(tower: nn.Module) -> int:
    """Width of a tower's pooled output (`embed_dim` of every zir tower; text towers: after their projection)."""
    return int(tower.embed_dim)


class ImageText(Objective):
    """Shared part of the image-text objectives: views, forwards, projections, whole-image encoders."""

    name = "image_text"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        text_tower: str = "text",
        image_view: str | None = None,
        text_view: str = "text_0",
        embed_dim: int | None = None,
        keep: float = 1.0,
        mask_name: str = DEFAULT_MASK,
        keep_from: float = 0.0,
    ) -> None:
        """Read `image_view` through `tower` and `text_view` through `text_tower`; project both to `embed_dim`.
        `tower` may be an audio tower (CLAP-style audio-text): `image_view` is then `audio_0` unless given.
        With keep < 1, the image view's mask `mask_name` hides 1 - keep of its patches (shared with MAE or
        masked distillation when they name the same mask), from the fraction `keep_from` of training on:
        before it the view is read whole (0: masked from the first step, as FLIP)."""
        super().__init__(towers, tower)
        if text_tower not in towers:
            raise ConfigError(f"objective {self.name}: text tower {text_tower!r} not among the model's towers "
                              f"({', '.join(towers)}); add one such as {{text: {{model: text_micro}}}}")
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"objective {self.name}: keep={keep}: expected a fraction of patches 0 < keep <= 1")
        if keep < 1.0 and not self.tower.can_drop_tokens:
            raise ConfigError(f"objective {self.name}: keep={keep}: the {type(self.tower).__name__} image tower needs "
                              "every patch (windows or convolutions), so FLIP masking saves nothing; use keep: 1.0")
        if not _is_text_view(text_view):
            raise ConfigError(f"objective {self.name}: text_view={text_view!r}: expected text_0, text_1, ...")
        image_view = image_view or ("audio_0" if self.tower.modality == "audio" else "image")
        self.text_tower_name, self.image_view, self.text_view, self.keep = text_tower, image_view, text_view, float(keep)
        self.mask_spec = MaskSpec(mask_name, 1.0 - self.keep if self.keep < 1.0 else 0.5, "random")
        if isinstance(keep_from, bool) or not isinstance(keep_from, (int, float)) or not 0.0 <= keep_from < 1.0:
            raise ConfigError(f"objective {self.name}: keep_from={keep_from!r}: expected a fraction of training 0 <= f < 1")
        if keep_from and self.keep == 1.0:
            raise ConfigError(f"objective {self.name}: keep_from={keep_from} needs keep < 1 (the share of patches kept)")
        self.keep_from = float(keep_from)
        if self.keep_from:  # a buffer, so a resumed run reads the view as it did; absent otherwise (older checkpoints)
            self.register_buffer("masking", torch.tensor(False))
        text_width = tower_width(towers[text_tower])
        self.embed_dim = int(embed_dim or text_width)
        self.image_proj = nn.Linear(tower_width(self.tower), self.embed_dim, bias=False)
        self.text_proj = nn.Linear(text_width, self.embed_dim, bias=False) if text_width != self.embed_dim else nn.Identity()
        nn.init.normal_(self.image_proj.weight, std=tower_width(self.tower) ** -0.5)

    @property
    def text_tower(self) -> nn.Module:
        """The text tower this objective reads."""
        return self.towers[self.text_tower_name]

    def view_plan(self) -> dict:
        """The image view (lightly augmented unless it is a global view) or audio view, the text view, FLIP's mask."""
        plan: dict = view_counts([self.image_view, self.text_view])
        if self.image_view == "image":
            plan.update(pipeline="light")
        elif self.tower.modality == "audio":
            plan.update(pipeline="none")  # no image view of its own: never the reason for a stronger image pipeline
        if self.keep < 1.0:
            plan.update(mask_plan(self.image_view, self.mask_spec))
        return plan

    def forwards(self) -> list[Forward]:
        """The image tower on the image view (masked when keep < 1, from `keep_from` on) and the text tower."""
        masked = self.keep < 1.0 and (not self.keep_from or bool(self.masking))
        mask = self.mask_spec.name if masked else ""
        return [Forward(self.tower_name, self.image_view, mask), Forward(self.text_tower_name, self.text_view)]

    def possible_forwards(self) -> list[Forward]:
        """Both readings of the image view when the objective switches to its mask during training."""
        whole = [Forward(self.tower_name, self.image_view)] if self.keep_from else []
        return whole + [Forward(self.tower_name, self.image_view, self.mask_spec.name if self.keep < 1.0 else ""),
                        Forward(self.text_tower_name, self.text_view)]

    def after_step(self, step: int, total_steps: int) -> None:
        """Read the image view through its mask from the fraction `keep_from` of training on."""
        if self.keep_from:
            self.masking.fill_((step + 1) / max(total_steps, 1) >= self.keep_from)

    @staticmethod
    @torch.no_grad()
    def batch_top1(image: torch.Tensor, text: torch.Tensor) -> float:
        """Share of images whose nearest caption in the local batch is their own (a training metric)."""
        hits = (F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T).argmax(dim=1)
        return float((hits == torch.arange(len(hits), device=hits.device)).float().mean())

    def embeddings(self, features: dict[Forward, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected (B, E) image and text embeddings (not normalised) from the feature cache."""
        f_img, f_txt = self.forwards()
        image = self.image_proj(self.tower.pool(features[f_img]))
        text = self.text_proj(self.text_tower.pool(features[f_txt]))
        return image, text

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Whole images (B, 3, H, W) -> unit-norm (B, E) embeddings (no token masking, as at evaluation)."""
        return F.normalize(self.image_proj(self.tower.pool(self.tower.forward_tokens(images))), dim=-1)

    def project_image(self, pooled: torch.Tensor) -> torch.Tensor:
        """The image tower's pooled features (N, D) -> unit-norm (N, E) joint-space embeddings (evaluation,
        saliency: features extracted once, projected here, in the projection's dtype)."""
        return F.normalize(self.image_proj(pooled.to(self.image_proj.weight.dtype)), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) -> unit-norm (B, E) embeddings."""
        return F.normalize(self.text_proj(self.text_tower.pool(self.text_tower.forward_tokens(ids))), dim=-1)

    def text_encoder(self, tokenizer) -> Callable[[Sequence[str]], torch.Tensor]:
        """A strings -> (T, E) function for `zir.eval.zeroshot_classifier`, tokenising with `tokenizer`."""
        device = self.image_proj.weight.device

        @torch.no_grad()
        def encode(texts: Sequence[str]) -> torch.Tensor:
            return self.encode_text(tokenizer.encode(list(texts)).to(device))

        return encode


class CLIP(ImageText):
    """Symmetric image-text contrastive learning with a learnable temperature (and FLIP masking, LiT)."""

    name = "clip"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        text_tower: str = "text",
        image_view: str | None = None,
        text_view: str = "text_0",
        embed_dim: int | None = None,
        keep: float = 1.0,
        temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        gather_distributed: bool = True,
        mask_name: str = DEFAULT_MASK,
        keep_from: float = 0.0,
    ) -> None:
        """CLIP between `image_view` and `text_view`; see the module docstring for the published settings."""
        super().__init__(towers, tower, text_tower, image_view, text_view, embed_dim, keep, mask_name, keep_from)
        self.loss = ClipLoss(temperature, max_scale, learn_temperature, gather_distributed)

    def forward(self, batch, features) -> Loss:
        """The contrastive loss; metrics: image->text top-1 within the local batch and the logit scale."""
        image, text = self.embeddings(features)
        loss = self.loss(image, text)
        return Loss(loss, {"acc": self.batch_top1(image, text), "scale": float(self.loss.scale.detach())})

    def after_step(self, step: int, total_steps: int) -> None:
        """Clamp the learnable temperature as CLIP does after each update; the mask's phase."""
        super().after_step(step, total_steps)
        self.loss.clamp_()

    def no_weight_decay(self) -> set[str]:
        """The temperature is not decayed."""
        return {"loss.logit_scale"}


register_objective("clip", CLIP)
