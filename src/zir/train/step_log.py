"""What a run reports as it trains: one row per step into metrics.csv, TensorBoard and the progress display,
and status.json / summary.json, each replaced atomically. Rank 0 writes; every rank builds the same rows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zir.train.metrics_log import MetricsLog, _tensorboard
from zir.train.progress import Progress

if TYPE_CHECKING:
    from zir.train.trainer import Trainer


class StepLog:
    """The per-step outputs of one `Trainer.fit()`: opened at its start (metrics.csv cut back to the resumed step),
    closed at its end; samples/s is smoothed over steps."""

    def __init__(self, trainer: Trainer, resume_step: int | None):
        main = trainer.dist.main
        self.world_size = trainer.dist.world_size
        self.metrics = MetricsLog(trainer.run_dir / "metrics.csv", resume_step) if main else None
        self.board = _tensorboard(trainer.run_dir) if main and trainer.cfg.train.tensorboard else None
        self.show = Progress(trainer, enabled=trainer.progress) if main else None
        self.rate: float | None = None

    def start(self, step: int) -> None:
        """Show the progress display from `step`."""
        if self.show:
            self.show.start(step)

    def row(self, step: int, epoch: int, out: dict[str, Any], seconds: float, time_s: float) -> dict[str, Any]:
        """The metrics row of a step that took `seconds`: its values (less the sample count), samples/s, run time."""
        sps = out["samples"] * self.world_size / max(seconds, 1e-9)
        self.rate = sps if self.rate is None else 0.9 * self.rate + 0.1 * sps
        return {"step": step, "epoch": epoch, **{k: v for k, v in out.items() if k not in ("samples",)},
                "samples_per_s": self.rate, "time_s": time_s}

    def write(self, row: dict[str, Any]) -> None:
        """Append the row to metrics.csv and TensorBoard and show it."""
        if self.metrics:
            self.metrics.write(row)
        if self.board is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.board.add_scalar(k, v, row["step"])
        if self.show:
            self.show.update(row["step"], row)

    def close(self) -> None:
        """Stop the display and close the files."""
        if self.show:
            self.show.stop()
        if self.metrics:
            self.metrics.close()
        if self.board is not None:
            self.board.close()


def write_json(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON in one rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)
