"""A training time budget: "train for ten minutes" instead of "train for N steps".

Comparing objectives at equal cost means equal time, not equal steps (a DINO step with eight crops costs
several MAE steps). The `cpu` clock counts only this process's CPU time, so runs compared on a machine that
other jobs share still get the same amount of work; `wall` is the time a user waits.
"""

from __future__ import annotations

import time

NO_STEP_LIMIT = 2**62  # total_steps when only a budget bounds the run
BUDGET_RESOLUTION = 100_000  # the schedules see the spent share of a budget as step k of this many


class BudgetClock:
    """Seconds spent of a budget on one clock, including what earlier (resumed) parts of the run spent."""

    def __init__(self, seconds: float, clock: str = "wall"):
        self.seconds, self.clock = float(seconds), clock
        self._now = time.process_time if clock == "cpu" else time.perf_counter
        self.before = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        """Start counting (again) from now."""
        self._t0 = self._now()

    def spent(self) -> float:
        """Seconds spent so far."""
        return self.before + (self._now() - self._t0 if self._t0 is not None else 0.0)
