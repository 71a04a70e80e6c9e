"""Image-text matching (ALBEF, Li et al. 2021): negatives mined from contrastive similarities, the ITM loss,
and re-ranking a retrieval's top-k by ITM scores.

Mining skips the pair itself and every pair `blocked` marks (zir's objective blocks captions whose tokens
equal the positive's: on shapes many images share a caption word for word, and such a "negative" is as true
as the positive). `hardest_negatives` takes the most similar item left (deterministic, testable);
`sampled_negatives` draws one with probability softmax(scale x similarity), as ALBEF does, so a near
duplicate that the contrastive model cannot tell from the positive is not drawn every time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _allowed(similarity: torch.Tensor, blocked: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) bool masks of the pairs that may serve as an image's (row) and a text's (column) negative: never
    the pair itself; not the `blocked` ones, except in a row or column where that would leave nothing."""
    own = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    rows, cols = ~own, ~own.clone()
    if blocked is not None:
        rows, cols = rows & ~blocked, cols & ~blocked
        empty_rows, empty_cols = ~rows.any(dim=1), ~cols.any(dim=0)
        rows[empty_rows] = ~own[empty_rows]
        cols[:, empty_cols] = ~own[:, empty_cols]
    return rows, cols


@torch.no_grad()
def hardest_negatives(similarity: torch.Tensor, blocked: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, B) image-text similarities (pair i matches i) -> (for each image the most similar other text,
    for each text the most similar other image), two (B,) index tensors, skipping `blocked` (B, B) pairs
    where another choice exists. Needs B >= 2."""
    rows, cols = _allowed(similarity, blocked)
    sim = similarity.float()
    return sim.masked_fill(~rows, float("-inf")).argmax(dim=1), sim.masked_fill(~cols, float("-inf")).argmax(dim=0)


@torch.no_grad()
def sampled_negatives(similarity: torch.Tensor, blocked: torch.Tensor | None = None, scale: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """As `hardest_negatives`, but each negative drawn with probability softmax(scale x similarity) over the
    allowed items (ALBEF's hard-negative sampling)."""
    rows, cols = _allowed(similarity, blocked)
    sim = similarity.float() * scale
    p_text = sim.masked_fill(~rows, float("-inf")).softmax(dim=1)
    p_image = sim.T.masked_fill(~cols.T, float("-inf")).softmax(dim=1)
    draw = lambda p: torch.multinomial(p, 1, generator=generator).squeeze(1)  # noqa: E731
    return draw(p_text), draw(p_image)


def same_tokens(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids -> (B, B) bool, True where two rows are the same text token for token."""
    return (ids[:, None, :] == ids[None, :, :]).all(dim=-1)


def itm_loss(match_logits: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cross-entropy of (3B, 2) match logits over [B matching pairs, 2B mined non-matching pairs]."""
    labels = torch.zeros(match_logits.shape[0], dtype=torch.long, device=match_logits.device)
    labels[:batch_size] = 1
    return F.cross_entropy(match_logits.float(), labels)


def reranked_ranks(similarity: torch.Tensor, k: int, score: callable, correct: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's first correct candidate after re-ranking its top k by `score(query,
    candidates) -> (k,)`; similarity and correct (Q, C). As `zir.eval.retrieval` counts them, a wrong candidate
    that ties the best correct one counts as ranked above it (identical captions get identical scores), and a
    query with no correct candidate in its top k keeps its rank by similarity."""
    sim = similarity.float()
    k = min(k, sim.shape[1])
    out = torch.empty(sim.shape[0], dtype=torch.long)
    for q in range(sim.shape[0]):
        row, own = sim[q], correct[q]
        top = row.argsort(descending=True, stable=True)[:k]
        if own[top].any():
            s = torch.as_tensor(score(q, top)).float()
            best = s[own[top]].max()
            out[q] = 1 + int(((s >= best) & ~own[top]).sum())
        else:
            out[q] = 1 + int(((row >= row[own].max()) & ~own).sum())
    return out
