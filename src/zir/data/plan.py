"""The view plan and the typed batch: one collate builds exactly the views the objectives asked for.

A plan is the union of the objectives' needs, e.g. `{global: 2, local: 6, text: 1, mask: 0.75}`. For a
batch of samples (images already decoded to a common square `load_size`) the collate draws one seed from
the plan's seed, the epoch and the sample keys, so a batch's views depend neither on the number of
workers nor on which worker built it, and builds:

- `global_0 .. global_{G-1}`: (B, 3, size, size) normalised, augmented by the plan's pipeline;
- `local_0 .. local_{L-1}`: (B, 3, local_size, local_size), DINO's small crops;
- `image` when asked: (B, 3, size, size), a light crop and flip (CLIP, MAE beside SimCLR/DINO views);
- a `Mask` for each masked view, with `keep` (B, K) for `forward_tokens(x, keep)`, drawn over squares of
  `mask_patch_size` pixels (SimMIM) or, by default, over the tower's patches;
- `text_0 ..`: one caption drawn per sample per text view, as token ids (B, context_length) when a
  tokenizer is given, and always as strings in `captions`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from zir.data import masking, transforms
from zir.data.paths import hash_seed
from zir.errors import ConfigError


@dataclass
class ViewPlan:
    """Which views a batch carries and how they are made; `from_dict` reads `{global: 2, local: 6, ...}`."""

    global_views: int = 2
    local_views: int = 0
    image: int = 0  # 1: add a lightly augmented `image` view
    text: int = 0  # number of text views (captions per sample)
    mask: float = 0.0  # fraction of patches hidden in each masked view
    mask_kind: str = "random"  # 'random' (MAE) or 'block' (BEiT/iBOT)
    mask_on: tuple[str, ...] = ("global",)  # which views get a mask: 'global', 'image', or view names
    mask_patch_size: int | None = None  # side in pixels of the squares masked together (SimMIM); None: patch_size
    size: int = 32  # side of global and image views
    local_size: int | None = None  # side of local views; default DINO's 96/224 of `size`
    patch_size: int = 4  # the tower's patch size, for mask grids and local sizes
    pipeline: str = "simclr"  # augmentation of the global views (see transforms.PIPELINES)
    mean: tuple[float, float, float] = transforms.IMAGENET_MEAN
    std: tuple[float, float, float] = transforms.IMAGENET_STD
    seed: int = 0

    _KEYS = {"global": "global_views", "local": "local_views", "globals": "global_views", "locals": "local_views"}

    def __post_init__(self):
        for name in ("global_views", "local_views", "image", "text"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ConfigError(f"view plan field {name}={v!r}: expected a whole number >= 0")
        if self.global_views + self.local_views + self.image + self.text == 0:
            raise ConfigError("view plan asks for no view: set global, local, image or text")
        if not 0.0 <= float(self.mask) < 1.0:
            raise ConfigError(f"view plan field mask={self.mask}: expected a fraction 0 <= mask < 1")
        if self.mask_kind not in masking.MASK_KINDS:
            raise ConfigError(f"view plan field mask_kind={self.mask_kind!r}: expected one of {', '.join(masking.MASK_KINDS)}")
        if self.pipeline not in transforms.PIPELINES:
            raise ConfigError(f"view plan field pipeline={self.pipeline!r}: expected one of {', '.join(transforms.PIPELINES)}")
        if self.size % self.patch_size:
            raise ConfigError(f"view plan field size={self.size}: expected a multiple of patch_size={self.patch_size}")
        if self.local_size is None:
            self.local_size = transforms.local_size_for(self.size, self.patch_size)
        elif self.local_size % self.patch_size:
            raise ConfigError(f"view plan field local_size={self.local_size}: expected a multiple of patch_size={self.patch_size}")
        if self.mask_patch_size is not None:
            mps = self.mask_patch_size
            if isinstance(mps, bool) or not isinstance(mps, (int, np.integer)) or mps < 1 or mps % self.patch_size:
                raise ConfigError(f"view plan field mask_patch_size={mps!r}: "
                                  f"expected a multiple of patch_size={self.patch_size}")
            if self.size % mps:
                raise ConfigError(f"view plan field mask_patch_size={mps}: expected a divisor of size={self.size}")
        if isinstance(self.mask_on, str):
            self.mask_on = (self.mask_on,)
        self.mask_on = tuple(self.mask_on)

    @classmethod
    def from_dict(cls, spec: dict | None = None, **overrides) -> "ViewPlan":
        """A plan from a recipe dict such as {global: 2, local: 6, text: 1, mask: 0.75}; unknown keys raise."""
        spec = dict(spec or {}) | overrides
        known = {f.name for f in fields(cls)}
        kwargs = {}
        for key, value in spec.items():
            name = cls._KEYS.get(key, key)
            if name not in known or name.startswith("_"):
                raise ConfigError(f"view plan key {key!r}: expected one of global, local, image, text, " + ", ".join(sorted(known - {"global_views", "local_views", "image", "text"})))
            if name in ("mean", "std", "mask_on") and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def merge(self, other: "ViewPlan") -> "ViewPlan":
        """The union of two plans' needs (most views of each kind, the larger mask)."""
        out = ViewPlan(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.global_views = max(self.global_views, other.global_views)
        out.local_views = max(self.local_views, other.local_views)
        out.image = max(self.image, other.image)
        out.text = max(self.text, other.text)
        out.mask = max(self.mask, other.mask)
        return out

    def view_names(self) -> list[str]:
        """Names of the image views a batch will hold, in order."""
        names = [f"global_{i}" for i in range(self.global_views)]
        names += [f"local_{i}" for i in range(self.local_views)]
        return names + (["image"] if self.image else [])

    def masked_views(self) -> list[str]:
        """Names of the views that get a mask."""
        if self.mask <= 0:
            return []
        out = []
        for name in self.view_names():
            kind = name.split("_")[0]
            if name in self.mask_on or kind in self.mask_on:
                out.append(name)
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
            out["image"] = transforms.pipeline("light", self.size)["global"][0]
        return out


@dataclass
class Batch:
    """A collated batch of views. Shapes: views[name] (B, 3, S, S); tokens[name] (B, L); labels (B,)."""

    views: dict[str, torch.Tensor]
    masks: dict[str, masking.Mask]
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
        return [v for k, v in self.views.items() if k.startswith("global_")]

    @property
    def local_views(self) -> list[torch.Tensor]:
        """The local views in order, each (B, 3, s, s)."""
        return [v for k, v in self.views.items() if k.startswith("local_")]

    @property
    def text(self) -> torch.Tensor | None:
        """Token ids (B, L) of the first text view, or None."""
        return self.tokens.get("text_0")

    def keep(self, view: str) -> torch.Tensor | None:
        """The visible patch indices (B, K) of a masked view, or None when the view has no mask."""
        m = self.masks.get(view)
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
    """One decoded sample ready to collate: image (3, S, S) uint8 at the load size."""

    key: str
    image: torch.Tensor
    label: int
    captions: list[str]
    notes: list[str] = field(default_factory=list)


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
            unit = (plan.mask_patch_size or plan.patch_size) // plan.patch_size  # tower patches per mask-patch side
            for name in plan.masked_views():
                side = views[name].shape[-1] // plan.patch_size
                if side % unit:
                    raise ConfigError(f"view {name}: its {side}x{side} patch grid is not divisible into mask patches "
                                      f"of {plan.mask_patch_size} pixels; set a mask_patch_size that divides the view")
                coarse = masking.make_mask(plan.mask_kind, b, (side // unit, side // unit), plan.mask, hash_seed(seed, name, "mask"))
                masks[name] = masking.upsample_mask(coarse, unit)
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
