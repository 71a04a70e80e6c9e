"""Image-text matching (ALBEF, Li et al. 2021): hard negatives mined from contrastive similarities, the ITM loss,
and re-ranking a retrieval's top-k by ITM scores.

ALBEF samples each negative with probability from the softmax of the similarities; zir takes the most
similar non-matching item (the hardest negative), which makes the choice deterministic and testable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def hardest_negatives(similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) image-text similarities (pair i matches i) -> (for each image the most similar other text,
    for each text the most similar other image), two (B,) index tensors. Needs B >= 2."""
    own = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    masked = similarity.float().masked_fill(own, float("-inf"))
    return masked.argmax(dim=1), masked.argmax(dim=0)


def itm_loss(match_logits: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cross-entropy of (3B, 2) match logits over [B matching pairs, 2B mined non-matching pairs]."""
    labels = torch.zeros(match_logits.shape[0], dtype=torch.long, device=match_logits.device)
    labels[:batch_size] = 1
    return F.cross_entropy(match_logits.float(), labels)


def rerank(similarity: torch.Tensor, k: int, score: callable) -> torch.Tensor:
    """Each query's candidates by similarity, its top k reordered by `score(query, candidates) -> (k,)`.

    similarity (Q, C) -> (Q, C) candidate indices, best first: positions k.. keep the similarity order, so
    re-ranking only permutes each query's top-k set.
    """
    order = similarity.argsort(dim=1, descending=True, stable=True)
    k = min(k, similarity.shape[1])
    for q in range(similarity.shape[0]):
        top = order[q, :k]
        order[q, :k] = top[torch.as_tensor(score(q, top)).argsort(descending=True, stable=True)]
    return order


def ranks_from_order(order: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's first correct candidate: order (Q, C) indices, correct (Q, C) bool."""
    hit = torch.gather(correct, 1, order)
    return hit.float().argmax(dim=1) + 1
