"""Which patches moved an image-text score: gradient-weighted attention rollout over a ViT image tower.

For a score s (the cosine between an image's joint-space embedding and a text's), each block's attention
A (B, H, T, T) is weighted by its gradient dS/dA, negative parts dropped and heads averaged, and the blocks
are accumulated as R <- R + mean_h(relu(grad * A)) @ R from R = I (Chefer, Gur and Wolf, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021).
The pooled token's row of R over the patch columns says how much each patch raised the score.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zir.errors import ShapeError
from zir.eval.pictures import colourise, save_panels, to_uint8_image, upsample_map


def text_relevance(tower: torch.nn.Module, project: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                   text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B,), relevance (B, rows, cols) in [0, 1]) of images (B, 3, H, W) for unit-norm text (E,) or (B, E)."""
    # `project` maps the tower's pooled features (B, D) into the joint space (an objective's `project_image`).
    if not tower.can_return_attention:
        raise ShapeError(f"{type(tower).__name__} does not expose attention weights; text relevance needs a ViT tower")
    was_training = tower.training
    tower.eval()
    try:
        with torch.enable_grad():
            tokens, weights = tower.forward_with_attention(images)
            image = F.normalize(project(tower.pool(tokens)), dim=-1)
            scores = (image * text.to(image.dtype)).sum(-1)
            grads = torch.autograd.grad(scores.sum(), weights)
    finally:
        tower.train(was_training)
    B, T = images.shape[0], weights[0].shape[-1]
    flow = torch.eye(T).expand(B, T, T).clone()
    for attn, grad in zip(weights, grads):
        flow = flow + (grad * attn).clamp(min=0).mean(dim=1).detach() @ flow
    prefix = tower.num_prefix_tokens
    source = flow[:, 0] if tower.has_class_token else flow[:, prefix:].mean(dim=1)
    patches = source[:, prefix:]
    low, high = patches.min(dim=1, keepdim=True).values, patches.max(dim=1, keepdim=True).values
    patches = (patches - low) / (high - low).clamp_min(1e-12)
    rows, cols = images.shape[-2] // tower.patch_size[0], images.shape[-1] // tower.patch_size[1]
    return scores.detach(), patches.reshape(B, rows, cols)


def explain_text(tower, project, images: torch.Tensor, texts: list[str], text_embeddings: torch.Tensor,
                 out_png: str | os.PathLike) -> dict:
    """A PNG with one row per image: the image, then each text's relevance map titled with its score."""
    size = tuple(images.shape[-2:])
    rows, scores = [], []
    for i in range(images.shape[0]):
        row = [("image", to_uint8_image(images[i]))]
        for text, embedding in zip(texts, text_embeddings):
            score, relevance = text_relevance(tower, project, images[i:i + 1], embedding)
            overlay = 0.5 * to_uint8_image(images[i]) + 0.5 * colourise(upsample_map(relevance[0], size))
            row.append((f"{score.item():+.2f} {text}"[:28], overlay.astype(np.uint8)))
            scores.append(float(score))
        rows.append(row)
    path = save_panels(rows, out_png, scale=max(4, 160 // size[1]))  # panels wide enough for their titles
    return {"png": str(Path(path)), "scores": scores}
