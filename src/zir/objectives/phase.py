"""When an objective counts: `start` and `ramp` as fractions of training (SigLIP 2 adds its self-supervised
terms at 80% of training, so they refine what the contrastive term has learned rather than compete with it
from the first step). Before `start` the objective is not computed at all, nor are forwards only it reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

from zir.errors import ConfigError


@dataclass(frozen=True)
class Phase:
    """Weight factor 0 before `start`, then linear from 0 to 1 over the next `ramp` of training, then 1."""

    start: float = 0.0
    ramp: float = 0.0

    def __post_init__(self) -> None:
        for key in ("start", "ramp"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0.0 <= value < 1.0:
                raise ConfigError(f"{key}={value!r}: expected a fraction of training, 0 <= {key} < 1")

    @property
    def always(self) -> bool:
        """Whether the objective counts fully from the first step."""
        return self.start == 0.0 and self.ramp == 0.0

    def factor(self, step: int, total_steps: int) -> float:
        """The weight factor at optimizer step `step` (from 0) of `total_steps`; 0 at step 0 unless `always`."""
        if self.always:
            return 1.0
        progress = step / max(total_steps, 1)
        if progress < self.start:
            return 0.0
        return 1.0 if self.ramp == 0.0 else min(1.0, (progress - self.start) / self.ramp)


def pop_phase(spec: dict, where: str) -> Phase:
    """Take `start` and `ramp` out of an objective's settings; a bad value is a one-line error naming `where`."""
    try:
        return Phase(spec.pop("start", 0.0), spec.pop("ramp", 0.0))
    except ConfigError as err:
        raise ConfigError(f"{where}.{err}") from None
