"""NT-Xent, SimCLR's contrastive loss (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual
Representations").

Follows the paper's Algorithm 1: with s_ij the cosine similarity of z_i and z_j, each anchor's loss is
l(i, j) = -log(exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)) for its partner j, and the loss is the mean of
l(2k-1, 2k) and l(2k, 2k-1) over the batch. Under torch.distributed the negatives are every rank's embeddings
(`gather_with_grad`); each rank averages its own 2B anchors, so the mean over ranks is the global-batch loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.losses.distributed import gather_with_grad, rank_and_world


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric NT-Xent of paired embeddings z1, z2 (B, D); returns (loss, top-1 accuracy of the partner).

    Distributed: negatives come from every rank; the loss averages this rank's 2B anchors.
    """
    z1, z2 = F.normalize(z1.float(), dim=-1), F.normalize(z2.float(), dim=-1)
    b = z1.shape[0]
    a1, a2 = gather_with_grad(z1), gather_with_grad(z2)  # (W * B, D) each
    n = a1.shape[0]
    offset = rank_and_world()[0] * b
    anchors = torch.cat([z1, z2], dim=0)  # (2B, D)
    keys = torch.cat([a1, a2], dim=0)  # (2N, D)
    logits = anchors @ keys.T / temperature
    local = torch.arange(b, device=z1.device) + offset
    self_idx = torch.cat([local, local + n])
    partner = torch.cat([local + n, local])
    logits = logits.masked_fill(F.one_hot(self_idx, 2 * n).bool(), float("-inf"))
    loss = F.cross_entropy(logits, partner)
    acc = (logits.argmax(dim=1) == partner).float().mean()
    return loss, acc
