"""Training progress on screen: a rich bar on a terminal, plain lines every `log_every` steps otherwise."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from zir.train.monitor import KNN_COLUMN

if TYPE_CHECKING:
    from zir.train.trainer import Trainer


class Progress:
    """A rich progress bar (loss terms, lr, samples/s, the newest k-NN monitor top-1, ETA) on a terminal; plain lines
    every log_every otherwise."""

    def __init__(self, trainer: Trainer, enabled: bool | None = None):
        self.trainer = trainer
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        self.knn: float | None = None  # the newest k-NN monitor top-1, shown until the next one

    def start(self, step: int) -> None:
        """Show the bar from `step`."""
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

        self.bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
        self.bar.start()
        budget = self.trainer.budget
        total, done = (budget.seconds, budget.spent()) if budget else (self.trainer.total_steps, step)
        self.task = self.bar.add_task(self.trainer.cfg.name, total=total, completed=done, info="")

    def update(self, step: int, row: dict[str, Any]) -> None:
        """Show one step's values."""
        terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k.endswith("loss") and isinstance(v, float))
        info = f"{terms}  lr {row['lr']:.2e}  {row['samples_per_s']:.0f} samples/s"
        self.knn = row.get(KNN_COLUMN, self.knn)
        if self.knn is not None:
            info += f"  knn {self.knn:.1f}%"
        budget = self.trainer.budget
        if self.bar is not None:
            self.bar.update(self.task, completed=budget.spent() if budget else step, info=info)
        elif step % self.trainer.cfg.train.log_every == 0 or step == self.trainer.total_steps or KNN_COLUMN in row:
            where = f"step {step}, {budget.spent():.1f}/{budget.seconds:g} s" if budget else f"step {step}/{self.trainer.total_steps}"
            print(f"{where}  {info}", flush=True)

    def stop(self) -> None:
        """Remove the live display."""
        if self.bar is not None:
            self.bar.stop()
