"""What the training loop counts between steps, typed: the part a checkpoint keeps and the part status shows.

The checkpoint fields keep the names and types `trainer.pt` has always had (`step`, `bad_in_row`,
`skipped_total`, `best`, `elapsed`, `budget_spent`), so checkpoints written before this class still resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainState:
    """The loop's counters and markers; the data position lives in the `DataStream`, the weights in the model."""

    step: int = 0  # optimizer steps taken (skipped ones count)
    bad_in_row: int = 0  # non-finite steps since the last good one; no periodic checkpoint while > 0
    skipped_total: int = 0  # non-finite steps over the whole run
    best: dict[str, Any] = field(default_factory=dict)  # {"loss", "step"} of the lowest finite loss
    elapsed_before: float = 0.0  # seconds the earlier processes of this run trained
    budget_spent_before: float = 0.0  # seconds of train.time_budget they spent
    last_row: dict[str, Any] = field(default_factory=dict)  # the newest metrics row (this process; not saved)
    last_checkpoint: Path | None = None  # the newest checkpoint this process wrote (not saved)

    def record(self, row: dict[str, Any]) -> None:
        """Take one step's metrics row: the newest row, and the best loss so far."""
        if math.isfinite(row["loss"]) and (not self.best or row["loss"] < self.best["loss"]):
            self.best = {"loss": row["loss"], "step": row["step"]}
        self.last_row = row

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> TrainState:
        """The state a checkpoint's trainer state describes; fields an older checkpoint lacks start at zero."""
        return cls(step=int(state["step"]), bad_in_row=int(state.get("bad_in_row", 0)),
                   skipped_total=int(state.get("skipped_total", 0)), best=dict(state.get("best") or {}),
                   elapsed_before=float(state.get("elapsed", 0.0)),
                   budget_spent_before=float(state.get("budget_spent", 0.0)))
