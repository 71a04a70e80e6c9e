"""From a source and a view plan to batches: decoding in workers, sharding across ranks, bad-data counting.

Workers decode each sample to a square uint8 image of `load_size` (and, for a plan with audio views, its
waveform resampled to the audio tower's rate), and collate builds the plan's views in the worker too, so
the main process receives finished batches. A sample that cannot be used becomes
a `Skipped` record that rides along with its batch to the main process, where `Loader.report` counts it;
no exception from a bad sample ever reaches the worker loop.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from zir.data.plan import Batch, Item, Skipped, ViewCollate, ViewPlan
from zir.data.resample import resample
from zir.data.shards import ShardSource, slot_info
from zir.data.sources import BadSample, DataReport, MapSource, Sample, Source, fit_square
from zir.errors import ConfigError

log = logging.getLogger("zir.data")


def to_item(sample: Sample, source: Source, load_size: int, need_text: bool, need_image: bool = True,
            sample_rate: int | None = None) -> Item | Skipped:
    """A decoded Sample -> an Item: its image at `load_size` when `need_image`, its audio at `sample_rate` when
    given (filling templated captions when text is needed); a Skipped naming what the sample lacks."""
    captions = sample.captions
    if need_text and not captions:
        captions = source.templated_captions(sample.label)
        if not captions:
            return Skipped(sample.key, "no caption")
    pixels = None
    if need_image:
        image = sample.image
        if image is None:
            return Skipped(sample.key, "no image (the plan has image views)")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return Skipped(sample.key, f"image of shape {image.shape} {image.dtype}, expected (H, W, 3) uint8")
        image = fit_square(image, load_size)
        if not image.flags.writeable or not image.flags.c_contiguous:
            image = image.copy()  # torch wants its own writable memory
        pixels = torch.from_numpy(image).permute(2, 0, 1)
    audio = None
    if sample_rate is not None:
        if sample.audio is None:
            return Skipped(sample.key, "no audio (the plan has audio views)")
        audio = resample(torch.as_tensor(np.ascontiguousarray(sample.audio, dtype=np.float32)), sample.sample_rate,
                         sample_rate)
    return Item(sample.key, pixels, sample.label, list(captions), list(sample.notes), audio)


class MapDataset(Dataset):
    """A map-style source as a torch Dataset of Items; bad samples come back as Skipped, never raised."""

    def __init__(self, source: MapSource, load_size: int, need_text: bool, need_image: bool = True,
                 sample_rate: int | None = None):
        self.source, self.load_size, self.need_text = source, load_size, need_text
        self.need_image, self.sample_rate = need_image, sample_rate

    def __len__(self) -> int:
        """Number of samples in the source."""
        return len(self.source)

    def __getitem__(self, index: int) -> Item | Skipped:
        """Decode sample `index`, or describe why it was skipped."""
        try:
            return to_item(self.source.get(index), self.source, self.load_size, self.need_text, self.need_image,
                           self.sample_rate)
        except BadSample as bad:
            return Skipped(bad.key, bad.reason)
        except Exception as e:  # noqa: BLE001 - one odd file must not kill the worker
            return Skipped(f"{self.source.name}[{index}]", f"unexpected {type(e).__name__}: {e}")


class StreamDataset(IterableDataset):
    """A streaming (shard) source as a torch IterableDataset, split across ranks and workers."""

    def __init__(self, source: ShardSource, load_size: int, need_text: bool, *, seed: int, shuffle: bool, rank=None,
                 world_size=None, need_image: bool = True, sample_rate: int | None = None):
        self.source, self.load_size, self.need_text = source, load_size, need_text
        self.need_image, self.sample_rate = need_image, sample_rate
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch = 0

    def __iter__(self) -> Iterator[Item | Skipped]:
        """This reader's share of the samples, shuffled through the source's buffer when asked."""
        slot, n_slots = slot_info(self.rank, self.world_size)
        for got in self.source.stream(slot, n_slots, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle):
            if isinstance(got, BadSample):
                yield Skipped(got.key, got.reason)
                continue
            try:
                yield to_item(got, self.source, self.load_size, self.need_text, self.need_image, self.sample_rate)
            except Exception as e:  # noqa: BLE001
                yield Skipped(got.key, f"unexpected {type(e).__name__}: {e}")


def _worker_init(_):
    torch.set_num_threads(1)  # workers run side by side; one thread each avoids oversubscription


class Loader:
    """Iterates Batches of a source for a plan; counts bad data in `report`; `set_epoch` reshuffles.

    For a map-style source `epoch_order()` is the epoch's sample order on this rank, and
    `set_epoch(e, start=n)` begins the epoch after its first n samples of that order: with n a multiple of
    the batch size, a resumed run continues mid-epoch with exactly the batches it would have had.
    """

    def __init__(
        self,
        source: Source,
        plan: ViewPlan | dict,
        batch_size: int,
        *,
        workers: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        tokenizer=None,
        load_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        epoch: int = 0,
    ):
        self.plan = plan if isinstance(plan, ViewPlan) else ViewPlan.from_dict(plan)
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: expected at least 1")
        need_text = self.plan.text > 0
        if need_text and not source.has_captions and not source.classes:
            raise ConfigError(f"data {source.name}: the plan asks for text but the source has neither captions nor class names")
        self.source, self.batch_size, self.workers = source, int(batch_size), int(workers)
        self.shuffle, self.drop_last, self.tokenizer = shuffle, drop_last, tokenizer
        self.load_size = int(load_size or getattr(source, "image_size", None) or self.plan.size)
        self.rank, self.world_size = rank, world_size
        self.epoch = epoch
        self.start = 0  # samples of the epoch order passed over (set_epoch's start)
        self.report = DataReport()
        reads = {"need_image": bool(self.plan.view_names()),
                 "sample_rate": self.plan.spectrogram.sample_rate if self.plan.audio else None}
        if isinstance(source, MapSource):
            if len(source) == 0:
                raise ConfigError(f"data {source.name}: empty dataset")
            self.dataset = MapDataset(source, self.load_size, need_text, **reads)
        elif isinstance(source, ShardSource):
            self.dataset = StreamDataset(
                source, self.load_size, need_text, seed=self.plan.seed, shuffle=shuffle, rank=rank, world_size=world_size,
                **reads)
        else:
            raise ConfigError(f"data {source.name}: not a map-style or shard source")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch: it seeds the shuffle order and every augmentation of the epoch.

        `start` > 0 (map-style sources only) passes over the first `start` samples of `epoch_order()`,
        so the epoch resumes where an earlier process stopped; a stream cannot seek, so it is refused.
        """
        if start < 0 or (start and not isinstance(self.dataset, MapDataset)):
            raise ValueError(f"data {self.source.name}: start={start}: expected 0, or a sample count for a map-style source")
        self.epoch, self.start = int(epoch), int(start)

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return int(self.rank), int(self.world_size)
        return slot_info()  # in the main process: (rank, world size) from torch.distributed or RANK/WORLD_SIZE

    def epoch_order(self) -> list[int]:
        """The sample indices of the current epoch, in the order this rank reads them (map-style sources).

        A permutation seeded by (plan seed, epoch) when shuffling; with several ranks each takes every
        world-size-th index, as DistributedSampler. It does not depend on `start`.
        """
        if not isinstance(self.dataset, MapDataset):
            raise ValueError(f"data {self.source.name}: a stream source has no sample order known in advance")
        n = len(self.dataset)
        order = np.random.default_rng([self.plan.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        r, w = self._rank_world()
        if w > 1:
            per = n // w if self.drop_last else -(-n // w)
            order = np.resize(order, per * w)[r::w]  # equal shares (wrapping when padding), as DistributedSampler
        return order.tolist()

    def __len__(self) -> int:
        """Batches of a whole epoch for map-style sources (before bad samples and `start`); for shards, an estimate
        from the known length."""
        if isinstance(self.dataset, MapDataset):
            n = len(self.epoch_order())
        else:
            n = self.source.length or 0
            if self.world_size:
                n //= self.world_size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _dataloader(self) -> DataLoader:
        collate = ViewCollate(self.plan, self.tokenizer, epoch=self.epoch)
        common = dict(
            batch_size=self.batch_size,
            collate_fn=collate,
            num_workers=self.workers,
            drop_last=self.drop_last,
            worker_init_fn=_worker_init if self.workers else None,
            persistent_workers=False,
        )
        if isinstance(self.dataset, MapDataset):
            return DataLoader(self.dataset, sampler=self.epoch_order()[self.start:], **common)
        self.dataset.epoch = self.epoch
        return DataLoader(self.dataset, **common)

    def __iter__(self) -> Iterator[Batch]:
        """Batches of the current epoch; skipped samples are counted and batches left empty are dropped."""
        produced = 0
        for batch in self._dataloader():
            self.report.update(batch.skipped, batch.converted, seen=len(batch) + len(batch.skipped))
            if len(batch) == 0:
                continue
            produced += 1
            yield batch
        if self.report.n_skipped or self.report.converted:
            log.warning("data %s, epoch %d: %s", self.source.name, self.epoch, self.report.summary())
        if produced == 0:
            if self.report.n_skipped:
                why = self.report.summary()
            else:
                why = f"fewer samples than one batch of {self.batch_size}" + (" with drop_last" if self.drop_last else "")
            raise ConfigError(f"data {self.source.name}: no usable batch in an epoch ({why})")


def make_loader(source: Source, plan: ViewPlan | dict, batch_size: int, **options) -> Loader:
    """The loader of `source` for `plan` (see Loader for options: workers, shuffle, tokenizer, rank, ...)."""
    return Loader(source, plan, batch_size, **options)
