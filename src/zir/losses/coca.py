"""CoCa's captioning loss (Yu et al., 2022, "CoCa: Contrastive Captioners are Image-Text Foundation Models").

Follows the paper's Eq. 3, L_Cap = -sum_t log P(y_t | y_<t, x), the captioning term of its Algorithm 1:
teacher-forced next-token cross-entropy of the multimodal decoder's logits, here averaged over the real
(non-padding) target tokens of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def caption_loss(logits: torch.Tensor, ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy of (B, L, V) logits against ids (B, L) shifted by one, padding ignored."""
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == pad_id, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
