"""VICReg's loss (Bardes, Ponce, LeCun, 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning").

Follows the paper's Algorithm 1 and Eq. (6), l = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]:
- invariance s: the mean squared error between the paired embeddings (B, D);
- variance v: the mean over dimensions of relu(gamma - sqrt(Var(z_j) + eps)), the unbiased variance over the
  batch: it keeps every dimension spread (gamma = 1), so the embeddings cannot collapse to one point;
- covariance c: the squared off-diagonal entries of the batch covariance (divided by N - 1), summed and
  divided by D: it decorrelates the dimensions, so they cannot all carry the same thing.
Published: lambda = mu = 25, nu = 1, gamma = 1, eps = 1e-4. The official code (facebookresearch/vicreg)
halves the variance term (the mean of the two views' terms, not their sum): `std_coeff=12.5` reproduces it.

Under torch.distributed every term is computed over all ranks' embeddings (`gather_with_grad`, as the official
code's FullGatherLayer): each rank's loss is the global batch's, and since the gather's backward sums the ranks'
gradients, DDP's average of them is the global batch's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.errors import ShapeError
from zir.losses.distributed import gather_with_grad


def off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The D * (D - 1) off-diagonal entries of a square (D, D) matrix, row by row."""
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def invariance(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """s(Z, Z'): mean squared distance between paired embeddings (B, D), over every entry."""
    return F.mse_loss(z1, z2)


def variance(z: torch.Tensor, std_target: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """v(Z): hinge on each dimension's regularised standard deviation over the batch, averaged over dimensions.

    At its maximum, `std_target - sqrt(eps)`, when every embedding is the same; 0 once each std reaches the target.
    """
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(std_target - std).mean()


def covariance(z: torch.Tensor) -> torch.Tensor:
    """c(Z): sum of the squared off-diagonal covariances over the batch, divided by the dimension D."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = z.T @ z / (n - 1)
    return off_diagonal(cov).pow(2).sum() / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, std_target: float = 1.0, eps: float = 1e-4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg's loss of paired embeddings z1, z2 (B, D); returns (loss, unweighted terms).

    The terms, detached: `invariance` s, `variance` v(Z) + v(Z'), `covariance` c(Z) + c(Z'). Distributed:
    computed over the global batch, every rank returning the same value.
    """
    z1, z2 = gather_with_grad(z1.float()), gather_with_grad(z2.float())
    if z1.shape[0] < 2:
        raise ShapeError(f"vicreg: a batch of {z1.shape[0]} embeddings has no variance; expected at least 2")
    inv = invariance(z1, z2)
    var = variance(z1, std_target, eps) + variance(z2, std_target, eps)
    cov = covariance(z1) + covariance(z2)
    loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}
