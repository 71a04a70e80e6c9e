"""One picture that explains a tower's view of an image: rollout, each head's CLS attention, PCA colours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from zir.data.limits import DEFAULT_MAX_PIXELS, pixel_cap_reason
from zir.errors import ZirError
from zir.eval.attention_maps import attention_rollout, cls_attention, patch_pca
from zir.eval.pictures import colourise, save_panels, to_uint8_image, upsample_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_image(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """An image file as a (1, 3, H, W) tensor resized to `size` and normalised as zir's pipelines do."""
    path = Path(path)
    if not path.is_file():
        raise ZirError(f"image {path} does not exist")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if pixel_cap_reason(w, h, DEFAULT_MAX_PIXELS):  # refused from the header, before decoding
                raise ZirError(f"image {path} is {w}x{h} = {w * h:,} pixels, over the cap of {DEFAULT_MAX_PIXELS:,}")
            img = img.convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except Image.DecompressionBombError as err:
        raise ZirError(f"image {path}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise ZirError(f"image {path} cannot be decoded: {err}") from None
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((tensor - mean) / std)[None]


def explain_image(tower: torch.nn.Module, images: torch.Tensor, out_png: str | os.PathLike) -> dict:
    """Write a PNG per image row: the image, attention rollout, each head's CLS attention, PCA of patches."""
    size = tuple(images.shape[-2:])
    rollout_maps = attention_rollout(tower, images)
    has_cls = tower.has_class_token
    head_maps = cls_attention(tower, images) if has_cls else None
    colours = patch_pca(tower, images)
    rows = []
    for i in range(images.shape[0]):
        row = [("image", to_uint8_image(images[i])), ("rollout", colourise(upsample_map(rollout_maps[i], size)))]
        if head_maps is not None:
            row += [(f"head {h}", colourise(upsample_map(head_maps[i, h], size))) for h in range(head_maps.shape[1])]
        row.append(("PCA", (upsample_map(colours[i], size) * 255).astype(np.uint8)))
        rows.append(row)
    path = save_panels(rows, out_png)
    return {"png": str(path), "grid": list(rollout_maps.shape[1:]),
            "heads": 0 if head_maps is None else int(head_maps.shape[1])}
