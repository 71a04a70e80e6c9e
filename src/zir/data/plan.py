"""The view plan and the typed batch: one collate builds exactly the views the objectives asked for.

A plan is the union of the objectives' needs (`ViewPlan.union`): counts of views of each kind and the named
masks on each view (`zir.data.views`), e.g. `{global: 2, local: 6, text: 1, masks: {global_0: [mae]}}`. For a
batch of samples (images already decoded to a common square `load_size`) the collate draws one seed from
the plan's seed, the epoch and the sample keys, so a batch's views depend neither on the number of
workers nor on which worker built it, and builds:

- `global_0 .. global_{G-1}`: (B, 3, size, size) normalised, augmented by the plan's pipeline;
- `local_0 .. local_{L-1}`: (B, 3, local_size, local_size), DINO's small crops;
- `image` when asked: (B, 3, size, size), augmented by `image_pipeline` (by default `light`, a mild crop and
  flip: CLIP, CoCa, MAE beside SimCLR/DINO views);
- a `Mask` for each named mask of each view, `batch.masks[(view, name)]`, with `keep` (B, K) for
  `forward_tokens(x, keep)`, drawn over squares of the mask's `patch_size` pixels (SimMIM) or, by default,
  over the tower's patches;
- `text_0 ..`: one caption drawn per sample per text view, as token ids (B, context_length) when a
  tokenizer is given, and always as strings in `captions`;
- `audio_0 ..`: (B, 1, n_mels, frames) normalised log-mel spectrograms of the plan's `spectrogram` front end,
  each of its own time crop, mixed with another clip of the batch when `audio_mix` > 0, augmented by the
  `audio_pipeline` (`zir.data.audio_views`); masks on them are
  drawn over the (n_mels, frames) grid of `audio_patch_size` patches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from zir.data import masking, transforms
from zir.data.audio_views import audio_view, check_audio_pipeline, check_mix
from zir.data.paths import hash_seed
from zir.data.spectrogram import Spectrogram
from zir.data.views import DEFAULT_MASK, MaskSpec, View
from zir.errors import ConfigError


@dataclass
class ViewPlan:
    """Which views a batch carries, their masks and how they are made; `from_dict` reads `{global: 2, local: 6, ...}`.

    `masks` maps a view name to the named masks drawn on it (`MaskSpec`), e.g. {"image": (MaskSpec("mask", 0.5),)}.
    The older flat form `{mask: 0.75, mask_kind: block, mask_on: [global]}` is read by `from_dict` as one mask
    named `mask` on those views.
    """

    global_views: int = 2
    local_views: int = 0
    image: int = 0  # 1: add a lightly augmented `image` view
    text: int = 0  # number of text views (captions per sample)
    audio: int = 0  # number of audio views (spectrograms of time crops)
    masks: dict[str, tuple[MaskSpec, ...]] = field(default_factory=dict)
    size: int = 32  # side of global and image views
    local_size: int | None = None  # side of local views; default DINO's 96/224 of `size`
    patch_size: int = 4  # the tower's patch size, for mask grids and local sizes
    pipeline: str = "simclr"  # augmentation of the global views (see transforms.PIPELINES)
    image_pipeline: str = "light"  # augmentation of the `image` view (CLIP's, CoCa's, MAE's beside SimCLR/DINO)
    mean: tuple[float, float, float] = transforms.IMAGENET_MEAN
    std: tuple[float, float, float] = transforms.IMAGENET_STD
    seed: int = 0
    spectrogram: Spectrogram = field(default_factory=Spectrogram)  # the audio tower's front end
    audio_patch_size: tuple[int, int] = (16, 16)  # the audio tower's patch (bins, frames), for mask grids
    audio_pipeline: str = "crop"  # augmentation of the audio views (see audio_views.AUDIO_PIPELINES)
    audio_mean: float = 0.0  # the data set's log-mel mean and standard deviation (audio_views.spectrogram_stats)
    audio_std: float = 1.0
    audio_mix: float = 0.0  # the most share of another clip of the batch mixed into each audio view (0: off)

    _KEYS = {"global": "global_views", "local": "local_views", "globals": "global_views", "locals": "local_views"}
    _FLAT_MASK = ("mask", "mask_kind", "mask_on", "mask_patch_size")

    def __post_init__(self):
        for name in ("global_views", "local_views", "image", "text", "audio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigError(f"view plan field {name}={v!r}: expected a whole number >= 0")
        if self.global_views + self.local_views + self.image + self.text + self.audio == 0:
            raise ConfigError("view plan asks for no view: set global, local, image, text or audio")
        self._check_audio()
        for name in ("pipeline", "image_pipeline"):
            if getattr(self, name) not in transforms.PIPELINES:
                raise ConfigError(f"view plan field {name}={getattr(self, name)!r}: expected one of "
                                  f"{', '.join(transforms.PIPELINES)}")
        if self.size % self.patch_size:
            raise ConfigError(f"view plan field size={self.size}: expected a multiple of patch_size={self.patch_size}")
        if self.local_size is None:
            self.local_size = transforms.local_size_for(self.size, self.patch_size)
        elif self.local_size % self.patch_size:
            raise ConfigError(f"view plan field local_size={self.local_size}: expected a multiple of patch_size={self.patch_size}")
        self.masks = _checked_masks(self.masks, self)

    def _check_audio(self) -> None:
        """The audio fields: a front end, a patch dividing its bins and frames, a pipeline, a positive std."""
        self.spectrogram = Spectrogram.from_dict(self.spectrogram)
        check_audio_pipeline(self.audio_pipeline)
        self.audio_mix = check_mix(self.audio_mix)
        patch = self.audio_patch_size
        patch = (patch, patch) if isinstance(patch, (int, np.integer)) and not isinstance(patch, bool) else patch
        if not isinstance(patch, (tuple, list)) or len(patch) != 2 or any(
                isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1 for p in patch):
            raise ConfigError(f"view plan field audio_patch_size={self.audio_patch_size!r}: expected (bins, frames)")
        self.audio_patch_size = (int(patch[0]), int(patch[1]))
        sides = (self.spectrogram.n_mels, self.spectrogram.frames)
        if self.audio and (sides[0] % patch[0] or sides[1] % patch[1]):
            raise ConfigError(f"view plan: spectrogram of {sides[0]} bins x {sides[1]} frames is not divisible into "
                              f"audio_patch_size={patch[0]}x{patch[1]} patches")
        for name in ("audio_mean", "audio_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or (name == "audio_std" and v <= 0):
                raise ConfigError(f"view plan field {name}={v!r}: expected a " + ("positive number" if name == "audio_std" else "number"))

    @property
    def audio_grid(self) -> tuple[int, int]:
        """The (frequency, time) patch grid of an audio view."""
        return (self.spectrogram.n_mels // self.audio_patch_size[0], self.spectrogram.frames // self.audio_patch_size[1])

    @classmethod
    def from_dict(cls, spec: dict | None = None, **overrides) -> "ViewPlan":
        """A plan from a recipe dict such as {global: 2, local: 6, text: 1, mask: 0.75}; unknown keys raise."""
        spec = dict(spec or {}) | overrides
        known = {f.name for f in fields(cls)}
        kwargs = {}
        flat = {k: spec.pop(k) for k in cls._FLAT_MASK if k in spec}
        for key, value in spec.items():
            name = cls._KEYS.get(key, key)
            if name not in known or name.startswith("_"):
                raise ConfigError(f"view plan key {key!r}: expected one of global, local, image, text, audio, "
                                  + ", ".join(sorted((known | set(cls._FLAT_MASK)) - {"global_views", "local_views", "image", "text", "audio"})))
            if name in ("mean", "std", "audio_patch_size") and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        if flat.get("mask"):
            if kwargs.get("masks"):
                raise ConfigError("view plan: give masks or the flat mask/mask_kind/mask_on keys, not both")
            kwargs["masks"] = _flat_masks(flat, kwargs)
        return cls(**kwargs)

    def union(self, other: "ViewPlan") -> "ViewPlan":
        """The union of two plans' needs: most views of each kind, every named mask of both (a name asked
        twice on one view with different settings is a ConfigError)."""
        out = ViewPlan(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.global_views = max(self.global_views, other.global_views)
        out.local_views = max(self.local_views, other.local_views)
        out.image = max(self.image, other.image)
        out.text = max(self.text, other.text)
        out.audio = max(self.audio, other.audio)
        masks = {view: list(specs) for view, specs in self.masks.items()}
        for view, specs in other.masks.items():
            for spec in specs:
                mine = {m.name: m for m in masks.setdefault(view, [])}
                if spec.name not in mine:
                    masks[view].append(spec)
                elif mine[spec.name] != spec:
                    raise ConfigError(f"view {view}: two objectives ask for mask {mine[spec.name].describe()} and "
                                      f"{spec.describe()}; give one of them its own mask_name")
        out.masks = {view: tuple(specs) for view, specs in masks.items()}
        return out

    merge = union  # the older name

    def view_names(self) -> list[str]:
        """Names of the image views a batch will hold, in order."""
        names = [f"global_{i}" for i in range(self.global_views)]
        names += [f"local_{i}" for i in range(self.local_views)]
        return names + (["image"] if self.image else [])

    def audio_view_names(self) -> list[str]:
        """Names of the audio views a batch will hold, in order."""
        return [f"audio_{i}" for i in range(self.audio)]

    def masked_views(self) -> list[str]:
        """Names of the views that get at least one mask, in view order (image views, then audio views)."""
        return [name for name in self.view_names() + self.audio_view_names() if self.masks.get(name)]

    def mask_specs(self) -> list[tuple[str, MaskSpec]]:
        """(view name, mask) for every mask a batch holds, in view order; a context after its targets."""
        out = []
        for view in self.masked_views():
            specs = list(self.masks[view])
            specs.sort(key=lambda m: m.generator == "jepa_context")
            out += [(view, m) for m in specs]
        return out

    def augmentations(self) -> dict[str, transforms.Augment]:
        """The augmentation of each image view."""
        pipe = transforms.pipeline(self.pipeline, self.size, local_size=self.local_size, patch_size=self.patch_size)
        out = {}
        for i in range(self.global_views):
            out[f"global_{i}"] = pipe["global"][i % len(pipe["global"])]
        local = pipe["local"][0] if pipe["local"] else transforms.pipeline("dino", self.size, local_size=self.local_size)["local"][0]
        for i in range(self.local_views):
            out[f"local_{i}"] = local
        if self.image:
            out["image"] = transforms.pipeline(self.image_pipeline, self.size)["global"][0]
        return out


def _flat_masks(flat: dict, kwargs: dict) -> dict[str, tuple[MaskSpec, ...]]:
    """The flat form {mask: r, mask_kind, mask_on, mask_patch_size} as one mask named `mask` on those views."""
    ratio = flat["mask"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"view plan field mask={ratio!r}: expected a fraction 0 <= mask < 1")
    on = flat.get("mask_on", ("global",))
    on = (on,) if isinstance(on, str) else tuple(on)
    probe = ViewPlan(**{k: v for k, v in kwargs.items() if k in ("global_views", "local_views", "image", "text", "size", "patch_size")})
    names = [v for v in probe.view_names() if v in on or View.parse(v).kind in on]
    spec = MaskSpec(DEFAULT_MASK, float(ratio), flat.get("mask_kind", "random"), flat.get("mask_patch_size"))
    return {v: (spec,) for v in names}


def _checked_masks(masks, plan: ViewPlan) -> dict[str, tuple[MaskSpec, ...]]:
    """The plan's masks checked: known views, MaskSpecs (or their dicts), unique names, pixel squares that fit."""
    if not isinstance(masks, dict):
        raise ConfigError(f"view plan field masks={masks!r}: expected a mapping of view name to masks")
    out = {}
    for view, specs in masks.items():
        audio = View.parse(view).kind == "audio"
        specs = (specs,) if isinstance(specs, (MaskSpec, dict)) else tuple(specs)
        specs = tuple(s if isinstance(s, MaskSpec) else MaskSpec(**s) for s in specs)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"view plan: view {view} has two masks named {sorted(n for n in names if names.count(n) > 1)[0]}")
        for s in specs:
            mps = s.patch_size
            if mps is not None and audio:
                raise ConfigError(f"view plan mask {s.name} on {view}: masks on audio views hide whole spectrogram "
                                  "patches; leave patch_size unset")
            if mps is not None and (isinstance(mps, bool) or not isinstance(mps, (int, np.integer)) or mps < 1
                                    or mps % plan.patch_size):
                raise ConfigError(f"view plan mask {s.name}: patch_size={mps!r}: expected a multiple of patch_size={plan.patch_size}")
            if mps is not None and plan.size % mps:
                raise ConfigError(f"view plan mask {s.name}: patch_size={mps}: expected a divisor of size={plan.size}")
            if s.outside and s.outside not in names:
                raise ConfigError(f"view plan mask {s.name} on {view}: its target mask {s.outside!r} is not on that view")
        if specs:
            out[view] = specs
    return out


