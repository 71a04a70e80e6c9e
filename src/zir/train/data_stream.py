"""The trainer's resumable stream of micro-batches: epoch after epoch, with a position a checkpoint can save.

On resume a map-style source starts its epoch after the samples already consumed (`Loader.set_epoch`'s
`start`); a stream (shards) reads and drops them. Loader seeding never moves the training RNG, so a
resumed run sees exactly the same batches.
"""

from __future__ import annotations

from typing import Iterator

import torch

from zir.data import Loader
from zir.data.shards import ShardSource
from zir.errors import ConfigError


class DataStream:
    """Endless micro-batches across epochs with a saveable position: (epoch, samples or batches consumed)."""

    def __init__(self, loader: Loader, epoch: int = 0, samples: int = 0, batches: int = 0):
        self.loader, self.epoch, self.samples, self.batches = loader, epoch, samples, batches
        self.map_style = not isinstance(loader.source, ShardSource)
        self._it: Iterator | None = None
        self._seen0 = 0

    def _start(self) -> None:
        self.loader.set_epoch(self.epoch)
        if self.map_style:
            full = len(self.loader.epoch_order()) // self.loader.batch_size * self.loader.batch_size
            if self.samples >= full:  # saved right after an epoch's last batch: begin the next one
                self.epoch, self.samples, self.batches = self.epoch + 1, 0, 0
            self.loader.set_epoch(self.epoch, start=self.samples)
        self._seen0 = self.loader.report.seen - self.samples
        self._it = iter(self.loader)
        if not self.map_style:  # streams cannot seek: read and drop what was consumed before the resume
            for _ in range(self.batches):
                next(self._it, None)

    def __next__(self):
        """The next micro-batch; rolls over to the next epoch at the end of one."""
        with torch.random.fork_rng(devices=[]):  # loader seeds must not move the training RNG (exact resume)
            for _ in range(2):
                if self._it is None:
                    self._start()
                try:
                    batch = next(self._it)
                except StopIteration:
                    self.epoch, self.samples, self.batches, self._it = self.epoch + 1, 0, 0, None
                    continue
                self.batches += 1
                self.samples = self.loader.report.seen - self._seen0
                return batch
        raise ConfigError(f"data {self.loader.source.name}: an epoch gave no batch")

    def position(self) -> dict[str, int]:
        """Where the next batch comes from."""
        return {"epoch": self.epoch, "samples": self.samples, "batches": self.batches}
