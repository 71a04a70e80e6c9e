"""What a run records per step: RUN/metrics.csv (and TensorBoard scalars when asked)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from zir.errors import ConfigError


class MetricsLog:
    """metrics.csv, one row per step; on resume rows past the checkpoint are dropped and the header kept."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path, self.columns, self._fh, self._writer = path, None, None, None
        if resume_step is not None and path.exists():
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            if rows:
                self.columns = rows[0]
                keep = [r for r in rows[1:] if len(r) == len(self.columns) and r[0].isdigit() and int(r[0]) <= resume_step]
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "w", newline="") as fh:
                    csv.writer(fh).writerows([self.columns, *keep])
                os.replace(tmp, path)
        elif path.exists():
            path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        """Append one step's row; a value never seen before (an objective that starts late) adds its column."""
        if self.columns is not None and any(k not in self.columns for k in row):
            self._widen([k for k in row if k not in self.columns])
        if self._fh is None:
            new = self.columns is None
            self.columns = self.columns or list(row)
            self._fh = open(self.path, "a", newline="")
            self._writer = csv.writer(self._fh)
            if new:
                self._writer.writerow(self.columns)
        self._writer.writerow([_fmt(row.get(c, "")) for c in self.columns])
        self._fh.flush()

    def _widen(self, extra: list[str]) -> None:
        """Rewrite the file with `extra` columns (empty in the rows before), atomically."""
        self.close()
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as fh:
                rows = list(csv.reader(fh))[1:]
        self.columns = [*self.columns, *extra]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([self.columns, *(r + [""] * len(extra) for r in rows)])
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _tensorboard(run_dir: Path):
    """A TensorBoard writer into RUN/tensorboard, or a ConfigError saying what to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package (pip install tensorboard); "
                          "metrics.csv has the same numbers") from None
    return SummaryWriter(str(run_dir / "tensorboard"))