@dataclass
class Batch:
    """A collated batch of views. Shapes: views[name] (B, 3, S, S), audio views (B, 1, n_mels, frames);
    tokens[name] (B, L); labels (B,)."""

    views: dict[str, torch.Tensor]
    masks: dict[tuple[str, str], masking.Mask]  # (view name, mask name) -> Mask
    tokens: dict[str, torch.Tensor]
    captions: dict[str, list[str]]
    labels: torch.Tensor
    keys: list[str]
    seed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of samples B."""
        return len(self.keys)

    @property
    def global_views(self) -> list[torch.Tensor]:
        """The global views in order, each (B, 3, S, S)."""
        return [v for k, v in self.views.items() if View.parse(k).kind == "global"]

    @property
    def local_views(self) -> list[torch.Tensor]:
        """The local views in order, each (B, 3, s, s)."""
        return [v for k, v in self.views.items() if View.parse(k).kind == "local"]

    @property
    def text(self) -> torch.Tensor | None:
        """Token ids (B, L) of the first text view, or None."""
        return self.tokens.get("text_0")

    def mask(self, view: "str | View", name: str = DEFAULT_MASK) -> masking.Mask:
        """The mask `name` drawn on `view`; a ConfigError naming both when the batch has none."""
        view = View.parse(view).name
        m = self.masks.get((view, name))
        if m is None:
            have = ", ".join(f"{v}:{n}" for v, n in self.masks) or "none"
            raise ConfigError(f"batch view {view!r} has no mask {name!r} (masks: {have}); build the loader from model.view_plan()")
        return m

    def keep(self, view: str, name: str = DEFAULT_MASK) -> torch.Tensor | None:
        """The visible patch indices (B, K) of a masked view, or None when the view has no such mask."""
        m = self.masks.get((View.parse(view).name, name))
        return m.keep if m is not None else None

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """The batch with its tensors on `device`."""
        return Batch(
            views={k: v.to(device, non_blocking=non_blocking) for k, v in self.views.items()},
            masks={k: m.to(device) for k, m in self.masks.items()},
            tokens={k: v.to(device, non_blocking=non_blocking) for k, v in self.tokens.items()},
            captions=self.captions,
            labels=self.labels.to(device, non_blocking=non_blocking),
            keys=self.keys,
            seed=self.seed,
            skipped=self.skipped,
            converted=self.converted,
        )


@dataclass
class Item:
    """One decoded sample ready to collate: image (3, S, S) uint8 at the load size, and/or audio (T,) float32
    at the plan's sample rate (None when the plan reads no such view)."""

    key: str
    image: torch.Tensor | None
    label: int
    captions: list[str]
    notes: list[str] = field(default_factory=list)
    audio: torch.Tensor | None = None


