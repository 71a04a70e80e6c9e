"""Pure loss functions and modules, one file per paper; objectives feed them the views' features.

Contrastive: `ClipLoss`, `SigLipLoss` (image-text), `nt_xent` (SimCLR), `moco_v3_loss` (MoCo v3). Without
negatives or a teacher: `vicreg_loss`, `barlow_twins_loss` (its `cross_correlation`), `simsiam_loss`.
Self-distillation: DINO's centred, sharpened cross-entropy (`dino_loss` and its parts), iBOT's patch loss,
KoLeo, BYOL's normalised MSE (`byol_loss`). Latent prediction: I-JEPA's (`ijepa_loss`). Reconstruction: MAE's
masked MSE, SimMIM's masked L1. Captioning: CoCa's next-token cross-entropy.
"""

from zir.losses.barlow_twins import barlow_twins_loss, cross_correlation
from zir.losses.byol import byol_loss, normalized_mse
from zir.losses.clip import ClipLoss, clip_logits
from zir.losses.coca import caption_loss
from zir.losses.dino import dino_loss, entropy, soft_cross_entropy, student_log_probs, teacher_probs, update_center
from zir.losses.distributed import all_mean, gather_with_grad, rank_and_world
from zir.losses.ibot import ibot_patch_loss
from zir.losses.ijepa import ijepa_loss, normalize_targets
from zir.losses.koleo import koleo_loss
from zir.losses.mae import masked_mse, normalize_patches
from zir.losses.moco import contrastive_loss, moco_v3_loss
from zir.losses.siglip import SigLipLoss
from zir.losses.simclr import nt_xent
from zir.losses.simmim import masked_l1
from zir.losses.simsiam import negative_cosine, simsiam_loss
from zir.losses.vicreg import vicreg_loss

__all__ = ["ClipLoss", "SigLipLoss", "all_mean", "barlow_twins_loss", "byol_loss", "caption_loss", "clip_logits",
           "contrastive_loss", "cross_correlation", "dino_loss", "entropy", "gather_with_grad", "ibot_patch_loss",
           "ijepa_loss", "koleo_loss", "masked_l1", "masked_mse", "moco_v3_loss", "negative_cosine", "normalize_patches",
           "normalize_targets", "normalized_mse", "nt_xent", "rank_and_world", "simsiam_loss", "soft_cross_entropy", "student_log_probs",
           "teacher_probs", "update_center", "vicreg_loss"]
