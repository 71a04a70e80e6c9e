"""Token merging (ToMe, Bolya et al., 2023): bipartite soft matching and size-weighted merging.

Between the attention and the MLP of a block, the tokens are split alternately into two sets A and B;
each A token finds its most similar B token (cosine similarity of a metric, usually the attention keys
averaged over heads), and the r most similar pairs merge into one token, the size-weighted average of the
two. Each token remembers how many patches it stands for (`size`), and proportional attention adds
log(size) to the attention scores so a merged token weighs as much as the tokens it replaced.
"""

from __future__ import annotations

import torch

from zir.errors import ConfigError


def bipartite_soft_matching(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose r merges among (B, N, C) tokens; returns (unmerged_a, merged_a, their_b) index tensors.

    A holds the tokens at even positions, B those at odd positions. `unmerged_a` (B, Na - r) lists the A
    tokens that stay, in their original order; `merged_a` (B, r) the A tokens merged away and `their_b`
    (B, r) the B token (an index into B) each one merges into.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    a, b = metric[:, ::2], metric[:, 1::2]
    best_score, best_b = (a @ b.transpose(-1, -2)).max(dim=-1)  # (B, Na)
    order = best_score.argsort(dim=-1, descending=True)
    merged_a = order[:, :r]
    unmerged_a = order[:, r:].sort(dim=-1).values
    return unmerged_a, merged_a, best_b.gather(1, merged_a)


def merge_tokens(
    x: torch.Tensor,
    size: torch.Tensor,
    unmerged_a: torch.Tensor,
    merged_a: torch.Tensor,
    their_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a matching to (B, N, D) tokens with (B, N, 1) sizes: -> ([kept A, B] tokens, their sizes).

    Merged tokens are the size-weighted mean of their members, so merging in stages equals merging at once.
    """
    weighted = torch.cat([x * size, size], dim=-1)  # carry sizes along as an extra channel
    a, b = weighted[:, ::2], weighted[:, 1::2]
    C = weighted.shape[-1]
    keep = a.gather(1, unmerged_a[..., None].expand(-1, -1, C))
    moving = a.gather(1, merged_a[..., None].expand(-1, -1, C))
    b = b.scatter_add(1, their_b[..., None].expand(-1, -1, C), moving)
    out = torch.cat([keep, b], dim=1)
    new_size = out[..., -1:]
    return out[..., :-1] / new_size, new_size


def merge_schedule(r: int | list[int] | tuple[int, ...], depth: int) -> list[int]:
    """Per-layer merge counts from one count for every layer or a list with one count per layer."""
    if isinstance(r, int):
        counts = [r] * depth
    else:
        counts = [int(v) for v in r]
    if len(counts) != depth or any(v < 0 for v in counts):
        raise ConfigError(f"token merging needs r >= 0 as one int or {depth} per-layer ints; got {r!r}")
    return counts
