"""An adapter so that LAION's `clip_benchmark` evaluates a zir model (no dependency on it here).

clip_benchmark loads a model through a `model_type` function `(model_name, pretrained, cache_dir, device)
-> (model, transform, tokenizer)`: the model has `encode_image(images)` and `encode_text(ids)` (it normalises
the features itself), the transform turns a PIL image into a normalised (3, S, S) tensor, the tokenizer a list
of strings into ids. `load_zir` is that function for anything `zir.load` reads that has an image and a text
encoder: a transformers CLIP or SigLIP folder, an open_clip file, or a run exported with
`zir export RUN --format hf` (CLIP layout or zir's, whose folder carries the run's tokenizer.json).
Registering it is one line in the calling script (docs/interop.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zir.errors import ConfigError

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class BenchmarkModel(nn.Module):
    """The two encoders clip_benchmark calls, over a zir model (features projected, not normalised)."""

    def __init__(self, model: nn.Module, image: Callable, text: Callable) -> None:
        super().__init__()
        self.model, self._image, self._text = model, image, text

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._image(images)

    @torch.no_grad()
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self._text(ids)


def image_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """PIL image -> (3, size, size) float tensor: shorter side resized to `size` (bicubic), centre crop, normalised."""
    from PIL import Image

    mean_t, std_t = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def transform(image) -> torch.Tensor:
        image = image.convert("RGB")
        scale = size / min(image.size)
        width, height = max(size, round(image.size[0] * scale)), max(size, round(image.size[1] * scale))
        image = image.resize((width, height), Image.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (pixels - mean_t) / std_t

    return transform


def _stats(folder: Path, default: tuple) -> tuple[tuple, tuple]:
    """(mean, std) from a transformers preprocessor_config.json beside the weights, else `default`."""
    config = folder / "preprocessor_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if isinstance(data.get("image_mean"), list) and isinstance(data.get("image_std"), list):
            return tuple(data["image_mean"]), tuple(data["image_std"])
    return default


def load_zir(model_name: str, pretrained: str | None = None, cache_dir: str | None = None,
             device: str | torch.device = "cpu") -> tuple[BenchmarkModel, Callable, Callable]:
    """clip_benchmark's loader: `pretrained` (or, when it is empty, `model_name`) is a path `zir.load` reads."""
    import zir
    from zir.interop import PretrainedModel

    path = Path(pretrained or model_name)
    model = zir.load(path, device=device)
    folder = path if path.is_dir() else path.parent
    if isinstance(model, PretrainedModel):
        if "text" not in model.towers or model.tokenizer is None:
            raise ConfigError(f"clip_benchmark: {path} needs an image and a text tower and a tokenizer.json")
        image_fn, text_fn, tokenize = model.encode_image, model.encode_text, model.tokenize
        mean, std = _stats(folder, (CLIP_MEAN, CLIP_STD))
    else:
        image_fn, text_fn, tokenize, (mean, std) = _zir_encoders(model, folder)
    tower = model.towers["image"]
    transform = image_transform(int(tower.img_size[0]), mean, std)
    return BenchmarkModel(model, image_fn, text_fn).eval(), transform, lambda texts: tokenize(list(texts))


def _zir_encoders(model: nn.Module, folder: Path):
    """A zir model's image-text objective as encoders, its tokenizer (tokenizer.json beside it) and its plan's stats."""
    from zir.data.tokenizer import load_tokenizer
    from zir.objectives.clip import ImageText

    pairs = [o for o in getattr(model, "objectives", {}).values() if isinstance(o, ImageText)]
    if not pairs or not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"clip_benchmark: {folder} holds no image-text model with its tokenizer.json "
                          "(export the run with `zir export RUN --format hf`)")
    pair = pairs[0]
    tokenizer = load_tokenizer(folder / "tokenizer.json", context_length=pair.text_tower.context_length)
    plan = model.view_plan()

    def image_fn(images: torch.Tensor) -> torch.Tensor:
        return pair.image_proj(pair.tower.pool(pair.tower.forward_tokens(images)))

    def text_fn(ids: torch.Tensor) -> torch.Tensor:
        return pair.text_proj(pair.text_tower.pool(pair.text_tower.forward_tokens(ids)))

    return image_fn, text_fn, tokenizer.encode, (tuple(plan.mean), tuple(plan.std))
