"""Objectives, each a module with its heads that reads cached tower features and returns a `Loss`.

Self-supervised: MAE, SimMIM, SimCLR, BYOL, MoCo v3, VICReg, Barlow Twins, SimSiam, DINO, iBOT, I-JEPA, KoLeo,
masked self-distillation (`masked_dino`). Cross-modal: CLIP, SigLIP, SLIP, CoCa, ImageBind. Fine-tuning: supervised cross-entropy.
Importing this package registers all of them, so recipes can name any.
"""

from zir.objectives.base import OBJECTIVES, Forward, Loss, Objective, create_objective, list_objectives, register_objective
from zir.objectives.teacher import EMATeacher, TeacherSpec
from zir.objectives.self_distillation import SelfDistillation
from zir.objectives.barlow_twins import BarlowTwins
from zir.objectives.dino import DINO
from zir.objectives.heads import DINOHead
from zir.objectives.byol import BYOL
from zir.objectives.moco_v3 import MoCoV3
from zir.objectives.ibot import IBOT
from zir.objectives.ijepa import IJEPA
from zir.objectives.koleo import KoLeo
from zir.objectives.mae import MAE
from zir.objectives.masked_distill import MaskedDistillation
from zir.objectives.simclr import SimCLR
from zir.objectives.simmim import SimMIM
from zir.objectives.simsiam import SimSiam
from zir.objectives.supervised import Supervised
from zir.objectives.vicreg import VICReg
from zir.objectives import clip, coca, itm, siglip, slip  # noqa: E402,F401  (registers clip, coca, itm, siglip, slip)
from zir.objectives import imagebind  # noqa: E402,F401  (registers imagebind)

__all__ = [
    "BYOL", "BarlowTwins", "DINO", "DINOHead", "IBOT", "IJEPA", "MAE", "OBJECTIVES", "EMATeacher", "Forward", "KoLeo",
    "Loss", "MaskedDistillation", "MoCoV3", "Objective", "SelfDistillation", "SimCLR", "SimMIM", "SimSiam", "Supervised",
    "TeacherSpec", "VICReg", "create_objective", "list_objectives", "register_objective",
]
