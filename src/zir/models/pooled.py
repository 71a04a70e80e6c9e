"""The tower protocol's defaults for image towers without a class token (Swin, MobileViT v2, EfficientViT).

They pool by averaging their output tokens and classify the mean; only how they make tokens differs.
Convolution-like towers can neither drop nor mask patches; Swin overrides what it can do more.
"""

from __future__ import annotations

import torch
from torch import nn

from zir.errors import ConfigError
from zir.nn import check_attention_impl


def check_mean_pool(global_pool: str) -> None:
    """These towers pool by averaging and have no class token: `global_pool` is accepted (so a recipe that
    sets `avg` for a ViT also builds them) but only as 'avg'."""
    if global_pool != "avg":
        raise ConfigError(f"global_pool must be 'avg' for this tower (it has no class token); got {global_pool!r}")


class MeanPooledHead:
    """Mixin: `pool`, `forward_head`, `forward`, `forward_features` and `reset_classifier` over mean pooling,
    plus the protocol members (`zir.models.tower`) such towers share.

    The class mixing it in defines `forward_tokens(x, keep=None, mask=None)`, `head`, `head_drop`,
    `num_features`, `img_size`, `in_chans`, `patch_size`, `token_grid` and `feature_stride`.
    """

    modality = "image"
    num_prefix_tokens = 0
    has_class_token = False
    can_drop_tokens = False
    has_mask_token = False
    can_return_attention = False

    def check_size(self, height: int, width: int) -> None:
        """Any side is accepted (the convolutions and resizing take it)."""

    def set_attention_impl(self, impl: str) -> None:
        """Check `impl`; these towers have no softmax attention whose kernel could be chosen."""
        check_attention_impl(impl)

    def layer_index(self, param_name: str) -> int:
        """Depth for layer-wise lr decay: 0 the stem, i + 1 stage i, stages + 1 the head."""
        if param_name.startswith("stages."):
            return int(param_name.split(".")[1]) + 1
        if param_name.startswith("head"):
            return len(self.stages) + 1
        return 0

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """zir's own layout: nothing to convert."""
        return dict(state), []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> all token features (B, N, D) (timm's name for `forward_tokens` without masking)."""
        return self.forward_tokens(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) token features -> (B, D), their mean."""
        return tokens.mean(dim=1)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Token features -> logits (B, classes), or the pooled embedding when `pre_logits`."""
        pooled = self.head_drop(self.pool(tokens))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> logits (B, classes), or embeddings (B, D) without a head."""
        return self.forward_head(self.forward_tokens(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh linear one for `num_classes` (0 removes it)."""
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.head = nn.Linear(self.num_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
