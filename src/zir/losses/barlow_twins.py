"""Barlow Twins' loss (Zbontar, Jing, Misra, LeCun, Deny, 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction").

Follows the paper's Algorithm 1 and Eq. (1): both views' embeddings are standardised along the batch, their
cross-correlation C = z1_norm^T z2_norm / N (D, D) is pushed towards the identity, L = sum_i (1 - C_ii)^2 +
lambda sum_{i != j} C_ij^2: the diagonal makes the views agree, the off-diagonal reduces redundancy between
dimensions (a collapsed embedding has no variance to standardise, so it cannot reach C_ii = 1). Published:
lambda = 5e-3 (0.0051 in the official code), 8192-wide embeddings.

Standardisation follows Eq. (2) and the official code, an `nn.BatchNorm1d(affine=False)` in training mode: the
biased variance plus BN's eps 1e-5, so C_ii = 1 exactly when the views agree (Algorithm 1's `std(0)` is the
unbiased one, which makes C_ii = (N - 1) / N). Under torch.distributed the statistics and C are taken over all
ranks' embeddings (`gather_with_grad`): every rank's loss is the global batch's, and DDP's average of the
gradients (summed over ranks by the gather's backward) is the global batch's gradient.
"""

from __future__ import annotations

import torch

from zir.errors import ShapeError
from zir.losses.distributed import gather_with_grad
from zir.losses.vicreg import off_diagonal


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, D) -> each dimension at mean 0 and (biased) variance 1 over the batch, as BatchNorm1d(affine=False)."""
    mean = z.mean(dim=0)
    var = z.var(dim=0, unbiased=False)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C (D, D): the correlation over the batch between dimension i of z1 and dimension j of z2."""
    return standardize(z1, eps).T @ standardize(z2, eps) / z1.shape[0]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3,
                      eps: float = 1e-5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Barlow Twins' loss of paired embeddings z1, z2 (B, D); returns (loss, unweighted terms).

    Terms, detached: `on_diag` sum_i (1 - C_ii)^2 and `off_diag` sum_{i != j} C_ij^2 (before lambda).
    Distributed: computed over the global batch, every rank returning the same value.
    """
    z1, z2 = gather_with_grad(z1.float()), gather_with_grad(z2.float())
    if z1.shape[0] < 2:
        raise ShapeError(f"barlow_twins: a batch of {z1.shape[0]} embeddings cannot be standardised; expected at least 2")
    c = cross_correlation(z1, z2, eps)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    loss = on_diag + lambd * off_diag
    return loss, {"on_diag": on_diag.detach(), "off_diag": off_diag.detach()}
