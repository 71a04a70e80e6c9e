"""The clip_benchmark adapter: `load_zir` returns (model, transform, tokenizer) as clip_benchmark's loaders do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import zir
from helpers import FIXTURES
from zir.cli import main
from zir.config import load_config
from zir.interop.clip_benchmark import CLIP_MEAN, CLIP_STD, load_zir
from zir.recipes import RECIPES_DIR
from zir.train import train

CLIP = FIXTURES / "interop" / "clip"


def pictures(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (20 + 3 * i, 30, 3), dtype=np.uint8)) for i in range(n)]


def test_the_loader_gives_clip_benchmarks_triple_for_a_transformers_clip():
    model, transform, tokenizer = load_zir("zir", str(CLIP), cache_dir=None, device="cpu")
    images = torch.stack([transform(p) for p in pictures()])
    assert images.shape == (3, 3, 16, 16)
    gray = transform(Image.new("RGB", (40, 16), (128, 128, 128)))  # a flat picture: (0.502 - mean) / std everywhere
    want = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(gray[:, 5, 5], want, atol=1e-6)
    ids = tokenizer(["a photo of a cat", "a photo of a dog"])
    reference = zir.load(CLIP)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), reference.encode_image(images))
        assert torch.equal(model.encode_text(ids), reference.encode_text(["a photo of a cat", "a photo of a dog"]))
    # clip_benchmark's zero-shot step: normalised features, one logit per class prompt
    logits = F.normalize(model.encode_image(images), dim=-1) @ F.normalize(model.encode_text(ids), dim=-1).T
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_a_zir_run_exported_in_zirs_layout_is_evaluated_through_its_clip_objective(tmp_path):
    torch.manual_seed(0)
    tiny = ["train.steps=2", "data.batch_size=8", "data.options.n=64", "train.threads=1", "train.precision=fp32",
            "model.towers.image.model=vit_nano_patch4_32"]
    train(load_config(RECIPES_DIR / "clip.yaml", tiny), tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    model, transform, tokenizer = load_zir("zir", str(tmp_path / "hf"))
    images = torch.stack([transform(p) for p in pictures()])
    clip = model.model.objectives["clip"]
    with torch.no_grad():
        features = model.encode_image(images)
        want = clip.image_proj(clip.tower.pool(clip.tower.forward_tokens(images)))
    assert torch.equal(features, want) and model.encode_text(tokenizer(["a red circle"])).shape == (1, features.shape[1])


def test_an_image_only_model_is_refused_in_one_line():
    with pytest.raises(zir.ZirError, match="needs an image and a text tower"):
        load_zir("zir", str(FIXTURES / "interop" / "dinov2"))
