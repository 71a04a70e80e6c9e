"""Objectives: MAE, SimCLR, DINO, iBOT, KoLeo, each a module with its heads that reads cached tower features."""

from zir.objectives.base import (
    OBJECTIVES, EMATeacher, Forward, Loss, Objective, create_objective, list_objectives, register_objective,
)
from zir.objectives.mae import MAE

__all__ = [
    "MAE", "OBJECTIVES", "EMATeacher", "Forward", "Loss", "Objective", "create_objective", "list_objectives",
    "register_objective",
]
