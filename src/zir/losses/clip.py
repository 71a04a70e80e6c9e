"""CLIP's symmetric contrastive loss with a learnable, clamped temperature (Radford et al., 2021).

Image and text features are L2-normalised; the logits are their cosine similarities times a scale
exp(t), t learnable from log(1/0.07) and clamped so the scale never exceeds 100, as published. The loss
is the mean of the image->text and text->image cross-entropies with matching pairs as targets.

t is stored with shape (1,), not as a 0-d tensor: FSDP's `fully_shard` refuses 0-d parameters. Checkpoints
written before this change hold 0-d tensors; `accept_0d_checkpoints` reshapes them when they are loaded.

With `gather_distributed`, each rank scores its local images against all texts and its local texts
against all images (a b x B block instead of B x B); the features come from `gather_with_grad`, so the
mean of the ranks' losses is the global-batch loss and DDP's averaged gradients equal the single-process
ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zir.errors import ConfigError, ShapeError
from zir.losses.distributed import gather_with_grad, rank_and_world


def check_pairs(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Raise ShapeError unless both are (B, D) with the same B and D."""
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ShapeError(f"image and text features must both be (B, D); got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")


def accept_0d_checkpoints(module: nn.Module, *names: str) -> None:
    """Let `module.load_state_dict` take the 0-d tensors older checkpoints hold for its (1,)-shaped `names`."""

    def reshape(mod, state_dict, prefix, *_):
        for name in names:
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.ndim == 0:
                state_dict[prefix + name] = value.reshape(1)

    module.register_load_state_dict_pre_hook(reshape)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """(B, D) image and (M, D) text features -> (B, M) scaled cosine similarities."""
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over image-text pairs with a learnable temperature; (B, D), (B, D) -> scalar."""

    def __init__(
        self,
        temperature: float = 0.07,
        max_scale: float = 100.0,
        learn_temperature: bool = True,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not (0 < temperature and 1 / temperature <= max_scale):
            raise ConfigError(f"clip temperature={temperature}: expected 1/temperature in (0, max_scale={max_scale}]")
        init = torch.tensor([math.log(1 / temperature)])  # (1,): fully_shard takes no 0-d parameter
        if learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        accept_0d_checkpoints(self, "logit_scale")
        self.max_log_scale = math.log(max_scale)
        self.gather_distributed = gather_distributed

    @property
    def scale(self) -> torch.Tensor:
        """The current logit scale exp(t), clamped to at most max_scale."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the stored log-scale in place (call after an optimiser step, as CLIP does)."""
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Mean of image->text and text->image cross-entropy; row i of each input is a matching pair."""
        check_pairs(image_features, text_features)
        img, txt = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
        scale = self.scale
        if self.gather_distributed and rank_and_world()[1] > 1:
            rank = rank_and_world()[0]
            all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)
            targets = torch.arange(img.shape[0], device=img.device) + rank * img.shape[0]
            per_image = scale * img @ all_txt.T  # (b, B)
            per_text = scale * txt @ all_img.T  # (b, B)
        else:
            targets = torch.arange(img.shape[0], device=img.device)
            per_image = scale * img @ txt.T
            per_text = per_image.T
        return (F.cross_entropy(per_image.float(), targets) + F.cross_entropy(per_text.float(), targets)) / 2
