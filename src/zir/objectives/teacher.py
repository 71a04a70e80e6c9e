"""EMA teachers: what an objective declares (`TeacherSpec`) and what the model builds from it (`EMATeacher`).

An objective never builds its teacher: it returns `{name: TeacherSpec(...)}` from `teacher_specs()`, and
`ZirModel` builds one `EMATeacher` per name from the student tower (objectives naming the same teacher
share it, so DINO and iBOT read one `image_teacher`), hands it over with `use_teacher()` and moves it once
per step in `ZirModel.after_step()`. The teacher's state lives in the model's state dict under
`teachers.<name>.module....`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from zir.errors import ConfigError
from zir.nn.ema import ema_update_


def check_momentum(momentum: float, final_momentum: float) -> None:
    """Refuse a momentum schedule that is not 0 <= momentum <= final_momentum <= 1, in one line."""
    if not 0.0 <= momentum <= final_momentum <= 1.0:
        raise ConfigError(f"teacher momentum {momentum} -> {final_momentum}: expected 0 <= momentum <= final_momentum <= 1")


def cosine_momentum(step: int, total_steps: int, momentum: float, final_momentum: float) -> float:
    """DINO's schedule: m(k) = final - (final - momentum) * (cos(pi k / K) + 1) / 2, k = step of K = total - 1."""
    frac = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    return final_momentum - (final_momentum - momentum) * (math.cos(math.pi * frac) + 1) / 2


@dataclass(frozen=True)
class TeacherSpec:
    """An EMA teacher an objective reads: a copy of the student tower `tower` following it with momentum
    `momentum` at the first step to `final_momentum` at the last (`cosine_momentum()`)."""

    tower: str
    momentum: float = 0.996
    final_momentum: float = 1.0

    def __post_init__(self) -> None:
        check_momentum(self.momentum, self.final_momentum)
        object.__setattr__(self, "momentum", float(self.momentum))
        object.__setattr__(self, "final_momentum", float(self.final_momentum))

    def schedule(self) -> tuple[float, float]:
        """(momentum at the first step, momentum at the last): what objectives sharing a teacher must agree on."""
        return self.momentum, self.final_momentum

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA momentum after optimiser step `step` of `total_steps`."""
        return cosine_momentum(step, total_steps, self.momentum, self.final_momentum)

    def build(self, student: nn.Module) -> "EMATeacher":
        """The teacher: a frozen copy of `student` (the tower named `tower`)."""
        return EMATeacher(student, self.momentum, self.final_momentum)


class EMATeacher(nn.Module):
    """A frozen copy of a student tower that follows it by an exponential moving average (`ema_update_()`).

    The momentum follows DINO's cosine schedule (`cosine_momentum()`). Whoever built the teacher updates it
    once per step: the model for the teachers it owns, a standalone objective for one it built itself.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.996, final_momentum: float = 1.0) -> None:
        """Copy `student` and freeze the copy."""
        super().__init__()
        check_momentum(momentum, final_momentum)
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()
        self.momentum, self.final_momentum = float(momentum), float(final_momentum)

    def train(self, mode: bool = True) -> "EMATeacher":
        """The teacher always runs in eval mode (no dropout or drop path)."""
        super().train(mode)
        self.module.eval()
        return self

    def schedule(self) -> tuple[float, float]:
        """(momentum at the first step, momentum at the last)."""
        return self.momentum, self.final_momentum

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA momentum after optimiser step `step` of `total_steps`."""
        return cosine_momentum(step, total_steps, self.momentum, self.final_momentum)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, total_steps: int) -> float:
        """teacher <- m * teacher + (1 - m) * student for parameters; buffers are copied. Returns m."""
        m = self.momentum_at(step, total_steps)
        t_params = [p for _, p in sorted(self.module.named_parameters())]
        s_params = [p for _, p in sorted(student.named_parameters())]
        if len(t_params) != len(s_params):
            raise ConfigError("teacher and student towers have different parameters")
        ema_update_(t_params, s_params, m)
        for (_, tb), (_, sb) in zip(sorted(self.module.named_buffers()), sorted(student.named_buffers())):
            tb.copy_(sb)
        return m