@dataclass
class Skipped:
    """A sample that was skipped in a worker, carried to the main process to be counted."""

    key: str
    reason: str


class ViewCollate:
    """Collate function: a list of Items (and Skipped) -> one Batch with exactly the plan's views."""

    def __init__(self, plan: ViewPlan, tokenizer=None, epoch: int = 0):
        self.plan = plan
        self.tokenizer = tokenizer
        self.epoch = epoch
        self._augs = plan.augmentations()

    def __call__(self, items: list) -> Batch:
        """Build the batch; Skipped entries are dropped from the batch and listed in `batch.skipped`."""
        threads = torch.get_num_threads()
        # augmenting small images is many small ops: threads only add overhead (measured 3-10x slower with 2)
        torch.set_num_threads(1)
        try:
            return self._collate(items)
        finally:
            torch.set_num_threads(threads)

    def _collate(self, items: list) -> Batch:
        plan = self.plan
        good = [it for it in items if isinstance(it, Item)]
        skipped = [(it.key, it.reason) for it in items if isinstance(it, Skipped)]
        converted = [(it.key, note) for it in good for note in it.notes]
        keys = [it.key for it in good]
        seed = hash_seed(plan.seed, self.epoch, tuple(keys))
        b = len(good)
        views: dict[str, torch.Tensor] = {}
        masks: dict[str, masking.Mask] = {}
        if b and self._augs:
            raw = transforms.to_float(torch.stack([it.image for it in good]))
            for name, aug in self._augs.items():
                views[name] = transforms.normalize(aug(raw, hash_seed(seed, name)), plan.mean, plan.std)
        if b and plan.audio:
            waves = [it.audio for it in good]
            augment = replace(check_audio_pipeline(plan.audio_pipeline), mix=plan.audio_mix)
            for name in plan.audio_view_names():
                views[name] = audio_view(waves, plan.spectrogram, augment, plan.audio_mean, plan.audio_std,
                                         hash_seed(seed, name))
        if b:
            for name, spec in plan.mask_specs():
                masks[(name, spec.name)] = self._mask(spec, name, views[name].shape[-1], b, seed, masks)
        captions: dict[str, list[str]] = {}
        tokens: dict[str, torch.Tensor] = {}
        if plan.text:
            rng = random.Random(hash_seed(seed, "text"))
            picks = []
            for it in good:
                order = list(range(len(it.captions)))
                rng.shuffle(order)  # different text views get different captions while there are enough
                picks.append([it.captions[order[t % len(order)]] for t in range(plan.text)])
            for t in range(plan.text):
                captions[f"text_{t}"] = [p[t] for p in picks]
                if self.tokenizer is not None:
                    tokens[f"text_{t}"] = self.tokenizer.encode(captions[f"text_{t}"])
        labels = torch.tensor([it.label for it in good], dtype=torch.long)
        return Batch(views, masks, tokens, captions, labels, keys, seed, skipped, converted)

    def _mask(self, spec: MaskSpec, view: str, side_px: int, b: int, seed: int, made: dict) -> masking.Mask:
        """One named mask of a view, its own seed from the batch's (the default mask keeps the older seed)."""
        mask_seed = hash_seed(seed, view, "mask") if spec.name == DEFAULT_MASK else hash_seed(seed, view, "mask", spec.name)
        if spec.generator == "jepa_context":
            return masking.jepa_context_mask(made[(view, spec.outside)], spec.ratio, mask_seed)
        if View.parse(view).kind == "audio":  # the (frequency, time) grid of the spectrogram's patches
            return masking.make_mask(spec.generator, b, self.plan.audio_grid, spec.ratio, mask_seed, spec.blocks)
        patch = self.plan.patch_size
        unit = (spec.patch_size or patch) // patch  # tower patches per mask-patch side
        side = side_px // patch
        if side % unit:
            raise ConfigError(f"view {view}: its {side}x{side} patch grid is not divisible into mask patches "
                              f"of {spec.patch_size} pixels; set a mask patch_size that divides the view")
        coarse = masking.make_mask(spec.generator, b, (side // unit, side // unit), spec.ratio, mask_seed, spec.blocks)
        return masking.upsample_mask(coarse, unit)
