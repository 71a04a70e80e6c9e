"""A run's encoders for search: images and captions into one space, prepared as `zir eval` prepares them.

A run with an image-text objective (CLIP, SigLIP, CoCa, SLIP, the unified recipe) embeds images and text in
its joint space, so text queries work; any other run embeds images with its image tower's pooled features
(unit length), and only image queries work. Images are fitted and normalised by the run's own evaluation
plan (`zir.eval.splits.extraction_plan`), so a search embeds exactly what `zir eval` scores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zir.data.loader import to_item
from zir.data.plan import Item, ViewCollate, ViewPlan
from zir.data.sources import BadSample, Sample, Source, decode_image
from zir.errors import ConfigError


class RunEncoder:
    """The image and (when the run has one) text encoder of a run, both returning unit-length float32 rows."""

    def __init__(self, run_dir: str | os.PathLike):
        from zir.eval.run_loading import image_text_objective, image_tower, load_run, run_tokenizer
        from zir.eval.splits import extraction_plan

        self.run = load_run(run_dir)
        self.run_dir = Path(run_dir).resolve()
        self.tower_name, self.tower = image_tower(self.run.model)
        plan, self.view = extraction_plan(self.run.model, self.run.config, self.tower)
        self.plan = ViewPlan.from_dict(plan)
        self.size = int(plan["size"])
        self.collate = ViewCollate(self.plan)
        self.joint = image_text_objective(self.run.model, self.tower_name)
        self.tokenizer = run_tokenizer(self.run_dir, self.run.config, self.run.model) if self.joint else None
        if self.joint is not None and self.tokenizer is None:
            self.joint = None  # a joint space without a way to tokenise text: search by image only
        self.space = "joint" if self.joint is not None else "pooled"

    @property
    def has_text(self) -> bool:
        """Whether text queries and caption embeddings are possible."""
        return self.joint is not None

    def prepare(self, samples: list[Sample], source: Source | None = None) -> tuple[list[Sample], list, torch.Tensor | None]:
        """(usable samples, [(key, reason)] skipped, (B, 3, S, S) input batch or None when none is usable)."""
        items = [to_item(s, source or Source(), self.size, need_text=False) for s in samples]
        batch = self.collate(items)
        if len(batch) == 0:
            return [], batch.skipped, None
        kept = [s for s, it in zip(samples, items) if isinstance(it, Item)]
        return kept, batch.skipped, batch.views[self.view]

    def images(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) prepared inputs -> (B, E) unit-length embeddings (the space text queries search)."""
        return self.images_and_features(pixels)[0]

    @torch.no_grad()
    def images_and_features(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) -> ((B, E) search embeddings, (B, W) unit-length pooled tower features).

        The pooled features keep what the image tower sees before any projection to the text space: the
        measurement in docs/search.md found them the better space for near-duplicates."""
        pooled = self.tower.pool(self.tower.forward_tokens(pixels)).float()
        features = F.normalize(pooled, dim=-1)
        out = self.joint.project_image(pooled).float() if self.joint is not None else features
        return out.numpy(), features.numpy()

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        """Strings -> (T, E) unit-length embeddings in the image embeddings' space."""
        if self.joint is None:
            raise ConfigError(f"run {self.run_dir} has no image-text objective (clip, siglip, coca, slip) and "
                              "tokenizer, so it cannot embed text; search it with --image FILE")
        return self.joint.text_encoder(self.tokenizer)(list(texts)).float().numpy()

    def image_file(self, path: str | os.PathLike) -> np.ndarray:
        """One image file -> its (E,) embedding; ConfigError when the file is missing or not an image."""
        try:
            image = decode_image(Path(path), str(path))
        except BadSample as bad:
            raise ConfigError(f"--image {path}: {bad.reason}") from None
        return self.image_array(image, str(path))

    def image_bytes(self, data: bytes, name: str = "upload") -> np.ndarray:
        """An uploaded image's bytes -> its (E,) embedding; ConfigError when they are not an image."""
        try:
            image = decode_image(data, name)
        except BadSample as bad:
            raise ConfigError(f"{name}: {bad.reason}") from None
        return self.image_array(image, name)

    def image_array(self, image: np.ndarray, name: str) -> np.ndarray:
        """A decoded (H, W, 3) uint8 image -> its (E,) embedding."""
        kept, skipped, pixels = self.prepare([Sample(key=name, image=image)])
        if pixels is None:
            raise ConfigError(f"{name}: {skipped[0][1] if skipped else 'not usable'}")
        return self.images(pixels)[0]

