"""SigLIP (Zhai et al., 2023): CLIP's towers and views with the pairwise sigmoid loss instead of the softmax.

Each image-text pair is scored independently, so no batch-wide normalisation is needed; temperature
(start 10) and bias (start -10) are learned, as published. FLIP masking (`keep`) and LiT work as in CLIP.
"""

from __future__ import annotations

from torch import nn

from zir.losses import SigLipLoss
from zir.objectives.base import DEFAULT_MASK, Loss, register_objective
from zir.objectives.clip import ImageText


class SigLIP(ImageText):
    """Image-text learning with the sigmoid loss, learnable temperature and bias."""

    name = "siglip"

    def __init__(
        self,
        towers: dict[str, nn.Module],
        tower: str = "image",
        text_tower: str = "text",
        image_view: str | None = None,
        text_view: str = "text_0",
        embed_dim: int | None = None,
        keep: float = 1.0,
        temperature: float = 0.1,
        bias: float = -10.0,
        gather_distributed: bool = True,
        mask_name: str = DEFAULT_MASK,
        keep_from: float = 0.0,
    ) -> None:
        """SigLIP between `image_view` and `text_view`, temperature and bias learnable from the published start."""
        super().__init__(towers, tower, text_tower, image_view, text_view, embed_dim, keep, mask_name, keep_from)
        self.loss = SigLipLoss(temperature, bias, True, gather_distributed)

    def forward(self, batch, features) -> Loss:
        """The sigmoid loss; metrics: image->text top-1 within the local batch, temperature scale and bias."""
        image, text = self.embeddings(features)
        loss = self.loss(image, text)
        return Loss(loss, {"acc": self.batch_top1(image, text), "scale": float(self.loss.logit_scale.detach().exp()), "bias": float(self.loss.logit_bias.detach())})

    def no_weight_decay(self) -> set[str]:
        """Temperature and bias are not decayed."""
        return {"loss.logit_scale", "loss.logit_bias"}


register_objective("siglip", SigLIP)
