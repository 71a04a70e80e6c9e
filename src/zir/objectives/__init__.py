"""Objectives: MAE, SimCLR, DINO, iBOT, KoLeo, each a module with its heads that reads cached tower features."""

from zir.objectives.base import (
    OBJECTIVES, EMATeacher, Forward, Loss, Objective, create_objective, list_objectives, register_objective,
)
from zir.objectives.dino import DINO, DINOHead
from zir.objectives.ibot import IBOT
from zir.objectives.koleo import KoLeo
from zir.objectives.mae import MAE
from zir.objectives.simclr import SimCLR

__all__ = [
    "DINO", "DINOHead", "IBOT", "MAE", "OBJECTIVES", "EMATeacher", "Forward", "KoLeo", "Loss", "Objective", "SimCLR",
    "create_objective", "list_objectives", "register_objective",
]
