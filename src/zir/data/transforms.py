"""Batched, seeded image augmentation on tensors, and the SimCLR, BYOL, DINO and MAE pipelines.

Every transform takes a float batch (B, 3, H, W) in [0, 1] and a seed, and draws different parameters
for each image of the batch. The same batch and seed always give the same output, whatever process or
device runs it. The operations are kornia's (batched on CPU or GPU); zir only chooses the parameters.

Published defaults are written for 224-pixel ImageNet crops; `scaled to the image size` means that
blur sigmas and kernel sizes, and the DINO local crop size, shrink in proportion to the output size (so
at 32 pixels the blur nearly vanishes, as the CIFAR variants of these methods do).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import torch

from zir.errors import ConfigError, UnknownNameError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# measured on the JPEG shards of CIFAR-10 (see ../shared/data/README.md)
CIFAR10_MEAN = (0.491, 0.482, 0.447)
CIFAR10_STD = (0.245, 0.243, 0.261)
PIPELINES = ("simclr", "byol", "dino", "mae", "light", "none")


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None):
    """Run a block with torch's random state set from `seed`, then restore the state the caller had."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if devices else "cpu"):
        torch.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        yield


@dataclass(frozen=True)
class Augment:
    """One view's augmentation: random resized crop to `size`, flip, colour jitter, grayscale, blur, solarise."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.0
    gray_p: float = 0.0
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels of the output
    solarize_p: float = 0.0
    crop: bool = True  # False: resize the whole image instead of a random crop
    _ops: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        if self.size < 1:
            raise ConfigError(f"augment size={self.size}: expected a positive number of pixels")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"augment scale={self.scale}: expected 0 < min <= max <= 1")

    def _build(self) -> list:
        import kornia.augmentation as K

        ops = []
        if self.crop:
            ops.append(K.RandomResizedCrop((self.size, self.size), scale=self.scale, ratio=self.ratio, align_corners=False))
        if self.flip > 0:
            ops.append(K.RandomHorizontalFlip(p=self.flip))
        if self.jitter_p > 0 and any(self.jitter):
            b, c, s, h = self.jitter
            ops.append(K.ColorJitter(b, c, s, h, p=self.jitter_p))
        if self.gray_p > 0:
            ops.append(K.RandomGrayscale(p=self.gray_p))
        if self.blur_p > 0:
            k = max(3, int(round(self.size * 0.1)) | 1)  # kernel about 10% of the side, odd (SimCLR)
            ops.append(K.RandomGaussianBlur((k, k), self.blur_sigma, p=self.blur_p))
        if self.solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=self.solarize_p))
        return ops

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, 3, size, size) float in [0, 1], different per image, fixed by seed."""
        if images.ndim != 4 or images.shape[1] != 3:
            from zir.errors import ShapeError

            raise ShapeError(f"augment expects images (B, 3, H, W); got {tuple(images.shape)}")
        if not self._ops:
            self._ops.extend(self._build())
        x = images
        if not self.crop and x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        if x.shape[0] == 0:
            return x.new_zeros((0, 3, self.size, self.size))
        with seeded(seed, x.device):
            for op in self._ops:
                x = op(x)
        return x.clamp_(0.0, 1.0)


def _blur_sigma(size: int) -> tuple[float, float]:
    k = size / 224.0
    return (0.1 * k, 2.0 * k)


def local_size_for(global_size: int, patch_size: int = 1) -> int:
    """DINO's local crop side (96 for 224) scaled to `global_size`, rounded to a multiple of the patch size."""
    raw = global_size * 96 / 224
    p = max(1, patch_size)
    return max(p, int(round(raw / p)) * p)


def pipeline(name: str, size: int, *, local_size: int | None = None, patch_size: int = 1) -> dict[str, list[Augment]]:
    """A method's augmentations: {'global': [one Augment per global view], 'local': [Augment]} at `size`."""
    sigma = _blur_sigma(size)
    if name == "simclr":
        # SimCLR (Chen et al. 2020): crop 0.08-1, colour distortion strength 1, blur on half the images
        view = Augment(size, scale=(0.08, 1.0), jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, gray_p=0.2, blur_p=0.5, blur_sigma=sigma)
        return {"global": [view, view], "local": []}
    jitter = dict(jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, blur_sigma=sigma)
    if name == "byol":
        # BYOL (Grill et al. 2020): asymmetric views, blur always on the first, solarise sometimes on the second
        first = Augment(size, scale=(0.08, 1.0), blur_p=1.0, **jitter)
        second = Augment(size, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2, **jitter)
        return {"global": [first, second], "local": []}
    if name == "dino":
        # DINO (Caron et al. 2021): global crops 0.4-1 (BYOL's colour ops), local crops 0.05-0.4 at 96/224
        first = Augment(size, scale=(0.4, 1.0), blur_p=1.0, **jitter)
        second = Augment(size, scale=(0.4, 1.0), blur_p=0.1, solarize_p=0.2, **jitter)
        ls = local_size or local_size_for(size, patch_size)
        local = Augment(ls, scale=(0.05, 0.4), blur_p=0.5, **(jitter | {"blur_sigma": _blur_sigma(ls)}))
        return {"global": [first, second], "local": [local]}
    if name == "mae":
        # MAE (He et al. 2022): crop 0.2-1 and flip only; the mask does the rest
        view = Augment(size, scale=(0.2, 1.0))
        return {"global": [view, view], "local": []}
    if name == "light":
        # image-text training (CLIP-style, as SLIP trains it): a mild crop and a flip
        view = Augment(size, scale=(0.5, 1.0))
        return {"global": [view, view], "local": []}
    if name == "none":
        view = Augment(size, crop=False, flip=0.0)
        return {"global": [view, view], "local": []}
    raise UnknownNameError(f"augmentation pipeline {name!r}: expected one of {', '.join(PIPELINES)}")


def with_size(aug: Augment, size: int) -> Augment:
    """The same augmentation producing another output size."""
    return replace(aug, size=size, _ops=[])


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> standardised per channel: (x - mean) / std."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s


def denormalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Undo `normalize`: back to [0, 1] for display."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return images * s + m


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) or (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    if images.ndim == 4 and images.shape[-1] == 3 and images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
