"""The base of objectives that train a student against an EMA teacher of its own tower (DINO, iBOT,
masked_dino; BYOL and MoCo v3 through `MomentumSiamese` in `zir.objectives.siamese`).

It declares the teacher (`<tower>_teacher`, a `TeacherSpec` the model builds once and shares between the
objectives naming it), keeps the student's head beside a frozen EMA copy (`teacher_head`) and moves that
copy after each step at the teacher's momentum. The teacher tower itself is moved by `ZirModel.after_step()`.
"""

from __future__ import annotations

import copy

from torch import nn

from zir.nn.ema import ema_update_
from zir.objectives.base import Objective
from zir.objectives.teacher import EMATeacher, TeacherSpec


class SelfDistillation(Objective):
    """An objective with an EMA teacher of its tower and an EMA copy of its head.

    A subclass calls `super().__init__(towers, tower, momentum, final_momentum)`, then `distil_head(head)`;
    its forwards read the teacher as tower `self.teacher_name` and its `forward()` runs `self.teacher_head`
    on the teacher's features.
    """

    def __init__(self, towers: dict[str, nn.Module], tower: str, momentum: float, final_momentum: float) -> None:
        """Declare the teacher `<tower>_teacher` with momentum `momentum` -> `final_momentum` (cosine)."""
        super().__init__(towers, tower)
        self.teacher_name = f"{self.tower_name}_teacher"
        self.teacher_spec = TeacherSpec(self.tower_name, momentum, final_momentum)
        self.momentum_now = self.teacher_spec.momentum

    def distil_head(self, head: nn.Module) -> None:
        """Train `head` on the student's features and keep a frozen EMA copy of it, `teacher_head`."""
        self.head = head
        self.teacher_head = copy.deepcopy(head).requires_grad_(False)

    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """The one teacher, run by the model as tower `<tower>_teacher`."""
        return {self.teacher_name: self.teacher_spec}

    @property
    def teacher(self) -> EMATeacher:
        """The EMA teacher of the tower (the model's; built here when used without a model)."""
        return self.teacher_for(self.teacher_name)

    def after_step(self, step: int, total_steps: int) -> None:
        """The head's EMA at the teacher's momentum for this step (the teacher tower: the model's job)."""
        super().after_step(step, total_steps)
        m = self.teacher_spec.momentum_at(step, total_steps)
        ema_update_(list(self.teacher_head.parameters()), list(self.head.parameters()), m)
        self.momentum_now = m

    def train(self, mode: bool = True) -> "SelfDistillation":
        """Train the head; the teacher head stays in eval mode."""
        super().train(mode)
        self.teacher_head.eval()
        return self
