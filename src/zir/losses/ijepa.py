"""I-JEPA's latent prediction loss (Assran et al., 2023, "Self-Supervised Learning from Images with a
Joint-Embedding Predictive Architecture").

Eq. (1): the distance between each predicted target-patch representation and the target encoder's,
averaged over the target blocks (the paper: the squared L2 distance summed over a block's patches). The
released training code differs in two details, which this follows: the target encoder's output is
layer-normalised over the feature dimension, without affine parameters, before it is compared, and the
distance is `smooth_l1` (Huber, beta 1) averaged over every element of every target patch. `kind="mse"`
takes the squared error averaged the same way: Eq. (1) divided by the patches per block and the width, when
every block has the same number of patches. The target is under a stop-gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zir.errors import ConfigError, ShapeError

LOSS_KINDS = ("smooth_l1", "mse")


def normalize_targets(target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The target encoder's features (..., D) layer-normalised over D, without affine parameters (the code's
    `F.layer_norm(h, (h.size(-1),))`): zero mean and unit (biased) variance per patch."""
    return F.layer_norm(target, (target.shape[-1],), eps=eps)


def ijepa_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1", beta: float = 1.0,
               normalize: bool = True) -> torch.Tensor:
    """Mean over every element of the predicted target patches (B, M, D) of `kind` against the target
    encoder's features at the same patches (B, M, D), layer-normalised when `normalize`; no gradient to them."""
    if kind not in LOSS_KINDS:
        raise ConfigError(f"ijepa loss={kind!r}: expected one of {', '.join(LOSS_KINDS)}")
    if prediction.shape != target.shape:
        raise ShapeError(f"ijepa: predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} differ "
                         "in shape")
    z = target.detach().float()
    if normalize:
        z = normalize_targets(z)
    p = prediction.float()
    if kind == "mse":
        return F.mse_loss(p, z)
    return F.smooth_l1_loss(p, z, beta=beta)
