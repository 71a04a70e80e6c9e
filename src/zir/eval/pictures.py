"""PNG pictures of what a tower sees: images beside their attention maps and patch-feature colours.

Written with Pillow alone (no plotting library), so the pictures work wherever zir installs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

# A perceptually ordered dark-to-bright ramp (anchors of a viridis-like map), interpolated linearly.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def colourise(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 colours on a dark-to-bright ramp."""
    position = np.clip(values, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) image in any range -> (H, W, 3) uint8, min-max scaled for display."""
    image = image.detach().float()
    image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-12)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def upsample_map(grid_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(rows, cols) or (rows, cols, C) map -> (H, W) or (H, W, C) array, nearest-patch upsampling, [0, 1]."""
    m = grid_map.detach().float()
    channels_last = m.ndim == 3
    m = m.permute(2, 0, 1)[None] if channels_last else m[None, None]
    up = F.interpolate(m, size=size, mode="nearest")[0]
    up = up.permute(1, 2, 0) if channels_last else up[0]
    if not channels_last:
        up = (up - up.min()) / (up.max() - up.min()).clamp_min(1e-12)
    return up.numpy()


def save_panels(rows: list[list[tuple[str, np.ndarray]]], path: str | os.PathLike, scale: int = 4) -> Path:
    """Write a grid of titled (H, W, 3) uint8 panels, one list per row, as a PNG; returns the path."""
    height = max(panel.shape[0] for row in rows for _, panel in row) * scale
    width = max(panel.shape[1] for row in rows for _, panel in row) * scale
    title = 14
    columns = max(len(row) for row in rows)
    canvas = Image.new("RGB", (columns * (width + 4), len(rows) * (height + title + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (name, panel) in enumerate(row):
            x, y = c * (width + 4), r * (height + title + 4)
            draw.text((x + 2, y + 1), name, fill="black")
            canvas.paste(Image.fromarray(panel).resize((width, height), Image.NEAREST), (x, y + title))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
