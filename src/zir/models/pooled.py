"""The head half of the tower interface for towers without a class token (Swin, MobileViT v2, EfficientViT).

They pool by averaging their output tokens and classify the mean; only how they make tokens differs.
"""

from __future__ import annotations

import torch
from torch import nn


class MeanPooledHead:
    """Mixin: `pool`, `forward_head`, `forward`, `forward_features` and `reset_classifier` over mean pooling.

    The class mixing it in defines `forward_tokens(x, keep=None)`, `head`, `head_drop` and `num_features`.
    """

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
