"""The segmentation probe's masks beside the truth, for the report: saved by `zir eval --tasks segment`,
drawn by report.html as image | truth | prediction with one colour per class.

The masks live in RUN/segment_masks.npz (plain arrays, strings as unicode arrays, read without pickle), so
the report draws them without fitting the probe again.

    save_segment_masks(path, images, truth, prediction, classes)
    load_segment_masks(path) -> {"images", "truth", "prediction", "classes"}
    segment_rows(masks) -> panel rows for `save_panels`
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MASKS_FILE = "segment_masks.npz"
EXAMPLES = 4  # test images whose predicted masks are kept

# The background dark, then well-separated hues (Okabe-Ito's colour-blind-safe set, then a few more).
PALETTE = np.array([[40, 40, 40], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
                    [213, 94, 0], [204, 121, 167], [255, 255, 255], [140, 86, 75], [127, 127, 127], [188, 189, 34]],
                   dtype=np.uint8)


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of class `index` (the palette repeats beyond its length)."""
    return tuple(int(c) for c in PALETTE[index % len(PALETTE)])


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8, each class its palette colour."""
    return PALETTE[np.asarray(mask, dtype=np.int64) % len(PALETTE)]


def save_segment_masks(path: str | os.PathLike, images: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
                       classes: tuple[str, ...]) -> Path:
    """Write (N, H, W, 3) uint8 images, (N, h, w) true and predicted class indices and the class names."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, images=np.asarray(images, dtype=np.uint8), truth=np.asarray(truth, dtype=np.int16),
                        prediction=np.asarray(prediction, dtype=np.int16), classes=np.array(classes, dtype=str))
    os.replace(tmp, path)
    return path


def load_segment_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays `save_segment_masks` wrote (no pickled objects are read)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in ("images", "truth", "prediction", "classes")}


def segment_rows(masks: dict[str, np.ndarray]) -> list[list[tuple[str, np.ndarray]]]:
    """One row per image: the image, the true mask and the predicted one, coloured by class."""
    return [[("image", image), ("truth", colour_mask(truth)), ("prediction", colour_mask(pred))]
            for image, truth, pred in zip(masks["images"], masks["truth"], masks["prediction"])]
