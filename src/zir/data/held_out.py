"""Which samples a model is scored on: the split probes fit on and the held-out split scored, each cut to a
limit. A built-in source gives its `train` split and a held-out one (`test` unless named: `shapes:val`); a
map-style source without splits a fixed 80/20 hold-out; a stream without splits only the scored part.

`zir eval` (`eval_data()`) and the trainer's k-NN monitor both read it, so the monitor scores exactly the
samples `zir eval --limit` would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from zir.data.builtin import open_source
from zir.data.sources import MapSource

__all__ = ["BUILTIN_SPLITS", "HeldOut", "Subset", "first", "held_out", "run_held_out"]

BUILTIN_SPLITS = {"shapes": "test", "digits": "test", "cifar10": "test", "flickr8k": "test", "fashion_mnist": "test",
                  "fsdd": "test", "av_digits": "test"}


class Subset(MapSource):
    """A map-style source restricted to some indices (a limit, or a hold-out of a source with no splits)."""

    def __init__(self, source: MapSource, indices) -> None:
        """The samples of `source` at `indices`, in that order."""
        self.inner, self.indices = source, [int(i) for i in indices]
        self.name, self.classes = source.name, source.classes
        self.has_captions, self.image_size = source.has_captions, source.image_size
        self.caption_templates, self.zeroshot_templates = source.caption_templates, source.zeroshot_templates

    def __len__(self) -> int:
        """Number of samples kept."""
        return len(self.indices)

    def get(self, index: int):
        """The kept sample at `index`."""
        return self.inner.get(self.indices[index])


def first(source, limit: int | None):
    """The first `limit` samples of a map-style source (streams are cut while reading)."""
    if limit is None or not isinstance(source, MapSource) or len(source) <= limit:
        return source
    return Subset(source, range(limit))


@dataclass
class HeldOut:
    """The fit split (None when the data has none) and the scored split of one source, with their names."""

    name: str
    fit: Any
    fit_split: str
    test: Any
    test_split: str
    options: dict
    data_root: Any
    builtin: bool  # a built-in data set (its other splits can be opened by name)


def held_out(spec: str, options: dict, data_root=None, limit: int | None = None) -> HeldOut:
    """The fit and scored splits of `spec` (a built-in name, `name:split` or a path), each cut to `limit`."""
    prefix, sep, rest = spec.partition(":")
    name = prefix.lower()
    if name in BUILTIN_SPLITS and not os.path.exists(spec):
        test_split = rest if sep and rest else BUILTIN_SPLITS[name]
        fit = first(open_source(name, split="train", data_root=data_root, **options), limit)
        test = first(open_source(name, split=test_split, data_root=data_root, **options), limit)
        return HeldOut(name, fit, "train", test, test_split, options, data_root, True)
    source = open_source(spec, data_root=data_root, **options)
    if isinstance(source, MapSource):  # one source, no splits: a fixed 80/20 hold-out
        order = np.random.default_rng(0).permutation(len(source))
        cut = int(round(0.8 * len(order)))
        fit, test = Subset(source, sorted(order[:cut])), Subset(source, sorted(order[cut:]))
        return HeldOut(spec, first(fit, limit), "80%", first(test, limit), "20%", options, data_root, False)
    return HeldOut(spec, None, "", source, "all", options, data_root, False)


def run_held_out(data: str | None, run_data: dict, data_root=None, limit: int | None = None,
                 options: dict | None = None) -> HeldOut:
    """The held-out data of a run whose `data` section is `run_data`: `data` (with `options`, none by default),
    or else the run's own source with its options less `n` (the training-set size: whole splits are read)."""
    spec = str(data or run_data.get("source") or "shapes")
    opts = dict(options if options is not None else ({} if data else run_data.get("options") or {}))
    opts.pop("n", None)
    root = data_root if data_root is not None else run_data.get("data_root")
    return held_out(spec, opts, root, limit)
