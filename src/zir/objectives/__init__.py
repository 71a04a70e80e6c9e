"""Objectives, each a module with its heads that reads cached tower features and returns a `Loss`.

Self-supervised: MAE, SimMIM, SimCLR, VICReg, Barlow Twins, SimSiam, DINO, iBOT, KoLeo, masked self-distillation
(`masked_dino`). Cross-modal: CLIP, SigLIP, SLIP, CoCa. Fine-tuning:
supervised cross-entropy. Importing this package registers all of them, so recipes can name any.
"""

from zir.objectives.base import (
    OBJECTIVES, EMATeacher, Forward, Loss, Objective, create_objective, list_objectives, register_objective,
)
from zir.objectives.barlow_twins import BarlowTwins
from zir.objectives.dino import DINO, DINOHead
from zir.objectives.ibot import IBOT
from zir.objectives.koleo import KoLeo
from zir.objectives.mae import MAE
from zir.objectives.masked_distill import MaskedDistillation
from zir.objectives.simclr import SimCLR
from zir.objectives.simmim import SimMIM
from zir.objectives.simsiam import SimSiam
from zir.objectives.supervised import Supervised
from zir.objectives.vicreg import VICReg
from zir.objectives import clip, coca, siglip, slip  # noqa: E402,F401  (registers clip, coca, siglip, slip)

__all__ = [
    "BarlowTwins", "DINO", "DINOHead", "IBOT", "MAE", "OBJECTIVES", "EMATeacher", "Forward", "KoLeo", "Loss", "MaskedDistillation",
    "Objective", "SimCLR", "SimMIM", "SimSiam", "Supervised", "VICReg", "create_objective", "list_objectives", "register_objective",
]
