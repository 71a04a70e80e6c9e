"""Image-to-text and text-to-image retrieval with several captions per image (Flickr30k/COCO style).

Recall@K (percent) and median rank in both directions, the metrics of Karpathy & Fei-Fei (2015) and
VSE++ (Faghri et al., 2018) that CLIP (Radford et al., 2021) reports. Similarity is cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zir.errors import ShapeError
from zir.scoring.inputs import as_features, as_labels, chunk_rows, positive_int, same_width

__all__ = ["retrieval_ranks", "evaluate_retrieval"]


def retrieval_ranks(
    image_features: Any,
    text_features: Any,
    text_to_image: Any | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks: of each image's best-ranked own caption (N_img,), and of each text's image (N_txt,).

    Text i describes image `text_to_image[i]` (default: text i describes image i). A candidate that ties
    the correct one counts as ranked above it, so collapsed (constant) features cannot score well; an
    image's other captions never count against it. Work is chunked so a similarity block stays bounded.
    """
    img = F.normalize(as_features(image_features, "image_features"), dim=1)
    txt = F.normalize(as_features(text_features, "text_features"), dim=1)
    same_width(img, txt, "image_features", "text_features")
    n_img, n_txt = img.shape[0], txt.shape[0]
    if text_to_image is None:
        if n_img != n_txt:
            raise ShapeError(f"text_to_image is needed when there are {n_txt} texts for {n_img} images")
        owner = torch.arange(n_txt)
    else:
        owner = as_labels(text_to_image, n_txt, "text_to_image")
        if owner.min() < 0 or owner.max() >= n_img:
            lo, hi = int(owner.min()), int(owner.max())
            raise ShapeError(f"text_to_image must index the {n_img} images, got values in [{lo}, {hi}]")
    captions = torch.bincount(owner, minlength=n_img)
    if (captions == 0).any():
        missing = int((captions == 0).nonzero()[0])
        raise ShapeError(f"image {missing} has no caption in text_to_image; every image needs at least one")

    # Image -> text: score of the best own caption, then count foreign captions scoring at least that.
    i2t = torch.empty(n_img, dtype=torch.int64)
    rows = chunk_rows(chunk_size, n_txt)
    for start in range(0, n_img, rows):
        sim = img[start : start + rows] @ txt.T  # (B, N_txt)
        own = owner.view(1, -1) == torch.arange(start, start + sim.shape[0]).view(-1, 1)  # (B, N_txt)
        best = sim.masked_fill(~own, float("-inf")).amax(dim=1, keepdim=True)  # (B, 1)
        i2t[start : start + rows] = 1 + ((sim >= best) & ~own).sum(dim=1)

    # Text -> image: count other images scoring at least the text's own image.
    t2i = torch.empty(n_txt, dtype=torch.int64)
    rows = chunk_rows(chunk_size, n_img)
    for start in range(0, n_txt, rows):
        sim = txt[start : start + rows] @ img.T  # (B, N_img)
        idx = owner[start : start + rows].view(-1, 1)
        own_sim = sim.gather(1, idx)  # (B, 1)
        others = (sim >= own_sim).sum(dim=1) - 1  # the own image always ties itself
        t2i[start : start + rows] = 1 + others
    return i2t, t2i


def _summary(ranks: torch.Tensor, prefix: str, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K (percent), median and mean rank of 1-based ranks (N,)."""
    n = ranks.numel()  # counts divided in Python floats, so 39 of 40 prints as 97.5, not 97.50000238
    out = {f"{prefix}_R@{k}": 100.0 * int((ranks <= k).sum()) / n for k in ks}
    # Floor of the median, as VSE++ and the Flickr/COCO tables after it report medr.
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks.numpy())))
    out[f"{prefix}_meanr"] = int(ranks.sum()) / n
    return out


def evaluate_retrieval(
    image_features: Any,
    text_features: Any,
    text_to_image: Any | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Retrieval metrics both ways: {"i2t_R@1", "i2t_R@5", "i2t_R@10", "i2t_medr", "i2t_meanr", "t2i_..."}.

    image_features (N_img, D), text_features (N_txt, D), text_to_image (N_txt,) with the image each text
    belongs to; R@K is the percent of queries whose first correct item is within the top K.
    """
    ks = [positive_int(k, "ks entry") for k in ks]
    i2t, t2i = retrieval_ranks(image_features, text_features, text_to_image, chunk_size=chunk_size)
    return {**_summary(i2t, "i2t", ks), **_summary(t2i, "t2i", ks)}
