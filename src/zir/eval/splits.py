"""The data an evaluation reads: the run's source (or another), split into the part probes fit on and the
part every task is scored on, cut to a limit (`held_out()` in `zir.data.held_out`), normalised as the run
normalised its images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from zir.data.held_out import BUILTIN_SPLITS, first, run_held_out

__all__ = ["BUILTIN_SPLITS", "EvalData", "data_modalities", "data_modality", "eval_data", "extraction_plan", "plan_stats"]


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


def extraction_plan(model: nn.Module, config: dict, tower: nn.Module) -> tuple[dict, str]:
    """The plan features are extracted with, and the view read: one unaugmented view of the tower's modality,
    normalised as the run normalised its inputs (an audio tower: its own front end, with the recipe's
    data.plan spectrogram settings over it, and the run's audio_mean and audio_std)."""
    if tower.modality != "audio":
        mean, std = plan_stats(model, config)
        return {"global": 1, "pipeline": "none", "size": int(tower.img_size[0]), "mean": mean, "std": std}, "global_0"
    over = (config.get("data") or {}).get("plan") or {}
    spectrogram = {**tower.spectrogram, **(over.get("spectrogram") or {})}
    stats = {k: over[k] for k in ("audio_mean", "audio_std") if k in over}
    return {"global": 0, "audio": 1, "audio_pipeline": "none", "spectrogram": spectrogram,
            "audio_patch_size": tuple(tower.patch_size), **stats}, "audio_0"


def data_modalities(source, tries: int = 8) -> frozenset:
    """What the source's samples carry, `image` and/or `audio`, read from its first usable sample (of at most
    `tries`); empty when none is usable."""
    from zir.data.sources import BadSample, MapSource

    sample = None
    if isinstance(source, MapSource):
        for i in range(min(tries, len(source))):
            try:
                sample = source.get(i)
                break
            except BadSample:
                continue
    else:
        sample = next(iter(source), None)
    if sample is None:
        return frozenset()
    return frozenset(m for m, x in (("image", sample.image), ("audio", sample.audio)) if x is not None)


def data_modality(source) -> str:
    """`audio` when the source's samples carry a recording and no image (fsdd, an audio folder), else `image`."""
    return "audio" if data_modalities(source) == {"audio"} else "image"


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


def eval_data(data: str | None, config: dict, data_root=None, limit: int | None = None, options: dict | None = None) -> EvalData:
    """The sources of an evaluation: the run's training source (or `data`), its train and held-out splits."""
    from zir.data import open_source

    parts = run_held_out(data, config.get("data") or {}, data_root, limit, options)
    extra = {}
    if parts.builtin and parts.name == "shapes":
        extra = {"comp": first(open_source("shapes", split="comp", data_root=parts.data_root, **parts.options), limit)}
    return EvalData(parts.name, parts.fit, parts.fit_split, parts.test, parts.test_split, extra, parts.options)
