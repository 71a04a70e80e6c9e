"""The data an evaluation reads: the run's source (or another), split into the part probes fit on and the
part every task is scored on, cut to a limit, normalised as the run normalised its images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from zir.data.sources import MapSource

__all__ = ["BUILTIN_SPLITS", "EvalData", "eval_data", "plan_stats"]

BUILTIN_SPLITS = {"shapes": "test", "digits": "test", "cifar10": "test", "flickr8k": "test", "fashion_mnist": "test"}


def plan_stats(model: nn.Module, config: dict) -> tuple[tuple, tuple]:
    """(mean, std) the run normalised its images with (the model's plan with the recipe's overrides)."""
    over = (config.get("data") or {}).get("plan") or {}
    try:
        plan = model.view_plan()
        mean, std = tuple(plan.mean), tuple(plan.std)
    except Exception:  # noqa: BLE001 - a custom model without a plan: the data defaults
        from zir.data import transforms

        mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
    return tuple(over.get("mean", mean)), tuple(over.get("std", std))


@dataclass
class EvalData:
    """Where each task reads: the fit split (linear, k-NN), the test split, and extra zero-shot splits."""

    name: str
    fit: Any  # a Source, or None when the data has no training split
    fit_split: str
    test: Any
    test_split: str
    extra: dict  # split name -> Source, zero-shot only (shapes: comp)
    options: dict


class _Subset(MapSource):
    """A map-style source restricted to some indices (a limit, or a hold-out of a source with no splits)."""

    def __init__(self, source: MapSource, indices) -> None:
        """The samples of `source` at `indices`, in that order."""
        self.inner, self.indices = source, [int(i) for i in indices]
        self.name, self.classes = source.name, source.classes
        self.has_captions, self.image_size = source.has_captions, source.image_size

    def __len__(self) -> int:
        """Number of samples kept."""
        return len(self.indices)

    def get(self, index: int):
        """The kept sample at `index`."""
        return self.inner.get(self.indices[index])


def _limit(source, limit: int | None):
    """The first `limit` samples of a map-style source (streams are cut while reading)."""
    if limit is None or not isinstance(source, MapSource) or len(source) <= limit:
        return source
    return _Subset(source, range(limit))


def eval_data(data: str | None, config: dict, data_root=None, limit: int | None = None, options: dict | None = None) -> EvalData:
    """The sources of an evaluation: the run's training source (or `data`), its train and held-out splits."""
    from zir.data import open_source

    dcfg = config.get("data") or {}
    spec = str(data or dcfg.get("source") or "shapes")
    opts = dict(options if options is not None else ({} if data else dcfg.get("options") or {}))
    opts.pop("n", None)  # the run's training-set size; evaluation reads whole splits (cut by `limit`)
    root = data_root if data_root is not None else dcfg.get("data_root")
    prefix, sep, rest = spec.partition(":")
    name = prefix.lower()
    if name in BUILTIN_SPLITS and not os.path.exists(spec):
        test_split = rest if sep and rest else BUILTIN_SPLITS[name]
        fit = _limit(open_source(name, split="train", data_root=root, **opts), limit)
        test = _limit(open_source(name, split=test_split, data_root=root, **opts), limit)
        extra = {"comp": _limit(open_source(name, split="comp", data_root=root, **opts), limit)} if name == "shapes" else {}
        return EvalData(name, fit, "train", test, test_split, extra, opts)
    source = open_source(spec, data_root=root, **opts)
    if isinstance(source, MapSource):  # one source, no splits: a fixed 80/20 hold-out
        order = np.random.default_rng(0).permutation(len(source))
        cut = int(round(0.8 * len(order)))
        fit, test = _Subset(source, sorted(order[:cut])), _Subset(source, sorted(order[cut:]))
        return EvalData(spec, _limit(fit, limit), "80%", _limit(test, limit), "20%", {}, opts)
    return EvalData(spec, None, "", source, "all", {}, opts)
