"""Image-text contrastive losses as small modules, each with a `gather_distributed` switch."""

from zir.losses.clip import ClipLoss, clip_logits
from zir.losses.distributed import gather_with_grad, rank_and_world
from zir.losses.siglip import SigLipLoss

__all__ = ["ClipLoss", "SigLipLoss", "clip_logits", "gather_with_grad", "rank_and_world"]
