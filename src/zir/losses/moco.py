"""MoCo v3's contrastive loss (Chen, Xie, He, 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers").

Follows the paper's Algorithm 1: `ctr(q, k)` is the cross-entropy of the logits q k^T / tau (both
L2-normalised) whose label for each query is its own key, scaled by 2 tau; the loss is
ctr(q1, k2) + ctr(q2, k1), with q the online network's predictions and k the momentum network's
projections (no gradient). The negatives of a query are the keys of the other samples of the batch;
under torch.distributed the keys of every rank are gathered (as the released code's
`concat_all_gather`), and each rank's queries find theirs at offset rank * B.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.losses.distributed import gather_with_grad, rank_and_world


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`ctr(q, k)` of Algorithm 1 for (B, D) queries and keys: (2 tau * cross-entropy, top-1 accuracy).

    The keys get no gradient; under torch.distributed they are gathered from every rank as negatives.
    """
    q = F.normalize(q.float(), dim=-1)
    k = F.normalize(k.detach().float(), dim=-1)
    keys = gather_with_grad(k)  # (W * B, D); detached, so only an all-gather
    logits = q @ keys.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + rank_and_world()[0] * q.shape[0]
    loss = F.cross_entropy(logits, labels) * (2 * temperature)
    acc = (logits.argmax(dim=1) == labels).float().mean()
    return loss, acc


def moco_v3_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor,
                 temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The symmetric MoCo v3 loss ctr(q1, k2) + ctr(q2, k1) and the mean top-1 accuracy of the two.

    `q1`, `q2`: online predictions (B, D) of views 1 and 2; `k1`, `k2`: momentum projections (B, D) of the same views.
    """
    loss_a, acc_a = contrastive_loss(q1, k2, temperature)
    loss_b, acc_b = contrastive_loss(q2, k1, temperature)
    return loss_a + loss_b, (acc_a + acc_b) / 2
