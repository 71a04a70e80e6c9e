"""Per-pixel ground truth of `shapes`: which object class covers each pixel, for dense (segmentation) probes.

A mask is drawn from the same signed distances that paint the images (`shapes_sdf`): a pixel belongs to an
object where its centre lies inside the shape (the rendered edge is at least half the object's colour
there), else to the background. Objects never overlap, so every pixel has one class.

    pixel_masks(data, "shape")    (N, side, side) int64: 0 background, 1 + index into SHAPES
    pixel_masks(data, "colour")   the same with 1 + index into COLOURS
"""

from __future__ import annotations

import numpy as np

from zir.data.shapes import COLOURS, SHAPES, ShapesData, shapes_sdf
from zir.errors import UnknownNameError

MASK_KINDS = ("shape", "colour")


def mask_classes(kind: str = "shape") -> tuple[str, ...]:
    """The class names of a mask kind, background first."""
    if kind not in MASK_KINDS:
        raise UnknownNameError(f"shapes mask {kind!r}: expected one of {', '.join(MASK_KINDS)}")
    return ("background", *(SHAPES if kind == "shape" else COLOURS))


def pixel_masks(data: ShapesData, kind: str = "shape", indices=None) -> np.ndarray:
    """(N, side, side) class per pixel of the images at `indices` (all by default): 0 background, 1 + class."""
    mask_classes(kind)
    idx = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    side = data.images.shape[1]
    out = np.zeros((len(idx), side, side), dtype=np.int64)
    grid = np.arange(side, dtype=np.float32) + 0.5  # pixel centres, as the renderer samples them
    values = data.shape if kind == "shape" else data.colour
    for k in range(data.shape.shape[1]):
        rows = np.nonzero(data.shape[idx, k] >= 0)[0]
        if rows.size == 0:
            continue
        at = idx[rows]
        cx, cy = data.center[at, k, 0] * side, data.center[at, k, 1] * side
        dx = (grid[None, :] - cx[:, None])[:, None, :]  # (M, 1, side)
        dy = (grid[None, :] - cy[:, None])[:, :, None]  # (M, side, 1)
        r = (data.radius[at, k] * side)[:, None, None]
        inside = shapes_sdf(data.shape[at, k], dx, dy, r) < 0.0
        label = (values[at, k].astype(np.int64) + 1)[:, None, None]
        out[rows] = np.where(inside, label, out[rows])
    return out
