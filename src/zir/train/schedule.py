"""Learning-rate schedules: linear warm-up, then cosine (or linear, or constant) down to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, total: int, warmup: float, schedule: str = "cosine", floor: float = 0.0) -> float:
    """The multiplier of the peak learning rate at optimizer step `step` (0-based) of `total`.

    Warm-up rises linearly over the first `warmup` fraction of the steps (reaching 1 at its last step);
    the rest follows `schedule` from 1 towards `floor` (min_lr / lr), which it would reach one step after the last.
    """
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warm) / max(1, total - warm))  # the last step keeps a little learning rate
    shape = 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t
    return floor + (1.0 - floor) * shape


class Schedule:
    """Sets each param group's lr from its base lr (`initial_lr`) and the step; stateless beyond the step."""

    def __init__(self, optimizer, total: int, warmup: float, schedule: str = "cosine", floor: float = 0.0,
                 warmup_steps: int = 0):
        self.optimizer, self.total, self.warmup, self.schedule, self.floor = optimizer, total, warmup, schedule, floor
        self.warmup_steps = warmup_steps
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def set(self, step: int, optimizer_step: int | None = None) -> float:
        """Set the learning rates for `step`; returns the multiplier.

        `step` is the schedule's position (a virtual step under a time budget); `optimizer_step` (0-based,
        default `step`) counts real updates for the `warmup_steps` floor: the rate stays at or below
        (optimizer_step + 1) / warmup_steps of the schedule's peak until that many updates are made.
        """
        f = lr_factor(step, self.total, self.warmup, self.schedule, self.floor)
        if self.warmup_steps:
            done = step if optimizer_step is None else optimizer_step
            f = min(f, (done + 1) / self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        return f
